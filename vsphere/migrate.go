package vsphere

import (
	"context"
	"fmt"

	"github.com/hindsight-cdp/hindsight/fs"
	"github.com/hindsight-cdp/hindsight/store"
	"github.com/vmware/govmomi/vim25/types"
)

// MigrateOptions tune making an instant VM permanent.
type MigrateOptions struct {
	VM       string
	Place    Placement // Datastore: where the disks go
	PowerOff bool      // power a running instant VM off first (else refused)
	Keep     bool      // keep the clones after the copy
	Progress func(done int64)
}

// Migrate makes the instant VM permanent, cold: with the VM off, the
// instant ends keeping the clones (end, which stops the process that serves
// it; nil when that process is gone: then it ends here from the record),
// their newest state in the writer repository r is uploaded
// to the datastore as in copy mode, and the VM is created there under the
// same name with the same hardware (powered on again if it was). The clones
// are dropped afterwards unless Keep; if the copy fails they stay, and the
// migration can be run again from them with 'hindsight vsphere register'.
func (c *Client) Migrate(ctx context.Context, r *store.Repo, end func(ctx context.Context) error, opt MigrateOptions) (Registered, error) {
	st, err := readState(r.Dir(), opt.VM)
	if err != nil {
		return Registered{}, err
	}
	vm, err := c.findVM(ctx, opt.VM)
	if err != nil {
		return Registered{}, err
	}
	if r, ok := record(vm); !ok || r.Mode != "instant" {
		return Registered{}, fmt.Errorf("%w: VM %s is not a Hindsight instant VM", ErrNotOurs, opt.VM)
	}
	wasOn := vm.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOff
	if wasOn && !opt.PowerOff {
		return Registered{}, fmt.Errorf("%w: %s; migration copies the disks cold: give --power-off, or shut the guest down first", ErrPoweredOn, opt.VM)
	}
	if err := c.powerOff(ctx, vm); err != nil {
		return Registered{}, err
	}
	hw := st.Hardware
	if vm.Config != nil {
		hw.MemoryMB, hw.CPUs, hw.GuestID = int64(vm.Config.Hardware.MemoryMB), vm.Config.Hardware.NumCPU, vm.Config.GuestId
	}
	// The VM is unregistered and the clones kept.
	if end != nil {
		err = end(ctx)
	} else {
		st.Keep = true
		err = (&teardown{c: c, r: r, repo: r.Dir(), st: st}).run(ctx, nil)
	}
	if err != nil {
		return Registered{}, err
	}
	in := Instant{Source: st.Source, Seq: st.Seq, Time: st.Time}
	for _, d := range st.Disks {
		clone, err := r.Disk(d.Clone)
		if err != nil {
			return Registered{}, err
		}
		p, err := r.LastPoint(clone.Timeline)
		if err != nil {
			return Registered{}, err
		}
		img, err := r.Image(clone, r.Head())
		if err != nil {
			return Registered{}, err
		}
		meta := fs.ImageMeta(clone, p)
		meta.Name = d.Name
		disk := Disk{Name: d.Name, Size: clone.Size, Image: img, Meta: meta, Controller: d.Controller, Store: clone}
		meta.Adapter = controllerKinds[d.Controller]
		disk.Meta = meta
		in.Disks = append(in.Disks, disk)
	}
	res, err := c.Register(ctx, in, RegisterOptions{Name: opt.VM, Place: opt.Place, Hardware: hw, PowerOn: wasOn, Progress: opt.Progress})
	if err != nil {
		return res, fmt.Errorf("migrate %s (its clones are kept: %s): %w", opt.VM, cloneNames(st), err)
	}
	if !opt.Keep {
		if _, err := dropClones(r, st); err != nil {
			return res, fmt.Errorf("migrated %s, but dropping its clones (%s) failed: %w", opt.VM, cloneNames(st), err)
		}
	}
	return res, nil
}

func cloneNames(st *instantState) string {
	s := ""
	for i, d := range st.Disks {
		if i > 0 {
			s += ", "
		}
		s += d.Clone
	}
	return s
}
