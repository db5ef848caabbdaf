package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hindsight-cdp/hindsight/cdp"
	"github.com/hindsight-cdp/hindsight/cdp/timespec"
	"github.com/hindsight-cdp/hindsight/store"
	"github.com/urfave/cli/v2"
)

// repoDir returns --repo or HINDSIGHT_REPO.
func repoDir(c *cli.Context) (string, error) {
	dir := c.String("repo")
	if dir == "" {
		return "", usagef("no repository: give --repo DIR or set HINDSIGHT_REPO")
	}
	return dir, nil
}

func logf(c *cli.Context) func(string, ...any) {
	if !c.Bool("debug") {
		return nil
	}
	return func(f string, args ...any) { fmt.Fprintf(os.Stderr, "debug: "+f+"\n", args...) }
}

// openRepo opens the repository for writing, or a read-only view when
// readOnly (which works beside a running writer).
func openRepo(c *cli.Context, readOnly bool) (*store.Repo, error) {
	dir, err := repoDir(c)
	if err != nil {
		return nil, err
	}
	opt := store.Options{ReadOnly: readOnly, Logf: logf(c), Notef: notef}
	if s := c.String("min-free"); s != "" && !readOnly {
		n, err := parseSize(s)
		if err != nil {
			return nil, err
		}
		opt.MinFree = uint64(n)
	}
	r, err := store.Open(dir, opt)
	return r, openErr(dir, err)
}

// minFreeFlag is --min-free of the commands that run the repository's
// writer (serve; protect and serve-nbd in the foreground): openRepo reads it.
func minFreeFlag() cli.Flag {
	return &cli.StringFlag{Name: "min-free", Usage: fmt.Sprintf(
		"keep `SIZE` free on the repository's filesystem: new writes are refused (ENOSPC) below it, so the journal never fills the disk (default %s, or an eighth of a smaller filesystem)",
		humanBytes(store.DefaultMinFree))}
}

// noSpaceHint says what to do when a write was refused because the
// repository's filesystem is full.
func noSpaceHint(err error) error {
	if !errors.Is(err, syscall.ENOSPC) {
		return err
	}
	return fmt.Errorf("%w\nThe repository's filesystem is full; the journal is intact. Free space by thinning old history ('hindsight prune', then 'hindsight gc') or by giving the filesystem more room, then try again", err)
}

// openLive opens the repository as a read-only view that follows the writer.
func openLive(c *cli.Context) (*cdp.Live, error) {
	dir, err := repoDir(c)
	if err != nil {
		return nil, err
	}
	l, err := cdp.OpenLive(dir, logf(c))
	return l, openErr(dir, err)
}

// openErr classifies an error opening the repository in dir. The store
// answers ErrNotRepository both when there is none and when its marker is
// unreadable: without a marker there is no repository (exit 3); with one,
// the repository is there and damaged (exit 1).
func openErr(dir string, err error) error {
	if !errors.Is(err, store.ErrNotRepository) {
		return err
	}
	// hindsight.json is the store's format marker (store/repo.go).
	if _, serr := os.Stat(filepath.Join(dir, "hindsight.json")); errors.Is(serr, fs.ErrNotExist) {
		return notFound(err)
	}
	return damaged(fmt.Errorf("the repository at %s is damaged: %w", dir, err))
}

// withRepo runs fn on the open repository and closes it.
func withRepo(c *cli.Context, readOnly bool, fn func(r *store.Repo) error) error {
	r, err := openRepo(c, readOnly)
	if err != nil {
		return err
	}
	return joinClose(fn(r), r.Close)
}

// withDisk checks that the command got its n arguments (names says which;
// the first is a DISK) and runs fn on that disk in the open repository.
func withDisk(c *cli.Context, n int, names string, readOnly bool, fn func(r *store.Repo, d store.Disk) error) error {
	if err := needArgs(c, n, names); err != nil {
		return err
	}
	return withRepo(c, readOnly, func(r *store.Repo) error {
		d, err := r.Disk(c.Args().First())
		if errors.Is(err, store.ErrUnknownDisk) {
			if g, gerr := r.Group(c.Args().First()); gerr == nil {
				err = fmt.Errorf("%w: %q is a group; '%s' takes one of its disks (%s)", store.ErrUnknownDisk, g.Name, c.Command.FullName(), strings.Join(g.Disks, ", "))
			}
			return notFound(err)
		}
		if err != nil {
			return err
		}
		return fn(r, d)
	})
}

// resolveAt resolves the instant spec (--at and the like) of disk d and
// classifies what can go wrong: a time that does not parse is bad input
// (exit 2); an instant in the future or before the disk's first point, an
// unknown bookmark, a disk without points, is no such instant (exit 3).
func resolveAt(r cdp.PointReader, d store.Disk, spec string, now time.Time) (cdp.Instant, error) {
	in, err := cdp.Resolve(r, d, spec, now)
	switch {
	case err == nil:
		return in, nil
	case errors.Is(err, timespec.ErrBadTime):
		return in, usageErr(err)
	case errors.Is(err, cdp.ErrFuture), errors.Is(err, store.ErrNoPoint), errors.Is(err, store.ErrUnknownBookmark):
		return in, notFound(err)
	}
	return in, err
}

func joinClose(err error, close func() error) error {
	if cerr := close(); err == nil {
		err = cerr
	}
	return err
}

// needArgs checks the positional arguments.
func needArgs(c *cli.Context, n int, names string) error {
	if c.NArg() != n {
		return usagef("%s takes %s (got %d arguments); see 'hindsight %s --help'", c.Command.Name, names, c.NArg(), c.Command.FullName())
	}
	return nil
}

// notef tells the user what the store did on its own (a recovery).
func notef(f string, args ...any) { fmt.Fprintf(os.Stderr, "hindsight: "+f+"\n", args...) }
