package vsphere

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/hindsight-cdp/hindsight/fs/fusesrv"
	"github.com/hindsight-cdp/hindsight/store"
	"golang.org/x/sys/unix"
)

// teardown undoes an instant recovery, in the order that keeps the host
// safe: the VM first (nothing uses the disks after), then the disks, the
// files, the clones, the datastore, and last the state record.
type teardown struct {
	c     *Client
	r     *store.Repo
	repo  string
	st    *instantState
	stops []func() error // the disks this process serves (ServeFunc)
	res   EndResult
}

// run undoes everything st records; cause is why (nil: asked to).
func (t *teardown) run(ctx context.Context, cause error) error {
	st := t.st
	t.res = EndResult{VM: st.VM, By: "here"}
	var errs []error
	if !st.Migrated && t.c != nil {
		ok, err := t.unregister(ctx)
		t.res.Unregistered = ok
		errs = append(errs, err)
	}
	for _, stop := range t.stops {
		errs = append(errs, stop())
	}
	if len(t.stops) == 0 { // another process served them and died: lazy-unmount leftovers
		for _, d := range st.Disks {
			if d.Mount != "" && fusesrv.IsMountPoint(d.Mount) {
				errs = append(errs, unix.Unmount(d.Mount, unix.MNT_DETACH))
			}
		}
	}
	errs = append(errs, removeLocal(st))
	if st.Keep {
		for _, d := range st.Disks {
			t.res.ClonesKept = append(t.res.ClonesKept, d.Clone)
		}
	} else {
		gone, err := dropClones(t.r, st)
		t.res.ClonesGone = gone
		errs = append(errs, err)
	}
	if st.Created && t.c != nil {
		removed, err := t.c.unmountNAS(ctx, st.Datastore)
		if removed {
			t.res.Datastore = st.Datastore
		}
		errs = append(errs, err)
	}
	err := errors.Join(errs...)
	if err == nil {
		err = os.Remove(statePath(t.repo, st.VM))
		if errors.Is(err, os.ErrNotExist) {
			err = nil
		}
	} else {
		err = fmt.Errorf("end instant %s (the record stays in %s; run instant-end again): %w", st.VM, statePath(t.repo, st.VM), err)
	}
	if cause != nil && !errors.Is(cause, context.Canceled) {
		err = errors.Join(cause, err)
	}
	return err
}

// unregister removes the instant's VM from the inventory if it is still
// the one Hindsight registered from st.Dir.
func (t *teardown) unregister(ctx context.Context) (bool, error) {
	vm, err := t.c.findVM(ctx, t.st.VM)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	r, ok := record(vm)
	if !ok || r.Mode != "instant" || r.Dir != dsPath(t.st.Datastore, t.st.VM) {
		t.c.logf("vsphere: VM %s is not the instant Hindsight registered; left alone", t.st.VM)
		return false, nil
	}
	if err := t.c.unregister(ctx, vm); err != nil {
		return false, err
	}
	return true, nil
}

// vmFiles are what the host writes into a VM's folder: removed at the end.
var vmFiles = []string{"*.vmx", "*.vmx~", "*.vmx.lck", "*.vmxf", "*.vmsd", "*.nvram", "*.vswp", "*.hlog", "*.scoreboard", "vmware*.log", ".hindsight-probe"}

// removeLocal removes the instant's folder: the mount points (empty once
// unmounted), the files the host wrote, and the folder itself; anything
// else found there is left in place and reported.
func removeLocal(st *instantState) error {
	if st.Dir == "" {
		return nil
	}
	var errs []error
	for _, d := range st.Disks {
		if d.Mount != "" {
			if err := os.Remove(d.Mount); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	for _, pat := range vmFiles {
		m, _ := filepath.Glob(filepath.Join(st.Dir, pat))
		for _, f := range m {
			errs = append(errs, os.Remove(f))
		}
	}
	if err := os.Remove(st.Dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		left, _ := os.ReadDir(st.Dir)
		names := make([]string, len(left))
		for i, e := range left {
			names[i] = e.Name()
		}
		errs = append(errs, fmt.Errorf("vsphere: %s holds files Hindsight did not write (%s); left in place", st.Dir, strings.Join(names, ", ")))
	}
	return errors.Join(errs...)
}
