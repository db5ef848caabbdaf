package tests

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hindsight-cdp/hindsight/cdp/quiesce/pgtest"
)

// TestQuiescePostgres is acceptance 3: PostgreSQL on ext4 on a protected
// disk with pgbench running. Application bookmarks taken with the postgres
// agent every few seconds each recover, with their backup_label, to a
// consistent state that keeps pgbench's invariant and passes pg_amcheck; so
// do 10 random crash instants, without a label.
func TestQuiescePostgres(t *testing.T) {
	t.Parallel()
	needRoot(t)
	needTools(t, "mkfs.ext4", "losetup")
	pgtest.Need(t)
	repo := newRepo(t)
	ok(t, "--repo", repo, "disk", "create", "pg", "--size", "128M")
	mnt, _, unmount := ext4OnTap(t, repo, "pg")
	data := filepath.Join(mnt, "pgdata")
	pgtest.InitDB(t, data, "--wal-segsize=1")
	srv := pgtest.Start(t, data, 30*time.Second, pgtest.Small...)
	srv.Run("pgbench", "-i", "-q", "-s", "1")
	srv.Query("CHECKPOINT") // the load is on disk before the bookmarks start

	bench := srv.Command("pgbench", "-n", "-c", "2", "-j", "2", "-T", "600")
	if err := bench.Start(); err != nil {
		t.Fatal(err)
	}
	benchDone := make(chan struct{})
	go func() { bench.Wait(); close(benchDone) }()
	stopBench := func() { syscall.Kill(-bench.Process.Pid, syscall.SIGKILL); <-benchDone }
	t.Cleanup(stopBench)

	start := time.Now()
	var names []string
	labels := map[string]string{}
	for i := 0; i < 3; i++ {
		time.Sleep(2 * time.Second)
		name := "app" + string(rune('1'+i))
		bm := quiescedBookmark(t, repo, "pg", name, "--agent", "postgres", "--pg-dsn", srv.DSN(""), "--timeout", "30s")
		if !strings.Contains(bm.Files["backup_label"], "START WAL LOCATION") {
			t.Fatalf("bookmark %s keeps no backup_label: %+v", name, bm.Files)
		}
		st := stepOf(t, bm.Quiesce, "postgres", "freeze")
		t.Logf("%s: postgres freeze %v, freeze to thaw %v\n%s", name, time.Duration(st.Duration).Round(time.Millisecond),
			time.Duration(bm.Quiesce.FreezeToThaw).Round(time.Millisecond), st.Output)
		names = append(names, name)
		labels[name] = bm.Files["backup_label"]
	}
	time.Sleep(time.Second)
	end := time.Now()
	stopBench()
	srv.Stop()
	unmount()

	scratch := t.TempDir()
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			restorePG(t, exportInstant(t, repo, "pg", "bookmark:"+name, scratch), labels[name])
		})
	}
	rng := rand.New(rand.NewPCG(uint64(start.UnixNano()), 3))
	for i := 0; i < 10; i++ {
		at := start.Add(time.Duration(rng.Int64N(int64(end.Sub(start))))).UTC().Format(time.RFC3339Nano)
		t.Run("crash "+at, func(t *testing.T) {
			restorePG(t, exportInstant(t, repo, "pg", at, scratch), "")
		})
	}
}

// restorePG mounts image (an export of the protected disk) and recovers
// the PostgreSQL in it, with label as backup_label unless empty.
func restorePG(t *testing.T, image, label string) {
	t.Helper()
	defer os.Remove(image)
	dir, unmount := mountRWNow(t, image)
	defer unmount()
	t.Logf("%d pgbench transactions", pgtest.Recover(t, filepath.Join(dir, "pgdata"), label, pgtest.Small...))
}
