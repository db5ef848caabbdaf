package store

import (
	"encoding/json"
	"errors"
	"time"
)

// Errors returned by the store. Check them with errors.Is.
var (
	// ErrUnknownDisk: no disk of that name exists in the repository.
	ErrUnknownDisk = errors.New("store: unknown disk")
	// ErrDiskExists: a disk of that name already exists.
	ErrDiskExists = errors.New("store: disk already exists")
	// ErrNoPoint: no point exists at or before the requested position or time.
	ErrNoPoint = errors.New("store: no point at or before that time")
	// ErrUnknownBookmark: no bookmark of that name exists for the disk.
	ErrUnknownBookmark = errors.New("store: unknown bookmark")
	// ErrBookmarkExists: the disk already has a bookmark of that name.
	ErrBookmarkExists = errors.New("store: bookmark already exists")
	// ErrBadName: a disk or bookmark name is not acceptable.
	ErrBadName = errors.New("store: invalid name")
	// ErrBadGeometry: a disk's size or block size is not acceptable.
	ErrBadGeometry = errors.New("store: invalid disk size or block size")
	// ErrNotRepository: the directory holds no Hindsight repository.
	ErrNotRepository = errors.New("store: not a hindsight repository")
	// ErrLocked: another process holds the repository open for writing.
	ErrLocked = errors.New("store: repository is in use by another writer")
	// ErrTimeOrder: a requested timestamp is not after the timeline's newest point.
	ErrTimeOrder = errors.New("store: time is not after the newest point")
	// ErrOutOfRange: a write or read lies (partly) outside the disk.
	ErrOutOfRange = errors.New("store: outside the disk")
	// ErrUnknownGroup: no consistency group of that name exists.
	ErrUnknownGroup = errors.New("store: unknown group")
	// ErrNotEmpty: a disk with history cannot join a group.
	ErrNotEmpty = errors.New("store: disk already has history")
	// ErrInUse: the disk is needed by another (a clone's base).
	ErrInUse = errors.New("store: disk is in use")
)

// Disk describes one protected disk.
type Disk struct {
	ID        uint32    `json:"id"`
	Name      string    `json:"name"`
	Size      int64     `json:"size"`       // bytes, a multiple of BlockSize
	BlockSize int       `json:"block_size"` // bytes, a power of two ≥ 512
	Created   time.Time `json:"created"`
	// Timeline is the consistency group the disk's points live on; a lone disk is
	// its own timeline (Timeline == ID).
	Timeline uint32 `json:"timeline"`
	// Group names the consistency group the disk belongs to, if any.
	Group string `json:"group,omitempty"`
	// Base, for a clone, is the point its unwritten blocks read from.
	Base *Base `json:"base,omitempty"`
	// Controller is the kind of controller the disk hangs on in its VM
	// (lsilogic, lsisas, buslogic, pvscsi, sata, nvme), if known.
	Controller string `json:"controller,omitempty"`
	// Profile is the VM of a lone disk, if recorded (a group's is the group's).
	Profile *Profile `json:"profile,omitempty"`
	// Replica, set, says only replication from that source writes the disk.
	Replica *ReplicaOf `json:"replica,omitempty"`
	// Handover, set, records the failover that made a replica writable.
	Handover *Handover `json:"handover,omitempty"`
}

// Profile is the VM a disk or group belongs to, as recorded by the user or
// the agentless source, so that a recovery point can run as that VM again.
type Profile struct {
	MemoryMB int64  `json:"memory_mb,omitempty"`
	CPUs     int32  `json:"cpus,omitempty"`
	GuestID  string `json:"guest_id,omitempty"`
}

// Base is the point a clone starts from: disk Disk (ID) at journal position Seq.
type Base struct {
	Disk string `json:"disk"`
	ID   uint32 `json:"id"`
	Seq  uint64 `json:"seq"`
}

// Group is a consistency group: disks on one timeline, so that every instant
// shows all of them at the same journal position.
type Group struct {
	// ID is the group's timeline.
	ID      uint32    `json:"id"`
	Name    string    `json:"name"`
	Disks   []string  `json:"disks"`
	Created time.Time `json:"created"`
	Profile *Profile  `json:"profile,omitempty"`
	// Replica and Handover: as a Disk's, for the whole group.
	Replica  *ReplicaOf `json:"replica,omitempty"`
	Handover *Handover  `json:"handover,omitempty"`
}

// Blocks is the number of blocks of the disk.
func (d Disk) Blocks() uint64 { return uint64(d.Size / int64(d.BlockSize)) }

// Point is one committed journal position of a timeline: every instant between
// this point's Time and the next point's Time shows the image at Seq.
type Point struct {
	Seq  uint64    `json:"seq"`
	Time time.Time `json:"time"`
	// Blocks is how many block versions this point journaled.
	Blocks uint64 `json:"blocks"`
}

// Bookmark names a point of a disk.
type Bookmark struct {
	Name    string    `json:"name"`
	Disk    string    `json:"disk"`
	Seq     uint64    `json:"seq"`
	Time    time.Time `json:"time"` // the instant the bookmark names
	Kind    string    `json:"kind"` // crash, application or user
	Created time.Time `json:"created"`
	// Quiesce is the report of what ran to make an application bookmark
	// consistent (cdp/quiesce), kept as the agents wrote it.
	Quiesce json.RawMessage `json:"quiesce,omitempty"`
	// Files are small files kept with the bookmark and shown in its
	// directory, such as PostgreSQL's backup_label.
	Files map[string]string `json:"files,omitempty"`
	// Pinned bookmarks survive every retention policy.
	Pinned bool `json:"pinned,omitempty"`
}
