package store

import "github.com/cockroachdb/pebble/v2/vfs"

// Pebble preallocates each WAL file at 110% of MemTableSize with fallocate
// (db.go walPreallocateSize) and keeps up to three of them for recycling:
// 213 MiB of a fresh repository's db/ for a few MiB of log. The writer
// flushes the memtable at every publish (about once a second while a disk
// is captured) and syncs the WAL only for durable batches (captured writes
// are made durable by their segment frames), so a WAL holds little and is
// rarely synced: the preallocation bought nothing measurable
// (PERFORMANCE.md, "Repository overhead") and cost 71 MiB a file. walFS
// lets a WAL file grow as it is written.

// walCategory is the write category pebble creates its WAL files with.
const walCategory vfs.DiskWriteCategory = "pebble-wal"

// walFS is the default filesystem whose WAL files are not preallocated.
type walFS struct{ vfs.FS }

var _ vfs.FS = walFS{}

func newWALFS() vfs.FS { return walFS{vfs.Default} }

func (fs walFS) Create(name string, category vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.Create(name, category)
	return wrapWAL(f, category, err)
}

func (fs walFS) ReuseForWrite(oldname, newname string, category vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.ReuseForWrite(oldname, newname, category)
	return wrapWAL(f, category, err)
}

// Unwrap says walFS wraps the default filesystem (vfs.Root).
func (fs walFS) Unwrap() vfs.FS { return fs.FS }

func wrapWAL(f vfs.File, category vfs.DiskWriteCategory, err error) (vfs.File, error) {
	if err != nil || category != walCategory {
		return f, err
	}
	return walFile{f}, nil
}

// walFile is a WAL file that is never preallocated.
type walFile struct{ vfs.File }

// Preallocate does nothing: the file grows as it is written.
func (walFile) Preallocate(offset, length int64) error { return nil }
