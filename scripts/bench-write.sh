#!/usr/bin/env bash
# Write benchmarks of the capture front ends against a plain file on the same
# filesystem as the repository (issue 3's targets), one run each:
#   1. sequential 1 MiB writes, dd conv=fsync, 1 GiB of random data
#   2. 4 KiB random writes with an fsync every 64 (fio), IOPS and p99 fsync latency
#      (1 and 2 through the tap over FUSE io_uring, protect's default, and
#      over /dev/fuse)
#   3. NBD: qemu-img convert -n of 512 MiB into serve-nbd vs qemu-nbd on a plain file
# Also printed: the protect process's CPU time per 4 KiB write during fio (its
# user+system time over the writes fio made), the figure that limits the tap on
# two cores and that varies far less with the host than IOPS do.
# BENCH_WRITE_QUICK=1 runs the plain file and the io_uring tap only (~50 s):
# for A/B runs, alternate HS=<old build> and HS=<new build> in one period.
# Root. Cleans up after itself. Results are printed; docs/PERFORMANCE.md holds them.
set -euo pipefail
HS=${HS:-$(pwd)/bin/hindsight}
BASE=${BENCH_DIR:-/var/tmp}
work=$(mktemp -d "$BASE/hindsight-wbench.XXXXXX")
pids=() loops=()
cleanup() {
	set +e
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
	mountpoint -q "$work/tap" && umount -l "$work/tap"
	rm -rf "$work" /dev/shm/hs-wbench-src.raw
}
trap cleanup EXIT
for t in fio qemu-img qemu-nbd; do command -v $t >/dev/null || { echo "$t missing: make deps EXTRA_PKGS=fio" >&2; exit 1; }; done

src=/dev/shm/hs-wbench-src.raw
head -c $((1 << 30)) /dev/urandom >"$src"
dropcaches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
rate() { # bytes seconds → MB/s
	python3 -c "print(f'{$1/$2/1e6:.0f}')"
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; } # user + system, in clock ticks
timed() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N); python3 -c "print($e-$s)"; }

# fio: 4 KiB random writes, refilled buffers (no dedupe advantage), fsync every 64.
fio_seconds=20
fio_run() { # file → "iops p99_fsync_us"
	fio --name=w --filename="$1" --rw=randwrite --bs=4k --size=1G --fsync=64 --ioengine=psync \
		--refill_buffers --randrepeat=1 --runtime=$fio_seconds --time_based --output-format=json 2>/dev/null |
		python3 -c 'import json,sys; j=json.load(sys.stdin)["jobs"][0]; p=j["sync"]["lat_ns"]["percentile"]; print("%.0f %.0f" % (j["write"]["iops"], p["99.000000"]/1000))'
}

echo "== plain file on $(df --output=source "$BASE" | tail -1)"
plain=$work/plain.img
truncate -s 1G "$plain"
dropcaches
t=$(timed dd if="$src" of="$plain" bs=1M count=1024 conv=fsync,notrunc)
plain_seq=$(rate $((1 << 30)) "$t")
read -r plain_iops plain_p99 <<<"$(fio_run "$plain")"

"$HS" --repo "$work/repo" init >/dev/null
mkdir "$work/tap"
# tap MODE: protect a new 1 GiB disk over FUSE io_uring (MODE true, the
# default) or /dev/fuse (false); dd fills it with random data, then fio.
tap() {
	"$HS" --repo "$work/repo" disk create "web$1" --size 1G >/dev/null
	"$HS" --repo "$work/repo" protect "web$1" --mount "$work/tap" --io-uring="$1" 2>"$work/protect-$1.log" &
	pids+=($!)
	for _ in $(seq 100); do mountpoint -q "$work/tap" && break; sleep 0.1; done
	dropcaches
	t=$(timed dd if="$src" of="$work/tap/web$1.img" bs=1M count=1024 conv=fsync,notrunc)
	tap_seq=$(rate $((1 << 30)) "$t")
	local c0 c1
	c0=$(cpu_ticks "${pids[-1]}")
	read -r tap_iops tap_p99 <<<"$(fio_run "$work/tap/web$1.img")"
	c1=$(cpu_ticks "${pids[-1]}")
	tap_cpu=$(python3 -c "print(f'{($c1-$c0)/$(getconf CLK_TCK)*1e6/($tap_iops*$fio_seconds):.1f}')")
	kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true; unset 'pids[-1]'
	for _ in $(seq 50); do mountpoint -q "$work/tap" || break; sleep 0.1; done
}
pct() { python3 -c "print(f'{100*$1/$2:.0f}%')"; }
row() { printf '%-44s %10s %10s %8s\n' "$@"; }
tap_rows() { # the io_uring tap's figures beside the plain file's
	echo
	row "workload" "hindsight" "plain" "ratio"
	row "sequential 1 MiB, dd conv=fsync (MB/s)" "$tap_seq" "$plain_seq" "$(pct "$tap_seq" "$plain_seq")"
	row "4 KiB random, fsync every 64 (IOPS)" "$tap_iops" "$plain_iops" "$(pct "$tap_iops" "$plain_iops")"
	row "p99 fsync latency (us)" "$tap_p99" "$plain_p99"
	row "protect CPU per 4 KiB write (us)" "$tap_cpu"
}
if [ "${BENCH_WRITE_QUICK:-}" = 1 ]; then
	echo "== FUSE tap over io_uring ($HS)"
	tap true
	tap_rows
	exit 0
fi
echo "== FUSE tap over /dev/fuse"
tap false
dev_seq=$tap_seq dev_iops=$tap_iops dev_p99=$tap_p99 dev_cpu=$tap_cpu
echo "== FUSE tap over io_uring"
tap true

echo "== NBD: qemu-img convert -n of 512 MiB"
head -c $((512 << 20)) "$src" >"$work/nbd-src.raw"
"$HS" --repo "$work/repo" disk create vm --size 512M >/dev/null
# TCP on loopback, as qemu-nbd below and as the recorded figures were taken
# (--insecure-local: no client certificates; the default is a Unix socket).
"$HS" --repo "$work/repo" serve-nbd vm --listen 127.0.0.1:10899 --insecure-local 2>"$work/nbd.log" &
pids+=($!)
sleep 1
t=$(timed qemu-img convert -n -f raw -O raw "$work/nbd-src.raw" nbd://127.0.0.1:10899/vm)
hs_nbd=$(rate $((512 << 20)) "$t")
truncate -s 512M "$work/qnbd.raw"
qemu-nbd -f raw -t -p 10898 -x vm "$work/qnbd.raw" &
pids+=($!)
sleep 1
t=$(timed qemu-img convert -n -f raw -O raw "$work/nbd-src.raw" nbd://127.0.0.1:10898/vm)
q_nbd=$(rate $((512 << 20)) "$t")

tap_rows
row "same over /dev/fuse: sequential (MB/s)" "$dev_seq" "$plain_seq" "$(pct "$dev_seq" "$plain_seq")"
row "same over /dev/fuse: 4 KiB random (IOPS)" "$dev_iops" "$plain_iops" "$(pct "$dev_iops" "$plain_iops")"
row "same over /dev/fuse: p99 fsync (us)" "$dev_p99" "$plain_p99"
row "same over /dev/fuse: CPU per 4 KiB write (us)" "$dev_cpu"
row "NBD qemu-img convert -n (MB/s; vs qemu-nbd)" "$hs_nbd" "$q_nbd" "$(pct "$hs_nbd" "$q_nbd")"
