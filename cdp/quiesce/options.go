package quiesce

import (
	"fmt"
	"slices"
	"time"
)

// Agent names for Options.Agents.
const (
	AgentFsfreeze = "fsfreeze"
	AgentPostgres = "postgres"
	AgentExec     = "exec"
)

// Options describe a quiesced bookmark the way the command line does:
//
//	hindsight bookmark DISK NAME --consistency application --hooks DIR --timeout 30s \
//	    --agent postgres --pg-dsn DSN --freeze PATH --exec-freeze CMD --exec-thaw CMD
type Options struct {
	// HooksDir, if set, holds hook executables, run in name order.
	HooksDir string
	// Agents names built-in agents: "fsfreeze", "postgres", "exec". Giving
	// FreezePaths, PGDSN or an exec command adds its agent too.
	Agents []string
	// PGDSN is a libpq connection string or URL; empty uses the PG*
	// environment variables and defaults, as psql does.
	PGDSN string
	// FreezePaths are paths on the filesystems to freeze.
	FreezePaths []string
	// ExecFreeze and ExecThaw are shell commands, run by /bin/sh -c.
	ExecFreeze, ExecThaw string
	// Timeout bounds the freezes plus the mark, and each thaw.
	Timeout time.Duration
	// Group, Bookmark and Disks are passed to hooks and exec commands in
	// HINDSIGHT_GROUP, HINDSIGHT_BOOKMARK and HINDSIGHT_DISKS.
	Group, Bookmark string
	Disks           []string
	// Logf, if set, receives one line per step.
	Logf func(format string, args ...any)
}

// New builds the runner for opts. Agents freeze in this order, and thaw in
// the reverse one: postgres, the hooks (in name order), exec, fsfreeze.
// PostgreSQL goes first because it holds nothing (the database keeps
// running through its backup) and its checkpoints may take a while: the
// agents that hold an application come after it, so they hold it only
// briefly. The filesystems freeze last, since a frozen filesystem would
// block the applications' own flushing.
func New(opts Options) (*Runner, error) {
	for _, a := range opts.Agents {
		if a != AgentFsfreeze && a != AgentPostgres && a != AgentExec {
			return nil, fmt.Errorf("%w: unknown agent %q (fsfreeze, postgres, exec)", ErrOptions, a)
		}
	}
	named := func(a string) bool { return slices.Contains(opts.Agents, a) }
	e := env{group: opts.Group, bookmark: opts.Bookmark, disks: opts.Disks}
	r := &Runner{Timeout: opts.Timeout, Group: opts.Group, Bookmark: opts.Bookmark, Disks: opts.Disks, Logf: opts.Logf}
	if named(AgentPostgres) || opts.PGDSN != "" {
		label := "hindsight " + opts.Bookmark
		if opts.Group != "" {
			label = "hindsight " + opts.Group + "/" + opts.Bookmark
		}
		r.Agents = append(r.Agents, &postgres{dsn: opts.PGDSN, label: label})
	}
	if opts.HooksDir != "" {
		hooks, skipped, err := hooksDir(opts.HooksDir, e)
		if err != nil {
			return nil, err
		}
		r.Agents, r.Skipped = append(r.Agents, hooks...), skipped
	}
	if named(AgentExec) || opts.ExecFreeze != "" || opts.ExecThaw != "" {
		if opts.ExecFreeze == "" && opts.ExecThaw == "" {
			return nil, fmt.Errorf("%w: the exec agent needs a freeze or a thaw command", ErrOptions)
		}
		r.Agents = append(r.Agents, &execAgent{freeze: opts.ExecFreeze, thaw: opts.ExecThaw, env: e})
	}
	if named(AgentFsfreeze) || len(opts.FreezePaths) > 0 {
		if len(opts.FreezePaths) == 0 {
			return nil, fmt.Errorf("%w: the fsfreeze agent needs a path to freeze", ErrOptions)
		}
		r.Agents = append(r.Agents, &fsFreeze{paths: opts.FreezePaths})
	}
	if len(r.Agents) == 0 {
		if opts.HooksDir != "" {
			return nil, fmt.Errorf("%w: %s holds no executable hook (%d entries skipped)", ErrNoAgents, opts.HooksDir, len(r.Skipped))
		}
		return nil, ErrNoAgents
	}
	return r, nil
}
