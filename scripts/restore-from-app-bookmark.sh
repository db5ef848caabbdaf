#!/usr/bin/env bash
# Restore a folder from the newest application-consistent bookmark.
#   restore-from-app-bookmark.sh DISK FOLDER TO
# Application bookmarks are taken with quiesce hooks (the application flushed
# its state), so a database or mail folder restored from one is consistent.
set -euo pipefail
disk=$1 folder=$2 to=$3
hs=${HINDSIGHT:-hindsight}
name=$($hs --json bookmarks "$disk" | jq -r '[.[] | select(.kind == "application")] | sort_by(.time) | last | .name // empty')
if [ -z "$name" ]; then
  echo "disk $disk has no application-consistent bookmark" >&2
  exit 3
fi
echo "restoring $folder from bookmark $name" >&2
$hs restore "$disk" --at "bookmark:$name" "$folder" --to "$to"
