// Package hooktest writes quiesce hook scripts for tests. Every script
// appends what it does to one log file, so a test checks the order of
// freezes, mark and thaws, and the hooks' environment, from the hooks' own
// record rather than from the runner's report.
package hooktest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hindsight-cdp/hindsight/cdp/quiesce/internal/proc"
)

// Kit is a hooks directory and the log its scripts write.
type Kit struct {
	Dir, Log string
	tb       testing.TB
}

// New makes an empty hooks directory and an empty log in a temporary directory.
func New(tb testing.TB) *Kit {
	tb.Helper()
	d := tb.TempDir()
	k := &Kit{Dir: filepath.Join(d, "hooks.d"), Log: filepath.Join(d, "hooks.log"), tb: tb}
	if err := os.Mkdir(k.Dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(k.Log, nil, 0o644); err != nil {
		tb.Fatal(err)
	}
	return k
}

// Add writes the hook name. It logs "name $1" and an env line
//
//	name env $HINDSIGHT_PHASE $HINDSIGHT_GROUP $HINDSIGHT_BOOKMARK [$HINDSIGHT_DISKS] $HINDSIGHT_FREEZE_STATUS
//
// then runs the shell fragment freeze when $1 is freeze and thaw otherwise
// (in both, $log is the log file), then logs "name $1 done".
func (k *Kit) Add(name, freeze, thaw string) {
	k.tb.Helper()
	script := fmt.Sprintf(`#!/bin/sh
log=%q
echo "%[2]s $1" >>"$log"
echo "%[2]s env $HINDSIGHT_PHASE $HINDSIGHT_GROUP $HINDSIGHT_BOOKMARK [$HINDSIGHT_DISKS] $HINDSIGHT_FREEZE_STATUS" >>"$log"
case "$1" in
freeze) %[3]s ;;
*) %[4]s ;;
esac
echo "%[2]s $1 done" >>"$log"
`, k.Log, name, orTrue(freeze), orTrue(thaw))
	if err := os.WriteFile(filepath.Join(k.Dir, name), []byte(script), 0o755); err != nil {
		k.tb.Fatal(err)
	}
}

func orTrue(s string) string {
	if s == "" {
		return ":"
	}
	return s
}

// Append adds line to the log, as a mark does to show where it ran.
func (k *Kit) Append(line string) error {
	f, err := os.OpenFile(k.Log, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.WriteString(line + "\n")
	return err
}

// Lines returns the log without its env lines.
func (k *Kit) Lines() []string {
	b, _ := os.ReadFile(k.Log)
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if l != "" && !strings.Contains(l, " env ") {
			out = append(out, l)
		}
	}
	return out
}

// Logged says whether the log holds s.
func (k *Kit) Logged(s string) bool {
	b, _ := os.ReadFile(k.Log)
	return strings.Contains(string(b), s)
}

// WaitLogged waits up to timeout for the log to hold s.
func (k *Kit) WaitLogged(s string, timeout time.Duration) {
	k.tb.Helper()
	for deadline := time.Now().Add(timeout); !k.Logged(s); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			k.tb.Fatalf("the hooks never logged %q:\n%s", s, strings.Join(k.Lines(), "\n"))
		}
	}
}

// Want fails the test unless the log (without env lines) is exactly want.
func (k *Kit) Want(want ...string) {
	k.tb.Helper()
	if got := k.Lines(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		k.tb.Fatalf("hooks log:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// Scan returns the numbers in the first log line that starts like format,
// e.g. Scan("20-hang group %d sleeper %d").
func (k *Kit) Scan(format string) []int {
	prefix := format[:strings.IndexByte(format, '%')]
	n := strings.Count(format, "%d")
	for _, l := range k.Lines() {
		if strings.HasPrefix(l, prefix) {
			v := make([]int, n)
			args := make([]any, n)
			for i := range v {
				args[i] = &v[i]
			}
			if c, _ := fmt.Sscanf(l, format, args...); c == n {
				return v
			}
		}
	}
	k.tb.Fatalf("no log line like %q:\n%s", format, strings.Join(k.Lines(), "\n"))
	return nil
}

// WaitGone waits up to 3 s until no live process is left in process group
// pgid and none of pids lives (zombies count as gone).
func WaitGone(tb testing.TB, pgid int, pids ...int) {
	tb.Helper()
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		left := proc.All(func(_ int, s proc.Stat) bool { return s.PGID == pgid && s.State != "Z" })
		for _, p := range pids {
			if proc.Alive(p) {
				left = append(left, p)
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("processes %v of hook group %d still run", left, pgid)
		}
	}
}
