package vsphere

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hindsight-cdp/hindsight/store"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// ProtectOptions tune the agentless source.
type ProtectOptions struct {
	VM      string
	Target  string // disk or group of the repository receiving the VM's disks, in device order
	Quiesce bool   // ask VMware Tools to quiesce the guest for the snapshot
	// Tracker answers changed-area queries; nil means the vSphere API.
	Tracker ChangeTracker
}

// Capture is the report of one cycle, kept as the bookmark's info.
type Capture struct {
	VM       string        `json:"vm"`
	Snapshot string        `json:"snapshot"`
	Quiesced bool          `json:"quiesced"`
	Note     string        `json:"note,omitempty"` // why a quiesce or CBT was not used
	Disks    []CapturedOne `json:"disks"`
	Point    store.Point   `json:"point"`
	Bookmark string        `json:"bookmark"`
}

// CapturedOne is one disk of a cycle.
type CapturedOne struct {
	Disk     string `json:"disk"`
	Method   string `json:"method"` // cbt, or full (whole disk read, compared by hash)
	ChangeID string `json:"change_id,omitempty"`
	Read     int64  `json:"bytes_read"`
	Changed  uint64 `json:"blocks_changed"`
}

// bookmarkPrefix starts the name of every bookmark a cycle makes.
const bookmarkPrefix = "vsphere-"

// ProtectOnce runs one cycle of the agentless source: snapshot the VM
// (quiesced if asked; crash-consistent if the quiesce fails), read what
// changed since the last cycle (changed areas when the previous cycle left
// a change ID and the host tracks changes, else the whole disk compared by
// hash), journal it as one point of the target's timeline, bookmark that
// point (application or crash kind) with the Capture as its info, and
// remove the snapshot, always.
func (c *Client) ProtectOnce(ctx context.Context, r *store.Repo, opt ProtectOptions) (Capture, error) {
	tl, disks, err := r.Members(opt.Target)
	if err != nil {
		return Capture{}, err
	}
	vm, err := c.findVM(ctx, opt.VM)
	if err != nil {
		return Capture{}, err
	}
	vdisks := disksOf(devices(vm))
	if len(vdisks) != len(disks) {
		return Capture{}, fmt.Errorf("%w: VM %s has %d disks, %q has %d", ErrBadInput, opt.VM, len(vdisks), opt.Target, len(disks))
	}
	for i, d := range disks {
		if vdisks[i].Size != d.Size {
			return Capture{}, fmt.Errorf("%w: disk %d of %s is %d bytes, %s is %d", ErrBadInput, i, opt.VM, vdisks[i].Size, d.Name, d.Size)
		}
	}
	cap := Capture{VM: opt.VM}
	snap, err := c.snapshot(ctx, vm, opt.Quiesce, &cap)
	if err != nil {
		return cap, err
	}
	defer func() {
		if rerr := c.removeSnapshot(context.WithoutCancel(ctx), snap); rerr != nil && err == nil {
			err = rerr
		}
	}()
	var sm mo.VirtualMachineSnapshot
	if err := c.vc.RetrieveOne(ctx, snap, []string{"config.hardware.device"}, &sm); err != nil {
		return cap, fmt.Errorf("vsphere: read snapshot of %s: %w", opt.VM, err)
	}
	sdisks := disksOf(sm.Config.Hardware.Device)
	if len(sdisks) != len(disks) {
		return cap, fmt.Errorf("vsphere: snapshot of %s shows %d disks, expected %d", opt.VM, len(sdisks), len(disks))
	}
	prev := c.lastCapture(r, disks[0], tl, opt.VM)
	tracker := opt.Tracker
	if tracker == nil {
		tracker = apiTracker{c.Vim()}
	}
	step, err := r.Begin(tl, time.Time{})
	if err != nil {
		return cap, err
	}
	for i, d := range disks {
		one, err := c.captureDisk(ctx, step, r, d, vm.Reference(), snap, sdisks[i], prev, tracker, &cap)
		if err != nil {
			step.Abort()
			return cap, fmt.Errorf("capture disk %s of %s: %w", d.Name, opt.VM, err)
		}
		cap.Disks = append(cap.Disks, one)
	}
	if cap.Point, err = step.Commit(); err != nil {
		return cap, err
	}
	kind := store.KindCrash
	if cap.Quiesced {
		kind = store.KindApplication
	}
	cap.Bookmark = fmt.Sprintf("%s%s-%s", bookmarkPrefix, safeName(opt.VM), cap.Point.Time.UTC().Format("20060102T150405.000000000Z"))
	info, _ := json.Marshal(cap)
	if _, err := r.Mark(disks[0], store.Bookmark{Name: cap.Bookmark, Time: cap.Point.Time, Kind: kind, Quiesce: info}); err != nil {
		return cap, fmt.Errorf("bookmark the capture of %s: %w", opt.VM, err)
	}
	if err := recordProfile(r, opt.Target, vm, disks); err != nil {
		c.logf("vsphere: record the VM profile of %s: %v", opt.VM, err)
	}
	return cap, nil
}

// snapshot takes the cycle's snapshot, quiesced if asked; a failed quiesce
// falls back to a crash-consistent one, noted in cap.
func (c *Client) snapshot(ctx context.Context, vm mo.VirtualMachine, quiesce bool, cap *Capture) (types.ManagedObjectReference, error) {
	cap.Snapshot = "hindsight-" + time.Now().UTC().Format("20060102T150405Z")
	obj := object.NewVirtualMachine(c.Vim(), vm.Reference())
	take := func(q bool) (types.ManagedObjectReference, error) {
		task, err := obj.CreateSnapshot(ctx, cap.Snapshot, "Hindsight agentless capture; removed when read", false, q)
		if err != nil {
			return types.ManagedObjectReference{}, err
		}
		info, err := task.WaitForResult(ctx, nil)
		if err != nil {
			return types.ManagedObjectReference{}, err
		}
		ref, ok := info.Result.(types.ManagedObjectReference)
		if !ok {
			return ref, errors.New("no snapshot in the task result")
		}
		return ref, nil
	}
	ref, err := take(quiesce)
	if err != nil && quiesce {
		cap.Note = fmt.Sprintf("quiesce failed (%v): crash-consistent", err)
		c.logf("vsphere: %s: quiesced snapshot failed (%v); taking a crash-consistent one", vm.Name, err)
		quiesce = false
		ref, err = take(false)
	}
	if err != nil {
		return ref, fmt.Errorf("vsphere: snapshot %s: %w", vm.Name, err)
	}
	cap.Quiesced = quiesce
	return ref, nil
}

func (c *Client) removeSnapshot(ctx context.Context, snap types.ManagedObjectReference) error {
	consolidate := true
	req := types.RemoveSnapshot_Task{This: snap, RemoveChildren: false, Consolidate: &consolidate}
	res, err := methods.RemoveSnapshot_Task(ctx, c.Vim(), &req)
	if err == nil {
		err = object.NewTask(c.Vim(), res.Returnval).Wait(ctx)
	}
	if err != nil {
		return fmt.Errorf("vsphere: remove snapshot %s: %w", snap.Value, err)
	}
	return nil
}

// lastCapture is the previous cycle's report for vm, if its point is still
// the timeline's newest (else something else wrote in between, and change
// IDs no longer describe what the journal lacks).
func (c *Client) lastCapture(r *store.Repo, d store.Disk, tl uint32, vm string) *Capture {
	bms, err := r.Bookmarks(d)
	if err != nil {
		return nil
	}
	last, err := r.LastPoint(tl)
	if err != nil {
		return nil
	}
	slices.SortFunc(bms, func(a, b store.Bookmark) int { return a.Created.Compare(b.Created) })
	for i := len(bms) - 1; i >= 0; i-- {
		bm := bms[i]
		if !strings.HasPrefix(bm.Name, bookmarkPrefix) || len(bm.Quiesce) == 0 {
			continue
		}
		var cap Capture
		if json.Unmarshal(bm.Quiesce, &cap) != nil || cap.VM != vm {
			continue
		}
		if bm.Seq != last.Seq {
			return nil
		}
		return &cap
	}
	return nil
}

// safeName keeps the characters a bookmark name allows.
func safeName(s string) string {
	b := []byte(s)
	for i, ch := range b {
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '-' || ch == '_' || ch == '.') {
			b[i] = '_'
		}
	}
	if len(b) > 24 {
		b = b[:24]
	}
	return string(b)
}
