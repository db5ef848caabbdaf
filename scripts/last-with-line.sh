#!/usr/bin/env bash
# Find the last instant at which a file still contained a line.
#   last-with-line.sh DISK PATH LINE [SINCE]
# Walks the file's history (only instants where its content changed) from the
# newest back, restoring each version into a scratch directory, and prints the
# newest instant whose version holds LINE (a fixed string). Exit 1 if none.
set -euo pipefail
disk=$1 path=$2 line=$3 since=${4:-}
hs=${HINDSIGHT:-hindsight}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
args=()
[ -n "$since" ] && args=(--since "$since")
# Newest first; only instants at which the file exists.
mapfile -t times < <($hs --json history "$disk" "$path" "${args[@]}" | jq -r '.versions | reverse | .[] | select(.exists) | .time')
for t in "${times[@]}"; do
  rm -rf "$tmp/v"
  $hs restore "$disk" --at "$t" "$path" --to "$tmp/v" >/dev/null
  if grep -qF -- "$line" "$tmp/v/${path#/}"; then
    echo "$t"
    exit 0
  fi
done
echo "no version of $path in its history contains: $line" >&2
exit 1
