// Package export copies an instant's image out of Hindsight, in the formats
// the FUSE tree serves, to a file, a block device or stdout: for moving a
// recovery point to unlike hardware or another hypervisor.
//
// Regular files are written sparse (runs of zeros become holes); devices and
// pipes get every byte. The BLAKE3 reported is of the bytes of the image file
// written (for vmdk: of the -flat extent), so `b3sum FILE` checks the copy.
package export

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/hindsight-cdp/hindsight/fs/image"
	"github.com/zeebo/blake3"
)

// Formats are the accepted values of Options.Format.
var Formats = []string{"raw", "vmdk", "vhd", "vmdk-stream"}

// ErrExists: the target exists and Options.Force was not given.
var ErrExists = errors.New("export: target exists")

// ErrBadTarget: the format cannot be written to that target.
var ErrBadTarget = errors.New("export: unusable target")

// Options say what to write where.
type Options struct {
	Format string // one of Formats
	Out    string // path, or "-" for stdout (not for vmdk, which is two files)
	Force  bool   // overwrite an existing file or device
	// Progress, if not nil, is called with the raw bytes done so far.
	Progress func(done int64)
	Stdout   io.Writer // for Out "-"; nil means os.Stdout
}

// Result says what was written.
type Result struct {
	Files  []string `json:"files"`
	Bytes  int64    `json:"bytes"` // bytes of the image file (for vmdk: the extent)
	BLAKE3 string   `json:"blake3"`
}

// Export writes the image raw, described by m, as opt.Format to opt.Out.
func Export(ctx context.Context, m image.Meta, raw io.ReaderAt, opt Options) (Result, error) {
	if err := m.Validate(); err != nil {
		return Result{}, err
	}
	files := image.Files(m, raw)
	switch opt.Format {
	case "raw":
		return writeOne(ctx, opt.Out, opt, func(w *sink) error { return copyImage(ctx, w, raw, m.Size, opt.Progress) })
	case "vhd":
		if len(files) < 3 {
			return Result{}, fmt.Errorf("%w: %d bytes is too large for VHD (2040 GiB at most)", ErrBadTarget, m.Size)
		}
		vhd := files[2]
		return writeOne(ctx, opt.Out, opt, func(w *sink) error { return copyImage(ctx, w, vhd.R, vhd.Size, opt.Progress) })
	case "vmdk-stream":
		return writeOne(ctx, opt.Out, opt, func(w *sink) error {
			return image.WriteStreamOptimized(ctx, w, m, raw, opt.Progress)
		})
	case "vmdk":
		return writeVMDK(ctx, m, files, opt)
	}
	return Result{}, fmt.Errorf("%w: format %q (use %s)", ErrBadTarget, opt.Format, strings.Join(Formats, ", "))
}

// writeVMDK writes the descriptor at opt.Out (NAME.vmdk) and the extent beside it.
func writeVMDK(ctx context.Context, m image.Meta, files []image.File, opt Options) (Result, error) {
	if opt.Out == "-" || !strings.HasSuffix(opt.Out, ".vmdk") {
		return Result{}, fmt.Errorf("%w: a vmdk export is a descriptor and an extent: give --out NAME.vmdk, a file", ErrBadTarget)
	}
	m.Name = strings.TrimSuffix(filepath.Base(opt.Out), ".vmdk")
	if err := m.Validate(); err != nil {
		return Result{}, err
	}
	files = image.Files(m, files[1].R)
	flat := filepath.Join(filepath.Dir(opt.Out), files[1].Name)
	res, err := writeOne(ctx, flat, opt, func(w *sink) error { return copyImage(ctx, w, files[1].R, m.Size, opt.Progress) })
	if err != nil {
		return Result{}, err
	}
	desc := files[0]
	if _, err := writeOne(ctx, opt.Out, opt, func(w *sink) error {
		_, err := io.Copy(w, io.NewSectionReader(desc.R, 0, desc.Size))
		return err
	}); err != nil {
		return Result{}, err
	}
	res.Files = []string{opt.Out, flat}
	return res, nil
}

// writeOne opens path (or stdout), runs fill, and finishes the file.
func writeOne(ctx context.Context, path string, opt Options, fill func(*sink) error) (Result, error) {
	var (
		f      *os.File
		w      io.Writer
		sparse bool
	)
	if path == "-" {
		w = opt.Stdout
		if w == nil {
			w = os.Stdout
		}
	} else {
		var err error
		if f, sparse, err = create(path, opt.Force); err != nil {
			return Result{}, err
		}
		w = f
	}
	s := &sink{w: w, f: f, sparse: sparse, h: blake3.New()}
	err := fill(s)
	if err == nil {
		err = s.finish()
	}
	if f != nil {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil && sparse {
			os.Remove(path) // a half-written regular file is no image
		}
	}
	if err != nil {
		return Result{}, fmt.Errorf("export to %s: %w", path, err)
	}
	return Result{Files: []string{path}, Bytes: s.n, BLAKE3: fmt.Sprintf("%x", s.h.Sum(nil))}, nil
}

// create opens the target: a new regular file (sparse), or with force an
// existing file (truncated) or device (written in place).
func create(path string, force bool) (*os.File, bool, error) {
	fi, err := os.Stat(path)
	switch {
	case err == nil && !force:
		return nil, false, fmt.Errorf("%w: %s (give --force to overwrite it)", ErrExists, path)
	case err == nil && fi.Mode()&os.ModeDevice != 0:
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		return f, false, err
	case err == nil && !fi.Mode().IsRegular():
		return nil, false, fmt.Errorf("%w: %s is neither a regular file nor a device", ErrBadTarget, path)
	case err != nil && !errors.Is(err, os.ErrNotExist):
		return nil, false, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	return f, true, err
}
