package vsphere

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"sync/atomic"

	"github.com/hindsight-cdp/hindsight/fs/export"
	"github.com/hindsight-cdp/hindsight/fs/image"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// Placement says where a new VM goes.
type Placement struct {
	Datastore string // for copy mode: where the disks are uploaded
	Folder    string // inventory folder; "" means the datacenter's VM folder
	Pool      string // resource pool; "" means the default one
	Host      string // host; "" lets the pool choose
}

// RegisterOptions tune copy mode.
type RegisterOptions struct {
	Name     string
	Place    Placement
	Hardware Hardware
	PowerOn  bool
	// Replace unregisters a VM of the same name that Hindsight made, and
	// deletes the files it recorded, before uploading.
	Replace bool
	// Progress, if set, is called with the bytes uploaded so far.
	Progress func(done int64)
}

// Uploaded is one disk as it was written to the datastore.
type Uploaded struct {
	Disk       string `json:"disk"`
	Descriptor string `json:"descriptor"` // "[ds] vm/disk.vmdk"
	Flat       string `json:"flat"`
	Bytes      int64  `json:"bytes"`
	BLAKE3     string `json:"blake3"` // of the flat extent's bytes
	Controller string `json:"controller"`
}

// Registered is a VM Hindsight created.
type Registered struct {
	VM        string     `json:"vm"`
	Ref       string     `json:"moref"`
	VMX       string     `json:"vmx"`
	Disks     []Uploaded `json:"disks"`
	PoweredOn bool       `json:"powered_on"`
	Replaced  bool       `json:"replaced,omitempty"`
}

// placement resolves the folder, pool and host of p.
type placement struct {
	folder *object.Folder
	pool   *object.ResourcePool
	host   *object.HostSystem
}

func (c *Client) place(ctx context.Context, p Placement) (placement, error) {
	var pl placement
	var err error
	if pl.folder, err = c.finder.FolderOrDefault(ctx, p.Folder); err != nil {
		return pl, notFound(err, "folder", p.Folder)
	}
	if pl.pool, err = c.finder.ResourcePoolOrDefault(ctx, p.Pool); err != nil {
		return pl, notFound(err, "resource pool", p.Pool)
	}
	if p.Host != "" {
		if pl.host, err = c.finder.HostSystem(ctx, p.Host); err != nil {
			return pl, notFound(err, "host", p.Host)
		}
	}
	return pl, nil
}

// Register is copy mode: it uploads the instant's disks to the datastore as
// ESXi-native disks (vmfs descriptor plus -flat extent) in a new folder
// named after the VM, creates the VM with one controller per disk and the
// disks attached as they are, and powers it on if asked. On failure it
// leaves nothing behind: no VM, no file, no folder.
func (c *Client) Register(ctx context.Context, in Instant, opt RegisterOptions) (res Registered, err error) {
	if opt.Name == "" {
		return res, fmt.Errorf("%w: no VM name", ErrBadInput)
	}
	pl, err := c.place(ctx, opt.Place)
	if err != nil {
		return res, err
	}
	ds, err := c.datastore(ctx, opt.Place.Datastore)
	if err != nil {
		return res, err
	}
	if old, err := c.findVM(ctx, opt.Name); err == nil {
		if !opt.Replace {
			return res, fmt.Errorf("%w: VM %q (give --replace to replace a VM Hindsight made, or choose another --name)", ErrExists, opt.Name)
		}
		if err := c.removeOurs(ctx, old, "copy"); err != nil {
			return res, err
		}
		res.Replaced = true
	} else if !errors.Is(err, ErrNotFound) {
		return res, err
	}
	dir := opt.Name
	if ok, err := ds.exists(ctx, dir); err != nil {
		return res, err
	} else if ok {
		return res, fmt.Errorf("%w: folder %s is on the datastore and belongs to no Hindsight VM; move it away or choose another --name", ErrExists, ds.Path(dir))
	}
	if err := ds.checkSpace(ctx, in.Bytes()); err != nil {
		return res, err
	}
	if err := ds.mkdir(ctx, dir); err != nil {
		return res, err
	}
	var written []string
	defer func() {
		if err != nil { // leave nothing behind
			cctx := context.WithoutCancel(ctx)
			for _, f := range written {
				c.remove(cctx, f)
			}
			c.remove(cctx, ds.Path(dir))
		}
	}()
	var sent atomic.Int64
	var files []diskFile
	for _, d := range in.Disks {
		up, err := c.uploadDisk(ctx, ds, dir, d, &sent, opt.Progress, &written)
		if err != nil {
			return res, err
		}
		res.Disks = append(res.Disks, up)
		files = append(files, diskFile{Disk: d, Path: up.Descriptor})
	}
	folder := dsPath(ds.Name(), dir)
	vmx := folder + "/" + opt.Name + ".vmx"
	spec, err := vmSpec(opt.Name, vmx, opt.Hardware, files, markers("copy", in, written, folder))
	if err != nil {
		return res, err
	}
	vm, err := c.createVM(ctx, pl, spec)
	if err != nil {
		return res, err
	}
	res.VM, res.Ref = opt.Name, vm.Reference().Value
	res.VMX = vmx
	if opt.PowerOn {
		task, perr := vm.PowerOn(ctx)
		if perr == nil {
			perr = task.Wait(ctx)
		}
		if perr != nil { // the VM is whole; only the power-on failed
			return res, fmt.Errorf("vsphere: VM %s registered, but power-on failed: %w", opt.Name, perr)
		}
		res.PoweredOn = true
	}
	return res, nil
}

// createVM creates the VM of spec and waits for it.
func (c *Client) createVM(ctx context.Context, pl placement, spec types.VirtualMachineConfigSpec) (*object.VirtualMachine, error) {
	task, err := pl.folder.CreateVM(ctx, spec, pl.pool, pl.host)
	if err != nil {
		return nil, fmt.Errorf("vsphere: create VM %s: %w", spec.Name, err)
	}
	info, err := task.WaitForResult(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("vsphere: create VM %s: %w", spec.Name, faultDetail(err))
	}
	ref, ok := info.Result.(types.ManagedObjectReference)
	if !ok {
		return nil, fmt.Errorf("vsphere: create VM %s: no VM in the task result", spec.Name)
	}
	return object.NewVirtualMachine(c.Vim(), ref), nil
}

// uploadDisk writes d's flat extent, then its descriptor, into dir.
func (c *Client) uploadDisk(ctx context.Context, ds *datastore, dir string, d Disk, sent *atomic.Int64, progress func(int64), written *[]string) (Uploaded, error) {
	meta := d.Meta
	if err := meta.Validate(); err != nil {
		return Uploaded{}, err
	}
	files := image.Files(meta, d.Image)
	desc, flat := path.Join(dir, files[0].Name), path.Join(dir, files[1].Name)
	up := Uploaded{Disk: d.Name, Descriptor: ds.Path(desc), Flat: ds.Path(flat), Bytes: d.Size, Controller: d.Controller}

	pr, pw := io.Pipe()
	base := sent.Load()
	errc := make(chan error, 1)
	var sum string
	go func() {
		res, err := export.Export(ctx, meta, d.Image, export.Options{Format: "raw", Out: "-", Stdout: pw,
			Progress: func(n int64) {
				if progress != nil {
					progress(base + n)
				}
			}})
		sum = res.BLAKE3
		pw.CloseWithError(err)
		errc <- err
	}()
	*written = append(*written, up.Flat)
	err := ds.upload(ctx, flat, pr, d.Size, sent)
	pr.CloseWithError(err)
	if eerr := <-errc; err == nil && eerr != nil && !errors.Is(eerr, io.ErrClosedPipe) {
		err = eerr
	}
	if err != nil {
		return up, fmt.Errorf("upload disk %s: %w", d.Name, err)
	}
	up.BLAKE3 = sum
	*written = append(*written, up.Descriptor)
	descBytes, _ := io.ReadAll(io.NewSectionReader(files[0].R, 0, files[0].Size))
	if err := ds.upload(ctx, desc, bytes.NewReader(descBytes), int64(len(descBytes)), nil); err != nil {
		return up, err
	}
	return up, nil
}

// removeOurs unregisters a VM Hindsight made in mode and deletes the files
// it recorded, then its folder if nothing else is left in it. A VM that
// Hindsight did not make is refused.
func (c *Client) removeOurs(ctx context.Context, vm mo.VirtualMachine, mode string) error {
	r, ok := record(vm)
	if !ok {
		return fmt.Errorf("%w: VM %q; Hindsight replaces only VMs it made", ErrNotOurs, vm.Name)
	}
	if r.Mode != mode {
		return fmt.Errorf("%w: VM %q is a Hindsight %s VM; end it with 'hindsight vsphere instant-end %s'", ErrExists, vm.Name, r.Mode, vm.Name)
	}
	if err := c.unregister(ctx, vm); err != nil {
		return err
	}
	return c.removeFiles(ctx, r)
}

// vmGenerated are the files vSphere itself writes into a VM's folder.
var vmGenerated = []string{"%s.vmx", "%s.vmxf", "%s.vmsd", "%s.nvram", "vmware.log", "vmware-1.log", "vmware-2.log"}

// removeFiles deletes the files of r and, if it is left empty, its folder.
func (c *Client) removeFiles(ctx context.Context, r Record) error {
	var errs []error
	for _, f := range r.Files {
		errs = append(errs, c.remove(ctx, f))
	}
	if r.Dir == "" {
		return errors.Join(errs...)
	}
	var p object.DatastorePath
	if !p.FromString(r.Dir) {
		return errors.Join(append(errs, fmt.Errorf("vsphere: bad folder record %q", r.Dir))...)
	}
	for _, f := range vmGenerated {
		if f[0] == '%' {
			f = fmt.Sprintf(f, r.VM)
		}
		errs = append(errs, c.remove(ctx, dsPath(p.Datastore, path.Join(p.Path, f))))
	}
	ds, err := c.datastore(ctx, p.Datastore)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	empty, err := ds.isEmptyDir(ctx, p.Path)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	if empty {
		errs = append(errs, c.remove(ctx, r.Dir))
	} else {
		c.logf("left %s in place: it holds files Hindsight did not write", r.Dir)
	}
	return errors.Join(errs...)
}
