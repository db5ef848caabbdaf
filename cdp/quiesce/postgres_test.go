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
	srv := pgtest.Start(t, data, 30*time.Second, pgtest.Small...)
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

	n := pgtest.Recover(t, image, label, pgtest.Small...)
	t.Logf("restored: %d pgbench transactions", n)
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
