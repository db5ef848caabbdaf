package fs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/hindsight-cdp/hindsight/cdp/timespec"
	"github.com/hindsight-cdp/hindsight/store"
)

func TestToErrno(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		err  error
		want syscall.Errno
	}{
		{nil, 0},
		{fmt.Errorf("resolve: %w", context.Canceled), syscall.EINTR},
		{fmt.Errorf("resolve: %w", ctx.Err()), syscall.EINTR},
		{context.DeadlineExceeded, syscall.EINTR},
		{fmt.Errorf("x: %w", store.ErrUnknownDisk), syscall.ENOENT},
		{fmt.Errorf("x: %w", store.ErrNoPoint), syscall.ENOENT},
		{store.ErrUnknownBookmark, syscall.ENOENT},
		{fmt.Errorf("journal write: %w", store.ErrNoSpace), syscall.ENOSPC},
		{fmt.Errorf("parse: %w", timespec.ErrBadTime), syscall.ENOENT},
		{&os.PathError{Op: "open", Path: "x", Err: syscall.ENOENT}, syscall.ENOENT},
		{fmt.Errorf("x: %w", syscall.EAGAIN), syscall.EAGAIN},
		{errors.New("disk on fire"), syscall.EIO},
		{io.ErrUnexpectedEOF, syscall.EIO},
	} {
		if got := toErrno(tc.err); got != tc.want {
			t.Errorf("toErrno(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// errReader fails after the first n bytes.
type errReader struct {
	data []byte
	n    int64
	err  error
}

func (r errReader) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) <= r.n {
		return copy(p, r.data[off:]), nil
	}
	n := 0
	if off < r.n {
		n = copy(p, r.data[off:r.n])
	}
	return n, r.err
}

// Read, called directly: cut at the size, io.EOF is no error, other errors
// are, an interrupted request is EINTR.
func TestFileRead(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789"), 1000)
	var logged []string
	tr := &tree{logf: func(format string, args ...any) { logged = append(logged, fmt.Sprintf(format, args...)) }}
	read := func(n *fileNode, ctx context.Context, size int, off int64) ([]byte, syscall.Errno) {
		t.Helper()
		res, errno := n.Read(ctx, nil, make([]byte, size), off)
		if errno != 0 {
			return nil, errno
		}
		b, st := res.Bytes(nil)
		if st != fuse.OK {
			t.Fatalf("Bytes: %v", st)
		}
		return b, 0
	}
	ctx := context.Background()
	n := &fileNode{t: tr, r: bytes.NewReader(data), size: int64(len(data))}
	for _, tc := range []struct {
		size int
		off  int64
		want []byte
	}{
		{4096, 0, data[:4096]},
		{4096, 8192, data[8192:]}, // cut at the end: bytes.Reader says io.EOF
		{4096, 10000, nil},
		{4096, 12288, nil},
		{10, 9995, data[9995:]},
	} {
		got, errno := read(n, ctx, tc.size, tc.off)
		if errno != 0 || !bytes.Equal(got, tc.want) {
			t.Errorf("Read(%d at %d) = %d bytes, %v; want %d bytes", tc.size, tc.off, len(got), errno, len(tc.want))
		}
	}
	if len(logged) != 0 {
		t.Errorf("logged %q", logged)
	}

	// A reader shorter than the size: what there is, and a log line.
	short := &fileNode{t: tr, r: bytes.NewReader(data[:5000]), size: int64(len(data))}
	if got, errno := read(short, ctx, 4096, 4096); errno != 0 || !bytes.Equal(got, data[4096:5000]) {
		t.Errorf("short reader: %d bytes, %v", len(got), errno)
	}
	if len(logged) != 1 {
		t.Errorf("short reader logged %q", logged)
	}

	// A failing reader: EIO, logged, even with part of the data.
	logged = nil
	bad := &fileNode{t: tr, r: errReader{data, 6000, errors.New("checksum mismatch")}, size: int64(len(data))}
	if _, errno := read(bad, ctx, 4096, 4096); errno != syscall.EIO {
		t.Errorf("failing reader: %v, want EIO", errno)
	}
	if len(logged) != 1 {
		t.Errorf("failing reader logged %q", logged)
	}
	intr := &fileNode{t: tr, r: errReader{data, 0, fmt.Errorf("fetch: %w", context.Canceled)}, size: int64(len(data))}
	if _, errno := read(intr, ctx, 4096, 0); errno != syscall.EINTR {
		t.Errorf("cancelled reader: %v, want EINTR", errno)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, errno := read(n, cctx, 4096, 0); errno != syscall.EINTR {
		t.Errorf("interrupted request: %v, want EINTR", errno)
	}
}

func TestNewInfoBookmarks(t *testing.T) {
	at := func(s uint64) time.Time { return t0.Add(time.Duration(s) * time.Minute) }
	bm := func(name string, seq uint64) store.Bookmark {
		return store.Bookmark{Name: name, Seq: seq, Time: at(seq), Kind: "user"}
	}
	marks := []store.Bookmark{bm("c", 30), bm("a", 10), bm("b2", 20), bm("b1", 20)}
	for _, tc := range []struct {
		seq           uint64
		before, after string
	}{
		{5, "", "a"},
		{10, "a", "b1"}, // at the point counts as before; ties by name
		{15, "a", "b1"},
		{20, "b1", "c"},
		{30, "c", ""},
		{40, "c", ""},
	} {
		in := newInfo(entry{name: "d", disks: []store.Disk{{Name: "d", Size: 4096, BlockSize: 4096}}}, store.Point{Seq: tc.seq, Time: at(tc.seq)}, at(tc.seq), marks, nil)
		name := func(r *bookmarkRef) string {
			if r == nil {
				return ""
			}
			return r.Name
		}
		if name(in.BookmarkBefore) != tc.before || name(in.BookmarkAfter) != tc.after {
			t.Errorf("seq %d: before %q after %q, want %q %q", tc.seq, name(in.BookmarkBefore), name(in.BookmarkAfter), tc.before, tc.after)
		}
	}
	if in := newInfo(entry{}, store.Point{Seq: 1}, t0, nil, nil); in.BookmarkBefore != nil || in.BookmarkAfter != nil {
		t.Errorf("no bookmarks: %+v", in)
	}
}

// Inode numbers do not depend on the process: they are part of what the
// kernel and NFS-style clients see across mounts.
func TestInodeStable(t *testing.T) {
	if got := inode(kindDisk, 1, "vm1", 1, 0); got != 0x2bf71c7c51b20159 {
		t.Errorf("inode(kindDisk, 1, vm1, 1, 0) = %#x; the scheme changed", got)
	}
	seen := map[uint64]string{}
	for _, k := range []byte{kindDisk, kindBookmarks, kindInstant, kindImage, kindInfo} {
		for _, name := range []string{"a", "ab", "latest"} {
			for _, nums := range [][]uint64{nil, {0}, {1}, {0, 0}} {
				ino := inode(k, 7, name, nums...)
				key := fmt.Sprint(k, name, nums)
				if other, ok := seen[ino]; ok {
					t.Errorf("%s and %s collide", key, other)
				}
				if ino <= 1 || ino == ^uint64(0) {
					t.Errorf("%s: reserved inode %d", key, ino)
				}
				seen[ino] = key
			}
		}
	}
}
