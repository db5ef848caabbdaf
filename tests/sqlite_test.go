package tests

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestTapSQLite: SQLite commits transactions continuously on ext4 on the
// tap; at 20 random instants the recovered database passes its integrity
// check and holds every transaction committed before the instant.
func TestTapSQLite(t *testing.T) {
	t.Parallel()
	needRoot(t)
	needTools(t, "sqlite3", "mkfs.ext4", "e2fsck", "losetup")
	repo := newRepo(t)
	ok(t, "--repo", repo, "disk", "create", "db", "--size", "32M")
	mnt, _, unmount := ext4OnTap(t, repo, "db")

	sq := exec.Command("sqlite3", "-batch", filepath.Join(mnt, "app.db"))
	in, _ := sq.StdinPipe()
	outPipe, _ := sq.StdoutPipe()
	sq.Stderr = os.Stderr
	if err := sq.Start(); err != nil {
		t.Fatal(err)
	}
	out := bufio.NewScanner(outPipe)
	send := func(s string) { io.WriteString(in, s+"\n") }
	send("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;")
	send("CREATE TABLE tx(id INTEGER PRIMARY KEY, payload BLOB, check_sum INTEGER);")
	send("CREATE TABLE balance(k INTEGER PRIMARY KEY, v INTEGER); INSERT INTO balance VALUES(1, 0);")
	start := time.Now()
	var acked []time.Time // acked[i]: when transaction i+1 was known committed
	for i := 1; time.Since(start) < 4*time.Second; i++ {
		send(fmt.Sprintf("BEGIN; INSERT INTO tx VALUES(%d, randomblob(%d), %d); UPDATE balance SET v = v + %d WHERE k = 1; COMMIT; SELECT 'ack', %d;",
			i, 100+rand.IntN(4000), i*7, i, i))
		for out.Scan() {
			if line := out.Text(); strings.HasPrefix(line, "ack|") {
				if n, _ := strconv.Atoi(strings.TrimPrefix(line, "ack|")); n != i {
					t.Fatalf("ack %q for transaction %d", line, i)
				}
				break
			}
		}
		acked = append(acked, time.Now())
	}
	end := time.Now()
	in.Close()
	if err := sq.Wait(); err != nil {
		t.Fatal(err)
	}
	unmount()
	t.Logf("%d transactions committed in %v", len(acked), end.Sub(start).Round(time.Millisecond))

	scratch := t.TempDir()
	for k := 0; k < 20; k++ {
		at := start.Add(time.Duration(rand.Int64N(int64(end.Sub(start)))))
		want := 0
		for i, a := range acked {
			if a.Before(at) {
				want = i + 1
			}
		}
		copyPath := filepath.Join(scratch, "copy.img")
		os.Remove(copyPath)
		ok(t, "--repo", repo, "export", "db", "--at", at.Format(time.RFC3339Nano), "--out", copyPath)
		if out, err := exec.Command("e2fsck", "-E", "journal_only", "-y", copyPath).CombinedOutput(); err != nil {
			if ee, isExit := err.(*exec.ExitError); !isExit || ee.ExitCode() > 1 {
				t.Fatalf("instant %s: journal replay: %v\n%s", at.Format(time.RFC3339Nano), err, out)
			}
		}
		checkSQLite(t, copyPath, at, want)
	}
}

// checkSQLite copies the database out of the image, lets SQLite recover it,
// and checks integrity and the committed transactions.
func checkSQLite(t *testing.T, image string, at time.Time, want int) {
	t.Helper()
	dev, detach := attachLoopNow(t, image, 0, 0)
	defer detach()
	dir, unmount := mountRONow(t, dev)
	defer unmount()
	work := t.TempDir()
	for _, name := range []string{"app.db", "app.db-wal"} {
		if b, err := os.ReadFile(filepath.Join(dir, name)); err == nil {
			os.WriteFile(filepath.Join(work, name), b, 0o600)
		} else if name == "app.db" && want > 0 {
			t.Fatalf("instant %s: no database, but %d transactions were committed", at.Format(time.RFC3339Nano), want)
		}
	}
	if want == 0 {
		return
	}
	q := run(t, "sqlite3", filepath.Join(work, "app.db"),
		"PRAGMA integrity_check; SELECT count(*), coalesce(max(id),0), coalesce(sum(id),0) FROM tx; SELECT v FROM balance;")
	lines := strings.Split(strings.TrimSpace(q), "\n")
	if len(lines) != 3 || lines[0] != "ok" {
		t.Fatalf("instant %s: integrity check: %q", at.Format(time.RFC3339Nano), q)
	}
	var count, maxID, sum, balance int
	fmt.Sscanf(strings.ReplaceAll(lines[1], "|", " "), "%d %d %d", &count, &maxID, &sum)
	fmt.Sscanf(lines[2], "%d", &balance)
	if maxID < want || count != maxID || sum != maxID*(maxID+1)/2 || balance != sum {
		t.Fatalf("instant %s: %d transactions committed before, database has count %d max %d sum %d balance %d",
			at.Format(time.RFC3339Nano), want, count, maxID, sum, balance)
	}
}
