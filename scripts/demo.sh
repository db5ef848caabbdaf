#!/usr/bin/env bash
# make demo: the main job. `hindsight serve` runs on a fresh repository and
# protects a disk; ext4 on it, through a loop device, gets a config file changed
# three times (synced each time, the time noted); the disk is then opened at
# the first noted instant, the file restored from it, and the restored (old)
# content set beside the live (new) one. Needs root (FUSE, loop devices).
# Cleans up after itself (umount, losetup -d, unprotect, SIGTERM), even on failure.
set -euo pipefail
HS=${HS:-$(pwd)/bin/hindsight}
[ "$(id -u)" = 0 ] || { echo "demo: run as root (it uses FUSE and loop devices)" >&2; exit 2; }
[ -x "$HS" ] || { echo "demo: $HS missing: run 'make build' (or make demo)" >&2; exit 2; }
work=$(mktemp -d /tmp/hindsight-demo.XXXXXX)
repo=$work/repo tap=$work/tap live=$work/live hsmnt=$work/hs view=$work/view out=$work/restored
serve_pid="" mount_pid="" loop="" viewloop=""
hs() { "$HS" --repo "$repo" "$@"; }

cleanup() {
	local rc=$?
	set +e
	mountpoint -q "$view" 2>/dev/null && umount "$view"
	[ -n "$viewloop" ] && losetup -d "$viewloop" 2>/dev/null
	mountpoint -q "$live" 2>/dev/null && umount "$live"
	[ -n "$loop" ] && losetup -d "$loop" 2>/dev/null
	if [ -n "$mount_pid" ]; then
		mountpoint -q "$hsmnt" && umount "$hsmnt"
		kill "$mount_pid" 2>/dev/null; wait "$mount_pid" 2>/dev/null
	fi
	if [ -n "$serve_pid" ]; then
		hs unprotect web >/dev/null 2>&1
		kill -TERM "$serve_pid" 2>/dev/null; wait "$serve_pid" 2>/dev/null
	fi
	mountpoint -q "$tap" 2>/dev/null && umount "$tap" # only if the service died without it
	if [ "$rc" != 0 ] && [ -s "$work/serve.log" ]; then
		echo "--- the service's log:"; tail -n 20 "$work/serve.log"
	fi
	if grep -q " $work/" /proc/mounts; then # never rm -rf through a mount
		echo "demo: still mounted, $work left in place:"; grep " $work/" /proc/mounts
	else
		rm -rf --one-file-system "$work"
	fi
	[ "$rc" = 0 ] && printf '\n\033[1mdone in %ss: unmounted, loop devices detached, service stopped, %s removed\033[0m\n' "$SECONDS" "$work"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

n=0
step() { n=$((n + 1)); printf '\n\033[1m%d. %s\033[0m\n' "$n" "$*"; }
run() { # print the command as a user would type it, then run it
	local shown="$*"
	[ "$1" = hs ] && shown="hindsight ${*:2}"
	printf '$ %s\n' "$shown"; "$@"
}
fail() { echo "demo: FAILED: $*" >&2; exit 1; }
# waitfor SECONDS CMD...: retry CMD every 0.1 s until it succeeds.
waitfor() {
	local end=$((SECONDS + $1)); shift
	until "$@" 2>/dev/null; do [ "$SECONDS" -lt "$end" ] || return 1; sleep 0.1; done
}

step "a fresh repository with a 64 MiB disk"
run hs init
run hs disk create web --size 64M

step "the service: the repository's one writer (log in serve.log)"
printf '$ hindsight --repo %s serve &\n' "$repo"
"$HS" --repo "$repo" serve >"$work/serve.log" 2>&1 & # not through hs(): $! must be hindsight's pid
serve_pid=$!
waitfor 10 hs protections >/dev/null || fail "the service did not answer in 10 s"
echo "service running, pid $serve_pid, socket $repo/run/control.sock"

step "protect web: the service serves it as a file, journaling every write"
run hs protect web --mount "$tap"
loop=$(losetup -f --show "$tap/web.img")
echo "\$ losetup -f --show $tap/web.img   -> $loop"
mkfs.ext4 -q -L web -E lazy_itable_init=0,lazy_journal_init=0 "$loop" # no background init writes
mkdir -p "$live" && mount "$loop" "$live"
echo "ext4 made on $loop and mounted at $live"

step "change a config file three times, syncing and noting the time after each"
declare -a at
mkdir -p "$live/etc/app"
for v in 1 2 3; do
	printf 'listen = 80\nworkers = %d\nversion = %d\n' $((v * 4)) "$v" >"$live/etc/app/app.conf"
	sync
	at[$v]=$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)
	echo "version $v written and synced; noted at ${at[$v]}"
	[ "$v" = 3 ] || sleep 1.5
done

step "what the service protects"
sleep 1.2 # one sync interval: the figures and the published journal catch up
run hs protections

step "the journal as a tree: any instant is a directory"
mkdir -p "$hsmnt"
"$HS" --repo "$repo" mount "$hsmnt" >"$work/mount.log" 2>&1 &
mount_pid=$!
waitfor 10 mountpoint -q "$hsmnt" || fail "hindsight mount did not come up"
printf '$ ls %s\n' "$hsmnt/web"
ls "$hsmnt/web" | awk '/^[0-9]/ { n++; last = $0; if (n <= 2) print; next } { rest = rest $0 "  " }
	END { if (n > 2) printf "… %d points in all, the newest %s\n", n, last; print rest }'
run ls "$hsmnt/web/${at[1]}"

step "open the disk at ${at[1]} (version 1 noted) and read the file"
viewloop=$(losetup -r -f --show "$hsmnt/web/${at[1]}/web-flat.vmdk")
mkdir -p "$view" && mount -o ro,noload "$viewloop" "$view"
run cat "$view/etc/app/app.conf"
umount "$view"; losetup -d "$viewloop"; viewloop=""

step "restore the file as it was at ${at[1]}"
run hs restore web --at "${at[1]}" /etc/app/app.conf --to "$out"

step "the restored file (old) beside the live one (new)"
run cat "$out/etc/app/app.conf"
run cat "$live/etc/app/app.conf"
grep -qx 'version = 1' "$out/etc/app/app.conf" || fail "restored file is not version 1"
grep -qx 'version = 3' "$live/etc/app/app.conf" || fail "live file is not version 3"
echo "restored: version 1; live: version 3"

step "relative instants: version 2 from ${at[2]}, and -1s (the newest version)"
run hs restore web --at "${at[2]}" /etc/app/app.conf --to "$out/v2"
run hs restore web --at -1s /etc/app/app.conf --to "$out/now"
grep -qx 'version = 2' "$out/v2/etc/app/app.conf" || fail "restored file at ${at[2]} is not version 2"
grep -qx 'version = 3' "$out/now/etc/app/app.conf" || fail "restored file at -1s is not version 3"
run grep -h version "$out/v2/etc/app/app.conf" "$out/now/etc/app/app.conf"

step "clean up: umount, losetup -d, unprotect, stop the service (SIGTERM)"
umount "$live"; losetup -d "$loop"; loop=""
kill "$mount_pid"; wait "$mount_pid" || true; mount_pid=""
run hs unprotect web
kill -TERM "$serve_pid"
wait "$serve_pid" || fail "the service exited $? on SIGTERM"
serve_pid=""
echo "service stopped (exit 0)"
