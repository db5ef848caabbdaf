package quiesce

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// hookKit writes hook scripts into a directory; every script appends what it
// does to one log file, which the tests read back.
type hookKit struct {
	t        *testing.T
	dir, log string
}

func newHookKit(t *testing.T) *hookKit {
	d := t.TempDir()
	k := &hookKit{t: t, dir: filepath.Join(d, "hooks.d"), log: filepath.Join(d, "hooks.log")}
	if err := os.Mkdir(k.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return k
}

// add writes hook name: it logs "name $1", runs freeze (a shell fragment)
// when $1 is freeze and thaw otherwise, then logs "name $1 done".
func (k *hookKit) add(name, freeze, thaw string) {
	script := fmt.Sprintf(`#!/bin/sh
log=%q
echo "%s $1" >>"$log"
echo "%s env $HINDSIGHT_PHASE $HINDSIGHT_GROUP $HINDSIGHT_BOOKMARK [$HINDSIGHT_DISKS] $HINDSIGHT_FREEZE_STATUS" >>"$log"
case "$1" in
freeze) %s ;;
*) %s ;;
esac
echo "%s $1 done" >>"$log"
`, k.log, name, name, orTrue(freeze), orTrue(thaw), name)
	if err := os.WriteFile(filepath.Join(k.dir, name), []byte(script), 0o755); err != nil {
		k.t.Fatal(err)
	}
}

func orTrue(s string) string {
	if s == "" {
		return ":"
	}
	return s
}

// lines returns the log lines, except the env lines.
func (k *hookKit) lines() []string {
	b, _ := os.ReadFile(k.log)
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if l != "" && !strings.Contains(l, " env ") {
			out = append(out, l)
		}
	}
	return out
}

func (k *hookKit) logged(line string) bool {
	b, _ := os.ReadFile(k.log)
	return strings.Contains(string(b), line)
}

func (k *hookKit) mark() func(context.Context) error {
	return func(context.Context) error {
		f, err := os.OpenFile(k.log, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = f.WriteString("MARK\n")
		return err
	}
}

func (k *hookKit) run(ctx context.Context, timeout time.Duration) (*Report, error) {
	k.t.Helper()
	r, err := New(Options{HooksDir: k.dir, Timeout: timeout, Group: "db-vm", Bookmark: "nightly",
		Disks: []string{"os", "data"}, Logf: k.t.Logf})
	if err != nil {
		k.t.Fatal(err)
	}
	return r.Run(ctx, k.mark())
}

func wantLines(t *testing.T, k *hookKit, want ...string) {
	t.Helper()
	if got := k.lines(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("hooks log:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestHooksSuccess(t *testing.T) {
	k := newHookKit(t)
	k.add("10-flush", `echo flushing; echo oops >&2`, "")
	k.add("20-lock", "", "")
	os.WriteFile(filepath.Join(k.dir, "README"), []byte("not a hook"), 0o644)
	os.WriteFile(filepath.Join(k.dir, ".hidden"), []byte("#!/bin/sh\nexit 1\n"), 0o755)
	os.Mkdir(filepath.Join(k.dir, "sub"), 0o755)

	rep, err := k.run(context.Background(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	wantLines(t, k,
		"10-flush freeze", "10-flush freeze done", "20-lock freeze", "20-lock freeze done",
		"MARK",
		"20-lock thaw", "20-lock thaw done", "10-flush thaw", "10-flush thaw done")
	if !k.logged("10-flush env freeze db-vm nightly [os data] \n") || !k.logged("10-flush env thaw db-vm nightly [os data] ok\n") {
		b, _ := os.ReadFile(k.log)
		t.Errorf("hook environment:\n%s", b)
	}
	if !rep.Consistent || len(rep.Steps) != 5 || len(rep.Skipped) != 3 {
		t.Fatalf("report %+v", rep)
	}
	st := rep.Steps[0]
	if st.Agent != "hook:10-flush" || st.Status != StatusOK || st.ExitStatus == nil || *st.ExitStatus != 0 ||
		!strings.Contains(st.Output, "flushing\noops\n") {
		t.Errorf("first step %+v", st)
	}
	for _, s := range rep.Skipped {
		t.Logf("skipped %s: %s", filepath.Base(s.Path), s.Reason)
	}
}

func TestHooksFailingFreeze(t *testing.T) {
	k := newHookKit(t)
	k.add("10-a", "", "")
	k.add("20-fail", `echo "cannot flush" >&2; exit 3`, "")
	k.add("30-never", "", "")

	rep, err := k.run(context.Background(), 10*time.Second)
	if !errors.Is(err, ErrRefused) {
		t.Fatalf("error %v, want ErrRefused", err)
	}
	// The failed hook is thawed too (freezeFail, as VMware Tools says it).
	wantLines(t, k,
		"10-a freeze", "10-a freeze done", "20-fail freeze",
		"20-fail freezeFail", "20-fail freezeFail done", "10-a thaw", "10-a thaw done")
	st := rep.Steps[1]
	if rep.Consistent || st.Status != StatusFailed || *st.ExitStatus != 3 || !strings.Contains(st.Output, "cannot flush") {
		t.Fatalf("report %+v", rep)
	}
}

// TestHooksHangingFreeze: a freeze hook that forks a sleeper and hangs is
// killed at the timeout with its whole process group; thaw runs; no mark.
func TestHooksHangingFreeze(t *testing.T) {
	k := newHookKit(t)
	k.add("10-a", "", "")
	k.add("20-hang", `sleep 300 & echo "20-hang group $$ sleeper $!" >>"$log"; wait`, "")

	start := time.Now()
	rep, err := k.run(context.Background(), time.Second)
	took := time.Since(start)
	if !errors.Is(err, ErrRefused) || !errors.Is(err, ErrTimeout) {
		t.Fatalf("error %v, want ErrRefused and ErrTimeout", err)
	}
	if took > 5*time.Second {
		t.Errorf("Run took %v with a 1 s timeout", took)
	}
	var group, sleeper int
	for _, l := range k.lines() {
		if strings.HasPrefix(l, "20-hang group ") {
			fmt.Sscanf(l, "20-hang group %d sleeper %d", &group, &sleeper)
		}
	}
	wantLines(t, k,
		"10-a freeze", "10-a freeze done", "20-hang freeze",
		fmt.Sprintf("20-hang group %d sleeper %d", group, sleeper),
		"20-hang freezeFail", "20-hang freezeFail done", "10-a thaw", "10-a thaw done")
	waitGone(t, group, sleeper)
	st := rep.Steps[1]
	if rep.Consistent || st.Status != StatusTimeout || st.Signal != "killed" {
		t.Fatalf("report %+v", rep)
	}
}

// TestHooksSIGTERMDuringFreeze: SIGTERM arrives while a freeze hook runs;
// the hook's group is killed and every attempted hook still thaws.
func TestHooksSIGTERMDuringFreeze(t *testing.T) {
	k := newHookKit(t)
	k.add("10-a", "", "")
	k.add("20-slow", `echo "20-slow group $$" >>"$log"; sleep 300`, "")
	k.add("30-never", "", "")

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	type result struct {
		rep *Report
		err error
	}
	done := make(chan result, 1)
	go func() {
		rep, err := k.run(ctx, time.Minute)
		done <- result{rep, err}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for !k.logged("20-slow group ") {
		if time.Now().After(deadline) {
			t.Fatal("the slow hook never started")
		}
		time.Sleep(10 * time.Millisecond)
	}
	syscall.Kill(os.Getpid(), syscall.SIGTERM)
	var res result
	select {
	case res = <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return after SIGTERM")
	}
	if !errors.Is(res.err, ErrRefused) || !errors.Is(res.err, context.Canceled) {
		t.Fatalf("error %v, want ErrRefused and context.Canceled", res.err)
	}
	var group int
	for _, l := range k.lines() {
		fmt.Sscanf(l, "20-slow group %d", &group)
	}
	wantLines(t, k,
		"10-a freeze", "10-a freeze done", "20-slow freeze", fmt.Sprintf("20-slow group %d", group),
		"20-slow freezeFail", "20-slow freezeFail done", "10-a thaw", "10-a thaw done")
	waitGone(t, group)
	if res.rep.Steps[1].Status != StatusCanceled || res.rep.Consistent {
		t.Fatalf("report %+v", res.rep)
	}
}

// TestHooksHangingThaw: a thaw hook that hangs is killed at the thaw
// timeout; the bookmark stands, the error says the thaw failed.
func TestHooksHangingThaw(t *testing.T) {
	k := newHookKit(t)
	k.add("10-a", "", "")
	k.add("20-b", "", `sleep 300`)
	r, err := New(Options{HooksDir: k.dir, Timeout: 800 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := r.Run(context.Background(), k.mark())
	if !errors.Is(err, ErrThaw) || !rep.Consistent {
		t.Fatalf("error %v, report %+v", err, rep)
	}
	wantLines(t, k, "10-a freeze", "10-a freeze done", "20-b freeze", "20-b freeze done", "MARK",
		"20-b thaw", "10-a thaw", "10-a thaw done")
}

func TestHooksOptions(t *testing.T) {
	k := newHookKit(t)
	if _, err := New(Options{HooksDir: k.dir}); !errors.Is(err, ErrNoAgents) {
		t.Errorf("empty hooks directory: %v", err)
	}
	if _, err := New(Options{HooksDir: filepath.Join(k.dir, "missing")}); !errors.Is(err, ErrOptions) {
		t.Errorf("missing hooks directory: %v", err)
	}
	if _, err := New(Options{Agents: []string{"mysql"}}); !errors.Is(err, ErrOptions) {
		t.Errorf("unknown agent: %v", err)
	}
	if _, err := New(Options{Agents: []string{AgentFsfreeze}}); !errors.Is(err, ErrOptions) {
		t.Errorf("fsfreeze without a path: %v", err)
	}
	r, err := New(Options{HooksDir: k.dir, ExecFreeze: "true", PGDSN: "host=/nowhere", FreezePaths: []string{"/"}})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, a := range r.Agents {
		names = append(names, a.Name())
	}
	if strings.Join(names, " ") != "exec postgres fsfreeze" {
		t.Errorf("agents %v", names)
	}
}

func TestExecAgent(t *testing.T) {
	k := newHookKit(t)
	r, err := New(Options{ExecFreeze: `echo "exec $HINDSIGHT_PHASE $HINDSIGHT_BOOKMARK" >>` + k.log,
		ExecThaw: `echo "exec $HINDSIGHT_PHASE $HINDSIGHT_FREEZE_STATUS" >>` + k.log, Bookmark: "b1"})
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(k.log, nil, 0o644)
	rep, err := r.Run(context.Background(), k.mark())
	if err != nil || !rep.Consistent {
		t.Fatalf("%v %+v", err, rep)
	}
	wantLines(t, k, "exec freeze b1", "MARK", "exec thaw ok")
}

// waitGone waits until no live (non-zombie) process is left in process
// group group, and none of pids is alive.
func waitGone(t *testing.T, group int, pids ...int) {
	t.Helper()
	if group == 0 {
		t.Fatal("the hook did not log its process group")
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		left := liveInGroup(group)
		for _, p := range pids {
			if alive(p) {
				left = append(left, p)
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes %v of hook group %d still run", left, group)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// liveInGroup lists the processes of group pgid that are not zombies.
func liveInGroup(pgid int) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		state, group := procStat(pid)
		if group == pgid && state != "Z" && state != "" {
			pids = append(pids, pid)
		}
	}
	return pids
}

func alive(pid int) bool {
	state, _ := procStat(pid)
	return state != "" && state != "Z"
}

// procStat returns the state and process group of pid from /proc/PID/stat.
func procStat(pid int) (state string, pgid int) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 3 {
		return "", 0
	}
	pgid, _ = strconv.Atoi(f[2])
	return f[0], pgid
}
