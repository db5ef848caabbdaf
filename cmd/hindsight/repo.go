package main

import (
	"fmt"
	"os"
	"strings"

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
	return store.Open(dir, store.Options{ReadOnly: readOnly, Logf: logf(c)})
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
		if err != nil {
			if g, gerr := r.Group(c.Args().First()); gerr == nil {
				return fmt.Errorf("%w: %q is a group; '%s' takes one of its disks (%s)", store.ErrUnknownDisk, g.Name, c.Command.FullName(), strings.Join(g.Disks, ", "))
			}
			return err
		}
		return fn(r, d)
	})
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
