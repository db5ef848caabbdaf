package vsphere

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hindsight-cdp/hindsight/store"
)

// instantState is the record of a running instant recovery, written by the
// serving process to <repo>/run/vsphere-instant/<vm>.json and read by
// instant-end and migrate.
type instantState struct {
	VM        string        `json:"vm"`
	PID       int           `json:"pid"`
	Server    string        `json:"server"` // host, never credentials
	Source    string        `json:"source"`
	Seq       uint64        `json:"seq"`
	Time      time.Time     `json:"time"`
	Datastore string        `json:"datastore"`
	Created   bool          `json:"created_datastore"` // Hindsight mounted the datastore
	Dir       string        `json:"dir"`               // the VM's local folder, inside the NFS folder
	Disks     []instantDisk `json:"disks"`
	// CloneGroup names the group holding the clones when there are several,
	// so that their writes share one timeline.
	CloneGroup string    `json:"clone_group,omitempty"`
	Hardware   Hardware  `json:"hardware"`
	Started    time.Time `json:"started"`
	// Set by instant-end or migrate before they signal the process.
	Keep     bool `json:"keep,omitempty"`
	Migrated bool `json:"migrated,omitempty"`
}

type instantDisk struct {
	Name       string `json:"name"`  // the source disk
	Clone      string `json:"clone"` // the copy-on-write clone served
	Mount      string `json:"mount"` // the tap's mount point
	Controller string `json:"controller"`
}

// StateDir is where a repository's running instants are recorded.
func StateDir(repo string) string { return filepath.Join(repo, "run", "vsphere-instant") }

func statePath(repo, vm string) string { return filepath.Join(StateDir(repo), vm+".json") }

func readState(repo, vm string) (*instantState, error) {
	b, err := os.ReadFile(statePath(repo, vm))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: no instant recovery called %q in this repository", ErrNotFound, vm)
	}
	if err != nil {
		return nil, err
	}
	var st instantState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("vsphere: instant state %s: %w", statePath(repo, vm), err)
	}
	return &st, nil
}

func writeState(repo string, st *instantState) error {
	if err := os.MkdirAll(StateDir(repo), 0o700); err != nil {
		return err
	}
	b, _ := json.MarshalIndent(st, "", "  ")
	p := statePath(repo, st.VM)
	if err := os.WriteFile(p+".tmp", b, 0o600); err != nil {
		return err
	}
	return os.Rename(p+".tmp", p)
}

// Instants lists the instant recoveries recorded in the repository.
func Instants(repo string) ([]string, error) {
	ents, err := os.ReadDir(StateDir(repo))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	var out []string
	for _, e := range ents {
		if n, ok := strings.CutSuffix(e.Name(), ".json"); ok {
			out = append(out, n)
		}
	}
	return out, err
}

func alive(pid int) bool { return pid > 0 && syscall.Kill(pid, 0) == nil }

// stopServer asks the process serving vm to end (keeping the clones, or
// after a migration) and waits until it is gone. It reports whether the
// process finished its own cleanup (the state file is gone).
func stopServer(ctx context.Context, repo string, st *instantState, wait time.Duration) (bool, error) {
	if err := writeState(repo, st); err != nil { // Keep and Migrated for the server to read
		return false, err
	}
	if !alive(st.PID) {
		return false, nil
	}
	if err := syscall.Kill(st.PID, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return false, fmt.Errorf("vsphere: signal instant process %d: %w", st.PID, err)
	}
	deadline := time.Now().Add(wait)
	for alive(st.PID) {
		if time.Now().After(deadline) {
			return false, fmt.Errorf("vsphere: instant process %d of %s still runs after %s", st.PID, st.VM, wait)
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	_, err := os.Stat(statePath(repo, st.VM))
	return errors.Is(err, os.ErrNotExist), nil
}

// EndResult says what ending an instant recovery did.
type EndResult struct {
	VM           string   `json:"vm"`
	Unregistered bool     `json:"unregistered"`
	ClonesKept   []string `json:"clones_kept,omitempty"`
	ClonesGone   []string `json:"clones_deleted,omitempty"`
	Datastore    string   `json:"datastore_removed,omitempty"`
	By           string   `json:"by"` // "server": the serving process cleaned up; "here": it was gone
}

// EndInstant ends the instant recovery vm of the repository at repo: the
// serving process unregisters the VM, unmounts the disks, removes the files
// it made and drops the clones (unless keep). If that process is gone (it
// crashed), the same is done here, which needs c (may be nil when the
// process cleans up) and open, which opens the repository for writing.
func EndInstant(ctx context.Context, c *Client, repo, vm string, keep bool, open func() (*store.Repo, error)) (EndResult, error) {
	st, err := readState(repo, vm)
	if err != nil {
		return EndResult{}, err
	}
	st.Keep = keep
	res := EndResult{VM: vm, By: "server"}
	done, err := stopServer(ctx, repo, st, 2*time.Minute)
	if err != nil {
		return res, err
	}
	if done {
		res.Unregistered = !st.Migrated
		for _, d := range st.Disks {
			if keep {
				res.ClonesKept = append(res.ClonesKept, d.Clone)
			} else {
				res.ClonesGone = append(res.ClonesGone, d.Clone)
			}
		}
		return res, nil
	}
	res.By = "here"
	if c == nil {
		return res, fmt.Errorf("vsphere: the instant process of %s is gone; ending it here needs a vSphere connection", vm)
	}
	r, err := open()
	if err != nil {
		return res, err
	}
	defer r.Close()
	t := &teardown{c: c, r: r, repo: repo, st: st}
	err = t.run(ctx, nil)
	return t.res, err
}

// dropClones deletes the instant's clones (their group, when they have one)
// and returns their names.
func dropClones(r *store.Repo, st *instantState) ([]string, error) {
	var gone []string
	if st.CloneGroup != "" {
		if err := r.DeleteGroup(st.CloneGroup); err != nil && !errors.Is(err, store.ErrUnknownGroup) {
			return nil, err
		}
		for _, d := range st.Disks {
			gone = append(gone, d.Clone)
		}
		return gone, nil
	}
	for _, d := range st.Disks {
		if err := r.DeleteDisk(d.Clone); err != nil && !errors.Is(err, store.ErrUnknownDisk) {
			return gone, err
		}
		gone = append(gone, d.Clone)
	}
	return gone, nil
}
