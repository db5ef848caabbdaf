#!/usr/bin/env bash
# make bench: read throughput of point-in-time images through the FUSE mount,
# beside a raw copy of the same image and a qcow2 chain holding the same
# history; import throughput and stored bytes per changed byte; then
# scripts/bench-open.sh (opening unlisted instants). Root only. Prints a
# summary table; figures and their meaning are in docs/PERFORMANCE.md.
#
# Scenario, per content variant (BENCH_VARIANTS, default "mixed random"):
#   a 2 GiB disk (BENCH_SIZE_MIB), imported as the first point from a base image:
#     mixed   32 extents of 64 MiB cycling random, hex text, random, zeros:
#             1 GiB incompressible, 512 MiB hex text (zstd -1: 0.51), 512 MiB zeros
#     random  2 GiB incompressible
#   then BENCH_POINTS (10) points, each ~8 MiB of writes (4-64 KiB, 4 KiB
#   aligned, random offsets, fresh random content), applied with qemu-io to
#   the raw image (then imported) and to a new qcow2 overlay of the chain;
#   the last point writes half-compressible blocks (2 KiB random + 2 KiB zeros).
#   The newest point and the middle one are read BENCH_REPS (3) times each
#   way; medians are reported. Raw copies, repository and qcow2 chain all live
#   in one directory under BENCH_DIR (default /var/tmp), one filesystem.
# Cold: the files are first read once (so the hypervisor caches both sides
# alike), then dropped from this VM's page cache, and the mount restarted
# (empty pebble caches). Repeated with reads of the disk capped by a blkio
# cgroup at BENCH_THROTTLE_MBPS (550, the disk's own rate; 0 skips): dd for
# the raw copy, the mount process for hindsight, qemu-img for qcow2.
set -euo pipefail
cd "$(dirname "$0")/.."
HS=${HS:-$(pwd)/bin/hindsight}
BENCH_DIR=${BENCH_DIR:-/var/tmp}
VARIANTS=${BENCH_VARIANTS:-mixed random}
REPS=${BENCH_REPS:-3}
SIZE_MIB=${BENCH_SIZE_MIB:-2048}
POINTS=${BENCH_POINTS:-10}
CHANGE=$((8 << 20)) # bytes written per point
OPEN=${BENCH_OPEN:-1}  # 0 skips scripts/bench-open.sh
# Cold reads are repeated with the disk capped at this rate (MB/s, 0: not):
# what this VM's disk delivers when the host has not cached the data.
THROTTLE=${BENCH_THROTTLE_MBPS:-550}

[ "$(id -u)" = 0 ] || { echo "bench-read.sh: needs root (FUSE, drop_caches)" >&2; exit 1; }
for t in qemu-img qemu-io perl mountpoint; do
	command -v "$t" >/dev/null || { echo "bench-read.sh: $t is missing (make deps)" >&2; exit 1; }
done
[ -x "$HS" ] || { echo "bench-read.sh: $HS missing (make build)" >&2; exit 1; }

work=$(mktemp -d "$BENCH_DIR/hindsight-bench.XXXXXX")
mnt=$work/mnt out=/dev/shm/hindsight-bench-$$.raw
mount_pid=""
cg=""
cleanup() {
	set +e
	stop_mount
	mountpoint -q "$mnt" 2>/dev/null && umount -l "$mnt"
	[ -n "$cg" ] && [ -d "$cg" ] && rmdir "$cg"
	rm -rf "$work" "$out"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '%s  %s\n' "$(date +%T)" "$*" >&2; }
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
now_ns() { date +%s%N; }
mbps() { awk -v b="$1" -v ns="$2" 'BEGIN { printf "%.0f", b * 1000 / ns }'; } # bytes, ns -> MB/s (10^6)
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# capped CMD...: runs CMD in the blkio cgroup that caps reads of the disk.
capped() { sh -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$cg" "$@"; }
. scripts/mount-lib.sh # the cd above makes this the project root

# read_rate FILE [capped]: MB/s of dd reading the whole file with 1 MiB requests.
read_rate() {
	local t0 t1 size
	size=$(stat -L -c %s "$1")
	t0=$(now_ns)
	${2:-} dd if="$1" of=/dev/null bs=1M status=none
	t1=$(now_ns)
	mbps "$size" $((t1 - t0))
}
# convert_rate FMT FILE [capped]: MB/s (of disk size) of qemu-img converting FILE to raw in /dev/shm.
convert_rate() {
	local t0 t1
	rm -f "$out"
	t0=$(now_ns)
	${3:-} qemu-img convert -f "$1" -O raw "$2" "$out"
	t1=$(now_ns)
	rm -f "$out"
	mbps $((SIZE_MIB << 20)) $((t1 - t0))
}

# gen_changes SEED DIR HALF: writes of 4-64 KiB at random 4 KiB-aligned offsets
# totalling CHANGE bytes, each with its own content file in DIR; prints one
# qemu-io command per line. HALF=1: each 4 KiB block is 2 KiB random + 2 KiB zeros.
gen_changes() {
	mkdir -p "$2"
	perl -e '
		my ($seed, $dir, $half, $total, $disk) = @ARGV;
		srand($seed);
		open(my $rnd, "<:raw", "/dev/urandom") or die;
		my ($done, $k) = (0, 0);
		while ($done < $total) {
			my $len = 4096 << int(rand(5));
			$len = $total - $done if $len > $total - $done;
			my $off = int(rand(($disk - $len) / 4096 + 1)) * 4096;
			my $buf = "";
			for (my $b = 0; $b < $len; $b += 4096) {
				my $blk;
				if ($half) { read($rnd, $blk, 2048) == 2048 or die; $blk .= "\0" x 2048 }
				else { read($rnd, $blk, 4096) == 4096 or die }
				$buf .= $blk;
			}
			open(my $o, ">:raw", "$dir/w$k") or die; print $o $buf; close $o;
			print "write -q -s $dir/w$k $off $len\n";
			$done += $len; $k++;
		}' "$1" "$2" "$3" "$CHANGE" $((SIZE_MIB << 20))
}

# gen_base VARIANT FILE
gen_base() {
	rm -f "$2"
	local e n=$((SIZE_MIB / 64))
	for ((e = 0; e < n; e++)); do
		case "$1:$((e % 4))" in
		random:* | mixed:0 | mixed:2) dd if=/dev/urandom bs=1M count=64 status=none ;;
		mixed:1) head -c 32M /dev/urandom | perl -e 'binmode STDIN; while (read(STDIN, my $b, 1 << 16)) { print unpack("H*", $b) }' ;;
		mixed:3) dd if=/dev/zero bs=1M count=64 status=none ;;
		esac
	done >"$2"
	[ "$(stat -c %s "$2")" = $((SIZE_MIB << 20)) ] || { echo "base image has the wrong size" >&2; exit 1; }
}

seg_bytes() { du -sb "$repo/segments" | cut -f1; }
prime() { cat "$@" >/dev/null; }

# pair VARIANT POINT REF_NAME REF_ARRAY NAME ARRAY TARGET: two rows, the
# reference's median and the measured median with its ratio; TARGET ">=0.80"
# is judged, anything else is shown as information.
pair() {
	local -n ref=$4 val=$6
	local a b ratio result
	b=$(median "${ref[@]}") a=$(median "${val[@]}")
	ratio=$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f", a / b }')
	result=info
	[ "$7" = ">=0.80" ] && result=$(awk -v r="$ratio" 'BEGIN { print (r >= 0.8) ? "PASS" : "FAIL" }')
	row "$1" "$2" "$3" "$b" - - "MB/s, reference (${ref[*]})"
	row "$1" "$2" "$5" "$a" "$ratio" "$7" "$result (${val[*]})"
}

rows=() # summary table rows
row() { rows+=("$(printf '%-7s %-8s %-38s %9s %6s %7s %s' "$@")"); }

t0=$(( $(date +%s) - 86400 )) # the base point: a day ago; points follow a minute apart
at() { echo "@$((t0 + 60 * $1))"; }

run_variant() {
	local v=$1 i
	repo=$work/$v/repo
	local dir=$work/$v cur=$work/$v/cur.raw
	mkdir -p "$dir"
	log "[$v] base image ($SIZE_MIB MiB)"
	gen_base "$v" "$cur"
	qemu-img convert -f raw -O qcow2 "$cur" "$dir/ov0.qcow2"
	"$HS" --repo "$repo" init >/dev/null
	"$HS" --repo "$repo" disk create d --size "${SIZE_MIB}M" >/dev/null
	local nonzero
	nonzero=$(perl -e 'open(my $f, "<:raw", $ARGV[0]) or die; my $n = 0;
		while (read($f, my $b, 4096)) { $n++ if $b =~ /[^\0]/ } print $n * 4096' "$cur")
	prime "$cur"; drop_caches
	log "[$v] import the base (caches dropped)"
	local s0 s1 a b
	s0=$(seg_bytes); a=$(now_ns)
	"$HS" --repo "$repo" import d "$cur" --at "$(at 0)" >/dev/null
	b=$(now_ns); s1=$(seg_bytes)
	row "$v" base "import of the base, cold source, MB/s" "$(mbps $((SIZE_MIB << 20)) $((b - a)))" - - "info"
	row "$v" base "stored / non-zero bytes" "$(awk -v s=$((s1 - s0)) -v n="$nonzero" 'BEGIN { printf "%.3f", s / n }')" - - "info ($((s1 - s0)) / $nonzero)"

	local mid=$((POINTS / 2)) half changed rnd_st=0 rnd_ch=0 half_st=0 half_ch=0 imp_ns=0
	for ((i = 1; i <= POINTS; i++)); do
		half=0; [ "$i" = "$POINTS" ] && half=1
		gen_changes $((1000 + i)) "$dir/chg$i" "$half" >"$dir/chg$i.cmds"
		local cmds=()
		while IFS= read -r c; do cmds+=(-c "$c"); done <"$dir/chg$i.cmds"
		qemu-io -f raw "${cmds[@]}" "$cur"
		qemu-img create -q -f qcow2 -b "$dir/ov$((i - 1)).qcow2" -F qcow2 "$dir/ov$i.qcow2"
		qemu-io -f qcow2 "${cmds[@]}" "$dir/ov$i.qcow2"
		s0=$(seg_bytes); a=$(now_ns)
		changed=$("$HS" --repo "$repo" --json import d "$cur" --at "$(at "$i")" | grep -o '"blocks_changed": *[0-9]*' | grep -o '[0-9]*$')
		b=$(now_ns); s1=$(seg_bytes)
		imp_ns=$((imp_ns + b - a))
		if [ "$half" = 1 ]; then half_st=$((half_st + s1 - s0)) half_ch=$((half_ch + changed * 4096))
		else rnd_st=$((rnd_st + s1 - s0)) rnd_ch=$((rnd_ch + changed * 4096)); fi
		[ "$i" = "$mid" ] && cp --sparse=never "$cur" "$dir/mid.raw"
		rm -rf "$dir/chg$i"
	done
	log "[$v] $POINTS points imported"
	row "$v" points "import of a point (s, mean)" "$(awk -v n=$imp_ns -v p="$POINTS" 'BEGIN { printf "%.2f", n / p / 1e9 }')" - - "info (whole 2 GiB image re-read and hashed)"
	row "$v" points "stored / changed, incompressible" "$(awk -v s=$rnd_st -v c=$rnd_ch 'BEGIN { printf "%.3f", s / c }')" "" "<=1.1" \
		"$(awk -v s=$rnd_st -v c=$rnd_ch 'BEGIN { print (s <= 1.1 * c) ? "PASS" : "FAIL" }') ($rnd_st / $rnd_ch)"
	local qb=0
	for ((i = 1; i <= POINTS; i++)); do qb=$((qb + $(du -b "$dir/ov$i.qcow2" | cut -f1))); done
	row "$v" points "qcow2 overlays / changed (peer)" "$(awk -v s=$qb -v c=$((rnd_ch + half_ch)) 'BEGIN { printf "%.3f", s / c }')" - - "peer ($qb / $((rnd_ch + half_ch)), 64 KiB clusters)"
	row "$v" points "stored / changed, half-compressible" "$(awk -v s=$half_st -v c=$half_ch 'BEGIN { printf "%.3f", s / c }')" "" "<=0.7" \
		"$(awk -v s=$half_st -v c=$half_ch 'BEGIN { print (s <= 0.7 * c) ? "PASS" : "FAIL" }') ($half_st / $half_ch)"

	local which p raw ov flat vmdk r chain
	for which in newest middle; do
		if [ "$which" = newest ]; then p=$POINTS raw=$cur; else p=$mid raw=$dir/mid.raw; fi
		ov=$dir/ov$p.qcow2 flat=$mnt/d/$(at "$p")/d-flat.vmdk vmdk=$mnt/d/$(at "$p")/d.vmdk
		chain=()
		for ((i = 0; i <= p; i++)); do chain+=("$dir/ov$i.qcow2"); done
		# Correctness first: the served image and the qcow2 top are the raw copy.
		start_mount
		cmp "$flat" "$raw" || { echo "bench-read.sh: $which point served by hindsight differs from the raw copy" >&2; exit 1; }
		qemu-img compare -q -f qcow2 -F raw "$ov" "$raw" || { echo "bench-read.sh: qcow2 chain differs from the raw copy" >&2; exit 1; }
		stop_mount
		log "[$v] read the $which point (p$p) x$REPS"
		local rc=() rw=() hc=() hw=() qc=() vc=() tc=() th=() tq=() tv=()
		for ((r = 0; r < REPS; r++)); do
			# "cold": not in this VM's page cache; primed first so that the
			# host holds both sides alike (see docs/PERFORMANCE.md).
			prime "$raw" "$repo"/segments/*.seg
			drop_caches
			rc+=("$(read_rate "$raw")"); rw+=("$(read_rate "$raw")")
			restart_mount; drop_caches
			hc+=("$(read_rate "$flat")"); hw+=("$(read_rate "$flat")")
			prime "${chain[@]}" "$repo"/segments/*.seg
			drop_caches
			qc+=("$(convert_rate qcow2 "$ov")")
			restart_mount; drop_caches
			vc+=("$(convert_rate vmdk "$vmdk")")
			if [ -n "$cg" ]; then # the same, reading the disk at most at $THROTTLE MB/s
				drop_caches
				tc+=("$(read_rate "$raw" capped)")
				restart_mount capped; drop_caches
				th+=("$(read_rate "$flat")")
				drop_caches
				tq+=("$(convert_rate qcow2 "$ov" capped)")
				restart_mount capped; drop_caches
				tv+=("$(convert_rate vmdk "$vmdk")")
			fi
		done
		stop_mount
		log "[$v] $which: raw ${rc[*]} / ${rw[*]}; hindsight ${hc[*]} / ${hw[*]}; convert qcow2 ${qc[*]}, vmdk ${vc[*]}"
		[ -n "$cg" ] && log "[$v] $which, disk capped at $THROTTLE MB/s: raw ${tc[*]}; hindsight ${th[*]}; convert qcow2 ${tq[*]}, vmdk ${tv[*]}"
		pair "$v" "$which" "dd raw copy, cold" rc "dd hindsight flat.vmdk, cold" hc ">=0.80"
		pair "$v" "$which" "dd raw copy, 2nd (page cache)" rw "dd hindsight flat.vmdk, 2nd" hw ">=0.80"
		pair "$v" "$which" "convert qcow2 chain, cold" qc "convert hindsight vmdk, cold" vc "vs peer"
		if [ -n "$cg" ]; then
			pair "$v" "$which" "dd raw copy, cold, ${THROTTLE} MB/s disk" tc "dd hindsight, cold, ${THROTTLE} MB/s disk" th ">=0.80"
			pair "$v" "$which" "convert qcow2, cold, ${THROTTLE} MB/s disk" tq "convert vmdk, cold, ${THROTTLE} MB/s disk" tv "vs peer"
		fi
	done
	rm -rf "$dir"
}

# busy_pct: the share of CPU time the whole machine spent busy over one second.
busy_pct() {
	local a b
	a=($(head -1 /proc/stat)); sleep 1; b=($(head -1 /proc/stat))
	awk -v u=$((b[1] + b[2] + b[3] + b[6] + b[7] + b[8] - a[1] - a[2] - a[3] - a[6] - a[7] - a[8])) \
		-v i=$((b[4] + b[5] - a[4] - a[5])) 'BEGIN { printf "%.0f", 100 * u / (u + i) }'
}
idle_check() {
	local busy
	busy=$(busy_pct)
	if [ "$busy" -gt 10 ]; then
		rows+=("WARNING: the machine was ${busy}% busy $1 the run (load $(cut -d' ' -f1-3 /proc/loadavg)); figures are disturbed")
		log "WARNING: machine ${busy}% busy $1 the run: $(ps -eo pcpu,comm --sort=-pcpu | sed -n 2,4p | tr -s ' \n' ' ')"
	fi
}

idle_check before
if [ "$THROTTLE" -gt 0 ] && [ -f /sys/fs/cgroup/blkio/blkio.throttle.read_bps_device ]; then
	cg=/sys/fs/cgroup/blkio/hindsight-bench-$$
	mkdir "$cg"
	echo "$(findmnt -no MAJ:MIN -T "$work" | tr -d ' ') $((THROTTLE * 1000000))" >"$cg/blkio.throttle.read_bps_device"
fi
log "bench-read: work dir $work ($(df --output=source "$work" | tail -1)), $(nproc) cores, $(uname -r)"
for v in $VARIANTS; do run_variant "$v"; done

if [ "$OPEN" = 1 ]; then
	log "bench-open"
	while IFS= read -r l; do rows+=("$l"); done < <(bash scripts/bench-open.sh --rows)
fi

idle_check after
echo
echo "== bench-read summary ($(date -u +%FT%TZ), commit $(git describe --always --dirty 2>/dev/null || echo unknown), $(nproc) cores, $(uname -r), medians of $REPS)"
printf '%-7s %-8s %-38s %9s %6s %7s %s\n' variant point measure value ratio target result
for r in "${rows[@]}"; do echo "$r"; done
