package quiesce

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// env describes the bookmark to hooks and exec commands.
type env struct {
	group, bookmark string
	disks           []string
}

// vars returns the process environment plus the hooks convention's
// variables for phase. frozeOK tells a thaw whether every freeze succeeded.
func (e env) vars(phase string, frozeOK bool) []string {
	v := append(os.Environ(),
		"HINDSIGHT_PHASE="+phase,
		"HINDSIGHT_GROUP="+e.group,
		"HINDSIGHT_BOOKMARK="+e.bookmark,
		"HINDSIGHT_DISKS="+strings.Join(e.disks, " "),
	)
	if phase == PhaseThaw {
		status := "ok"
		if !frozeOK {
			status = "failed"
		}
		v = append(v, "HINDSIGHT_FREEZE_STATUS="+status)
	}
	return v
}

// hook is one executable of a hooks directory: `NAME freeze` before the
// mark, `NAME thaw` after it (`NAME freezeFail` when its own freeze failed,
// as VMware Tools' backupScripts.d scripts expect).
type hook struct {
	path string
	env
	frozeOK bool
}

var _ Agent = (*hook)(nil)

func (h *hook) Name() string { return "hook:" + filepath.Base(h.path) }

func (h *hook) Freeze(ctx context.Context, st *Step) error {
	err := command{path: h.path, args: []string{"freeze"}, env: h.vars(PhaseFreeze, false)}.run(ctx, st)
	h.frozeOK = err == nil
	return err
}

func (h *hook) Thaw(ctx context.Context, st *Step) error {
	arg := "thaw"
	if !h.frozeOK {
		arg = "freezeFail"
	}
	return command{path: h.path, args: []string{arg}, env: h.vars(PhaseThaw, h.frozeOK)}.run(ctx, st)
}

// hooksDir returns an agent for every executable regular file in dir, in
// name order (os.ReadDir sorts), and the entries it skipped: directories, other non-regular
// files, files nobody may execute, and names starting with a dot or ending
// in "~" (editor and package manager leftovers). Symbolic links count as
// what they point to.
func hooksDir(dir string, e env) ([]Agent, []Skip, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: hooks directory: %w", ErrOptions, err)
	}
	var agents []Agent
	var skipped []Skip
	for _, de := range entries {
		path := filepath.Join(dir, de.Name())
		if reason := notHook(path, de.Name()); reason != "" {
			skipped = append(skipped, Skip{Path: path, Reason: reason})
			continue
		}
		agents = append(agents, &hook{path: path, env: e})
	}
	return agents, skipped, nil
}

// notHook says why path is not run as a hook, or "" if it is one.
func notHook(path, name string) string {
	if strings.HasPrefix(name, ".") || strings.HasSuffix(name, "~") {
		return "hidden or backup file"
	}
	fi, err := os.Stat(path)
	switch {
	case err != nil:
		return err.Error()
	case fi.IsDir():
		return "a directory"
	case !fi.Mode().IsRegular():
		return "not a regular file"
	case fi.Mode().Perm()&0o111 == 0:
		return "not executable"
	}
	return ""
}

// execAgent runs a freeze command and a thaw command through /bin/sh -c,
// with the same environment and process-group handling as hooks.
type execAgent struct {
	freeze, thaw string
	env
	frozeOK bool
}

var _ Agent = (*execAgent)(nil)

func (x *execAgent) Name() string { return "exec" }

func (x *execAgent) Freeze(ctx context.Context, st *Step) error {
	if x.freeze == "" {
		x.frozeOK = true
		return nil
	}
	err := command{path: "/bin/sh", args: []string{"-c", x.freeze, "hindsight-freeze"}, env: x.vars(PhaseFreeze, false)}.run(ctx, st)
	x.frozeOK = err == nil
	return err
}

func (x *execAgent) Thaw(ctx context.Context, st *Step) error {
	if x.thaw == "" {
		return nil
	}
	return command{path: "/bin/sh", args: []string{"-c", x.thaw, "hindsight-thaw"}, env: x.vars(PhaseThaw, x.frozeOK)}.run(ctx, st)
}
