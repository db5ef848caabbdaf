package quiesce

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// postgres takes a non-exclusive base backup of a PostgreSQL primary, all
// of it in Freeze, so that the bookmark's image holds the WAL up to the
// backup's end (see the package doc). Thaw drops the WAL-holding slot and
// ends the session.
type postgres struct {
	dsn   string
	label string

	conn *pgx.Conn
	slot string // the temporary replication slot, once created
}

var _ Agent = (*postgres)(nil)

func (p *postgres) Name() string { return "postgres" }

// Freeze: reserve WAL with a temporary physical slot, CHECKPOINT (so the
// backup's own checkpoint has little to write), pg_backup_start with a fast
// checkpoint, pg_backup_stop without waiting for archiving, then a commit,
// which flushes the WAL past the backup-end record. The label file (and the
// tablespace map, if any) go into st.Files.
func (p *postgres) Freeze(ctx context.Context, st *Step) error {
	var log []string
	last := time.Now()
	logf := func(format string, args ...any) { // each line says how long its step took
		now := time.Now()
		log = append(log, fmt.Sprintf("%-10v ", now.Sub(last).Round(10*time.Microsecond))+fmt.Sprintf(format, args...))
		last = now
	}
	defer func() { st.Output = strings.Join(log, "\n") }()

	cfg, err := pgx.ParseConfig(p.dsn)
	if err != nil {
		return fmt.Errorf("postgres DSN: %w", err)
	}
	cfg.RuntimeParams["application_name"] = "hindsight"
	cfg.RuntimeParams["synchronous_commit"] = "on" // the flushing commit below must wait for its WAL
	if p.conn, err = pgx.ConnectConfig(ctx, cfg); err != nil {
		return fmt.Errorf("postgres connect: %w", err)
	}
	var version int
	var standby bool
	if err := p.conn.QueryRow(ctx, "SELECT current_setting('server_version_num')::int, pg_is_in_recovery()").Scan(&version, &standby); err != nil {
		return fmt.Errorf("postgres version: %w", err)
	}
	if standby {
		return errors.New("postgres: the server is a standby; quiesce its primary")
	}
	if version < 100000 {
		return fmt.Errorf("postgres: server version %d: 10 or newer needed", version)
	}
	logf("connected, server_version_num %d", version)

	slot := "hindsight_" + randomHex(8)
	var reserved string
	if err := p.conn.QueryRow(ctx, "SELECT (pg_create_physical_replication_slot($1, true, true)).lsn::text", slot).Scan(&reserved); err != nil {
		return fmt.Errorf("postgres: temporary replication slot (the role needs REPLICATION): %w", err)
	}
	p.slot = slot
	logf("slot %s holds WAL from %s", slot, reserved)

	if _, err := p.conn.Exec(ctx, "CHECKPOINT"); err != nil {
		return fmt.Errorf("postgres CHECKPOINT: %w", err)
	}
	logf("CHECKPOINT")
	startSQL := "SELECT pg_backup_start($1, true)::text"
	stopSQL := "SELECT lsn::text, labelfile, coalesce(spcmapfile, '') FROM pg_backup_stop(false)"
	if version < 150000 {
		startSQL = "SELECT pg_start_backup($1, true, false)::text"
		stopSQL = "SELECT lsn::text, labelfile, coalesce(spcmapfile, '') FROM pg_stop_backup(false, false)"
	}
	var start string
	if err := p.conn.QueryRow(ctx, startSQL, p.label).Scan(&start); err != nil {
		return fmt.Errorf("postgres backup start: %w", err)
	}
	logf("backup start %s", start)
	var stop, label, spcmap string
	if err := p.conn.QueryRow(ctx, stopSQL).Scan(&stop, &label, &spcmap); err != nil {
		return fmt.Errorf("postgres backup stop: %w", err)
	}
	logf("backup stop %s", stop)

	// pg_backup_stop ends with a WAL switch, which flushes, except when the
	// insert position already sits at a segment boundary. A commit of a
	// transaction with an xid flushes in every case.
	if _, err := p.conn.Exec(ctx, "SELECT txid_current()"); err != nil {
		return fmt.Errorf("postgres WAL flush: %w", err)
	}
	var flushed string
	var covered bool
	if err := p.conn.QueryRow(ctx, "SELECT pg_current_wal_flush_lsn()::text, pg_current_wal_flush_lsn() >= $1::pg_lsn", stop).Scan(&flushed, &covered); err != nil {
		return fmt.Errorf("postgres WAL flush position: %w", err)
	}
	if !covered {
		return fmt.Errorf("postgres: WAL flushed to %s only, before the backup end %s", flushed, stop)
	}
	logf("WAL flushed to %s", flushed)

	st.Files = map[string]string{"backup_label": label}
	if spcmap != "" {
		st.Files["tablespace_map"] = spcmap
	}
	return nil
}

// Thaw drops the slot, so that the WAL it held can be recycled, and ends the
// session. When the session is already gone (a timeout cancels the query and
// closes the connection), the server dropped the temporary slot with it and
// aborted any backup still in progress.
func (p *postgres) Thaw(ctx context.Context, st *Step) error {
	if p.conn == nil {
		return nil
	}
	defer func() { p.conn = nil }()
	var err error
	if p.slot != "" && !p.conn.IsClosed() {
		if _, err = p.conn.Exec(ctx, "SELECT pg_drop_replication_slot($1)", p.slot); err == nil {
			st.Output = "slot " + p.slot + " dropped"
		} else {
			err = fmt.Errorf("postgres drop slot %s: %w", p.slot, err)
		}
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if cerr := p.conn.Close(cctx); cerr != nil && err == nil {
		err = fmt.Errorf("postgres close: %w", cerr)
	}
	return err
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
