#!/usr/bin/env bash
# make demo: a disk with an ext4 filesystem in a temporary repository, a file
# changed over three points, the journal mounted, and the file shown (and
# restored) as it was at each point. Cleans up after itself, even on failure.
set -euo pipefail
HS=${HS:-$(pwd)/bin/hindsight}
work=$(mktemp -d /tmp/hindsight-demo.XXXXXX)
repo=$work/repo mnt=$work/mnt img=$work/disk.img fsdir=$work/files
mounted=() loops=() pids=()
cleanup() {
	set +e
	for m in "${mounted[@]}"; do umount "$m" 2>/dev/null; done
	for l in "${loops[@]}"; do losetup -d "$l" 2>/dev/null; done
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
	mountpoint -q "$mnt" && umount "$mnt"
	rm -rf "$work"
}
trap cleanup EXIT
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

step "a repository and a 64 MiB disk"
run "$HS" --repo "$repo" init
run "$HS" --repo "$repo" disk create web --size 64M

mkdir -p "$fsdir/site"
times=(2026-11-25T10:00:00Z 2026-11-25T11:00:00Z 2026-11-25T12:00:00Z)
for i in 0 1 2; do
	step "point $((i + 1)): index.html version $((i + 1)), imported at ${times[$i]}"
	echo "<h1>version $((i + 1)) of the site</h1>" >"$fsdir/site/index.html"
	rm -f "$img"; truncate -s 64M "$img"
	mkfs.ext4 -q -F -d "$fsdir" -L web -U 6f0c3c1a-2a52-4f0e-9c53-1d2c3b4a5e60 -E root_owner=0:0 "$img"
	run "$HS" --repo "$repo" import web "$img" --at "${times[$i]}"
done
run "$HS" --repo "$repo" bookmark web before-upgrade --at 2026-11-25T11:30:00Z
run "$HS" --repo "$repo" points web

step "mount the journal"
mkdir -p "$mnt"
"$HS" --repo "$repo" mount "$mnt" &
pids+=($!)
for _ in $(seq 50); do mountpoint -q "$mnt" && break; sleep 0.1; done
mountpoint -q "$mnt" || { echo "mount did not come up"; exit 1; }
run ls "$mnt/web"

for at in 20261125T100000Z 2026-11-25T11:15:00Z bookmarks/before-upgrade latest; do
	step "the file at $at"
	flat=$mnt/web/$at/web-flat.vmdk
	if [ "$(id -u)" = 0 ]; then
		loop=$(losetup -r -f --show "$flat"); loops+=("$loop")
		dir=$work/view-${at//\//-}; mkdir -p "$dir"
		mount -o ro,noload "$loop" "$dir"; mounted+=("$dir")
		run cat "$dir/site/index.html"
	else # no loop devices without root: read the file straight from the image
		run debugfs -R "cat /site/index.html" "$flat" 2>/dev/null
	fi
done

step "restore: export the 10:00 point and take the file from it"
run "$HS" --repo "$repo" export web --at 20261125T100000Z --format raw --out "$work/restored.img"
debugfs -R "dump /site/index.html $work/index.html.restored" "$work/restored.img" 2>/dev/null
run cat "$work/index.html.restored"
run qemu-img info "$mnt/web/20261125T100000Z/web.vmdk"
step "done: everything is cleaned up on exit"
