// Package ext4 is a small read-only reader of ext2/3/4 filesystems through an
// io.ReaderAt, made for file history: it resolves a path to its inode and
// says which filesystem blocks hold the file (data, extent tree), its inode
// and the directories on its path, so that only those blocks need watching.
//
// # What it reads
//
//	superblock    at 1024: block size 1024<<log, blocks and inodes per group,
//	              inode size (128 before revision 1), INCOMPAT 64bit (desc_size)
//	group desc    the table in the block after the superblock's (meta_bg, from
//	              meta group 0x104 on: in the first group of each meta group,
//	              after its superblock copy); inode table at 0x08 (lo) and
//	              0x28 (hi, with 64-byte descriptors)
//	inode         mode 0x00, size 0x04/0x6c, flags 0x20, i_block 0x28 (60 bytes)
//	extents       flag 0x80000: header magic 0xf30a, entries, depth; leaves
//	              (block u32, len u16 (>32768: unwritten), start hi u16 lo u32),
//	              indexes (block u32, leaf lo u32, hi u16)
//	block map     ext2/3: 12 direct blocks, then single, double, triple indirect
//	inline data   flag 0x10000000: content in i_block (60 bytes), then in the
//	              in-inode xattr system.data
//	directories   linear dirents (inode u32, rec_len u16, name_len u8, type u8);
//	              htree directories read the same way (their index blocks look
//	              like empty entries)
//
// It trusts nothing: every count and block number is bounded by the
// filesystem's size, and a tree too deep or a file too large is an error.
package ext4

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
)

// Errors. Check them with errors.Is.
var (
	ErrNotExt4     = errors.New("ext4: not an ext2/3/4 filesystem")
	ErrNotFound    = errors.New("ext4: no such file or directory")
	ErrCorrupt     = errors.New("ext4: corrupt filesystem structure")
	ErrUnsupported = errors.New("ext4: unsupported feature")
)

// FS is an ext2/3/4 filesystem read through r.
type FS struct {
	r          io.ReaderAt
	BlockSize  int64
	blocks     uint64
	inodes     uint32
	perGroup   uint32 // inodes per group
	inodeSize  int64
	descSize   int64
	descTable  uint64 // block of the group descriptor table
	incompat64 bool
	// meta_bg: from group firstMetaBG*(descriptors per block) on, each
	// block of descriptors sits in the first group it describes.
	metaBG         bool
	firstMetaBG    uint64
	firstDataBlock uint64
	blocksPerGroup uint64
	sparseSuper    bool       // superblock copies only in groups 0, 1 and powers of 3, 5, 7
	backupBGs      *[2]uint32 // sparse_super2: the only groups with a copy but 0
}

// Open reads the superblock of the filesystem in r. If r has a Size method
// (io.SectionReader, bytes.Reader), no block past that size is read or
// returned, whatever the superblock says.
func Open(r io.ReaderAt) (*FS, error) {
	sb := make([]byte, 1024)
	if _, err := r.ReadAt(sb, 1024); err != nil && err != io.EOF {
		return nil, err
	}
	le := binary.LittleEndian
	if le.Uint16(sb[0x38:]) != 0xef53 {
		return nil, ErrNotExt4
	}
	logBS := le.Uint32(sb[0x18:])
	if logBS > 6 {
		return nil, fmt.Errorf("%w: block size 1024<<%d", ErrCorrupt, logBS)
	}
	f := &FS{r: r, BlockSize: 1024 << logBS, inodes: le.Uint32(sb[0:]), perGroup: le.Uint32(sb[0x28:]), inodeSize: 128}
	f.blocks = uint64(le.Uint32(sb[0x4:]))
	incompat := le.Uint32(sb[0x60:])
	f.incompat64 = incompat&0x80 != 0
	if f.incompat64 {
		f.blocks |= uint64(le.Uint32(sb[0x150:])) << 32
	}
	if le.Uint32(sb[0x4c:]) >= 1 {
		f.inodeSize = int64(le.Uint16(sb[0x58:]))
	}
	f.descSize = 32
	if f.incompat64 {
		f.descSize = int64(le.Uint16(sb[0xfe:]))
	}
	f.firstDataBlock = uint64(le.Uint32(sb[0x14:]))
	f.descTable = f.firstDataBlock + 1
	if f.metaBG = incompat&0x10 != 0; f.metaBG {
		f.firstMetaBG, f.blocksPerGroup = uint64(le.Uint32(sb[0x104:])), uint64(le.Uint32(sb[0x20:]))
		f.sparseSuper = le.Uint32(sb[0x64:])&0x1 != 0
		if le.Uint32(sb[0x5c:])&0x200 != 0 {
			f.backupBGs = &[2]uint32{le.Uint32(sb[0x24c:]), le.Uint32(sb[0x250:])}
		}
		if f.blocksPerGroup == 0 {
			return nil, fmt.Errorf("%w: superblock geometry", ErrCorrupt)
		}
	}
	if s, ok := r.(interface{ Size() int64 }); ok && s.Size() >= 0 {
		f.blocks = min(f.blocks, uint64(s.Size()/f.BlockSize))
	}
	if f.perGroup == 0 || f.inodeSize < 128 || f.inodeSize > f.BlockSize || f.descSize < 32 || f.descSize > 1024 || f.blocks == 0 {
		return nil, fmt.Errorf("%w: superblock geometry", ErrCorrupt)
	}
	return f, nil
}

// Inode is one inode as read.
type Inode struct {
	Ino   uint32
	Mode  uint16
	Size  int64
	Flags uint32
	block [60]byte
	extra []byte // the inode past its first 128 bytes: in-inode xattrs
	// Table is the filesystem block of the inode table that holds it.
	Table uint64
}

// Mode types.
const (
	modeType = 0xf000
	modeDir  = 0x4000
	modeReg  = 0x8000
	modeLink = 0xa000
)

func (i *Inode) IsDir() bool     { return i.Mode&modeType == modeDir }
func (i *Inode) IsSymlink() bool { return i.Mode&modeType == modeLink }
func (i *Inode) IsRegular() bool { return i.Mode&modeType == modeReg }

func (f *FS) readBlock(b uint64, p []byte) error {
	if b >= f.blocks {
		return fmt.Errorf("%w: block %d past the end (%d blocks)", ErrCorrupt, b, f.blocks)
	}
	_, err := f.r.ReadAt(p, int64(b)*f.BlockSize)
	if err == io.EOF {
		err = nil
	}
	return err
}

// ReadInode reads inode ino.
func (f *FS) ReadInode(ino uint32) (*Inode, error) {
	if ino == 0 || ino > f.inodes {
		return nil, fmt.Errorf("%w: inode %d", ErrCorrupt, ino)
	}
	group, index := uint64((ino-1)/f.perGroup), int64((ino-1)%f.perGroup)
	desc := make([]byte, f.descSize)
	off := int64(f.descTable)*f.BlockSize + int64(group)*f.descSize
	if per := uint64(f.BlockSize / f.descSize); f.metaBG && group/per >= f.firstMetaBG {
		first := group / per * per
		blk := f.firstDataBlock + first*f.blocksPerGroup
		if f.hasSuper(first) {
			blk++
		}
		if blk >= f.blocks {
			return nil, fmt.Errorf("%w: descriptors of group %d at block %d", ErrCorrupt, group, blk)
		}
		off = int64(blk)*f.BlockSize + int64(group%per)*f.descSize
	}
	if _, err := f.r.ReadAt(desc, off); err != nil && err != io.EOF {
		return nil, err
	}
	le := binary.LittleEndian
	table := uint64(le.Uint32(desc[0x8:]))
	if f.descSize >= 64 {
		table |= uint64(le.Uint32(desc[0x28:])) << 32
	}
	byteOff := index * f.inodeSize
	in := &Inode{Ino: ino, Table: table + uint64(byteOff/f.BlockSize)}
	if in.Table >= f.blocks {
		return nil, fmt.Errorf("%w: inode table of group %d at block %d", ErrCorrupt, group, table)
	}
	raw := make([]byte, f.inodeSize)
	if _, err := f.r.ReadAt(raw, int64(table)*f.BlockSize+byteOff); err != nil && err != io.EOF {
		return nil, err
	}
	in.Mode = le.Uint16(raw[0:])
	in.Size = int64(le.Uint32(raw[4:])) | int64(le.Uint32(raw[0x6c:]))<<32
	in.Flags = le.Uint32(raw[0x20:])
	copy(in.block[:], raw[0x28:0x28+60])
	in.extra = raw[128:]
	if in.Size < 0 {
		return nil, fmt.Errorf("%w: inode %d size", ErrCorrupt, ino)
	}
	return in, nil
}

// hasSuper reports whether group g holds a copy of the superblock.
func (f *FS) hasSuper(g uint64) bool {
	switch {
	case g == 0:
		return true
	case f.backupBGs != nil:
		return g == uint64(f.backupBGs[0]) || g == uint64(f.backupBGs[1])
	case g == 1 || !f.sparseSuper:
		return true
	case g%2 == 0:
		return false
	}
	for _, base := range []uint64{3, 5, 7} {
		p := base
		for p < g {
			p *= base
		}
		if p == g {
			return true
		}
	}
	return false
}

const (
	flagExtents = 0x80000
	flagInline  = 0x10000000
	maxDepth    = 8
	maxBlocks   = 1 << 26 // 256 GiB of 4 KiB blocks: more is not a file history reads
)

// Extent maps Len filesystem blocks from file block Logical to Physical.
type Extent struct {
	Logical, Physical, Len uint64
	Unwritten              bool
}

// Map returns the data extents of an inode and the blocks of its extent
// tree or indirect blocks (meta). Inline data and fast symlinks have none.
func (f *FS) Map(in *Inode) (data []Extent, meta []uint64, err error) {
	if in.Flags&flagInline != 0 || (in.IsSymlink() && in.Size < 60 && in.Flags&flagExtents == 0) {
		return nil, nil, nil
	}
	if in.Flags&flagExtents != 0 {
		w := &extentWalk{f: f, seen: map[uint64]bool{}, data: &data, meta: &meta}
		err = w.node(in.block[:], 0, -1)
	} else {
		err = f.blockMap(in, &data, &meta)
	}
	return data, meta, err
}

// extentWalk reads an extent tree. Each tree block is read once, and
// together the extents map no more blocks than the filesystem has: a
// corrupt tree that points back at its own blocks is an error, not a walk
// without end.
type extentWalk struct {
	f      *FS
	seen   map[uint64]bool // tree blocks read
	mapped uint64          // blocks in data
	data   *[]Extent
	meta   *[]uint64
}

// node reads one node at level (0: the root in the inode), whose depth
// must be want (-1 for the root: any).
func (w *extentWalk) node(node []byte, level, want int) error {
	f, data, meta := w.f, w.data, w.meta
	le := binary.LittleEndian
	if len(node) < 12 || le.Uint16(node) != 0xf30a {
		return fmt.Errorf("%w: extent header", ErrCorrupt)
	}
	n, depth := int(le.Uint16(node[2:])), int(le.Uint16(node[6:]))
	if level > maxDepth || depth > maxDepth || 12+12*n > len(node) || (want >= 0 && depth != want) {
		return fmt.Errorf("%w: extent node of %d entries, depth %d", ErrCorrupt, n, depth)
	}
	for i := 0; i < n; i++ {
		e := node[12+12*i:]
		if depth == 0 {
			l := uint64(le.Uint16(e[4:]))
			unwritten := l > 32768
			if unwritten {
				l -= 32768
			}
			start := uint64(le.Uint16(e[6:]))<<32 | uint64(le.Uint32(e[8:]))
			if w.mapped += l; start+l > f.blocks || w.mapped > f.blocks || len(*data) > maxBlocks {
				return fmt.Errorf("%w: extent %d+%d", ErrCorrupt, start, l)
			}
			*data = append(*data, Extent{Logical: uint64(le.Uint32(e)), Physical: start, Len: l, Unwritten: unwritten})
			continue
		}
		child := uint64(le.Uint16(e[8:]))<<32 | uint64(le.Uint32(e[4:]))
		if w.seen[child] {
			return fmt.Errorf("%w: extent tree block %d used twice", ErrCorrupt, child)
		}
		w.seen[child] = true
		*meta = append(*meta, child)
		buf := make([]byte, f.BlockSize)
		if err := f.readBlock(child, buf); err != nil {
			return err
		}
		if err := w.node(buf, level+1, depth-1); err != nil {
			return err
		}
	}
	return nil
}

// blockMap reads an ext2/3 block map: 12 direct, then 1-3 levels of indirection.
func (f *FS) blockMap(in *Inode, data *[]Extent, meta *[]uint64) error {
	le := binary.LittleEndian
	need := uint64((in.Size + f.BlockSize - 1) / f.BlockSize)
	if need > maxBlocks {
		return fmt.Errorf("%w: a file of %d blocks", ErrUnsupported, need)
	}
	var logical, mapped uint64
	add := func(b uint64) error {
		if b != 0 && logical < need {
			if b >= f.blocks || mapped >= f.blocks {
				return fmt.Errorf("%w: block %d of inode %d", ErrCorrupt, b, in.Ino)
			}
			mapped++
			if n := len(*data); n > 0 && (*data)[n-1].Physical+(*data)[n-1].Len == b && (*data)[n-1].Logical+(*data)[n-1].Len == logical {
				(*data)[n-1].Len++
			} else {
				*data = append(*data, Extent{Logical: logical, Physical: b, Len: 1})
			}
		}
		logical++
		return nil
	}
	seen := map[uint64]bool{} // indirect blocks: each is read once
	var walk func(b uint64, level int) error
	walk = func(b uint64, level int) error {
		per := uint64(f.BlockSize / 4)
		if b == 0 { // a hole: skip what it would have mapped
			span := uint64(1)
			for i := 0; i < level; i++ {
				span *= per
			}
			logical += span
			return nil
		}
		if level == 0 {
			return add(b)
		}
		if seen[b] {
			return fmt.Errorf("%w: indirect block %d of inode %d used twice", ErrCorrupt, b, in.Ino)
		}
		seen[b] = true
		*meta = append(*meta, b)
		buf := make([]byte, f.BlockSize)
		if err := f.readBlock(b, buf); err != nil {
			return err
		}
		for i := uint64(0); i < per && logical < need; i++ {
			if err := walk(uint64(le.Uint32(buf[4*i:])), level-1); err != nil {
				return err
			}
		}
		return nil
	}
	for i := 0; i < 15 && logical < need; i++ {
		level := max(0, i-11)
		if err := walk(uint64(le.Uint32(in.block[4*i:])), level); err != nil {
			return err
		}
	}
	return nil
}

// ReadFile returns the content of a regular file or the target of a symlink.
func (f *FS) ReadFile(in *Inode, limit int64) ([]byte, error) {
	if in.Size > limit {
		return nil, fmt.Errorf("%w: %d bytes (more than %d)", ErrUnsupported, in.Size, limit)
	}
	if in.Flags&flagInline != 0 || (in.IsSymlink() && in.Size < 60 && in.Flags&flagExtents == 0) {
		if in.Size <= 60 {
			return append([]byte(nil), in.block[:in.Size]...), nil
		}
		rest := in.inlineXattr()
		if in.Flags&flagInline == 0 || int64(len(rest)) < in.Size-60 {
			return nil, fmt.Errorf("%w: inline data of inode %d", ErrCorrupt, in.Ino)
		}
		return append(append([]byte(nil), in.block[:]...), rest[:in.Size-60]...), nil
	}
	data, _, err := f.Map(in)
	if err != nil {
		return nil, err
	}
	out := make([]byte, in.Size)
	for _, e := range data {
		if e.Unwritten {
			continue // reads as zeros
		}
		for k := uint64(0); k < e.Len; k++ {
			off := int64(e.Logical+k) * f.BlockSize
			if off >= in.Size {
				break
			}
			end := min(off+f.BlockSize, in.Size)
			if _, err := f.r.ReadAt(out[off:end], int64(e.Physical+k)*f.BlockSize); err != nil && err != io.EOF {
				return nil, err
			}
		}
	}
	return out, nil
}

// inlineXattr returns the value of the in-inode xattr system.data, where
// inline data goes on past i_block (nil if there is none). After the
// inode's extra fields (i_extra_isize at 0x80): magic 0xea020000, then
// entries (name_len u8, name_index u8 (7: system.), value_offs u16 from
// the first entry, value_inum u32, value_size u32, hash u32, name; 4-byte
// aligned) up to a zero word.
func (in *Inode) inlineXattr() []byte {
	le := binary.LittleEndian
	if len(in.extra) < 4 {
		return nil
	}
	start := int(le.Uint16(in.extra)) // i_extra_isize, from byte 128
	if start+4 > len(in.extra) || le.Uint32(in.extra[start:]) != 0xea020000 {
		return nil
	}
	first := in.extra[start+4:]
	for pos := 0; pos+16 <= len(first) && le.Uint32(first[pos:]) != 0; {
		nameLen, index := int(first[pos]), first[pos+1]
		offs, size := int(le.Uint16(first[pos+2:])), int(le.Uint32(first[pos+8:]))
		if pos+16+nameLen > len(first) {
			return nil
		}
		if index == 7 && string(first[pos+16:pos+16+nameLen]) == "data" {
			if le.Uint32(first[pos+4:]) != 0 || offs > len(first) || size > len(first)-offs {
				return nil // in another inode (ea_inode), or past this one
			}
			return first[offs : offs+size]
		}
		pos += (16 + nameLen + 3) &^ 3
	}
	return nil
}

// Lookup finds name in the directory dir.
func (f *FS) Lookup(dir *Inode, name string) (uint32, error) {
	if !dir.IsDir() {
		return 0, ErrNotFound
	}
	if dir.Size > 64<<20 {
		return 0, fmt.Errorf("%w: a directory of %d bytes", ErrUnsupported, dir.Size)
	}
	if uint64(dir.Size) > f.blocks*uint64(f.BlockSize) { // directories have no holes
		return 0, fmt.Errorf("%w: a directory of %d bytes", ErrCorrupt, dir.Size)
	}
	b, err := f.ReadFile(dir, 64<<20)
	if err != nil {
		return 0, err
	}
	le := binary.LittleEndian
	if dir.Flags&flagInline != 0 { // inline directory: parent inode, then entries
		b = b[min(4, len(b)):]
	}
	for off := 0; off+8 <= len(b); {
		ino, recLen, nameLen := le.Uint32(b[off:]), int(le.Uint16(b[off+4:])), int(b[off+6])
		if f.BlockSize == 65536 && (recLen == 65535 || recLen == 0) {
			recLen = 65536 // a whole block, as it does not fit 16 bits
		}
		if recLen < 8 || off+recLen > len(b) {
			return 0, fmt.Errorf("%w: directory entry at %d of inode %d", ErrCorrupt, off, dir.Ino)
		}
		if ino != 0 && 8+nameLen <= recLen && string(b[off+8:off+8+nameLen]) == name {
			return ino, nil
		}
		off += recLen
	}
	return 0, ErrNotFound
}

// Resolved is a path resolved to its inode, with every block whose change
// may change what the path shows.
type Resolved struct {
	Inode *Inode // nil if the path does not exist
	// Watch lists filesystem blocks: the inode table blocks and data and
	// tree blocks of every directory on the path, then the file's own inode
	// table block, extent tree and data blocks.
	Watch []uint64
}

const rootIno = 2

// Resolve resolves the absolute path p from the root, following symlinks
// in directories within the filesystem (never out of it) and not following
// the last component. A missing path has a nil Inode and the blocks of the
// directories that were read.
func (f *FS) Resolve(p string) (*Resolved, error) {
	res := &Resolved{}
	todo := strings.Split(strings.Trim(path.Clean("/"+p), "/"), "/")
	if len(todo) == 1 && todo[0] == "" {
		todo = nil
	}
	var stack []*Inode // the directories from the root down to the current one
	root, err := f.ReadInode(rootIno)
	if err != nil {
		return nil, err
	}
	stack = append(stack, root)
	links := 0
	if err := f.watch(res, root); err != nil {
		return nil, err
	}
	for len(todo) > 0 {
		name := todo[0]
		todo = todo[1:]
		cur := stack[len(stack)-1]
		switch name {
		case "", ".":
			continue
		case "..":
			if len(stack) > 1 {
				stack = stack[:len(stack)-1]
			}
			continue
		}
		ino, err := f.Lookup(cur, name)
		if errors.Is(err, ErrNotFound) {
			return res, nil
		}
		if err != nil {
			return nil, err
		}
		in, err := f.ReadInode(ino)
		if err != nil {
			return nil, err
		}
		if err := f.watch(res, in); err != nil {
			return nil, err
		}
		if len(todo) == 0 {
			res.Inode = in
			return res, nil
		}
		switch {
		case in.IsDir():
			stack = append(stack, in)
		case in.IsSymlink():
			if links++; links > 40 {
				return res, nil // ELOOP: as if missing
			}
			target, err := f.ReadFile(in, 4096)
			if err != nil {
				return nil, err
			}
			t := string(target)
			if strings.HasPrefix(t, "/") {
				stack = stack[:1]
			}
			todo = append(strings.Split(t, "/"), todo...)
		default:
			return res, nil // ENOTDIR: as if missing
		}
	}
	res.Inode = stack[len(stack)-1]
	return res, nil
}

// watch adds an inode's table block and all its blocks to res.Watch.
func (f *FS) watch(res *Resolved, in *Inode) error {
	res.Watch = append(res.Watch, in.Table)
	if !in.IsDir() && !in.IsRegular() && !in.IsSymlink() {
		return nil
	}
	data, meta, err := f.Map(in)
	if err != nil {
		return err
	}
	res.Watch = append(res.Watch, meta...)
	for _, e := range data {
		for k := uint64(0); k < e.Len; k++ {
			res.Watch = append(res.Watch, e.Physical+k)
		}
	}
	return nil
}
