package recovery

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// Restore statuses, one per requested path.
const (
	Restored = "restored"
	Missing  = "missing" // not in the image at that instant
	Exists   = "exists"  // the target exists and Overwrite is off
	Failed   = "error"
	// Skipped: the path itself is a special file (see Skip) and nothing
	// was written.
	Skipped = "skipped"
)

// Kinds of entries a restore skips (Skip.Kind).
const (
	KindCharDevice  = "char-device"
	KindBlockDevice = "block-device"
	KindFIFO        = "fifo"
	KindSocket      = "socket"
	// KindUnsafeName: a directory entry named "", ".", ".." or with a "/"
	// (the kernel refuses to list these today; the check does not rely on it).
	KindUnsafeName = "unsafe-name"
)

// What a restore takes away from an entry's metadata (Strip.Stripped).
const (
	StripSetuid       = "setuid"
	StripSetgid       = "setgid"
	StripCapabilities = "capabilities" // the security.capability xattr
)

// capXattr holds file capabilities: as good as setuid for what it grants.
const capXattr = "security.capability"

// RestoreOptions say where restored files go.
type RestoreOptions struct {
	// To is the target directory (created if missing): an image path /a/b is
	// restored to To/a/b. Nothing is written outside it: no symlink in it is
	// followed.
	To string
	// Overwrite replaces existing targets (files atomically, by rename;
	// directories are merged).
	Overwrite bool
	// PreserveSpecial restores what an image from an untrusted machine
	// should not hand the host: device nodes, FIFOs and sockets are
	// recreated, setuid and setgid bits and file capabilities kept. Without
	// it they are skipped or stripped, and each is listed in the result.
	PreserveSpecial bool
}

// Skip is an entry that was not restored, and why.
type Skip struct {
	Path   string `json:"path"` // below the target directory, where it would have gone
	Kind   string `json:"kind"` // KindCharDevice, KindBlockDevice, KindFIFO, KindSocket, KindUnsafeName
	Reason string `json:"reason"`
}

// Strip is an entry restored without some of its metadata.
type Strip struct {
	Path      string   `json:"path"`       // below the target directory
	Stripped  []string `json:"stripped"`   // StripSetuid, StripSetgid, StripCapabilities
	ImageMode string   `json:"image_mode"` // permission bits in the image, octal ("4755")
	Mode      string   `json:"mode"`       // as restored ("0755")
}

// PathResult is what became of one requested path.
type PathResult struct {
	Path      string `json:"path"`
	Partition string `json:"partition,omitempty"`
	Target    string `json:"target,omitempty"`
	Status    string `json:"status"`
	Files     int    `json:"files"` // entries written: files, directories, links
	Bytes     int64  `json:"bytes"`
	Error     string `json:"error,omitempty"`
	// Skipped and Stripped list, below this path, the entries not
	// restored and those restored without setuid/setgid bits or
	// capabilities (empty with PreserveSpecial).
	Skipped  []Skip  `json:"skipped"`
	Stripped []Strip `json:"stripped"`
}

// Restore copies each path out of the instant into opt.To with its mode,
// owner, times, xattrs, symlinks and hard links (within one restore) where
// the target filesystem allows. Problems with one path are reported in its
// result; the error is for what stops the whole restore (ctx, an unusable
// target directory).
//
// The image is not trusted. Unless opt.PreserveSpecial: device nodes, FIFOs
// and sockets are skipped; setuid and setgid bits (on files and
// directories) and file capabilities are dropped, so that no restored file
// runs with more rights than its caller's. Owners are kept (when running as
// root): once those bits are gone, a file owned by root grants nothing, and
// an admin restoring /etc or /home wants the owners back. The sticky bit is
// kept: it only restricts (who may delete in a directory). opt.To is made
// 0700 when it does not exist, so that no other user reaches the entries
// while they are written; an existing directory is left as it is.
func (in *Instant) Restore(ctx context.Context, paths []string, opt RestoreOptions) ([]PathResult, error) {
	if err := os.MkdirAll(opt.To, 0o700); err != nil {
		return nil, fmt.Errorf("restore target: %w", err)
	}
	to, err := unix.Open(opt.To, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("restore target %s: %w", opt.To, err)
	}
	defer unix.Close(to)
	c := &copier{ctx: ctx, to: to, toPath: opt.To, overwrite: opt.Overwrite, special: opt.PreserveSpecial, links: map[[2]uint64]string{}}
	var out []PathResult
	for _, p := range paths {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		res := PathResult{Path: p}
		c.files, c.bytes, c.skipped, c.stripped = 0, 0, []Skip{}, []Strip{}
		err := in.restoreOne(c, p, &res)
		res.Files, res.Bytes, res.Skipped, res.Stripped = c.files, c.bytes, c.skipped, c.stripped
		var skip *skipError
		switch {
		case err == nil:
			res.Status = Restored
		case errors.As(err, &skip):
			res.Status, res.Error = Skipped, skip.Error()
		case errors.Is(err, ctx.Err()) && ctx.Err() != nil:
			return append(out, res), err
		case errors.Is(err, fs.ErrNotExist):
			res.Status, res.Error = Missing, "no such file or directory in the image"
		case errors.Is(err, ErrNoFilesystem):
			res.Status, res.Error = Missing, err.Error()
		case errors.Is(err, ErrExists):
			res.Status, res.Error = Exists, err.Error()
		default:
			res.Status, res.Error = Failed, err.Error()
		}
		out = append(out, res)
	}
	return out, nil
}

func (in *Instant) restoreOne(c *copier, p string, res *PathResult) error {
	part, rel, err := in.Locate(p)
	if err != nil {
		return err
	}
	res.Partition = part.Name
	src, err := resolveIn(part.Dir, rel)
	if err != nil {
		return err
	}
	// The target mirrors the path as given (a guest path, or pN:/... under pN/).
	target := cleanPath(p)
	if name, rest, ok := strings.Cut(p, ":"); ok && !strings.Contains(name, "/") {
		target = path.Join("/", name, cleanPath(rest))
	}
	res.Target = filepath.Join(c.toPath, target)
	if target == "/" {
		return c.copyInto(c.to, "", src)
	}
	dir, base := path.Split(target)
	dfd, err := c.mkdirs(strings.Trim(dir, "/"))
	if err != nil {
		return err
	}
	defer unix.Close(dfd)
	st, err := os.Lstat(src)
	if err != nil {
		return err
	}
	n := len(c.skipped)
	if err := c.copy(dfd, strings.Trim(dir, "/"), base, src, st); err != nil {
		return err
	}
	if len(c.skipped) > n && c.files == 0 && !st.IsDir() {
		return &skipError{c.skipped[n]}
	}
	return nil
}

// skipError: the requested path itself was skipped.
type skipError struct{ s Skip }

func (e *skipError) Error() string { return e.s.Kind + ": " + e.s.Reason }

// copier writes below the target directory fd `to`, never through a symlink.
type copier struct {
	ctx       context.Context
	to        int
	toPath    string
	overwrite bool
	special   bool                 // RestoreOptions.PreserveSpecial
	links     map[[2]uint64]string // (dev, ino) of a multiply linked file → its target path below to
	files     int
	bytes     int64
	skipped   []Skip
	stripped  []Strip
}

// beneath opens the directory rel (relative to the target) without
// following any symlink and without leaving the target.
func (c *copier) beneath(rel string) (int, error) {
	if rel == "" {
		rel = "."
	}
	fd, err := unix.Openat2(c.to, rel, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC | unix.O_NOFOLLOW,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return -1, &os.PathError{Op: "open target directory", Path: rel, Err: err}
	}
	return fd, nil
}

// mkdirs creates the directories of rel below the target (0755, as mkdir -p)
// and opens the last.
func (c *copier) mkdirs(rel string) (int, error) {
	cur := ""
	for _, comp := range strings.Split(rel, "/") {
		if comp == "" {
			continue
		}
		fd, err := c.beneath(cur)
		if err != nil {
			return -1, err
		}
		err = unix.Mkdirat(fd, comp, 0o755)
		unix.Close(fd)
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return -1, &os.PathError{Op: "mkdir", Path: path.Join(cur, comp), Err: err}
		}
		cur = path.Join(cur, comp)
	}
	return c.beneath(cur)
}

// copyInto copies the children of the directory src into the directory dfd
// (dir below the target).
func (c *copier) copyInto(dfd int, dir, src string) error {
	ents, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	sort.Slice(ents, func(i, j int) bool { return ents[i].Name() < ents[j].Name() })
	for _, e := range ents {
		if err := c.ctx.Err(); err != nil {
			return err
		}
		// Every operation on the target takes the name as one component
		// relative to dfd: a name with a "/" would reach through a symlink
		// this restore made (or, as "..", above dfd).
		if n := e.Name(); !safeName(n) {
			c.skipped = append(c.skipped, Skip{Path: strings.TrimPrefix(dir+"/"+n, "/"), Kind: KindUnsafeName, Reason: "a name no file may have: damaged or forged filesystem"})
			continue
		}
		child := filepath.Join(src, e.Name())
		st, err := os.Lstat(child)
		if err != nil {
			return err
		}
		if err := c.copy(dfd, dir, e.Name(), child, st); err != nil {
			return err
		}
	}
	return nil
}

// copy copies src (never followed) to name in the directory dfd (dir below
// the target).
func (c *copier) copy(dfd int, dir, name, src string, st os.FileInfo) error {
	sys := st.Sys().(*unixStat)
	rel := path.Join(dir, name)
	if kind := specialKind(sys.Mode); kind != "" && !c.special {
		c.skipped = append(c.skipped, Skip{Path: rel, Kind: kind, Reason: "special file (use --preserve-special)"})
		return nil
	}
	var existing unix.Stat_t
	exists := unix.Fstatat(dfd, name, &existing, unix.AT_SYMLINK_NOFOLLOW) == nil
	if exists && !c.overwrite {
		return fmt.Errorf("%w: %s (use --overwrite)", ErrExists, name)
	}
	if st.IsDir() {
		if exists && existing.Mode&unix.S_IFMT != unix.S_IFDIR {
			if err := unix.Unlinkat(dfd, name, 0); err != nil {
				return err
			}
			exists = false
		}
		if !exists {
			if err := unix.Mkdirat(dfd, name, 0o700); err != nil {
				return &os.PathError{Op: "mkdir", Path: name, Err: err}
			}
		}
		fd, err := unix.Openat2(dfd, name, &unix.OpenHow{Flags: unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC,
			Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS})
		if err != nil {
			return &os.PathError{Op: "open", Path: name, Err: err}
		}
		defer unix.Close(fd)
		c.files++
		if err := c.copyInto(fd, rel, src); err != nil {
			return err
		}
		return c.meta(fd, -1, "", rel, src, sys) // after the children, so the times stick
	}
	key := [2]uint64{uint64(sys.Dev), sys.Ino}
	if sys.Nlink > 1 {
		if first, ok := c.links[key]; ok {
			return c.link(dfd, name, first, exists)
		}
	}
	tmp := fmt.Sprintf(".%s.hindsight-%d", name, os.Getpid())
	if len(tmp) > 255 {
		tmp = fmt.Sprintf(".hindsight-restore-%d", os.Getpid())
	}
	unix.Unlinkat(dfd, tmp, 0) // a leftover of an interrupted restore
	var err error
	switch st.Mode().Type() {
	case 0:
		err = c.file(dfd, tmp, rel, src, sys)
	case fs.ModeSymlink:
		var target string
		if target, err = os.Readlink(src); err == nil {
			if err = unix.Symlinkat(target, dfd, tmp); err == nil {
				err = c.meta(-1, dfd, tmp, rel, src, sys)
			}
		}
	case fs.ModeNamedPipe, fs.ModeDevice, fs.ModeDevice | fs.ModeCharDevice, fs.ModeSocket: // PreserveSpecial
		if err = unix.Mknodat(dfd, tmp, sys.Mode, int(sys.Rdev)); err == nil {
			err = c.meta(-1, dfd, tmp, rel, src, sys)
		}
	default:
		return fmt.Errorf("%s: unknown file type %v", rel, st.Mode().Type())
	}
	if err == nil && exists && existing.Mode&unix.S_IFMT == unix.S_IFDIR {
		err = fmt.Errorf("%w: %s is a directory, the image has a file", ErrExists, name)
	}
	if err == nil {
		err = unix.Renameat(dfd, tmp, dfd, name)
	}
	if err != nil {
		unix.Unlinkat(dfd, tmp, 0)
		return err
	}
	c.files++
	if sys.Nlink > 1 {
		c.links[key] = rel
	}
	return nil
}

// safeName says if n is one path component of its own.
func safeName(n string) bool {
	return n != "" && n != "." && n != ".." && !strings.Contains(n, "/")
}

// specialKind names the kind of a device node, FIFO or socket ("" for
// anything else).
func specialKind(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFCHR:
		return KindCharDevice
	case unix.S_IFBLK:
		return KindBlockDevice
	case unix.S_IFIFO:
		return KindFIFO
	case unix.S_IFSOCK:
		return KindSocket
	}
	return ""
}

// restoredMode is the permission bits rel gets from the image's mode, and
// what was taken away (recorded as a Strip together with capabilities, which
// the xattr copy reports in caps).
func (c *copier) restoredMode(rel string, mode uint32, caps bool) uint32 {
	perm := mode & 0o7777
	if c.special || mode&unix.S_IFMT == unix.S_IFLNK {
		return perm
	}
	var what []string
	if perm&unix.S_ISUID != 0 {
		what = append(what, StripSetuid)
	}
	if perm&unix.S_ISGID != 0 {
		what = append(what, StripSetgid)
	}
	if caps {
		what = append(what, StripCapabilities)
	}
	out := perm &^ (unix.S_ISUID | unix.S_ISGID)
	if len(what) > 0 {
		c.stripped = append(c.stripped, Strip{Path: rel, Stripped: what, ImageMode: fmt.Sprintf("%04o", perm), Mode: fmt.Sprintf("%04o", out)})
	}
	return out
}

// file copies a regular file's content and metadata to tmp in dfd.
func (c *copier) file(dfd int, tmp, rel, src string, sys *unixStat) error {
	in, err := os.OpenFile(src, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer in.Close()
	fd, err := unix.Openat(dfd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return &os.PathError{Op: "create", Path: tmp, Err: err}
	}
	out := os.NewFile(uintptr(fd), tmp)
	defer out.Close()
	n, err := io.Copy(out, ctxReader{c.ctx, in})
	c.bytes += n
	if err != nil {
		return err
	}
	if err := c.meta(fd, -1, "", rel, src, sys); err != nil {
		return err
	}
	return out.Sync()
}

// link makes name in dfd a hard link to first (a target path below to).
func (c *copier) link(dfd int, name, first string, exists bool) error {
	dir, base := path.Split(first)
	ofd, err := c.beneath(strings.Trim(dir, "/"))
	if err != nil {
		return err
	}
	defer unix.Close(ofd)
	if exists {
		if err := unix.Unlinkat(dfd, name, 0); err != nil {
			return err
		}
	}
	if err := unix.Linkat(ofd, base, dfd, name, 0); err != nil {
		return &os.PathError{Op: "link", Path: name, Err: err}
	}
	c.files++
	return nil
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}
