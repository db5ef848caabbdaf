#!/usr/bin/env bash
# Put a file back as it was at an instant, keeping today's copy beside it.
#   restore-into-place.sh DISK PATH [AT] [ROOT]
# AT defaults to -1d (yesterday, this time); ROOT is where the disk's files
# live now (default /). Today's copy becomes PATH.bak-<time>; the restored one
# is moved into place only after it has been fully restored.
# Needs HINDSIGHT_REPO (or pass --repo through HINDSIGHT). Exit: hindsight's.
set -euo pipefail
disk=$1 path=$2 at=${3:--1d} root=${4:-/}
hs=${HINDSIGHT:-hindsight}
tmp=$(mktemp -d "${root%/}/.hindsight-restore.XXXXXX")   # same filesystem: mv is a rename
trap 'rm -rf "$tmp"' EXIT
$hs restore "$disk" --at "$at" "$path" --to "$tmp"
target="${root%/}/${path#/}"
if [ -e "$target" ] || [ -L "$target" ]; then
  backup="$target.bak-$(date -u +%Y%m%dT%H%M%SZ)"
  mv -- "$target" "$backup"
  echo "kept today's copy as $backup" >&2
fi
mv -- "$tmp/${path#/}" "$target"
echo "restored $path as of $at" >&2
