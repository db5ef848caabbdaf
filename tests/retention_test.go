package tests

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestPolicyCommands: policies set, shown, replaced and unset through the
// binary, with the exit codes scripts rely on. (prune and gc are the
// store engine's tests.)
func TestPolicyCommands(t *testing.T) {
	t.Parallel()
	repo := newRepo(t)
	for _, d := range []string{"web", "db1", "db2"} {
		ok(t, "--repo", repo, "disk", "create", d, "--size", "1M")
	}
	ok(t, "--repo", repo, "group", "create", "db", "db1", "db2")

	type entry struct {
		Name   string            `json:"name"`
		Group  bool              `json:"group"`
		Policy map[string]string `json:"policy"`
	}
	show := func(args ...string) string {
		return ok(t, append([]string{"--repo", repo, "policy", "show"}, args...)...)
	}
	ok(t, "--repo", repo, "policy", "set", "web", "--keep-all", "24h", "--hourly", "7d", "--daily", "30d", "--weekly", "26w", "--monthly", "24m")
	var e entry
	if err := json.Unmarshal([]byte(show("web", "--json")), &e); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"keep_all": "24h", "hourly": "7d", "daily": "30d", "weekly": "26w", "monthly": "24m", "bookmarks": "0"}
	if e.Name != "web" || e.Group || len(e.Policy) != len(want) {
		t.Fatalf("policy show web: %+v", e)
	}
	for k, v := range want {
		if e.Policy[k] != v {
			t.Errorf("policy show web: %s = %q, want %q", k, e.Policy[k], v)
		}
	}
	// A group's disk names its group; set replaces the whole policy.
	out := ok(t, "--repo", repo, "policy", "set", "db2", "--daily", "1y6m", "--bookmarks", "2y")
	if !strings.Contains(out, "group db: --daily 1y6m --bookmarks 2y") {
		t.Errorf("policy set db2 says %q", out)
	}
	ok(t, "--repo", repo, "policy", "set", "web", "--daily", "90min")
	var all []entry
	if err := json.Unmarshal([]byte(show("--json")), &all); err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 || all[0].Name != "db" || !all[0].Group || all[0].Policy["daily"] != "1y6m" ||
		all[1].Name != "web" || all[1].Policy["daily"] != "90min" || all[1].Policy["keep_all"] != "0" {
		t.Errorf("policy show --json: %+v", all)
	}
	if table := show(); !strings.Contains(table, "NAME") || !strings.Contains(table, "(longest)") || !strings.Contains(table, "1y6m") {
		t.Errorf("policy show:\n%s", table)
	}

	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"policy", "set", "web", "--daily", "30"}, 2, "a bare number has no unit"},
		{[]string{"policy", "set", "web", "--monthly", "3M"}, 2, `unknown unit "M"`},
		{[]string{"policy", "set", "web", "--bookmarks", "1y"}, 2, "keeps nothing"},
		{[]string{"policy", "set", "web"}, 2, "keeps nothing"},
		{[]string{"policy", "set", "nope", "--daily", "1d"}, 3, "neither a disk nor a group"},
		{[]string{"policy", "show", "nope"}, 3, "neither a disk nor a group"},
		{[]string{"policy", "show", "db1", "web"}, 2, "at most one"},
		{[]string{"prune", "nope"}, 3, "neither a disk nor a group"},
		{[]string{"prune"}, 2, "or --all"},
		{[]string{"prune", "web", "--all"}, 2, "takes no DISK"},
		{[]string{"prune", "web", "--now", "yesterday-ish"}, 2, "yesterday-ish"},
		{[]string{"gc", "--max-unused", "150%"}, 2, "--max-unused"},
	} {
		r := hs(t, append([]string{"--repo", repo}, tc.args...)...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.msg) {
			t.Errorf("hindsight %s: exit %d, %q; want exit %d with %q", strings.Join(tc.args, " "), r.code, r.stderr, tc.code, tc.msg)
		}
	}

	out = ok(t, "--repo", repo, "policy", "unset", "web")
	if !strings.Contains(out, "policy removed (was --daily 90min)") {
		t.Errorf("policy unset web says %q", out)
	}
	for _, args := range [][]string{{"policy", "show", "web"}, {"policy", "unset", "web"}, {"prune", "web"}} {
		if r := hs(t, append([]string{"--repo", repo}, args...)...); r.code != 3 || !strings.Contains(r.stderr, "policy set web") {
			t.Errorf("hindsight %s without a policy: exit %d, %q; want 3 naming 'policy set web'", strings.Join(args, " "), r.code, r.stderr)
		}
	}
}
