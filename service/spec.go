package service

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/hindsight-cdp/hindsight/cdp"
	"github.com/hindsight-cdp/hindsight/store"
)

// ErrBadSpec: a protection or clone request is incomplete or contradicts
// itself. Use errors.Is.
var ErrBadSpec = errors.New("service: invalid protection or clone")

// ProtectSpec is a protection: a front end through which the disks of
// Targets are written. Exactly one of Tap and NBD is set.
type ProtectSpec struct {
	// Name identifies the protection (unprotect NAME); "" means the first
	// target.
	Name    string   `json:"name"`
	Targets []string `json:"targets"` // disks or groups
	Tap     *TapSpec `json:"tap,omitempty"`
	NBD     *NBDSpec `json:"nbd,omitempty"`
	// Clone marks a protection made by Clone: the clone's record, which
	// clone-end deletes with it.
	Clone *CloneRecord `json:"clone,omitempty"`
}

// TapSpec serves each disk as Mount/<disk>.img over FUSE.
type TapSpec struct {
	Mount      string `json:"mount"`
	AllowOther bool   `json:"allow_other,omitempty"` // mode 0660, group GID
	GID        int    `json:"gid,omitempty"`
	Backing    string `json:"backing,omitempty"` // the primary copy of a single disk (cdp.Device.Backed)
	IOUring    bool   `json:"io_uring,omitempty"`
	Debug      bool   `json:"fuse_debug,omitempty"`
}

// NBDSpec serves the disks as NBD exports named after them.
type NBDSpec struct {
	// Listen is unix:PATH, or HOST:PORT (tcp:HOST:PORT) for TCP.
	Listen string `json:"listen"`
	// TLS files, read by the service; TCP needs client certificates unless
	// InsecureLocal (loopback only).
	TLSCert       string `json:"tls_cert,omitempty"`
	TLSKey        string `json:"tls_key,omitempty"`
	TLSClientCA   string `json:"tls_client_ca,omitempty"`
	InsecureLocal bool   `json:"insecure_local,omitempty"`
}

// CloneSpec asks for a writable copy-on-write clone of Source (a disk) at
// an instant, served through a tap at Mount/<Name>.img.
type CloneSpec struct {
	Name       string `json:"name"`
	Source     string `json:"source"`
	At         string `json:"at"` // any instant spec: RFC 3339, @unix, -10m, bookmark:NAME
	Mount      string `json:"mount"`
	AllowOther bool   `json:"allow_other,omitempty"`
	GID        int    `json:"gid,omitempty"`
}

// CloneRecord is what a clone was made from, kept in the service's state.
type CloneRecord struct {
	Source string    `json:"source"`
	Seq    uint64    `json:"seq"`
	Time   time.Time `json:"time"`
}

// normalize fills defaults and checks the spec.
func (s *ProtectSpec) normalize() error {
	if len(s.Targets) == 0 {
		return fmt.Errorf("%w: a protection needs a disk or group", ErrBadSpec)
	}
	if s.Name == "" {
		s.Name = s.Targets[0]
	}
	if err := store.ValidName("protection", s.Name); err != nil {
		return fmt.Errorf("%w: %w", ErrBadSpec, err)
	}
	switch {
	case (s.Tap == nil) == (s.NBD == nil):
		return fmt.Errorf("%w: protection %s needs one front end: a tap (--mount DIR) or NBD (--nbd ADDR)", ErrBadSpec, s.Name)
	case s.Tap != nil:
		if s.Tap.Mount == "" {
			return fmt.Errorf("%w: protection %s: the tap needs a mount directory", ErrBadSpec, s.Name)
		}
		if !filepath.IsAbs(s.Tap.Mount) {
			return fmt.Errorf("%w: protection %s: mount directory %q must be absolute (the service runs elsewhere)", ErrBadSpec, s.Name, s.Tap.Mount)
		}
		s.Tap.Mount = filepath.Clean(s.Tap.Mount)
		if s.Tap.AllowOther && s.Tap.GID == 0 {
			return fmt.Errorf("%w: allow_other needs a group: the disk file becomes mode 0660, open to that group's members", ErrBadSpec)
		}
		if s.Tap.Backing != "" && !filepath.IsAbs(s.Tap.Backing) {
			return fmt.Errorf("%w: backing %q must be an absolute path", ErrBadSpec, s.Tap.Backing)
		}
	case s.NBD != nil:
		if _, _, err := ParseListen(s.NBD.Listen); err != nil {
			return err
		}
	}
	return nil
}

// kind names the front end.
func (s *ProtectSpec) kind() string {
	switch {
	case s.Clone != nil:
		return "clone"
	case s.Tap != nil:
		return "tap"
	}
	return "nbd"
}

// where is the mount directory or the NBD address.
func (s *ProtectSpec) where() string {
	if s.Tap != nil {
		return s.Tap.Mount
	}
	if s.NBD != nil {
		return s.NBD.Listen
	}
	return ""
}

// ParseListen splits an NBD address into a network and an address:
// unix:PATH (PATH absolute), tcp:HOST:PORT or HOST:PORT.
func ParseListen(s string) (network, addr string, err error) {
	switch {
	case s == "":
		return "", "", fmt.Errorf("%w: NBD needs an address: unix:PATH, or HOST:PORT for TCP", ErrBadSpec)
	case strings.HasPrefix(s, "unix:"):
		p := strings.TrimPrefix(s, "unix:")
		if !filepath.IsAbs(p) {
			return "", "", fmt.Errorf("%w: unix:%s: the socket path must be absolute, e.g. unix:/run/hindsight/web.sock", ErrBadSpec, p)
		}
		return "unix", filepath.Clean(p), nil
	}
	addr = strings.TrimPrefix(s, "tcp:")
	if _, _, err := splitHostPort(addr); err != nil {
		return "", "", fmt.Errorf("%w: %s: want unix:PATH, or HOST:PORT for TCP (%v)", ErrBadSpec, s, err)
	}
	return "tcp", addr, nil
}

// normalize checks the clone spec.
func (c *CloneSpec) normalize() error {
	if err := store.ValidName("clone", c.Name); err != nil {
		return fmt.Errorf("%w: %w", ErrBadSpec, err)
	}
	switch {
	case c.Source == "":
		return fmt.Errorf("%w: clone %s needs a source disk", ErrBadSpec, c.Name)
	case c.At == "":
		return fmt.Errorf("%w: clone %s needs an instant (--at)", ErrBadSpec, c.Name)
	case c.Mount == "" || !filepath.IsAbs(c.Mount):
		return fmt.Errorf("%w: clone %s needs an absolute mount directory", ErrBadSpec, c.Name)
	case c.AllowOther && c.GID == 0:
		return fmt.Errorf("%w: allow_other needs a group", ErrBadSpec)
	}
	c.Mount = filepath.Clean(c.Mount)
	return nil
}

// ProtectionStatus is one protection as `protections` shows it.
type ProtectionStatus struct {
	Name     string       `json:"name"`
	FrontEnd string       `json:"front_end"` // tap, nbd, clone
	State    string       `json:"state"`     // running, failed, stopped
	Error    string       `json:"error,omitempty"`
	Where    string       `json:"where"` // mount directory or NBD address
	Since    time.Time    `json:"since"`
	Clone    *CloneRecord `json:"clone,omitempty"`
	Disks    []DiskStatus `json:"disks"`
}

// DiskStatus is one protected disk's figures.
type DiskStatus struct {
	cdp.DeviceStats
	Path         string  `json:"path,omitempty"` // the tap's file, or the NBD export's URI
	WritesPerSec float64 `json:"writes_per_sec"`
	BytesPerSec  float64 `json:"bytes_per_sec"`
}

// Protection states.
const (
	StateRunning = "running"
	StateFailed  = "failed"
)
