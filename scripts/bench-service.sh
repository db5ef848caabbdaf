#!/usr/bin/env bash
# Benchmarks of the service (issue 17), one run each, figures printed:
#   a. four disks protected by one `hindsight serve`, four concurrent fio jobs
#      (one per disk), against one disk alone in the same run: aggregate/alone
#      and slowest/fastest, for 4 KiB random writes with an fsync every 64
#      (--fsync=64 --ioengine=psync) and 1 MiB sequential writes with a final
#      fsync (--end_fsync=1). Targets: aggregate >= 0.9x alone, slowest >= 0.66x
#      the fastest.
#   b. the same four-at-once jobs on four qcow2 files (cluster_size=128k,
#      extended_l2=on) exported over FUSE by one qemu-storage-daemon, the closest
#      peer (a userspace FUSE disk keeping no history): Hindsight/qsd ratios.
#      Targets: >= 3x for 4 KiB, >= 1x sequential.
#   c. sixteen protected disks under load (sixteen concurrent 4 KiB jobs): the
#      service's peak resident memory (VmHWM), target < 512 MiB; then, idle, the
#      service's CPU time over 10 s (utime+stime in /proc/PID/stat), beside the
#      same service's idle CPU time before it protected anything: an idle
#      protection should add none (no polling).
# Settings (environment): BENCH_SIZE per disk (1G), BENCH_SECONDS of each 4 KiB
# run (20), BENCH_SIZE16 per disk in c (256M), BENCH_DIR for the repositories
# and qcow2 files (/var/tmp; needs about 6x BENCH_SIZE + 16x BENCH_SIZE16 free),
# BENCH_PARTS (abc) to run only some parts. A quick check of the script itself:
#   BENCH_SIZE=64M BENCH_SIZE16=16M BENCH_SECONDS=2 bash scripts/bench-service.sh
# Root (FUSE). Cleans up after itself, also on failure or Ctrl-C.
set -euo pipefail
HS=${HS:-$(pwd)/bin/hindsight}
SIZE=${BENCH_SIZE:-1G} SIZE16=${BENCH_SIZE16:-256M} SECONDS_4K=${BENCH_SECONDS:-20}
PARTS=${BENCH_PARTS:-abc}
BASE=${BENCH_DIR:-/var/tmp}
[ "$(id -u)" = 0 ] || { echo "bench-service: run as root (FUSE)" >&2; exit 2; }
[ -x "$HS" ] || { echo "bench-service: $HS missing: run 'make build'" >&2; exit 2; }
for t in fio qemu-img qemu-storage-daemon python3; do
	command -v $t >/dev/null || { echo "bench-service: $t missing: make deps EXTRA_PKGS='fio qemu-system-common'" >&2; exit 1; }
done
work=$(mktemp -d "$BASE/hindsight-sbench.XXXXXX")
serve_pid="" qsd_pid=""

stop() { # PID: SIGTERM, then wait for it (a service flushes and unmounts)
	kill -TERM "$1" 2>/dev/null || return 0
	wait "$1" 2>/dev/null || true
}
cleanup() {
	local rc=$?
	set +e
	[ -n "$serve_pid" ] && stop "$serve_pid"
	[ -n "$qsd_pid" ] && stop "$qsd_pid"
	# whatever a killed process left mounted, innermost first
	grep -o " $work/[^ ]*" /proc/mounts | sort -r | while read -r m; do umount -l "$m"; done
	if grep -q " $work/" /proc/mounts; then
		echo "bench-service: still mounted, $work left in place" >&2
	else
		rm -rf --one-file-system "$work"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

py() { python3 -c "$@"; }
ratio() { py "print(f'{$1/$2:.2f}x')"; }
row() { printf '  %-46s %12s %12s %8s\n' "$@"; }

# fio_4k FILE...: 4 KiB random writes on each FILE at once, one job per file,
# fsync every 64, for SECONDS_4K; prints "TOTAL;JOB1 JOB2 ..." in IOPS.
fio_4k() {
	local args=() f
	for f; do args+=(--name="$(basename "$f")" --filename="$f"); done
	fio --output-format=json --rw=randwrite --bs=4k --fsync=64 --ioengine=psync --refill_buffers \
		--randrepeat=1 --size="$SIZE_NOW" --runtime="$SECONDS_4K" --time_based "${args[@]}" 2>"$work/fio.err" |
		py 'import json,sys; v=[j["write"]["iops"] for j in json.load(sys.stdin)["jobs"]]; print("%.0f;%s" % (sum(v), " ".join("%.0f" % x for x in v)))'
}
# fio_seq FILE...: 1 MiB sequential writes of the whole file, fsync at the
# end, on each FILE at once; prints "TOGETHER;JOB1 JOB2 ..." in MB/s.
fio_seq() {
	local args=() f
	for f; do args+=(--name="$(basename "$f")" --filename="$f"); done
	fio --output-format=json --rw=write --bs=1M --end_fsync=1 --ioengine=psync --refill_buffers \
		--size="$SIZE_NOW" "${args[@]}" 2>"$work/fio.err" |
		py 'import json,sys
jobs = json.load(sys.stdin)["jobs"]
# together: all bytes over the longest job (jobs do not end at once)
agg = sum(j["write"]["io_bytes"] for j in jobs) / max(j["job_runtime"] for j in jobs) * 1e3 / 1e6
print("%.0f;%s" % (agg, " ".join("%.0f" % (j["write"]["bw_bytes"] / 1e6) for j in jobs)))'
}
# of "TOTAL;JOB1 JOB2 ...": total, per job, slowest and fastest job
total() { echo "${1%%;*}"; }
jobs() { echo "${1#*;}"; }
minmax() { py "v=[float(x) for x in '${1#*;}'.split()]; print(f'{min(v):.0f} {max(v):.0f}')"; }

# serve REPO: init REPO and start `hindsight serve` on it (pid in serve_pid).
serve() {
	"$HS" --repo "$1" init >/dev/null
	"$HS" --repo "$1" serve 2>"$1.log" &
	serve_pid=$!
	for _ in $(seq 100); do "$HS" --repo "$1" protections >/dev/null 2>&1 && return; sleep 0.1; done
	cat "$1.log"; echo "bench-service: the service did not answer in 10 s" >&2; exit 1
}
# protect REPO N SIZE: disks d1..dN of SIZE, protected by the service as taps
# REPO.tap/dI/dI.img.
protect() {
	local i out
	for i in $(seq "$2"); do
		"$HS" --repo "$1" disk create "d$i" --size "$3" >/dev/null
		out=$("$HS" --repo "$1" protect "d$i" --mount "$1.tap/d$i" 2>&1) || { echo "$out" >&2; exit 1; }
	done
}
service() { serve "$1"; protect "$@"; }
taps() { local i; for i in $(seq "$2"); do echo "$1.tap/d$i/d$i.img"; done; }

if [[ $PARTS == *a* || $PARTS == *b* ]]; then
	SIZE_NOW=$SIZE
	echo "== a. four disks of $SIZE under one service, four fio jobs at once, vs one alone ($SECONDS_4K s per 4 KiB run)"
	service "$work/r4" 4 "$SIZE"
	mapfile -t files < <(taps "$work/r4" 4)
	alone_4k=$(fio_4k "${files[0]}")
	alone_seq=$(fio_seq "${files[0]}")
	four_4k=$(fio_4k "${files[@]}")
	four_seq=$(fio_seq "${files[@]}")
	stop "$serve_pid"; serve_pid=""
	read -r min4 max4 <<<"$(minmax "$four_4k")"
	read -r mins maxs <<<"$(minmax "$four_seq")"
	agg4=$(total "$four_4k") aggs=$(total "$four_seq")
	alone_4k=$(total "$alone_4k") alone_seq=$(total "$alone_seq")
	echo "  per disk, 4 KiB IOPS: $(jobs "$four_4k"); sequential MB/s: $(jobs "$four_seq")"
	row "" "four" "one alone" "ratio"
	row "4 KiB random, fsync/64 (IOPS): aggregate" "$agg4" "$alone_4k" "$(ratio "$agg4" "$alone_4k")"
	row "1 MiB sequential, end fsync (MB/s): aggregate" "$aggs" "$alone_seq" "$(ratio "$aggs" "$alone_seq")"
	row "" "slowest" "fastest" "ratio"
	row "4 KiB random: slowest/fastest disk" "$min4" "$max4" "$(ratio "$min4" "$max4")"
	row "1 MiB sequential: slowest/fastest disk" "$mins" "$maxs" "$(ratio "$mins" "$maxs")"
	echo "  targets: aggregate >= 0.90x alone, slowest >= 0.66x fastest"
fi

if [[ $PARTS == *b* ]]; then
	echo
	echo "== b. the same four jobs on qemu-storage-daemon: qcow2 (128k clusters, extended_l2) over FUSE"
	args=()
	for i in 1 2 3 4; do
		q=$work/q$i.qcow2
		qemu-img create -q -f qcow2 -o cluster_size=128k,extended_l2=on "$q" "$SIZE"
		: >"$work/q$i.img" # the export's mount point: a file that exists
		args+=(--blockdev "driver=file,node-name=f$i,filename=$q"
			--blockdev "driver=qcow2,node-name=q$i,file=f$i"
			--export "type=fuse,id=e$i,node-name=q$i,mountpoint=$work/q$i.img,writable=on")
	done
	qemu-storage-daemon "${args[@]}" 2>"$work/qsd.log" &
	qsd_pid=$!
	for _ in $(seq 100); do [ "$(grep -c " $work/q[1-4].img " /proc/mounts)" = 4 ] && break; sleep 0.1; done
	[ "$(grep -c " $work/q[1-4].img " /proc/mounts)" = 4 ] || { cat "$work/qsd.log"; echo "qemu-storage-daemon did not export" >&2; exit 1; }
	qsd_4k=$(fio_4k "$work"/q{1,2,3,4}.img)
	qsd_seq=$(fio_seq "$work"/q{1,2,3,4}.img)
	stop "$qsd_pid"; qsd_pid=""
	qagg4=$(total "$qsd_4k") qaggs=$(total "$qsd_seq")
	echo "  per disk, 4 KiB IOPS: $(jobs "$qsd_4k"); sequential MB/s: $(jobs "$qsd_seq")"
	row "four at once" "hindsight" "qsd" "ratio"
	row "4 KiB random, fsync/64 (IOPS)" "$agg4" "$qagg4" "$(ratio "$agg4" "$qagg4")"
	row "1 MiB sequential, end fsync (MB/s)" "$aggs" "$qaggs" "$(ratio "$aggs" "$qaggs")"
	echo "  targets: >= 3x for 4 KiB, >= 1x sequential"
fi

if [[ $PARTS == *c* ]]; then
	SIZE_NOW=$SIZE16
	echo
	echo "== c. sixteen disks of $SIZE16 under one service: memory under load, CPU when idle"
	serve "$work/r16"
	ticks() { awk '{print $14 + $15}' "/proc/$serve_pid/stat"; } # utime + stime
	hz=$(getconf CLK_TCK)
	idle() { # CPU time of the service over 10 s: "ticks seconds %-of-a-core"
		local t0 t1; t0=$(ticks); sleep 10; t1=$(ticks)
		py "print('%d ticks (%.2f s, %.2f%% of a core)' % ($t1-$t0, ($t1-$t0)/$hz, 100*($t1-$t0)/$hz/10))"
	}
	sleep 1
	echo "  idle, no protection: CPU time over 10 s: $(idle)"
	protect "$work/r16" 16 "$SIZE16"
	mapfile -t files < <(taps "$work/r16" 16)
	load=$(fio_4k "${files[@]}")
	echo "  4 KiB IOPS of the sixteen jobs together: $(total "$load")"
	hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$serve_pid/status")
	rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$serve_pid/status")
	printf '  peak resident memory (VmHWM): %d MiB (now %d MiB); target < 512 MiB\n' $((hwm / 1024)) $((rss / 1024))
	sleep 3 # past the sync interval: the last writes are synced and published
	echo "  idle, 16 protections, after the load: CPU time over 10 s: $(idle)"
	echo "  target: no more than with no protection (no polling)"
	stop "$serve_pid"; serve_pid=""
fi
