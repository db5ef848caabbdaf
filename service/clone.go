package service

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hindsight-cdp/hindsight/cdp"
	"github.com/hindsight-cdp/hindsight/store"
)

// Clone makes a writable copy-on-write clone of spec.Source (a disk, or
// every disk of a group) at spec.At and serves it through a tap at
// spec.Mount, beside everything else the service runs: the clone's
// writes are journaled as its own, and the source's history never
// changes. A group's clones are the disks <name>-<disk> of a new group
// <name>, on one timeline. The clone is recorded like a protection.
func (s *Service) Clone(ctx context.Context, spec CloneSpec) (ProtectionStatus, error) {
	if err := spec.normalize(); err != nil {
		return ProtectionStatus{}, err
	}
	_, bases, err := s.r.Members(spec.Source)
	if err != nil {
		return ProtectionStatus{}, err
	}
	if len(bases) == 0 {
		return ProtectionStatus{}, fmt.Errorf("%w: group %q has no disks", ErrBadSpec, spec.Source)
	}
	in, err := cdp.Resolve(s.r, bases[0], spec.At, time.Now())
	if err != nil {
		return ProtectionStatus{}, err
	}
	rec := &CloneRecord{Source: spec.Source, Seq: in.Point.Seq, Time: in.Point.Time}
	group := len(bases) > 1 || bases[0].Name != spec.Source
	if group {
		names := make([]string, len(bases))
		for i, b := range bases {
			names[i] = spec.Name + "-" + b.Name
		}
		if _, _, err := s.r.CloneGroup(spec.Name, names, bases, rec.Seq); err != nil {
			return ProtectionStatus{}, err
		}
	} else if _, err := s.r.CloneDisk(spec.Name, bases[0], rec.Seq); err != nil {
		return ProtectionStatus{}, err
	}
	st, err := s.Protect(ctx, ProtectSpec{Name: spec.Name, Targets: []string{spec.Name}, Clone: rec,
		Tap: &TapSpec{Mount: spec.Mount, AllowOther: spec.AllowOther, GID: spec.GID}})
	if err != nil {
		return st, errors.Join(err, s.dropClone(spec.Name))
	}
	return st, nil
}

// EndClone stops serving the clone name and deletes it, unless keep: then
// it stays a disk (or group) of the repository, with its writes.
func (s *Service) EndClone(ctx context.Context, name string, keep bool) (ProtectionStatus, error) {
	s.mu.Lock()
	p := s.prots[name]
	s.mu.Unlock()
	if p == nil || p.spec.Clone == nil {
		return ProtectionStatus{}, fmt.Errorf("%w: no clone called %s (hindsight protections lists them)", ErrNotFound, name)
	}
	st, err := s.Unprotect(ctx, name)
	if err != nil || keep {
		return st, err
	}
	return st, s.dropClone(name)
}

// dropClone deletes the clone disk or group name.
func (s *Service) dropClone(name string) error {
	if _, err := s.r.Group(name); err == nil {
		return s.r.DeleteGroup(name)
	}
	if err := s.r.DeleteDisk(name); err != nil && !errors.Is(err, store.ErrUnknownDisk) {
		return err
	}
	return nil
}
