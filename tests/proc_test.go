package tests

import (
	"bytes"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"
)

// proc is a hindsight process running in the background for a test.
type proc struct {
	cmd    *exec.Cmd
	done   chan struct{}
	err    error // valid once done is closed
	stdout syncBuffer
	stderr syncBuffer
}

// syncBuffer is a bytes.Buffer the process writes while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// start runs hindsight with args until the test ends: cleanup sends SIGTERM
// and fails the test if the process does not stop or ends with an error
// (unless the test killed it), then runs after, if not nil.
func start(t *testing.T, after func(), args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(hsBin, args...), done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		if !p.exited() {
			p.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.done:
				if p.err != nil {
					t.Errorf("hindsight %s: %v\n%s", args[2], p.err, p.stderr.String())
				}
			case <-time.After(40 * time.Second):
				p.kill()
				t.Errorf("hindsight %s did not stop on SIGTERM\n%s", args[2], p.stderr.String())
			}
		}
		if after != nil {
			after()
		}
	})
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill ends the process with SIGKILL and waits for it.
func (p *proc) kill() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// waitUntil polls ready until it holds; it fails the test if the process
// exits first or 10 s pass.
func (p *proc) waitUntil(t *testing.T, what string, ready func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ready() {
		if p.exited() {
			t.Fatalf("%s: the process exited: %v\n%s", what, p.err, p.stderr.String())
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after 10s\n%s", what, p.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
