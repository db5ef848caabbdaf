package recovery

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// MethodExtract: no driver here reads the filesystem right (FAT: this kernel
// has no vfat, and fusefat shows times a month off and upper-cases short
// names), so its files were copied out with mtools into a private directory
// that is mounted read-only (a bind mount) in its place.
const MethodExtract = "mtools-extract"

// fatOptions is what Part.Options says of an extracted FAT.
const fatOptions = "ro copy made by mcopy -s -p -m from a read-only loop device; FAT times read as UTC"

// mountFAT copies every file of the FAT partition p out of its read-only
// loop device with mcopy into a private directory under work, and bind-mounts
// that read-only at p.Dir. mcopy writes "/" and "\" in a name as "\" and
// skips "." and "..", so nothing lands outside the directory; a FAT has no
// symlinks or device files. Close unmounts it and removes the copy.
func mountFAT(ctx context.Context, p *Part, flat, work string) {
	if _, err := exec.LookPath("mcopy"); err != nil {
		p.Status, p.Error = StatusUnsupported, "FAT: mtools (mcopy) is not installed"
		return
	}
	dev, err := loopAttach(flat, p.Offset, p.Size, false)
	if err != nil {
		p.Status, p.Error = StatusFailed, err.Error()
		return
	}
	defer dev.Close() // mcopy is done with it on return; autoclear detaches it
	p.Method, p.Options = MethodExtract, fatOptions
	p.extracted = filepath.Join(work, "fat-"+p.Name)
	if err := os.Mkdir(p.extracted, 0o700); err != nil {
		p.Status, p.Error = StatusFailed, err.Error()
		return
	}
	cmd := exec.CommandContext(ctx, "mcopy", "-s", "-p", "-m", "-i", dev.Name(), "::/", p.extracted)
	// FAT keeps local times without a zone: read them as UTC, as the kernel
	// does by default; names in UTF-8; no refusal of odd but readable geometry.
	cmd.Env = append(os.Environ(), "TZ=UTC", "LC_ALL=C.UTF-8", "MTOOLS_SKIP_CHECK=1")
	if err := runTool(ctx, cmd); err != nil {
		p.Status, p.Error = StatusFailed, fmt.Sprintf("FAT: %v", err)
		return
	}
	// The root directory of a FAT has no times; mcopy gives it a made-up one.
	os.Chtimes(p.extracted, time.Unix(0, 0), time.Unix(0, 0))
	if err := unix.Mount(p.extracted, p.Dir, "", unix.MS_BIND, ""); err != nil {
		p.Status, p.Error = StatusFailed, fmt.Sprintf("bind mount of the FAT copy: %v", err)
		return
	}
	if err := unix.Mount("", p.Dir, "", unix.MS_REMOUNT|unix.MS_BIND|mountFlags, ""); err != nil {
		unmount(p.Dir, 0)
		p.Status, p.Error = StatusFailed, fmt.Sprintf("read-only remount of the FAT copy: %v", err)
		return
	}
	p.Status, p.ready = StatusMounted, true
}
