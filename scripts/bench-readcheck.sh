#!/usr/bin/env bash
# What the read check costs through the mount: the same image imported into
# two repositories, one by a build without read checks (HS_OLD, e.g. built
# from bdddf07) and one by this build (HS), each read through its own
# binary's mount with dd (1 MiB requests), alternated REPS times: warm (the
# segments in the page cache, the FUSE file dropped between reads) and cold
# (all caches dropped). Root only. Prints MB/s per read and the medians.
#   HS_OLD=/tmp/hs-old HS=bin/hindsight bash scripts/bench-readcheck.sh
set -euo pipefail
cd "$(dirname "$0")/.."
HS_NEW=${HS:-$(pwd)/bin/hindsight}
HS_OLD=${HS_OLD:?HS_OLD names a build without read checks}
SIZE_MIB=${BENCH_SIZE_MIB:-1024}
REPS=${BENCH_REPS:-5}
BENCH_DIR=${BENCH_DIR:-/var/tmp}
[ "$(id -u)" = 0 ] || { echo "bench-readcheck.sh: needs root" >&2; exit 1; }

work=$(mktemp -d "$BENCH_DIR/hindsight-readcheck.XXXXXX")
mount_pid="" mnt=$work/mnt-old repo=""
cleanup() {
	set +e
	stop_mount
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
. scripts/mount-lib.sh
now_ns() { date +%s%N; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# Half random (stored raw), a quarter text (stored with zstd), a quarter zeros.
img=$work/base.img
q=$((SIZE_MIB / 4))
{ head -c $((2 * q))M /dev/urandom; head -c ${q}M < <(yes "the journal keeps every write, in order, with its time"); head -c ${q}M /dev/zero; } >"$img"
for v in old new; do
	hs=$HS_OLD; [ $v = new ] && hs=$HS_NEW
	r=$work/repo-$v
	"$hs" --repo "$r" init >/dev/null
	"$hs" --repo "$r" disk create d --size ${SIZE_MIB}M >/dev/null
	"$hs" --repo "$r" import d "$img" --at 2026-11-25T10:00:00Z >/dev/null
done
rm -f "$img"

# read_once VARIANT COLD: MB/s of one dd of the instant's flat image.
read_once() {
	HS=$HS_OLD; [ "$1" = new ] && HS=$HS_NEW
	repo=$work/repo-$1 mnt=$work/mnt-$1
	[ "$2" = cold ] && { sync; echo 3 >/proc/sys/vm/drop_caches; }
	start_mount
	local f=$mnt/d/20261125T100000Z/d-flat.vmdk t0 t1
	t0=$(now_ns)
	dd if="$f" of=/dev/null bs=1M status=none
	t1=$(now_ns)
	stop_mount
	awk -v b=$((SIZE_MIB << 20)) -v ns=$((t1 - t0)) 'BEGIN { printf "%.0f", b * 1000 / ns }'
}
for kind in warm cold; do
	old=() new=()
	read_once old warm >/dev/null; read_once new warm >/dev/null # fill the page cache
	for i in $(seq "$REPS"); do
		old+=("$(read_once old $kind)")
		new+=("$(read_once new $kind)")
		echo "$kind rep $i: unchecked ${old[-1]} MB/s, checked ${new[-1]} MB/s" >&2
	done
	mo=$(median "${old[@]}") mn=$(median "${new[@]}")
	echo "$kind: unchecked (old build) median $mo MB/s, checked median $mn MB/s, ratio $(awk -v a="$mn" -v b="$mo" 'BEGIN { printf "%.2f", a / b }')"
done
