package quiesce

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hindsight-cdp/hindsight/cdp/quiesce/pgtest"
)

// pgSettings keep test clusters small and quick: 1 MiB WAL segments (set at
// initdb), little WAL kept, no timed checkpoints during a test.
var pgSettings = []string{"max_wal_size=32MB", "min_wal_size=4MB", "checkpoint_timeout=1h", "shared_buffers=16MB"}

// TestPostgresBookmark: with pgbench running, the postgres agent's bookmark
// recovers: an image taken at the mark (the whole server paused, its files
// copied: what a crash would leave) plus the backup_label reaches a
// consistent state, keeps pgbench's invariant and passes pg_amcheck.
func TestPostgresBookmark(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run PostgreSQL as the postgres user")
	}
	base := pgtest.Dir(t)
	data := filepath.Join(base, "data")
	pgtest.InitDB(t, data, "--wal-segsize=1")
	srv := pgtest.Start(t, data, 30*time.Second, pgSettings...)
	srv.Run("pgbench", "-i", "-q", "-s", "1")
	bench := srv.Command("pgbench", "-n", "-c", "2", "-j", "2", "-T", "120")
	if err := bench.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(-bench.Process.Pid, syscall.SIGKILL); bench.Wait() })
	time.Sleep(time.Second)

	r, err := New(Options{Agents: []string{AgentPostgres}, PGDSN: srv.DSN(""), Group: "db-vm", Bookmark: "b1", Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	image := filepath.Join(base, "image")
	rep, err := r.Run(context.Background(), func(context.Context) error {
		if err := srv.Pause(); err != nil {
			return err
		}
		defer srv.Resume()
		out, err := exec.Command("cp", "-a", data, image).CombinedOutput()
		if err != nil {
			return errors.New(string(out))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	label := rep.Files["backup_label"]
	if !rep.Consistent || !strings.Contains(label, "START WAL LOCATION") || !strings.Contains(label, "LABEL: hindsight db-vm/b1") {
		t.Fatalf("report %+v", rep)
	}
	t.Logf("backup_label:\n%s\nfreeze: %s", label, rep.Steps[0].Output)
	if n := srv.Query("SELECT count(*) FROM pg_replication_slots"); n != "0" {
		t.Errorf("%s replication slots left after the thaw", n)
	}

	// Restore: a stale postmaster.pid names the running server; the label goes in.
	os.Remove(filepath.Join(image, "postmaster.pid"))
	if err := os.WriteFile(filepath.Join(image, "backup_label"), []byte(label), 0o600); err != nil {
		t.Fatal(err)
	}
	checkRestored(t, image)
}

// checkRestored starts a server on a restored data directory and checks it
// recovered through the backup_label, then pgbench's invariant and amcheck.
func checkRestored(t *testing.T, data string) {
	t.Helper()
	pgtest.Give(t, data)
	srv := pgtest.Start(t, data, time.Minute, pgSettings...)
	if _, err := os.Stat(filepath.Join(data, "backup_label.old")); err != nil || !strings.Contains(srv.Log(), "consistent recovery state reached") {
		t.Errorf("no recovery through the backup_label: %v\n%s", err, srv.Log())
	}
	n, err := srv.PgbenchInvariant("postgres")
	if err != nil {
		t.Error(err)
	}
	if err := srv.Amcheck(); err != nil {
		t.Error(err)
	}
	t.Logf("restored: %d pgbench transactions", n)
	srv.Stop()
}

// TestPostgresUnreachable: a server that does not answer refuses the
// bookmark quickly; the thaw runs and finds nothing to undo.
func TestPostgresUnreachable(t *testing.T) {
	r, err := New(Options{PGDSN: "host=" + t.TempDir() + " connect_timeout=2", Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := r.Run(context.Background(), func(context.Context) error { t.Error("marked"); return nil })
	if !errors.Is(err, ErrRefused) || rep.Consistent || len(rep.Steps) != 2 || rep.Steps[1].Status != StatusOK {
		t.Fatalf("error %v, report %+v", err, rep)
	}
}
