package service

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
)

// desired is what the service should be running, kept in the repository
// (R/service.json) so that a restart brings it all back. It is written
// whole, to a new file that is synced and renamed over the old one, the
// directory synced after: a crash leaves the old record or the new one.
type desired struct {
	Version     int           `json:"version"`
	Protections []ProtectSpec `json:"protections"`
	// Replications are the streams to other sites (replication.go).
	Replications []ReplicateSpec `json:"replications,omitempty"`
}

const desiredVersion = 1

// stateFile keeps desired in path; nil-safe: a service that records
// nothing (a foreground protect) has none.
type stateFile struct {
	path string
	mu   sync.Mutex
	d    desired
}

// StatePath is where the service of the repository in dir records what it runs.
func StatePath(dir string) string { return filepath.Join(dir, "service.json") }

func loadState(dir string) (*stateFile, error) {
	f := &stateFile{path: StatePath(dir), d: desired{Version: desiredVersion}}
	b, err := os.ReadFile(f.path)
	if errors.Is(err, os.ErrNotExist) {
		return f, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &f.d); err != nil {
		return nil, fmt.Errorf("service: %s is damaged (%v): fix or remove it; it lists the protections to bring back", f.path, err)
	}
	if f.d.Version != desiredVersion {
		return nil, fmt.Errorf("service: %s has version %d; this hindsight knows %d", f.path, f.d.Version, desiredVersion)
	}
	return f, nil
}

// specs returns the recorded protections.
func (f *stateFile) specs() []ProtectSpec {
	if f == nil {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]ProtectSpec(nil), f.d.Protections...)
}

// put records spec, replacing one of the same name.
func (f *stateFile) put(spec ProtectSpec) error { return f.replace(spec.Name, &spec) }

// drop forgets the protection name.
func (f *stateFile) drop(name string) error { return f.replace(name, nil) }

// replace records the protections without name, plus spec if not nil.
func (f *stateFile) replace(name string, spec *ProtectSpec) error {
	return f.update(func(d *desired) {
		var ps []ProtectSpec
		for _, p := range d.Protections {
			if p.Name != name {
				ps = append(ps, p)
			}
		}
		if spec != nil {
			ps = append(ps, *spec)
			sort.Slice(ps, func(i, j int) bool { return ps[i].Name < ps[j].Name })
		}
		d.Protections = ps
	})
}

// replications returns the recorded replications.
func (f *stateFile) replications() []ReplicateSpec {
	if f == nil {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]ReplicateSpec(nil), f.d.Replications...)
}

// update records what change makes of the record, and keeps it in memory
// once it is on disk.
func (f *stateFile) update(change func(*desired)) error {
	if f == nil {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	next := f.d
	next.Protections = append([]ProtectSpec(nil), f.d.Protections...)
	next.Replications = append([]ReplicateSpec(nil), f.d.Replications...)
	change(&next)
	if err := f.write(next); err != nil {
		return err
	}
	f.d = next
	return nil
}

func (f *stateFile) write(d desired) error {
	b, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return err
	}
	tmp := f.path + ".tmp"
	w, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("service: record state: %w", err)
	}
	_, err = w.Write(append(b, '\n'))
	if err == nil {
		err = w.Sync()
	}
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, f.path)
	}
	if err == nil {
		err = syncDir(filepath.Dir(f.path))
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("service: record state: %w", err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
