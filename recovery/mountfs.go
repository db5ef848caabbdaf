package recovery

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/hindsight-cdp/hindsight/fs/partition"
	"golang.org/x/sys/unix"
)

// Mount methods reported in Part.Method.
const (
	// MethodReadOnly: the kernel mounts the partition read-only with the
	// option that never replays its log onto the image (see Part.Options).
	MethodReadOnly = "kernel-ro"
	// MethodFUSE: a userspace driver (ntfs-3g) mounts it read-only.
	MethodFUSE = "fuse-ro"
)

// Part statuses.
const (
	StatusMounted     = "mounted"
	StatusFailed      = "failed"      // a filesystem that would not mount (see Error)
	StatusEncrypted   = "encrypted"   // LUKS: reported, not opened
	StatusUnknown     = "unknown"     // no filesystem Hindsight recognises
	StatusUnsupported = "unsupported" // recognised, but nothing here can mount it (see Error)
	StatusSwap        = "swap"
)

// mountFlags: whatever the image holds, nothing on it runs or opens devices.
const mountFlags = unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC

// kernelOptions are the read-only, never-replay options per kernel filesystem.
var kernelOptions = map[string]struct{ fstype, data string }{
	"ext2": {"ext4", "noload"},
	"ext3": {"ext4", "noload"},
	"ext4": {"ext4", "noload"},
	// nouuid: two instants of one XFS (or the live one) may be mounted at once.
	"xfs":   {"xfs", "norecovery,nouuid"},
	"btrfs": {"btrfs", "rescue=nologreplay"},
}

// ntfsOptions: read-only, which ntfs-3g gives hibernated volumes and
// unclean logs too (no norecover, never remove_hiberfile; the loop device
// refuses writes anyway); fmask and dmask because NTFS keeps no modes and
// ntfs-3g would show, and restore copy, every file as 0777.
const ntfsOptions = "ro,nosuid,nodev,noexec,fmask=0133,dmask=0022"

// mountPart mounts p (its bytes in the flat image file) read-only at p.Dir
// and fills in Method, Options and Status, or Status and Error.
func mountPart(ctx context.Context, p *Part, flat, work string) {
	fs := p.FS
	switch {
	case fs.Type == "luks":
		p.Status, p.Error = StatusEncrypted, "LUKS container: not opened (Hindsight never asks for keys)"
		return
	case fs.Type == "swap":
		p.Status = StatusSwap
		return
	case !fs.Mountable():
		p.Status, p.Error = StatusUnknown, "no filesystem Hindsight recognises"
		return
	}
	if err := os.Mkdir(p.Dir, 0o700); err != nil {
		p.Status, p.Error = StatusFailed, err.Error()
		return
	}
	p.made = true
	if _, ok := kernelOptions[fs.Type]; ok && fs.NeedsRecovery {
		mountClone(ctx, p, flat, work)
		return
	}
	if fs.Type == "vfat" {
		mountFAT(ctx, p, flat, work)
		return
	}
	dev, err := loopAttach(flat, p.Offset, p.Size, false)
	if err != nil {
		p.Status, p.Error = StatusFailed, err.Error()
		return
	}
	defer dev.Close() // the mount holds the device from here; autoclear detaches it after
	p.Loop = dev.Name()
	if ko, ok := kernelOptions[fs.Type]; ok {
		p.Method, p.Options = MethodReadOnly, "ro,"+ko.data
		err = unix.Mount(dev.Name(), p.Dir, ko.fstype, mountFlags, ko.data)
		if err != nil {
			err = fmt.Errorf("mount -t %s -o %s: %w (see dmesg)", ko.fstype, p.Options, err)
		}
	} else { // ntfs
		p.Method, p.Options = MethodFUSE, ntfsOptions
		if _, lerr := exec.LookPath("ntfs-3g"); lerr != nil {
			p.Status, p.Error = StatusUnsupported, "NTFS: ntfs-3g is not installed"
			return
		}
		err = tool(ctx, "ntfs-3g", "-o", ntfsOptions, dev.Name(), p.Dir)
	}
	if err != nil {
		p.Status, p.Error = StatusFailed, strings.TrimSpace(err.Error())
		unmount(p.Dir, 0) // in case a helper mounted and then failed
		return
	}
	p.Status, p.ready = StatusMounted, true
}

// mountClone mounts p from a disposable copy-on-write clone on which the
// kernel replays the filesystem's journal: an instant captured while the
// filesystem was in use holds its newest metadata only in the journal, and
// a never-replay mount would show the filesystem as it was before it.
func mountClone(ctx context.Context, p *Part, flat, work string) {
	cl, err := newClone(ctx, flat, p.Offset, p.Size, filepath.Join(work, "clone-"+p.Name))
	if err != nil {
		p.Status, p.Error = StatusFailed, fmt.Sprintf("copy-on-write clone: %v", err)
		return
	}
	p.clone = cl
	dev, err := loopAttach(cl.file(), 0, p.Size, true)
	if err != nil {
		p.Status, p.Error = StatusFailed, err.Error()
		return
	}
	defer dev.Close()
	p.Loop = dev.Name()
	ko := kernelOptions[p.FS.Type]
	data := ""
	if ko.fstype == "xfs" {
		data = "nouuid"
	}
	p.Method, p.Options = MethodClone, "ro (journal replayed on a disposable copy-on-write clone)"
	if err := unix.Mount(dev.Name(), p.Dir, ko.fstype, mountFlags, data); err != nil {
		p.Status, p.Error = StatusFailed, fmt.Sprintf("mount -t %s from a copy-on-write clone: %v (see dmesg)", ko.fstype, err)
		return
	}
	p.Status, p.ready = StatusMounted, true
}

// partName is how a partition is named in paths (pN:) and mount directories.
func partName(p partition.Partition) string {
	if p.Index == 0 {
		return "disk"
	}
	return fmt.Sprintf("p%d", p.Index)
}
