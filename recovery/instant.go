package recovery

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hindsight-cdp/hindsight/cdp/timespec"
	"github.com/hindsight-cdp/hindsight/fs"
	"github.com/hindsight-cdp/hindsight/fs/fusesrv"
	"github.com/hindsight-cdp/hindsight/fs/partition"
	"github.com/hindsight-cdp/hindsight/store"
)

// Options say where and how an instant is mounted.
type Options struct {
	// Dir is the directory under which each partition is mounted (p1, p5,
	// disk for a whole-disk filesystem). It is created owner-only and must
	// not exist yet; "" means a private directory removed by Close.
	Dir string
	// Logf receives what cannot be returned (nil: discarded).
	Logf func(format string, args ...any)
}

// Instant is one instant of a disk with its filesystems mounted read-only.
type Instant struct {
	Disk    store.Disk      `json:"-"`
	Point   store.Point     `json:"point"`
	Table   partition.Table `json:"table"`
	Parts   []*Part         `json:"partitions"`
	Dir     string          `json:"dir"`
	work    string          // private: the FUSE tree
	tree    *fs.Server      // the private FUSE tree at treeDir
	treeDir string
	made    []string // directories Close removes (if empty), last first
	logf    func(string, ...any)
}

// Part is one partition of an instant and what became of it.
type Part struct {
	partition.Partition
	Name string `json:"name"` // p1, p5, or disk
	Dir  string `json:"dir,omitempty"`
	// Mountpoint is where the disk's own /etc/fstab mounts it ("/", "/srv"),
	// or "/" for the only filesystem of a disk without one.
	Mountpoint string `json:"mountpoint,omitempty"`
	Method     string `json:"method,omitempty"`  // MethodReadOnly, MethodFUSE, MethodClone or MethodExtract
	Options    string `json:"options,omitempty"` // the mount options used
	Loop       string `json:"loop,omitempty"`
	Status     string `json:"status"`
	Error      string `json:"error,omitempty"`

	made  bool   // Dir was created here
	ready bool   // mounted (for History: readable by the ext4 reader)
	clone *clone // the disposable clone it is mounted from (MethodClone)
	// extracted is the private copy of a FAT mounted at Dir (MethodExtract).
	extracted string
}

// Open mounts every filesystem of disk d at point p read-only under
// opt.Dir. The disk is served by a private FUSE tree of src (loop devices
// need a file); partitions are attached by offset and size with autoclear
// loop devices. A corrupt partition table or a disk without a filesystem is
// an error (partition.ErrCorrupt, partition.ErrEmpty); a partition that does
// not mount is reported in its Part. Close undoes everything, whatever
// happened, and must be called even when ctx was cancelled.
func Open(ctx context.Context, src fs.Source, d store.Disk, p store.Point, opt Options) (_ *Instant, err error) {
	in := &Instant{Disk: d, Point: p, Dir: opt.Dir, logf: opt.Logf}
	if in.logf == nil {
		in.logf = func(string, ...any) {}
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, in.Close())
		}
	}()
	if in.work, err = os.MkdirTemp("", "hindsight-recover-"); err != nil {
		return nil, err
	}
	in.made = append(in.made, in.work)
	if in.Dir == "" {
		in.Dir = filepath.Join(in.work, "mnt")
	}
	if err := os.MkdirAll(filepath.Dir(in.Dir), 0o700); err != nil {
		return nil, err
	}
	if err := os.Mkdir(in.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("mount directory: %w", err)
	}
	in.made = append(in.made, in.Dir)
	tree := filepath.Join(in.work, "tree")
	if err := os.Mkdir(tree, 0o700); err != nil {
		return nil, err
	}
	in.made = append(in.made, tree)
	in.treeDir = tree
	// The tree outlives ctx: Close unmounts it after the partitions on it.
	if in.tree, err = fs.Mount(context.WithoutCancel(ctx), tree, src, fs.Options{Logf: in.logf, ListPoints: 1}); err != nil {
		return nil, err
	}
	flat := filepath.Join(tree, d.Name, timespec.Format(p.Time), d.Name+"-flat.vmdk")
	img, err := os.Open(flat)
	if err != nil {
		return nil, fmt.Errorf("open the image of %q at %s: %w", d.Name, timespec.Format(p.Time), err)
	}
	in.Table, err = partition.Read(img, d.Size)
	img.Close()
	if err != nil {
		return nil, fmt.Errorf("disk %q at %s: %w", d.Name, timespec.Format(p.Time), err)
	}
	for _, tp := range in.Table.Partitions {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		part := &Part{Partition: tp, Name: partName(tp)}
		part.Dir = filepath.Join(in.Dir, part.Name)
		in.Parts = append(in.Parts, part)
		mountPart(ctx, part, flat, in.work)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	in.mapMountpoints()
	return in, nil
}

// Mounted returns the parts that are mounted.
func (in *Instant) Mounted() []*Part {
	return readyParts(in.Parts)
}

// Close unmounts every filesystem (the loop devices detach themselves),
// then the private tree, and removes the directories it made (only if
// empty: never what a failed unmount left visible).
func (in *Instant) Close() error {
	var errs []error
	for i := len(in.Parts) - 1; i >= 0; i-- {
		p := in.Parts[i]
		if p.ready || (p.made && fusesrv.IsMountPoint(p.Dir)) {
			if err := unmount(p.Dir, 10*time.Second); err != nil {
				errs = append(errs, err)
			}
			p.ready = false
		}
		if p.clone != nil && !fusesrv.IsMountPoint(p.Dir) {
			if err := p.clone.release(); err != nil {
				errs = append(errs, err)
			}
			p.clone = nil
		}
		if p.extracted != "" && !fusesrv.IsMountPoint(p.Dir) {
			if err := os.RemoveAll(p.extracted); err != nil {
				errs = append(errs, err)
			}
			p.extracted = ""
		}
		if p.made {
			if err := os.Remove(p.Dir); err != nil && !os.IsNotExist(err) {
				errs = append(errs, err)
			}
			p.made = false
		}
	}
	if in.tree != nil {
		// The kernel lets go of the loop devices' file a moment after the
		// last unmount: wait while the tree is busy, then detach it lazily.
		if err := in.tree.UnmountWait(context.Background(), fusesrv.UnmountTimeout); err != nil {
			errs = append(errs, err, unmount(in.treeDir, 0))
		}
		in.tree = nil
	}
	for i := len(in.made) - 1; i >= 0; i-- {
		if err := os.Remove(in.made[i]); err != nil && !os.IsNotExist(err) {
			errs = append(errs, err)
		}
	}
	in.made = nil
	return errors.Join(errs...)
}
