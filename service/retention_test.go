package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hindsight-cdp/hindsight/cdp/retention"
	"github.com/hindsight-cdp/hindsight/store"
)

// TestControlLongRequest: the socket's request timeout bounds a request's
// arrival, not its work: a handler (a prune, a gc) runs past it with its
// context alive, and its answer arrives; a client that goes away cancels it.
func TestControlLongRequest(t *testing.T) {
	const timeout = 200 * time.Millisecond
	cancelled := make(chan bool, 1)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/slow", func(rw http.ResponseWriter, r *http.Request) {
		var v map[string]int
		if err := decode(r.Body, &v); err != nil {
			reply(rw, nil, err)
			return
		}
		select {
		case <-r.Context().Done():
			cancelled <- true
			return
		case <-time.After(time.Duration(v["ms"]) * time.Millisecond):
		}
		reply(rw, "done", nil)
	})
	mux.HandleFunc("GET /v1/service", func(rw http.ResponseWriter, r *http.Request) {
		reply(rw, ServiceInfo{Version: APIVersion}, nil)
	})
	dir := t.TempDir()
	l, err := listenControl(dir)
	if err != nil {
		t.Fatal(err)
	}
	srv := newControlServer(mux, controlLimits{conns: 4, timeout: timeout}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	cl, err := Dial(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	var got string
	if err := cl.do(context.Background(), http.MethodPost, "/v1/slow", map[string]int{"ms": int(5 * timeout / time.Millisecond)}, &got); err != nil || got != "done" {
		t.Fatalf("a request working 5× the timeout: %q %v", got, err)
	}
	select {
	case <-cancelled:
		t.Fatal("its context was cancelled")
	default:
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*timeout)
	defer cancel()
	if err := cl.do(ctx, http.MethodPost, "/v1/slow", map[string]int{"ms": 60000}, &got); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a client that gives up: %v", err)
	}
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Error("the handler of a client that went away was not cancelled")
	}
}

// retentionFixture is a service on its socket, its client, and disk web
// with points around t0 (a fixed past instant the prunes are evaluated at).
type retentionFixture struct {
	s   *Service
	log *logBuffer
	cl  *Client
	web store.Disk
	ps  []store.Point
}

var t0 = time.Date(2026, 1, 10, 12, 0, 0, 0, time.UTC)

func newRetentionFixture(t *testing.T, opt Options) *retentionFixture {
	t.Helper()
	s, log := newTestService(t, opt)
	runService(t, s)
	serveSocket(t, s, defaultLimits)
	cl, err := Dial(context.Background(), s.r.Dir())
	if err != nil {
		t.Fatal(err)
	}
	f := &retentionFixture{s: s, log: log, cl: cl}
	if f.web, err = s.r.CreateDisk("web", 1<<20, 4096); err != nil {
		t.Fatal(err)
	}
	for i, at := range []time.Time{
		t0.AddDate(0, 0, -10), t0.AddDate(0, 0, -5), // older than any window
		time.Date(2026, 1, 8, 1, 0, 0, 0, time.UTC), time.Date(2026, 1, 8, 5, 0, 0, 0, time.UTC), // one day: its newest stays
		t0.Add(-30 * time.Minute), // the newest, within keep-all
	} {
		p, err := s.r.CaptureAt(f.web.Timeline, at, []store.BlockWrite{{Disk: f.web, Block: uint64(i), Data: bytesOf(byte(i+1), 4096)}})
		if err != nil {
			t.Fatal(err)
		}
		f.ps = append(f.ps, p)
	}
	if err := s.r.Sync(); err != nil {
		t.Fatal(err)
	}
	return f
}

func bytesOf(b byte, n int) []byte { return []byte(strings.Repeat(string(rune(b)), n)) }

var webPolicy = retention.Policy{KeepAll: retention.MustSpan("1h"), Daily: retention.MustSpan("3d")}

// TestRetentionRoutes: policies, prune and gc through the client reach the
// service and fail as they fail in one process.
func TestRetentionRoutes(t *testing.T) {
	f := newRetentionFixture(t, Options{})
	ctx := context.Background()
	local := Local{R: f.s.r}
	sock := SocketPath(f.s.r.Dir())

	// The same errors locally and through the service.
	for _, w := range []Writer{local, f.cl} {
		if _, err := w.SetPolicy(ctx, "nope", &webPolicy); !errors.Is(err, store.ErrUnknownDisk) {
			t.Errorf("%T: policy of an unknown disk: %v, want ErrUnknownDisk", w, err)
		}
		if _, err := w.SetPolicy(ctx, "web", &retention.Policy{Bookmarks: retention.MustSpan("1y")}); !errors.Is(err, retention.ErrBadPolicy) {
			t.Errorf("%T: a policy that keeps nothing: %v, want ErrBadPolicy", w, err)
		}
		if _, err := w.SetPolicy(ctx, "web", nil); !errors.Is(err, retention.ErrNoPolicy) {
			t.Errorf("%T: unset of no policy: %v, want ErrNoPolicy", w, err)
		}
		if _, err := w.Prune(ctx, PruneRequest{Target: "nope"}); !errors.Is(err, store.ErrUnknownDisk) || !strings.Contains(err.Error(), `"nope" is neither a disk nor a group`) {
			t.Errorf("%T: prune of an unknown disk: %v, want ErrUnknownDisk", w, err)
		}
		if _, err := w.Prune(ctx, PruneRequest{Target: "web"}); !errors.Is(err, retention.ErrNoPolicy) || !strings.Contains(err.Error(), "policy set web") {
			t.Errorf("%T: prune without a policy: %v, want ErrNoPolicy", w, err)
		}
		for _, req := range []PruneRequest{{}, {Target: "web", All: true}} {
			if _, err := w.Prune(ctx, req); !errors.Is(err, ErrBadRequest) {
				t.Errorf("%T: prune %+v: %v, want ErrBadRequest", w, req, err)
			}
		}
		if _, err := w.Collect(ctx, GCRequest{MaxUnused: 1.5}, nil); !errors.Is(err, ErrBadRequest) {
			t.Errorf("%T: gc with max_unused 1.5: %v, want ErrBadRequest", w, err)
		}
	}
	for _, tc := range []struct {
		method, path, body string
		status             int
		kind, msg          string
	}{
		{"PUT", "/v1/policies/web", `{"daily":"30"}`, 400, "bad_request", "bare number"},
		{"PUT", "/v1/policies/web", `{"daily":"30d","yearly":"2y"}`, 400, "bad_request", `unknown field "yearly"`},
		{"PUT", "/v1/policies/web", `{}`, 400, "bad_policy", "keeps nothing"},
		{"PUT", "/v1/policies/nope", `{"daily":"30d"}`, 404, "unknown_disk", "nope"},
		{"DELETE", "/v1/policies/web", ``, 404, "no_policy", "has none"},
		{"POST", "/v1/prune", `{"target":"nope"}`, 404, "unknown_disk", "nope"},
		{"POST", "/v1/prune", `{"target":"web"}`, 404, "no_policy", "policy set web"},
		{"POST", "/v1/gc", `{"max_unused":-1}`, 400, "bad_request", "not a fraction"},
	} {
		status, eb, raw := rawRequest(t, sock, httpReq(tc.method, tc.path, tc.body))
		if status != tc.status || eb.Kind != tc.kind || !strings.Contains(eb.Error, tc.msg) {
			t.Errorf("%s %s %s: got %d %s\nwant %d kind %q with %q", tc.method, tc.path, tc.body, status, raw, tc.status, tc.kind, tc.msg)
		}
	}

	// Set, read back from the repository, replace, unset.
	e, err := f.cl.SetPolicy(ctx, "web", &webPolicy)
	if err != nil || e.Name != "web" || e.Timeline != f.web.Timeline || e.Group || e.Policy != webPolicy {
		t.Fatalf("set: %+v %v", e, err)
	}
	if got, err := retention.PolicyOf(f.s.r, e.Target); err != nil || got != webPolicy {
		t.Errorf("recorded: %+v %v", got, err)
	}
	if e, err = f.cl.SetPolicy(ctx, "web", nil); err != nil || e.Policy != webPolicy {
		t.Errorf("unset answered %+v %v, want the policy removed", e, err)
	}
	if _, ok, err := f.s.r.Policy(f.web.Timeline); ok || err != nil {
		t.Errorf("after unset: recorded %v %v", ok, err)
	}
}

// TestPruneThroughService: a prune asked of the client reaches the service,
// removes what the policy does not keep, and counts it; gc follows. This
// needs the store's engine (Prune, Collect).
func TestPruneThroughService(t *testing.T) {
	f := newRetentionFixture(t, Options{})
	ctx := context.Background()
	if _, err := f.cl.SetPolicy(ctx, "web", &webPolicy); err != nil {
		t.Fatal(err)
	}
	// A dry run first: it reports and changes nothing.
	reps, err := f.cl.Prune(ctx, PruneRequest{Target: "web", Now: t0, DryRun: true})
	if err != nil {
		t.Fatalf("dry run: %v", err)
	}
	wantRemoved := []uint64{f.ps[0].Seq, f.ps[1].Seq, f.ps[2].Seq}
	checkReport(t, "dry run", reps, wantRemoved, true)
	if ps := allPoints(t, f.s.r, f.web.Timeline); len(ps) != len(f.ps) {
		t.Errorf("a dry run removed points: %d left of %d", len(ps), len(f.ps))
	}
	reps, err = f.cl.Prune(ctx, PruneRequest{Target: "web", Now: t0})
	if err != nil {
		t.Fatalf("prune: %v", err)
	}
	checkReport(t, "prune", reps, wantRemoved, false)
	var left []uint64
	for _, p := range allPoints(t, f.s.r, f.web.Timeline) {
		left = append(left, p.Seq)
	}
	if want := []uint64{f.ps[3].Seq, f.ps[4].Seq}; !slices.Equal(left, want) {
		t.Errorf("points left %v, want %v", left, want)
	}
	if got := metricValue(t, f.s, "hindsight_retention_points_removed_total", "web"); got != 3 {
		t.Errorf("hindsight_retention_points_removed_total{target=web} = %v, want 3", got)
	}
	// All of them: web again, nothing left to remove.
	reps, err = f.cl.Prune(ctx, PruneRequest{All: true, Now: t0})
	if err != nil || len(reps) != 1 || reps[0].Name != "web" || reps[0].Error != "" || len(reps[0].Removed) != 0 {
		t.Errorf("prune all: %+v %v", reps, err)
	}
	if _, err := f.cl.Collect(ctx, GCRequest{}, nil); err != nil {
		t.Errorf("gc: %v", err)
	}
}

func checkReport(t *testing.T, what string, reps []retention.Report, removed []uint64, dry bool) {
	t.Helper()
	if len(reps) != 1 {
		t.Fatalf("%s: %d reports, want 1", what, len(reps))
	}
	rep := reps[0]
	var got []uint64
	for _, p := range rep.Removed {
		got = append(got, p.Seq)
	}
	if rep.Name != "web" || rep.DryRun != dry || !rep.Now.Equal(t0) || rep.Kept != 2 || !slices.Equal(got, removed) || rep.Policy != webPolicy {
		t.Errorf("%s: report %+v (removed %v), want web keeping 2, removing %v", what, rep, got, removed)
	}
}

func allPoints(t *testing.T, r *store.Repo, tl uint32) []store.Point {
	t.Helper()
	ps, err := r.Points(tl, time.Unix(0, math.MinInt64), time.Unix(0, math.MaxInt64), 0)
	if err != nil {
		t.Fatal(err)
	}
	return ps
}

// TestRetentionScheduleFailure: a scheduled run that fails is logged and
// counted, and the service goes on serving and running.
func TestRetentionScheduleFailure(t *testing.T) {
	f := newRetentionFixture(t, Options{PruneEvery: 50 * time.Millisecond})
	// A policy this version cannot read: listing the policies fails.
	if err := f.s.r.SetPolicy(f.web.Timeline, []byte(`{"daily":"30"}`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "two failed runs logged", func() bool {
		return strings.Count(f.log.String(), "retention: prune") >= 2
	}, f.log)
	if got := metricValue(t, f.s, "hindsight_retention_last_run_success", ""); got != 0 {
		t.Errorf("last run success %v after a failed run", got)
	}
	if got := metricValue(t, f.s, "hindsight_retention_last_run_timestamp_seconds", ""); got == 0 {
		t.Errorf("no last run time after runs")
	}
	if _, err := f.cl.Head(context.Background(), "web"); err != nil {
		t.Errorf("the service after failed runs: %v", err)
	}
	if !strings.Contains(f.log.String(), `policy of \"web\"`) {
		t.Errorf("the log does not name the bad policy:\n%s", f.log.String())
	}
}

// TestRetentionSchedule: the service prunes every policy on its own, then
// collects, and says so in its log and metrics. This needs the store's
// engine (Prune, Collect).
func TestRetentionSchedule(t *testing.T) {
	f := newRetentionFixture(t, Options{PruneEvery: 50 * time.Millisecond})
	// Keep only the newest: the others are older than an hour by now.
	b, _ := json.Marshal(retention.Policy{KeepAll: retention.MustSpan("1h")})
	if err := f.s.r.SetPolicy(f.web.Timeline, b); err != nil {
		t.Fatal(err)
	}
	// A run may have started before the policy was there: wait for the
	// one that pruned, and its collection.
	waitFor(t, "a successful run that pruned web", func() bool {
		return metricValue(t, f.s, "hindsight_retention_points_removed_total", "web") > 0 &&
			metricValue(t, f.s, "hindsight_retention_last_run_success", "") == 1
	}, f.log)
	if got := metricValue(t, f.s, "hindsight_retention_points_removed_total", "web"); got != float64(len(f.ps)-1) {
		t.Errorf("points removed %v, want %d", got, len(f.ps)-1)
	}
	if ps := allPoints(t, f.s.r, f.web.Timeline); len(ps) != 1 || ps[0].Seq != f.ps[len(f.ps)-1].Seq {
		t.Errorf("points left %+v, want the newest", ps)
	}
	for _, msg := range []string{"retention: pruned", "target=web", "removed=4", "retention: gc"} {
		if !strings.Contains(f.log.String(), msg) {
			t.Errorf("log lacks %q:\n%s", msg, f.log.String())
		}
	}
}

// TestRetentionAfterStop: once Run has returned (and the repository may
// close), a prune or gc asked over a connection still open starts nothing.
func TestRetentionAfterStop(t *testing.T) {
	s, _ := newTestService(t, Options{PruneEvery: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := s.prune(ctx, PruneRequest{All: true}); !errors.Is(err, errStopping) {
		t.Errorf("prune after Run: %v, want errStopping", err)
	}
	if _, err := s.collect(ctx, GCRequest{}); !errors.Is(err, errStopping) {
		t.Errorf("gc after Run: %v, want errStopping", err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool, log *logBuffer) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			l := log.String()
			if len(l) > 2000 {
				l = l[len(l)-2000:]
				l = l[strings.IndexByte(l, '\n')+1:]
			}
			t.Fatalf("still waiting for %s after 10 s; the service's log ends:\n%s", what, l)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// metricValue is what the service's registry reports for name (of target,
// when given); -1 when it reports nothing.
func metricValue(t *testing.T, s *Service, name, target string) float64 {
	t.Helper()
	mfs, err := s.metrics.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%s", l.GetName(), l.GetValue()))
			}
			if target != "" && !slices.Contains(labels, "target="+target) {
				continue
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return -1
}
