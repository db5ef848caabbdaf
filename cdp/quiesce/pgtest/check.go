package pgtest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// PgbenchInvariant checks pgbench's bookkeeping on database db: every
// transaction adds the same delta to an account, a teller and a branch and
// logs it in pgbench_history, so the four sums agree in any consistent state.
// It returns the number of history rows.
func (s *Server) PgbenchInvariant(db string) (int, error) {
	out := strings.TrimSpace(s.Run("psql", "-XAtq", "-v", "ON_ERROR_STOP=1", "-d", db, "-c", `SELECT (SELECT coalesce(sum(abalance), 0) FROM pgbench_accounts) || ' ' ||
       (SELECT coalesce(sum(tbalance), 0) FROM pgbench_tellers) || ' ' ||
       (SELECT coalesce(sum(bbalance), 0) FROM pgbench_branches) || ' ' ||
       (SELECT coalesce(sum(delta), 0) FROM pgbench_history) || ' ' ||
       (SELECT count(*) FROM pgbench_history)`))
	var a, t, b, h, n int64
	if _, err := fmt.Sscan(out, &a, &t, &b, &h, &n); err != nil {
		return 0, fmt.Errorf("pgbench sums: %q: %w", out, err)
	}
	if a != h || t != h || b != h {
		return int(n), fmt.Errorf("pgbench invariant broken: accounts %d, tellers %d, branches %d, history %d (%d rows)", a, t, b, h, n)
	}
	return int(n), nil
}

// Amcheck runs pg_amcheck on every database, heap and B-tree, installing
// the amcheck extension where missing.
func (s *Server) Amcheck() error {
	out, err := s.Command("pg_amcheck", "--all", "--install-missing", "--heapallindexed").CombinedOutput()
	if err != nil {
		return fmt.Errorf("pg_amcheck: %v\n%s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Small are settings for small, quick test clusters (initdb them with
// --wal-segsize=1): little WAL kept, checkpoints left to the test and to
// max_wal_size.
var Small = []string{"max_wal_size=48MB", "min_wal_size=4MB", "checkpoint_timeout=1h", "shared_buffers=16MB"}

// Recover starts a server with settings on data, a restored copy or image
// of a data directory, and stops it before returning. A non-empty label is
// written as its backup_label first, and the recovery must have gone
// through it to a consistent state. Then pgbench's invariant must hold on
// database postgres and pg_amcheck must pass. It returns the number of
// pgbench transactions found.
func Recover(tb testing.TB, data, label string, settings ...string) int {
	tb.Helper()
	// The pid file names the server that ran on the original.
	os.Remove(filepath.Join(data, "postmaster.pid"))
	if label != "" {
		if err := os.WriteFile(filepath.Join(data, "backup_label"), []byte(label), 0o600); err != nil {
			tb.Fatal(err)
		}
	}
	Give(tb, data)
	s := Start(tb, data, time.Minute, settings...)
	defer s.Stop()
	if label != "" {
		if _, err := os.Stat(filepath.Join(data, "backup_label.old")); err != nil || !strings.Contains(s.Log(), "consistent recovery state reached") {
			tb.Errorf("no recovery through the backup_label: %v\n%s", err, s.Log())
		}
	}
	n, err := s.PgbenchInvariant("postgres")
	if err != nil {
		tb.Error(err)
	}
	if err := s.Amcheck(); err != nil {
		tb.Error(err)
	}
	return n
}
