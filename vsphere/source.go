package vsphere

import (
	"cmp"
	"fmt"
	"io"
	"time"

	"github.com/hindsight-cdp/hindsight/cdp"
	"github.com/hindsight-cdp/hindsight/fs"
	"github.com/hindsight-cdp/hindsight/fs/image"
	"github.com/hindsight-cdp/hindsight/store"
)

// Disk is one disk of an instant as it goes to vSphere.
type Disk struct {
	Name       string      // file base name: Name.vmdk and Name-flat.vmdk
	Size       int64       // bytes
	Image      io.ReaderAt // the raw image at the instant, Size bytes
	Meta       image.Meta  // identity written into the descriptor
	Controller string      // lsilogic, lsisas, buslogic, pvscsi, sata or nvme
	Store      store.Disk  // the journal's disk
}

// Instant is what a command sends to vSphere: the disks of a disk or a
// group at one journal position.
type Instant struct {
	Source string    `json:"source"` // disk or group name
	Seq    uint64    `json:"seq"`
	Time   time.Time `json:"time"` // the point's time
	Disks  []Disk    `json:"-"`
	// Profile is the VM recorded for the source (its group's, or the lone
	// disk's), if any: the defaults of Hardware.
	Profile *store.Profile `json:"-"`
}

// Bytes is the total size of the instant's disks.
func (in Instant) Bytes() int64 {
	var n int64
	for _, d := range in.Disks {
		n += d.Size
	}
	return n
}

// ResolveInstant opens the disks of name (a disk or a group: all of its
// disks) at the instant spec ("latest", "bookmark:NAME", a time) in r.
func ResolveInstant(r *store.Repo, name, spec string, now time.Time) (Instant, error) {
	_, disks, err := r.Members(name)
	if err != nil {
		return Instant{}, err
	}
	if len(disks) == 0 {
		return Instant{}, fmt.Errorf("%w: group %q has no disks", ErrBadInput, name)
	}
	in, err := cdp.Resolve(r, disks[0], spec, now)
	if err != nil {
		return Instant{}, err
	}
	out := Instant{Source: name, Seq: in.Point.Seq, Time: in.Point.Time}
	if g, err := r.Group(name); err == nil {
		out.Profile = g.Profile
	} else if len(disks) == 1 && disks[0].Group == "" {
		out.Profile = disks[0].Profile
	}
	for _, d := range disks {
		img, err := r.Image(d, in.Point.Seq)
		if err != nil {
			return Instant{}, err
		}
		out.Disks = append(out.Disks, Disk{Name: d.Name, Size: d.Size, Image: img, Meta: fs.ImageMeta(d, in.Point),
			Controller: d.Controller, Store: d})
	}
	return out, nil
}

// SetControllers sets the controller of every disk: byDisk names one per
// disk, def the rest; where neither does, the controller recorded for the
// disk stays, else lsilogic.
func (in *Instant) SetControllers(def string, byDisk map[string]string) error {
	for name := range byDisk {
		found := false
		for _, d := range in.Disks {
			found = found || d.Name == name
		}
		if !found {
			return fmt.Errorf("%w: --controller names disk %q, which %q does not have", ErrBadInput, name, in.Source)
		}
	}
	for i := range in.Disks {
		c := cmp.Or(def, in.Disks[i].Controller, "lsilogic")
		if v, ok := byDisk[in.Disks[i].Name]; ok {
			c = v
		}
		if err := ValidController(c); err != nil {
			return err
		}
		in.Disks[i].Controller = c
		in.Disks[i].Meta.Adapter = controllerKinds[c]
	}
	return nil
}

// controllerKinds maps a controller to the descriptor's ddb.adapterType.
var controllerKinds = map[string]string{
	"lsilogic": image.AdapterLSILogic,
	"lsisas":   image.AdapterLSISAS,
	"buslogic": image.AdapterBusLogic,
	"pvscsi":   image.AdapterPVSCSI,
	"sata":     image.AdapterLSILogic, // ESXi writes lsilogic for SATA and NVMe disks
	"nvme":     image.AdapterLSILogic,
}

// ValidController checks a controller kind given by a user.
func ValidController(kind string) error {
	if _, ok := controllerKinds[kind]; !ok {
		return fmt.Errorf("%w: controller %q: use one of lsilogic, lsisas, buslogic, pvscsi, sata, nvme", ErrBadInput, kind)
	}
	return nil
}
