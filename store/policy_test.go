package store

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"slices"
	"testing"
)

// TestPolicies: a policy is recorded per timeline, listed, replaced and
// removed; it is seen by a read-only view, kept by an index rebuilt from
// records.log, and removed with its disk or group.
func TestPolicies(t *testing.T) {
	dir, r := newRepo(t)
	web, err := r.CreateDisk("web", 1<<20, 4096)
	if err != nil {
		t.Fatal(err)
	}
	db1, err := r.CreateDisk("db1", 1<<20, 4096)
	if err != nil {
		t.Fatal(err)
	}
	g, err := r.CreateGroup("db", []string{db1.Name})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, err := r.Policy(web.Timeline); ok || err != nil {
		t.Fatalf("policy before any: %v %v", ok, err)
	}
	want := map[uint32][]byte{web.Timeline: []byte(`{"daily":"7d"}`), g.ID: []byte(`{"hourly":"2d"}`)}
	for tl, p := range want {
		if err := r.SetPolicy(tl, p); err != nil {
			t.Fatal(err)
		}
	}
	want[web.Timeline] = []byte(`{"daily":"30d"}`) // replaced
	if err := r.SetPolicy(web.Timeline, want[web.Timeline]); err != nil {
		t.Fatal(err)
	}
	check := func(what string, r *Repo, want map[uint32][]byte) {
		t.Helper()
		all, err := r.Policies()
		if err != nil {
			t.Fatal(err)
		}
		if !maps.EqualFunc(all, want, bytes.Equal) {
			t.Errorf("%s: policies %s, want %s", what, fmtPolicies(all), fmtPolicies(want))
		}
		for tl, p := range want {
			got, ok, err := r.Policy(tl)
			if !ok || err != nil || !bytes.Equal(got, p) {
				t.Errorf("%s: policy of %d: %q %v %v, want %q", what, tl, got, ok, err, p)
			}
		}
	}
	check("writer", r, want)
	view, err := Open(dir, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	check("view", view, want)
	view.Close()

	// records.log holds the policies: a rebuilt index has them.
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := RebuildIndex(dir, Options{}); err != nil {
		t.Fatal(err)
	}
	if r, err = Open(dir, Options{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	check("rebuilt", r, want)

	// nil removes; removing what is not there is no error.
	if err := r.SetPolicy(web.Timeline, nil); err != nil {
		t.Fatal(err)
	}
	if err := r.SetPolicy(web.Timeline, nil); err != nil {
		t.Fatal(err)
	}
	delete(want, web.Timeline)
	check("removed", r, want)

	// A deleted group takes its policy with it, and so does a lone disk.
	if err := r.SetPolicy(web.Timeline, []byte(`{"daily":"1d"}`)); err != nil {
		t.Fatal(err)
	}
	if err := r.DeleteGroup("db"); err != nil {
		t.Fatal(err)
	}
	if err := r.DeleteDisk("web"); err != nil {
		t.Fatal(err)
	}
	all, err := r.Policies()
	if err != nil || len(all) != 0 {
		t.Errorf("after deleting their disks: %v %v", slices.Collect(maps.Keys(all)), err)
	}
	ro, err := Open(dir, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if err := ro.SetPolicy(1, []byte(`{}`)); err == nil || errors.Is(err, ErrCorrupt) {
		t.Errorf("a view recorded a policy: %v", err)
	}
}

func fmtPolicies(m map[uint32][]byte) string {
	var b bytes.Buffer
	for _, tl := range slices.Sorted(maps.Keys(m)) {
		fmt.Fprintf(&b, " %d=%s", tl, m[tl])
	}
	return b.String()
}
