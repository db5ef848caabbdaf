package vsphere

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// vmProps are the properties read of every VM.
var vmProps = []string{"name", "config.extraConfig", "config.files", "config.hardware", "config.guestId", "runtime.powerState", "snapshot"}

// allVMs lists the datacenter's VMs with vmProps.
func (c *Client) allVMs(ctx context.Context) ([]mo.VirtualMachine, error) {
	m := view.NewManager(c.Vim())
	v, err := m.CreateContainerView(ctx, c.dc.Reference(), []string{"VirtualMachine"}, true)
	if err != nil {
		return nil, fmt.Errorf("vsphere: list VMs: %w", err)
	}
	defer v.Destroy(context.WithoutCancel(ctx))
	var vms []mo.VirtualMachine
	if err := v.Retrieve(ctx, []string{"VirtualMachine"}, vmProps, &vms); err != nil {
		return nil, fmt.Errorf("vsphere: list VMs: %w", err)
	}
	return vms, nil
}

// findVM returns the datacenter's VM called name, or ErrNotFound.
func (c *Client) findVM(ctx context.Context, name string) (mo.VirtualMachine, error) {
	vms, err := c.allVMs(ctx)
	if err != nil {
		return mo.VirtualMachine{}, err
	}
	var found []mo.VirtualMachine
	for _, vm := range vms {
		if vm.Name == name {
			found = append(found, vm)
		}
	}
	switch len(found) {
	case 0:
		return mo.VirtualMachine{}, fmt.Errorf("%w: VM %q", ErrNotFound, name)
	case 1:
		return found[0], nil
	}
	return mo.VirtualMachine{}, fmt.Errorf("%w: %d VMs are called %q", ErrBadInput, len(found), name)
}

// Record is what Hindsight wrote into a VM it made.
type Record struct {
	VM     string    `json:"vm"`
	Mode   string    `json:"mode"` // copy or instant
	Source string    `json:"source"`
	Seq    uint64    `json:"seq"`
	Time   time.Time `json:"time"`
	Disks  []string  `json:"disks"`
	Files  []string  `json:"files"`
	Dir    string    `json:"dir,omitempty"`
	Power  string    `json:"power"`
	VMX    string    `json:"vmx"`
}

// record reads the Hindsight markers of vm; ok is false for a VM Hindsight
// did not make.
func record(vm mo.VirtualMachine) (Record, bool) {
	if vm.Config == nil {
		return Record{}, false
	}
	kv := map[string]string{}
	for _, o := range vm.Config.ExtraConfig {
		if v := o.GetOptionValue(); strings.HasPrefix(v.Key, "hindsight.") {
			kv[v.Key], _ = v.Value.(string)
		}
	}
	if kv[keyMode] == "" {
		return Record{}, false
	}
	r := Record{VM: vm.Name, Mode: kv[keyMode], Source: kv[keySource], Dir: kv[keyDir],
		Power: string(vm.Runtime.PowerState), VMX: vm.Config.Files.VmPathName}
	r.Seq, _ = strconv.ParseUint(kv[keySeq], 10, 64)
	r.Time, _ = time.Parse(time.RFC3339Nano, kv[keyTime])
	if s := kv[keyDisks]; s != "" {
		r.Disks = strings.Split(s, ",")
	}
	if s := kv[keyFiles]; s != "" {
		r.Files = strings.Split(s, "|")
	}
	return r, true
}

// List returns the VMs Hindsight made in the datacenter, by name.
func (c *Client) List(ctx context.Context) ([]Record, error) {
	vms, err := c.allVMs(ctx)
	if err != nil {
		return nil, err
	}
	out := []Record{}
	for _, vm := range vms {
		if r, ok := record(vm); ok {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b Record) int { return strings.Compare(a.VM, b.VM) })
	return out, nil
}

// powerOff powers vm off if it is on.
func (c *Client) powerOff(ctx context.Context, vm mo.VirtualMachine) error {
	if vm.Runtime.PowerState == types.VirtualMachinePowerStatePoweredOff {
		return nil
	}
	task, err := object.NewVirtualMachine(c.Vim(), vm.Reference()).PowerOff(ctx)
	if err == nil {
		err = task.Wait(ctx)
	}
	if err != nil {
		return fmt.Errorf("vsphere: power off %s: %w", vm.Name, err)
	}
	return nil
}

// PowerOn and PowerOff switch a VM by name.
func (c *Client) PowerOn(ctx context.Context, name string) error {
	vm, err := c.findVM(ctx, name)
	if err != nil {
		return err
	}
	task, err := object.NewVirtualMachine(c.Vim(), vm.Reference()).PowerOn(ctx)
	if err == nil {
		err = task.Wait(ctx)
	}
	if err != nil {
		return fmt.Errorf("vsphere: power on %s: %w", name, err)
	}
	return nil
}

// PowerOff powers the VM called name off.
func (c *Client) PowerOff(ctx context.Context, name string) error {
	vm, err := c.findVM(ctx, name)
	if err != nil {
		return err
	}
	return c.powerOff(ctx, vm)
}

// unregister powers vm off and removes it from the inventory, leaving
// every file in place (never Destroy: that deletes the VM's whole folder).
func (c *Client) unregister(ctx context.Context, vm mo.VirtualMachine) error {
	if err := c.powerOff(ctx, vm); err != nil {
		return err
	}
	if err := object.NewVirtualMachine(c.Vim(), vm.Reference()).Unregister(ctx); err != nil {
		return fmt.Errorf("vsphere: unregister %s: %w", vm.Name, err)
	}
	return nil
}
