#!/usr/bin/env bash
# Freeze-to-thaw of application bookmarks (issue 4), through the CLI, on
# ext4 on a protected disk (FUSE tap + loop device):
#   1. fsfreeze agent, idle filesystem, then with fio writing (4 KiB, fsync/64)
#   2. postgres agent, PostgreSQL idle, then with pgbench running
#   3. postgres + fsfreeze together, pgbench running
# Each bookmark's report gives freeze-to-thaw, the agents' steps and the mark.
# Root. Cleans up after itself, also on Ctrl-C. docs/PERFORMANCE.md holds the figures.
set -euo pipefail
HS=${HS:-$(pwd)/bin/hindsight}
BASE=${BENCH_DIR:-/var/tmp}
N=${BENCH_QUIESCE_N:-20}         # bookmarks per fsfreeze scenario
NPG=${BENCH_QUIESCE_PG_N:-10}    # bookmarks per postgres scenario
SCALE=${BENCH_PGBENCH_SCALE:-10} # pgbench scale (10 ≈ 160 MB)
PGBIN=${PG_BINDIR:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
for t in fio mkfs.ext4 losetup runuser python3 "$PGBIN/postgres" "$PGBIN/pgbench"; do
	command -v "$t" >/dev/null || { echo "$t missing: make deps" >&2; exit 1; }
done

work=$(mktemp -d "$BASE/hindsight-qbench.XXXXXX")
pids=() dev=""
cleanup() {
	set +e
	[ -n "${bench_pid:-}" ] && kill "$bench_pid" 2>/dev/null && wait "$bench_pid" 2>/dev/null
	[ -n "${fio_pid:-}" ] && kill "$fio_pid" 2>/dev/null && wait "$fio_pid" 2>/dev/null
	[ -f "$work/fs/pgdata/postmaster.pid" ] && runuser -u postgres -- "$PGBIN/pg_ctl" -D "$work/fs/pgdata" -m immediate stop >/dev/null 2>&1
	mountpoint -q "$work/fs" && { fsfreeze -u "$work/fs" 2>/dev/null; umount "$work/fs"; }
	[ -n "$dev" ] && losetup -d "$dev"
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
	mountpoint -q "$work/tap" && umount -l "$work/tap"
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

repo=$work/repo
"$HS" --repo "$repo" init >/dev/null
"$HS" --repo "$repo" disk create db --size 1G >/dev/null
mkdir "$work/tap" "$work/fs"
"$HS" --repo "$repo" protect db --mount "$work/tap" 2>"$work/protect.log" &
pids+=($!)
for _ in $(seq 100); do mountpoint -q "$work/tap" && break; sleep 0.1; done
dev=$(losetup -f --show "$work/tap/db.img")
mkfs.ext4 -q -E lazy_itable_init=0,lazy_journal_init=0 "$dev"
mount "$dev" "$work/fs"

# bookmarks SCENARIO COUNT PAUSE FLAGS…: takes COUNT application bookmarks,
# keeping each report in $work/SCENARIO.jsonl.
bookmarks() {
	local name=$1 count=$2 pause=$3
	shift 3
	for i in $(seq "$count"); do
		"$HS" --repo "$repo" --json bookmark db "$name-$i" --consistency application "$@" |
			python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["quiesce"]))' >>"$work/$name.jsonl"
		sleep "$pause"
	done
}

echo "== fsfreeze, idle"
sync
bookmarks fs-idle "$N" 0.2 --freeze "$work/fs"
echo "== fsfreeze, fio writing"
fio --name=w --filename="$work/fs/fio.dat" --rw=randwrite --bs=4k --size=256M --fsync=64 --ioengine=psync \
	--refill_buffers --time_based --runtime=3600 >/dev/null 2>&1 &
fio_pid=$!
sleep 3
bookmarks fs-busy "$N" 0.5 --freeze "$work/fs"
kill "$fio_pid"; wait "$fio_pid" 2>/dev/null || true; fio_pid=""
rm -f "$work/fs/fio.dat"

echo "== postgres: initdb, pgbench -i -s $SCALE"
mkdir "$work/fs/pgdata" "$work/sock"
chown postgres: "$work/fs/pgdata" "$work/sock"
chmod o+x "$work"
runuser -u postgres -- "$PGBIN/initdb" -D "$work/fs/pgdata" -U postgres --auth=trust --no-instructions >/dev/null
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$work/fs/pgdata" -l "$work/sock/log" -w \
	-o "-k $work/sock -c listen_addresses= -c shared_buffers=128MB -c max_wal_size=1GB" start >/dev/null
export PGHOST=$work/sock PGUSER=postgres
runuser -u postgres -- env PGHOST="$PGHOST" "$PGBIN/pgbench" -i -q -s "$SCALE" postgres >/dev/null 2>&1
runuser -u postgres -- env PGHOST="$PGHOST" "$PGBIN/psql" -Xqc CHECKPOINT postgres
dsn="host=$work/sock user=postgres dbname=postgres"
bookmarks pg-idle "$NPG" 0.5 --agent postgres --pg-dsn "$dsn"
echo "== postgres, pgbench -c 4 running"
runuser -u postgres -- env PGHOST="$PGHOST" "$PGBIN/pgbench" -n -c 4 -j 2 -T 3600 postgres >"$work/pgbench.log" 2>&1 &
bench_pid=$!
sleep 5
tx() { runuser -u postgres -- env PGHOST="$PGHOST" "$PGBIN/psql" -XAtqc "SELECT count(*) FROM pgbench_history" postgres; }
tx0=$(tx) t0=$(date +%s.%N)
bookmarks pg-busy "$NPG" 3 --agent postgres --pg-dsn "$dsn"
echo "== postgres + fsfreeze, pgbench running"
bookmarks pg-fs-busy "$NPG" 3 --agent postgres --pg-dsn "$dsn" --freeze "$work/fs"
tx1=$(tx) t1=$(date +%s.%N)
kill "$bench_pid"; wait "$bench_pid" 2>/dev/null || true; bench_pid=""

python3 - "$work" <<'PY'
import json, statistics, sys, re, glob, os
work = sys.argv[1]
PARTS = [("connected", "connect"), ("slot", "slot"), ("CHECKPOINT", "CHECKPOINT"),
         ("backup start", "backup start"), ("backup stop", "backup stop"), ("WAL flushed", "WAL flush")]
def ms(ns): return ns / 1e6
def q(xs):
    xs = sorted(xs)
    return statistics.median(xs), xs[min(len(xs) - 1, int(round(0.95 * (len(xs) - 1))))], xs[-1]
rows = []
for name in ["fs-idle", "fs-busy", "pg-idle", "pg-busy", "pg-fs-busy"]:
    reps = [json.loads(l) for l in open(os.path.join(work, name + ".jsonl"))]
    cols = {"freeze_to_thaw": [ms(r["freeze_to_thaw"]["ns"]) for r in reps],
            "held (mark)": [ms(r["held"]["ns"]) for r in reps]}
    for r in reps:
        for s in r["steps"]:
            if s["phase"] != "mark":
                cols.setdefault(s["agent"] + " " + s["phase"], []).append(ms(s["duration"]["ns"]))
            if s["agent"] == "postgres" and s["phase"] == "freeze":
                for line in s.get("output", "").splitlines():
                    d, what = line.split(None, 1)
                    v = float(re.sub(r"[a-zµ]+$", "", d)) * {"ns": 1e-6, "µs": 1e-3, "ms": 1, "s": 1e3}[re.sub(r"^[0-9.]+", "", d)]
                    part = next(p for k, p in PARTS if what.startswith(k))
                    cols.setdefault("  pg " + part, []).append(v)
    for k, v in cols.items():
        rows.append((name, k, len(v)) + q(v))
print(f"\n{'scenario':<11} {'measure':<22} {'n':>3} {'median ms':>10} {'p95 ms':>9} {'max ms':>9}")
for r in rows:
    print(f"{r[0]:<11} {r[1]:<22} {r[2]:>3} {r[3]:>10.2f} {r[4]:>9.2f} {r[5]:>9.2f}")
PY
python3 -c "print(f'pgbench during the busy postgres scenarios: {($tx1-$tx0)/($t1-$t0):.0f} transactions/s')"
