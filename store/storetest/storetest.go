// Package storetest gives other packages' tests a writer repository in a
// temporary directory, closed when the test ends.
package storetest

import (
	"path/filepath"
	"testing"

	"github.com/hindsight-cdp/hindsight/store"
)

// Repo creates a repository at TempDir/repo, opens it for writing and closes
// it at cleanup. It returns the repository and its directory.
func Repo(tb testing.TB) (*store.Repo, string) {
	tb.Helper()
	dir := filepath.Join(tb.TempDir(), "repo")
	if err := store.Init(dir); err != nil {
		tb.Fatal(err)
	}
	r, err := store.Open(dir, store.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { r.Close() })
	return r, dir
}
