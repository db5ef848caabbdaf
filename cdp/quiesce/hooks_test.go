package quiesce

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hindsight-cdp/hindsight/cdp/quiesce/hooktest"
)

// runHooks runs the kit's hooks for bookmark "nightly" of group "db-vm";
// the mark logs "MARK".
func runHooks(ctx context.Context, t *testing.T, k *hooktest.Kit, timeout time.Duration) (*Report, error) {
	t.Helper()
	r, err := New(Options{HooksDir: k.Dir, Timeout: timeout, Group: "db-vm", Bookmark: "nightly",
		Disks: []string{"os", "data"}, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	return r.Run(ctx, func(context.Context) error { return k.Append("MARK") })
}

func TestHooksSuccess(t *testing.T) {
	k := hooktest.New(t)
	k.Add("10-flush", `echo flushing; echo oops >&2`, "")
	k.Add("20-lock", "", "")
	os.WriteFile(filepath.Join(k.Dir, "README"), []byte("not a hook"), 0o644)
	os.WriteFile(filepath.Join(k.Dir, ".hidden"), []byte("#!/bin/sh\nexit 1\n"), 0o755)
	os.Mkdir(filepath.Join(k.Dir, "sub"), 0o755)

	rep, err := runHooks(context.Background(), t, k, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	k.Want("10-flush freeze", "10-flush freeze done", "20-lock freeze", "20-lock freeze done",
		"MARK",
		"20-lock thaw", "20-lock thaw done", "10-flush thaw", "10-flush thaw done")
	if !k.Logged("10-flush env freeze db-vm nightly [os data] \n") || !k.Logged("10-flush env thaw db-vm nightly [os data] ok\n") {
		b, _ := os.ReadFile(k.Log)
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
	k := hooktest.New(t)
	k.Add("10-a", "", "")
	k.Add("20-fail", `echo "cannot flush" >&2; exit 3`, "")
	k.Add("30-never", "", "")

	rep, err := runHooks(context.Background(), t, k, 10*time.Second)
	if !errors.Is(err, ErrRefused) {
		t.Fatalf("error %v, want ErrRefused", err)
	}
	// The failed hook is thawed too (freezeFail, as VMware Tools says it).
	k.Want("10-a freeze", "10-a freeze done", "20-fail freeze",
		"20-fail freezeFail", "20-fail freezeFail done", "10-a thaw", "10-a thaw done")
	st := rep.Steps[1]
	if rep.Consistent || st.Status != StatusFailed || *st.ExitStatus != 3 || !strings.Contains(st.Output, "cannot flush") {
		t.Fatalf("report %+v", rep)
	}
}

// TestHooksHangingFreeze: a freeze hook that forks a sleeper and hangs is
// killed at the timeout with its whole process group; thaw runs; no mark.
func TestHooksHangingFreeze(t *testing.T) {
	k := hooktest.New(t)
	k.Add("10-a", "", "")
	k.Add("20-hang", `sleep 300 & echo "20-hang group $$ sleeper $!" >>"$log"; wait`, "")

	start := time.Now()
	rep, err := runHooks(context.Background(), t, k, time.Second)
	took := time.Since(start)
	if !errors.Is(err, ErrRefused) || !errors.Is(err, ErrTimeout) {
		t.Fatalf("error %v, want ErrRefused and ErrTimeout", err)
	}
	if took > 5*time.Second {
		t.Errorf("Run took %v with a 1 s timeout", took)
	}
	ids := k.Scan("20-hang group %d sleeper %d")
	k.Want("10-a freeze", "10-a freeze done", "20-hang freeze",
		fmt.Sprintf("20-hang group %d sleeper %d", ids[0], ids[1]),
		"20-hang freezeFail", "20-hang freezeFail done", "10-a thaw", "10-a thaw done")
	hooktest.WaitGone(t, ids[0], ids[1])
	st := rep.Steps[1]
	if rep.Consistent || st.Status != StatusTimeout || st.Signal != "killed" {
		t.Fatalf("report %+v", rep)
	}
}

// TestHooksSIGTERMDuringFreeze: SIGTERM arrives while a freeze hook runs;
// the hook's group is killed and every attempted hook still thaws.
func TestHooksSIGTERMDuringFreeze(t *testing.T) {
	k := hooktest.New(t)
	k.Add("10-a", "", "")
	k.Add("20-slow", `echo "20-slow group $$" >>"$log"; sleep 300`, "")
	k.Add("30-never", "", "")

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	type result struct {
		rep *Report
		err error
	}
	done := make(chan result, 1)
	go func() {
		rep, err := runHooks(ctx, t, k, time.Minute)
		done <- result{rep, err}
	}()
	k.WaitLogged("20-slow group ", 10*time.Second)
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
	group := k.Scan("20-slow group %d")[0]
	k.Want("10-a freeze", "10-a freeze done", "20-slow freeze", fmt.Sprintf("20-slow group %d", group),
		"20-slow freezeFail", "20-slow freezeFail done", "10-a thaw", "10-a thaw done")
	hooktest.WaitGone(t, group)
	if res.rep.Steps[1].Status != StatusCanceled || res.rep.Consistent {
		t.Fatalf("report %+v", res.rep)
	}
}

// TestHooksHangingThaw: a thaw hook that hangs is killed at the thaw
// timeout; the bookmark stands, the error says the thaw failed.
func TestHooksHangingThaw(t *testing.T) {
	k := hooktest.New(t)
	k.Add("10-a", "", "")
	k.Add("20-b", "", `sleep 300`)
	rep, err := runHooks(context.Background(), t, k, 800*time.Millisecond)
	if !errors.Is(err, ErrThaw) || !rep.Consistent {
		t.Fatalf("error %v, report %+v", err, rep)
	}
	k.Want("10-a freeze", "10-a freeze done", "20-b freeze", "20-b freeze done", "MARK",
		"20-b thaw", "10-a thaw", "10-a thaw done")
}

func TestHooksOptions(t *testing.T) {
	k := hooktest.New(t)
	if _, err := New(Options{HooksDir: k.Dir}); !errors.Is(err, ErrNoAgents) {
		t.Errorf("empty hooks directory: %v", err)
	}
	if _, err := New(Options{HooksDir: filepath.Join(k.Dir, "missing")}); !errors.Is(err, ErrOptions) {
		t.Errorf("missing hooks directory: %v", err)
	}
	if _, err := New(Options{Agents: []string{"mysql"}}); !errors.Is(err, ErrOptions) {
		t.Errorf("unknown agent: %v", err)
	}
	if _, err := New(Options{Agents: []string{AgentFsfreeze}}); !errors.Is(err, ErrOptions) {
		t.Errorf("fsfreeze without a path: %v", err)
	}
	r, err := New(Options{HooksDir: k.Dir, ExecFreeze: "true", PGDSN: "host=/nowhere", FreezePaths: []string{"/"}})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, a := range r.Agents {
		names = append(names, a.Name())
	}
	if strings.Join(names, " ") != "postgres exec fsfreeze" {
		t.Errorf("agents %v", names)
	}
}

func TestExecAgent(t *testing.T) {
	k := hooktest.New(t)
	r, err := New(Options{ExecFreeze: `echo "exec $HINDSIGHT_PHASE $HINDSIGHT_BOOKMARK" >>` + k.Log,
		ExecThaw: `echo "exec $HINDSIGHT_PHASE $HINDSIGHT_FREEZE_STATUS" >>` + k.Log, Bookmark: "b1"})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := r.Run(context.Background(), func(context.Context) error { return k.Append("MARK") })
	if err != nil || !rep.Consistent {
		t.Fatalf("%v %+v", err, rep)
	}
	k.Want("exec freeze b1", "MARK", "exec thaw ok")
}
