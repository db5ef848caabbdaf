package quiesce

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// fake is an in-process agent that logs its calls to a shared journal.
type fake struct {
	name      string
	j         *journal
	freezeErr error
	thawErr   error
	block     bool // Freeze waits for ctx
}

type journal struct {
	mu    sync.Mutex
	lines []string
}

func (j *journal) add(s string) { j.mu.Lock(); j.lines = append(j.lines, s); j.mu.Unlock() }
func (j *journal) String() string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return strings.Join(j.lines, " ")
}

func (f *fake) Name() string { return f.name }
func (f *fake) Freeze(ctx context.Context, st *Step) error {
	f.j.add("freeze:" + f.name)
	if f.block {
		<-ctx.Done()
		return ctx.Err()
	}
	st.Files = map[string]string{f.name + ".txt": "kept"}
	return f.freezeErr
}
func (f *fake) Thaw(ctx context.Context, st *Step) error {
	if ctx.Err() != nil {
		f.j.add("thaw-with-dead-ctx:" + f.name)
	}
	f.j.add("thaw:" + f.name)
	return f.thawErr
}

func fakes(j *journal, names ...string) []Agent {
	var as []Agent
	for _, n := range names {
		as = append(as, &fake{name: n, j: j})
	}
	return as
}

func markInto(j *journal) func(context.Context) error {
	return func(context.Context) error { j.add("MARK"); return nil }
}

func TestRunOrder(t *testing.T) {
	j := &journal{}
	r := &Runner{Agents: fakes(j, "a", "b", "c"), Group: "g", Bookmark: "bm"}
	rep, err := r.Run(context.Background(), markInto(j))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := j.String(), "freeze:a freeze:b freeze:c MARK thaw:c thaw:b thaw:a"; got != want {
		t.Fatalf("calls %q, want %q", got, want)
	}
	if !rep.Consistent || len(rep.Steps) != 7 || rep.Files["b.txt"] != "kept" || rep.FreezeToThaw <= 0 || rep.Held <= 0 {
		t.Fatalf("report %+v", rep)
	}
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.FreezeToThaw != rep.FreezeToThaw || !back.Consistent || back.Steps[3].Phase != PhaseMark {
		t.Fatalf("JSON round trip: %s", b)
	}
}

func TestRunFreezeFails(t *testing.T) {
	j := &journal{}
	as := fakes(j, "a", "b", "c")
	as[1].(*fake).freezeErr = errors.New("no")
	rep, err := (&Runner{Agents: as}).Run(context.Background(), markInto(j))
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "freeze b: no") {
		t.Fatalf("error %v", err)
	}
	if got, want := j.String(), "freeze:a freeze:b thaw:b thaw:a"; got != want {
		t.Fatalf("calls %q, want %q", got, want)
	}
	if rep.Consistent || rep.Steps[1].Status != StatusFailed || rep.Error == "" {
		t.Fatalf("report %+v", rep)
	}
}

func TestRunTimeoutAndCancel(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cancel bool
		want   error
		status string
	}{
		{"timeout", false, ErrTimeout, StatusTimeout},
		{"cancel", true, context.Canceled, StatusCanceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			j := &journal{}
			as := fakes(j, "a", "b", "c")
			as[1].(*fake).block = true
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			timeout := 200 * time.Millisecond
			if tc.cancel {
				timeout = time.Minute
				time.AfterFunc(100*time.Millisecond, cancel)
			}
			rep, err := (&Runner{Agents: as, Timeout: timeout}).Run(ctx, markInto(j))
			if !errors.Is(err, ErrRefused) || !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
			// The thaws got a live context although the freeze's had ended.
			if got, want := j.String(), "freeze:a freeze:b thaw:b thaw:a"; got != want {
				t.Fatalf("calls %q, want %q", got, want)
			}
			if rep.Steps[1].Status != tc.status || rep.Consistent {
				t.Fatalf("report %+v", rep)
			}
		})
	}
}

func TestRunMarkAndThawFail(t *testing.T) {
	j := &journal{}
	rep, err := (&Runner{Agents: fakes(j, "a")}).Run(context.Background(),
		func(context.Context) error { return fmt.Errorf("journal full") })
	if !errors.Is(err, ErrRefused) || rep.Consistent || j.String() != "freeze:a thaw:a" {
		t.Fatalf("mark failure: %v %q %+v", err, j, rep)
	}

	j = &journal{}
	as := fakes(j, "a", "b")
	as[0].(*fake).thawErr = errors.New("stuck")
	rep, err = (&Runner{Agents: as}).Run(context.Background(), markInto(j))
	if !errors.Is(err, ErrThaw) || errors.Is(err, ErrRefused) || !rep.Consistent {
		t.Fatalf("thaw failure: %v %+v", err, rep)
	}
	if j.String() != "freeze:a freeze:b MARK thaw:b thaw:a" {
		t.Fatalf("calls %q", j)
	}
}
