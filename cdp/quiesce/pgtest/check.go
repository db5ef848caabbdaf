package pgtest

import (
	"fmt"
	"strings"
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
