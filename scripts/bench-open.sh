#!/usr/bin/env bash
# Opening instants never looked up before, in the store and through the mount.
# Run by scripts/bench-read.sh (make bench); root only. Per journal size (1M
# block versions; 10M as well with HINDSIGHT_BENCH_10M=1):
#   store   BenchmarkOpenInstant, 2000 opens: PointAt + Image + 4 KiB ReadAt
#   mount   the same journal written by TestBenchRepo, mounted with
#           bin/hindsight; TestBenchMountOpen times stat of a random instant
#           name + open of its flat image + a 4 KiB read, 200 names (warm:
#           the mount has served the others before), and 5 single opens each
#           right after drop_caches and a mount restart (cold), and 100
#           names, one every 100 ms, while a writer (TestBenchWriter) captures
#           1 MiB every 20 ms and publishes every second, as protect (live).
# With --rows it prints only summary rows for bench-read.sh's table.
set -euo pipefail
cd "$(dirname "$0")/.."
HS=${HS:-$(pwd)/bin/hindsight}
BENCH_DIR=${BENCH_DIR:-/var/tmp}
N=${BENCH_OPEN_N:-200}
COLD=${BENCH_OPEN_COLD:-5}
LIVE_N=${BENCH_OPEN_LIVE_N:-100}
LIVE_SECONDS=${BENCH_OPEN_LIVE_SECONDS:-25}
rows_only=0
[ "${1:-}" = --rows ] && rows_only=1
[ "$(id -u)" = 0 ] || { echo "bench-open.sh: needs root (FUSE, drop_caches)" >&2; exit 1; }
[ -x "$HS" ] || { echo "bench-open.sh: $HS missing (make build)" >&2; exit 1; }

work=$(mktemp -d "$BENCH_DIR/hindsight-open.XXXXXX")
mnt=$work/mnt mount_pid="" repo="" writer=""
cleanup() {
	set +e
	[ -n "$writer" ] && kill "$writer" 2>/dev/null && wait "$writer"
	stop_mount
	mountpoint -q "$mnt" 2>/dev/null && umount -l "$mnt"
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '%s  %s\n' "$(date +%T)" "$*" >&2; }
. scripts/mount-lib.sh # the cd above makes this the project root
field() { grep -o "$1=[0-9.]*" | head -1 | cut -d= -f2; }                     # field NAME < "NAME=value ..."
metric() { awk -v u="$1" '{ for (i = 1; i < NF; i++) if ($(i + 1) == u) { print $i; exit } }'; } # metric UNIT < "value UNIT ..."
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
rows=()
row() { rows+=("$(printf '%-7s %-8s %-38s %9s %6s %7s %s' "$@")"); }
ms() { awk -v ns="$1" 'BEGIN { printf "%.3f", ns / 1e6 }'; }
pass() { awk -v v="$1" -v l="$2" 'BEGIN { print (v < l) ? "PASS" : "FAIL" }'; }

log "bench-open: compile the store benchmarks"
"${GO:-go}" test -c -o "$work/store.test" ./store/

log "bench-open: BenchmarkOpenInstant x2000"
bench=$(cd store && "$work/store.test" -test.run '^$' -test.bench '^BenchmarkOpenInstant$' -test.benchtime 2000x)
[ "$rows_only" = 1 ] || echo "$bench"
sizes=(1M)
[ "${HINDSIGHT_BENCH_10M:-}" = 1 ] && sizes+=(10M)
declare -A p99
for s in "${sizes[@]}"; do
	line=$(grep "versions=$s" <<<"$bench")
	row "$s" store "PointAt+Image+4K read, p50 ms" "$(ms "$(metric p50-ns <<<"$line")")" - - "info"
	row "$s" store "PointAt+Image+4K read, p99 ms" "$(ms "$(metric p99-ns <<<"$line")")" - "<5" "$(pass "$(ms "$(metric p99-ns <<<"$line")")" 5) (max $(ms "$(metric max-ns <<<"$line")"))"
	row "$s" store "first after opening the view, ms" "$(ms "$(metric first-ns <<<"$line")")" - "<5" "$(pass "$(ms "$(metric first-ns <<<"$line")")" 5) (build $(metric build-s <<<"$line") s)"
done

for s in "${sizes[@]}"; do
	repo=$work/repo-$s
	mkdir -p "$repo"
	log "bench-open: write the $s-version repository"
	if [ "$s" = 10M ]; then info=$(HINDSIGHT_BENCH_10M=1 HINDSIGHT_BENCH_REPO=$repo "$work/store.test" -test.run '^TestBenchRepo$' | grep bench-repo)
	else info=$(HINDSIGHT_BENCH_10M= HINDSIGHT_BENCH_REPO=$repo "$work/store.test" -test.run '^TestBenchRepo$' | grep bench-repo); fi
	first=$(field first <<<"$info") last=$(field last <<<"$info")
	export HINDSIGHT_BENCH_MOUNT=$mnt/bench HINDSIGHT_BENCH_FIRST=$first HINDSIGHT_BENCH_LAST=$last
	start_mount
	log "bench-open: $N opens through the mount ($s)"
	line=$(HINDSIGHT_BENCH_N=$N HINDSIGHT_BENCH_WARMUP=10 "$work/store.test" -test.run '^TestBenchMountOpen$' | grep bench-open)
	[ "$rows_only" = 1 ] || echo "$s warm: $line"
	row "$s" mount "stat+open+4K read, median ms" "$(field median-ms <<<"$line")" - - "info (n=$N)"
	row "$s" mount "stat+open+4K read, p99 ms" "$(field p99-ms <<<"$line")" - "<5" "$(pass "$(field p99-ms <<<"$line")" 5) (max $(field max-ms <<<"$line"))"
	p99[$s]=$(field p99-ms <<<"$line")
	cold=()
	for ((i = 0; i < COLD; i++)); do
		stop_mount
		sync; echo 3 >/proc/sys/vm/drop_caches
		start_mount
		line=$(HINDSIGHT_BENCH_N=1 HINDSIGHT_BENCH_SEED=$i "$work/store.test" -test.run '^TestBenchMountOpen$' | grep bench-open)
		cold+=("$(field median-ms <<<"$line")")
	done
	[ "$rows_only" = 1 ] || echo "$s cold: ${cold[*]}"
	m=$(median "${cold[@]}")
	row "$s" mount "cold first open, median of $COLD ms" "$m" - "<5" "$(pass "$m" 5) (${cold[*]})"
	# A live writer beside the mount, as protect: a captured 1 MiB step every
	# 20 ms, synced and published every second (a view the mount moves to).
	log "bench-open: $LIVE_N opens through the mount beside a live writer ($s)"
	HINDSIGHT_BENCH_WRITER=$repo HINDSIGHT_BENCH_WRITER_SECONDS=$LIVE_SECONDS "$work/store.test" -test.run '^TestBenchWriter$' >"$work/writer.out" &
	writer=$!
	sleep 2
	line=$(HINDSIGHT_BENCH_N=$LIVE_N HINDSIGHT_BENCH_PACE_MS=100 "$work/store.test" -test.run '^TestBenchMountOpen$' | grep bench-open)
	wait "$writer"
	writer=""
	wline=$(grep bench-writer "$work/writer.out")
	[ "$rows_only" = 1 ] || echo "$s live: $line; $wline"
	row "$s" live "stat+open+4K read, median ms" "$(field median-ms <<<"$line")" - - "info (n=$LIVE_N; writer: $(field steps <<<"$wline") steps, $(field publishes <<<"$wline") publishes of $(field publish-ms <<<"$wline") ms)"
	row "$s" live "stat+open+4K read, p99 ms" "$(field p99-ms <<<"$line")" - "<5" "$(pass "$(field p99-ms <<<"$line")" 5) (max $(field max-ms <<<"$line"))"
	stop_mount
	rm -rf "$repo"
done
if [ -n "${p99[10M]:-}" ]; then
	row 10M mount "p99 10M / p99 1M" "$(awk -v a="${p99[10M]}" -v b="${p99[1M]}" 'BEGIN { printf "%.2f", a / b }')" - "no slower" \
		"$(awk -v a="${p99[10M]}" -v b="${p99[1M]}" 'BEGIN { print (a < 5 && a <= 1.5 * b) ? "PASS" : "FAIL" }') (<5 ms and <=1.5x)"
fi

if [ "$rows_only" = 1 ]; then
	for r in "${rows[@]}"; do echo "$r"; done
else
	echo
	printf '%-7s %-8s %-38s %9s %6s %7s %s\n' journal where measure value ratio target result
	for r in "${rows[@]}"; do echo "$r"; done
fi
