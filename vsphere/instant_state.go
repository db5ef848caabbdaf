package vsphere

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hindsight-cdp/hindsight/store"
)

// instantState is the record of a running instant recovery, written by the
// serving process to <repo>/run/vsphere-instant/<vm>.json: what ending it
// undoes, also after that process died.
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
	// How it ends: keep the clones; the VM was re-created elsewhere by
	// migrate (not unregistered).
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

// EndResult says what ending an instant recovery did.
type EndResult struct {
	VM           string   `json:"vm"`
	Unregistered bool     `json:"unregistered"`
	ClonesKept   []string `json:"clones_kept,omitempty"`
	ClonesGone   []string `json:"clones_deleted,omitempty"`
	Datastore    string   `json:"datastore_removed,omitempty"`
	By           string   `json:"by"` // "server": the serving process ended it; "here": that process was gone, ended from the record
}

// EndInstant ends the instant recovery vm recorded in the writer
// repository r when no process serves it any more (it crashed, or its
// service was killed): it unregisters the VM through c, detaches the dead
// taps, removes the files, drops the clones unless keep, and removes the
// record. A running instant is ended by the process that serves it
// (Running.End).
func EndInstant(ctx context.Context, c *Client, r *store.Repo, vm string, keep bool) (EndResult, error) {
	st, err := readState(r.Dir(), vm)
	if err != nil {
		return EndResult{}, err
	}
	if c == nil {
		return EndResult{VM: vm, By: "here"}, fmt.Errorf("%w: the process that served instant %s is gone; ending it needs a vSphere connection to unregister the VM", ErrBadInput, vm)
	}
	st.Keep = keep
	t := &teardown{c: c, r: r, repo: r.Dir(), st: st}
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
