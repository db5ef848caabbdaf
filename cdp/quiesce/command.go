package quiesce

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// MaxOutput bounds the output kept of one command run: its last MaxOutput
// bytes, after a line saying how much was dropped.
const MaxOutput = 16 << 10

// waitDelay is how long a command may take to exit once its process group
// was killed before Wait gives up on it.
const waitDelay = 2 * time.Second

// command is one program run for a phase, with the environment of the hooks
// convention. It runs in a process group of its own, so that a timeout or a
// cancellation kills everything it started, and so that a Ctrl-C meant for
// hindsight does not reach it (a thaw must still run).
type command struct {
	path string
	args []string
	env  []string
}

// run runs c to completion, recording its exit status and output in st.
// When ctx ends first, the whole process group gets SIGKILL.
func (c command) run(ctx context.Context, st *Step) error {
	out, err := os.CreateTemp("", "hindsight-hook-*.out")
	if err != nil {
		return fmt.Errorf("output file: %w", err)
	}
	os.Remove(out.Name()) // kept open: nothing else needs the name
	defer out.Close()

	cmd := exec.CommandContext(ctx, c.path, c.args...)
	cmd.Env = c.env
	cmd.Stdout, cmd.Stderr = out, out // a file, not a pipe: background children cannot hold Wait
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = waitDelay
	err = cmd.Run()
	if cmd.ProcessState != nil {
		code := cmd.ProcessState.ExitCode()
		st.ExitStatus = &code
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			st.Signal = ws.Signal().String()
		}
	}
	st.Output = tail(out, MaxOutput)
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return err // "exit status 1", "signal: killed": the path is in the step's agent
		}
		return fmt.Errorf("run %s: %w", c.path, err)
	}
	return nil
}

// tail returns the last max bytes written to f.
func tail(f *os.File, max int64) string {
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil || size == 0 {
		return ""
	}
	off, prefix := int64(0), ""
	if size > max {
		off = size - max
		prefix = fmt.Sprintf("[%d bytes dropped]\n", off)
	}
	b := make([]byte, size-off)
	n, _ := f.ReadAt(b, off)
	return prefix + string(b[:n])
}
