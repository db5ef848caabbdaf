package image

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"time"
	"unicode"
	"unicode/utf8"
)

// ErrInvalidMeta: a Meta cannot describe an image (bad name, size or
// adapter). Test with errors.Is.
var ErrInvalidMeta = errors.New("image: invalid meta")

const (
	// SectorSize is the sector size of every format here.
	SectorSize = 512
	// MaxVHDSize is the largest disk a VHD can describe (2040 GiB).
	MaxVHDSize = 2040 << 30
	// MaxSize is the largest virtual disk VMware supports (62 TiB); it also
	// keeps a stream-optimized grain directory small.
	MaxSize = 62 << 40
	// MaxNameLen keeps "<name>-flat.vmdk" well inside NAME_MAX (255) and
	// qemu's 511-byte extent file name.
	MaxNameLen = 200
)

// Adapter types (ddb.adapterType values ESXi's vmkfstools accepts).
const (
	AdapterLSILogic = "lsilogic"
	AdapterBusLogic = "buslogic"
	AdapterLSISAS   = "lsisas"
	AdapterPVSCSI   = "pvscsi"
	AdapterIDE      = "ide"
)

// Meta describes one image of a disk at one instant.
type Meta struct {
	Name    string    // disk name: files are <Name>.vmdk, <Name>-flat.vmdk, <Name>.vhd
	Size    int64     // bytes, a positive multiple of 512
	Adapter string    // ddb.adapterType; "" means lsilogic
	Created time.Time // the instant; VHD timestamp
	ID      [16]byte  // stable identity: ddb.uuid, CID, longContentID, VHD unique id
}

// Validate reports whether m can describe an image. Files and VMDKDescriptor
// expect a Meta that passed it.
func (m Meta) Validate() error {
	if err := validName(m.Name); err != nil {
		return err
	}
	if m.Size <= 0 || m.Size%SectorSize != 0 || m.Size > MaxSize {
		return fmt.Errorf("%w: size %d is not a positive multiple of %d up to %d", ErrInvalidMeta, m.Size, SectorSize, int64(MaxSize))
	}
	switch m.Adapter {
	case "", AdapterLSILogic, AdapterBusLogic, AdapterLSISAS, AdapterPVSCSI, AdapterIDE:
	default:
		return fmt.Errorf("%w: adapter %q", ErrInvalidMeta, m.Adapter)
	}
	return nil
}

// validName rejects names that would escape the directory, break the quoted
// extent file name in a descriptor, or not survive a trip through VMware or
// Windows tools.
func validName(name string) error {
	switch {
	case name == "" || name == "." || name == "..":
		return fmt.Errorf("%w: name %q", ErrInvalidMeta, name)
	case len(name) > MaxNameLen:
		return fmt.Errorf("%w: name longer than %d bytes", ErrInvalidMeta, MaxNameLen)
	case !utf8.ValidString(name):
		return fmt.Errorf("%w: name %q is not UTF-8", ErrInvalidMeta, name)
	}
	for _, r := range name {
		if unicode.IsControl(r) || r == '/' || r == '\\' || r == '"' {
			return fmt.Errorf("%w: name %q contains %q", ErrInvalidMeta, name, r)
		}
	}
	return nil
}

func (m Meta) adapter() string {
	if m.Adapter == "" {
		return AdapterLSILogic
	}
	return m.Adapter
}

// File is one served or exported file: exact size, random-access content.
type File struct {
	Name string
	Size int64
	R    io.ReaderAt
}

// Files returns the files of the image of raw described by m, in the order
// descriptor, flat, VHD. raw must hold exactly m.Size bytes; it is read
// through, never copied, and must be safe for concurrent ReadAt if the files
// are. m must have passed Validate (Files does not check again: a name with a
// quote would produce a descriptor that readers misparse). The VHD is left out
// when m.Size exceeds MaxVHDSize.
func Files(m Meta, raw io.ReaderAt) []File {
	desc := VMDKDescriptor(m)
	files := []File{
		{Name: m.Name + ".vmdk", Size: int64(len(desc)), R: bytes.NewReader(desc)},
		{Name: flatName(m.Name), Size: m.Size, R: raw},
	}
	if m.Size <= MaxVHDSize {
		footer := VHDFooter(m)
		files = append(files, File{
			Name: m.Name + ".vhd",
			Size: m.Size + SectorSize,
			R:    newConcat(raw, m.Size, footer[:]),
		})
	}
	return files
}

func flatName(name string) string { return name + "-flat.vmdk" }
