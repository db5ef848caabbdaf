package service

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hindsight-cdp/hindsight/cdp"
	"github.com/hindsight-cdp/hindsight/cdp/retention"
	"github.com/hindsight-cdp/hindsight/cdp/timespec"
	"github.com/hindsight-cdp/hindsight/store"
)

// APIVersion is the control protocol's version: the path prefix /v1 and
// the "version" of GET /v1/service.
const APIVersion = 1

// Limits of the control socket: a local process that may open it (its
// owner's) still must not exhaust the service.
const (
	// MaxRequest is the largest request body; a larger one is refused
	// once MaxRequest+1 bytes are read, never whole.
	MaxRequest = 1 << 20
	// maxConns is how many connections are served at once; one more is
	// answered 503 and closed.
	maxConns = 32
	// requestTimeout bounds the wait for a request's headers and body,
	// not the work it asks for: prune and gc run minutes on a large
	// repository (see newControlServer).
	requestTimeout = 10 * time.Second
)

// Errors of the protocol. Use errors.Is.
var (
	// ErrTooLarge: the request body was longer than MaxRequest.
	ErrTooLarge = fmt.Errorf("service: request longer than %d MiB refused", MaxRequest>>20)
	// ErrBusy: the service serves as many control connections as it takes.
	ErrBusy = fmt.Errorf("service: busy with %d control connections; try again", maxConns)
	// ErrBadRequest: the request is not one the service understands.
	ErrBadRequest = errors.New("service: bad request")
)

// kinds carry errors across the socket by name, so that the client's
// errors.Is, and the command line's exit codes, work as in one process.
var kinds = map[string]error{
	"unknown_disk":     store.ErrUnknownDisk,
	"unknown_group":    store.ErrUnknownGroup,
	"unknown_bookmark": store.ErrUnknownBookmark,
	"bookmark_exists":  store.ErrBookmarkExists,
	"disk_exists":      store.ErrDiskExists,
	"in_use":           store.ErrInUse,
	"not_empty":        store.ErrNotEmpty,
	"no_point":         store.ErrNoPoint,
	"bad_name":         store.ErrBadName,
	"bad_geometry":     store.ErrBadGeometry,
	"time_order":       store.ErrTimeOrder,
	"no_space":         store.ErrNoSpace,
	"corrupt":          store.ErrCorrupt,
	"bad_time":         timespec.ErrBadTime,
	"future":           cdp.ErrFuture,
	"size_mismatch":    cdp.ErrSizeMismatch,
	"exists":           ErrExists,
	"not_found":        ErrNotFound,
	"bad_spec":         ErrBadSpec,
	"foreign_mount":    ErrForeignMount,
	"too_large":        ErrTooLarge,
	"busy":             ErrBusy,
	"bad_request":      ErrBadRequest,
	"replica":          store.ErrReplica,
	"not_replica":      store.ErrNotReplica,
	"no_policy":        retention.ErrNoPolicy,
	"bad_policy":       retention.ErrBadPolicy,
}

// kindOrder is the order kinds are tried in: damage first, then the most
// specific classes.
var kindOrder = []string{"corrupt", "no_space", "too_large", "busy", "bad_request", "bad_time", "future", "size_mismatch", "time_order",
	"unknown_disk", "unknown_group", "unknown_bookmark", "no_point", "bookmark_exists", "disk_exists", "in_use", "not_empty",
	"bad_name", "bad_geometry", "exists", "not_found", "foreign_mount", "bad_spec", "no_policy", "bad_policy",
	"replica", "not_replica"}

func kindOf(err error) string {
	for _, k := range kindOrder {
		if errors.Is(err, kinds[k]) {
			return k
		}
	}
	return ""
}

// statusOf is the HTTP status of a failure's kind.
func statusOf(kind string) int {
	switch kind {
	case "too_large":
		return http.StatusRequestEntityTooLarge
	case "no_space":
		return http.StatusInsufficientStorage
	case "busy":
		return http.StatusServiceUnavailable
	case "bad_request", "bad_spec", "bad_time", "bad_name", "bad_geometry", "size_mismatch", "time_order", "bad_policy", "not_replica":
		return http.StatusBadRequest
	case "unknown_disk", "unknown_group", "unknown_bookmark", "no_point", "not_found", "future", "no_policy":
		return http.StatusNotFound
	case "bookmark_exists", "disk_exists", "in_use", "exists", "foreign_mount", "not_empty", "replica":
		return http.StatusConflict
	}
	return http.StatusInternalServerError
}

// errorBody is every failure's answer.
type errorBody struct {
	Error string `json:"error"`
	Kind  string `json:"kind,omitempty"`
}

// ServiceInfo answers GET /v1/service.
type ServiceInfo struct {
	Version int       `json:"version"`
	PID     int       `json:"pid"`
	Repo    string    `json:"repo"`
	Started time.Time `json:"started"`
	Record  bool      `json:"records_state"` // false for a foreground protect
	// MinFree is the free space the service keeps in reserve on the
	// repository's filesystem (serve --min-free): below it writes are refused.
	MinFree uint64 `json:"min_free_bytes,omitempty"`
}

// decode reads one JSON value of the request body into v: at most
// MaxRequest bytes, no unknown fields, nothing after it.
func decode(body io.Reader, v any) error {
	b, err := io.ReadAll(io.LimitReader(body, MaxRequest+1))
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	if len(b) > MaxRequest {
		return ErrTooLarge
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	if dec.More() {
		return fmt.Errorf("%w: more than one JSON value in the body", ErrBadRequest)
	}
	return nil
}

// handler routes the protocol's requests to the service.
func (s *Service) handler() http.Handler {
	mux := http.NewServeMux()
	w := Local{R: s.r}
	mux.HandleFunc("GET /v1/service", func(rw http.ResponseWriter, r *http.Request) {
		reply(rw, ServiceInfo{Version: APIVersion, PID: os.Getpid(), Repo: s.r.Dir(), Started: s.started.UTC(), Record: s.opt.Record, MinFree: s.r.MinFree()}, nil)
	})
	mux.HandleFunc("GET /v1/protections", func(rw http.ResponseWriter, r *http.Request) {
		reply(rw, s.Protections(), nil)
	})
	mux.HandleFunc("POST /v1/protections", func(rw http.ResponseWriter, r *http.Request) {
		var spec ProtectSpec
		if err := decode(r.Body, &spec); err != nil {
			reply(rw, nil, err)
			return
		}
		if spec.Clone != nil {
			reply(rw, nil, fmt.Errorf("%w: clones are made with POST /v1/clones", ErrBadRequest))
			return
		}
		v, err := s.Protect(r.Context(), spec)
		reply(rw, v, err)
	})
	mux.HandleFunc("DELETE /v1/protections/{name}", func(rw http.ResponseWriter, r *http.Request) {
		v, err := s.Unprotect(r.Context(), r.PathValue("name"))
		reply(rw, v, err)
	})
	mux.HandleFunc("POST /v1/clones", func(rw http.ResponseWriter, r *http.Request) {
		var spec CloneSpec
		if err := decode(r.Body, &spec); err != nil {
			reply(rw, nil, err)
			return
		}
		v, err := s.Clone(r.Context(), spec)
		reply(rw, v, err)
	})
	mux.HandleFunc("DELETE /v1/clones/{name}", func(rw http.ResponseWriter, r *http.Request) {
		keep, err := boolQuery(r, "keep")
		if err != nil {
			reply(rw, nil, err)
			return
		}
		v, err := s.EndClone(r.Context(), r.PathValue("name"), keep)
		reply(rw, v, err)
	})
	mux.HandleFunc("POST /v1/head", func(rw http.ResponseWriter, r *http.Request) {
		var req HeadRequest
		if err := decode(r.Body, &req); err != nil {
			reply(rw, nil, err)
			return
		}
		v, err := w.Head(r.Context(), req.Target)
		reply(rw, v, err)
	})
	mux.HandleFunc("POST /v1/bookmarks", func(rw http.ResponseWriter, r *http.Request) {
		var req MarkRequest
		if err := decode(r.Body, &req); err != nil {
			reply(rw, nil, err)
			return
		}
		v, err := w.Mark(r.Context(), req.Target, req.Bookmark)
		reply(rw, v, err)
	})
	mux.HandleFunc("POST /v1/disks", func(rw http.ResponseWriter, r *http.Request) {
		var req DiskRequest
		if err := decode(r.Body, &req); err != nil {
			reply(rw, nil, err)
			return
		}
		v, err := w.CreateDisk(r.Context(), req)
		reply(rw, v, err)
	})
	mux.HandleFunc("POST /v1/groups", func(rw http.ResponseWriter, r *http.Request) {
		var req GroupRequest
		if err := decode(r.Body, &req); err != nil {
			reply(rw, nil, err)
			return
		}
		v, err := w.CreateGroup(r.Context(), req.Name, req.Disks)
		reply(rw, v, err)
	})
	mux.HandleFunc("POST /v1/groups/{name}/disks", func(rw http.ResponseWriter, r *http.Request) {
		var req JoinRequest
		if err := decode(r.Body, &req); err != nil {
			reply(rw, nil, err)
			return
		}
		v, err := w.JoinGroup(r.Context(), r.PathValue("name"), req.Disk)
		reply(rw, v, err)
	})
	mux.HandleFunc("POST /v1/imports", func(rw http.ResponseWriter, r *http.Request) {
		var req ImportRequest
		if err := decode(r.Body, &req); err != nil {
			reply(rw, nil, err)
			return
		}
		v, err := w.Import(r.Context(), req, nil)
		reply(rw, v, err)
	})
	s.retentionRoutes(mux)
	s.replicationRoutes(mux)
	s.instantRoutes(mux)
	mux.HandleFunc("/", func(rw http.ResponseWriter, r *http.Request) {
		reply(rw, nil, fmt.Errorf("%w: no %s %s in protocol version %d (see the service package's documentation)", ErrBadRequest, r.Method, r.URL.Path, APIVersion))
	})
	return mux
}

// retentionRoutes are the routes of policies, prune and gc.
func (s *Service) replicationRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/replications", func(rw http.ResponseWriter, r *http.Request) {
		reply(rw, s.Replications(), nil)
	})
	mux.HandleFunc("POST /v1/replications", func(rw http.ResponseWriter, r *http.Request) {
		var spec ReplicateSpec
		if err := decode(r.Body, &spec); err != nil {
			reply(rw, nil, err)
			return
		}
		v, err := s.Replicate(r.Context(), spec)
		reply(rw, v, err)
	})
	mux.HandleFunc("DELETE /v1/replications/{name}", func(rw http.ResponseWriter, r *http.Request) {
		v, err := s.Unreplicate(r.Context(), r.PathValue("name"))
		reply(rw, v, err)
	})
	mux.HandleFunc("GET /v1/replicas", func(rw http.ResponseWriter, r *http.Request) {
		reply(rw, s.Replicas(), nil)
	})
	mux.HandleFunc("POST /v1/failover/{name}", func(rw http.ResponseWriter, r *http.Request) {
		v, err := s.Failover(r.Context(), r.PathValue("name"))
		reply(rw, v, err)
	})
}

func (s *Service) retentionRoutes(mux *http.ServeMux) {
	w := Local{R: s.r}
	mux.HandleFunc("PUT /v1/policies/{name}", func(rw http.ResponseWriter, r *http.Request) {
		var pol retention.Policy
		if err := decode(r.Body, &pol); err != nil {
			reply(rw, nil, err)
			return
		}
		v, err := w.SetPolicy(r.Context(), r.PathValue("name"), &pol)
		reply(rw, v, err)
	})
	mux.HandleFunc("DELETE /v1/policies/{name}", func(rw http.ResponseWriter, r *http.Request) {
		v, err := w.SetPolicy(r.Context(), r.PathValue("name"), nil)
		reply(rw, v, err)
	})
	mux.HandleFunc("POST /v1/prune", func(rw http.ResponseWriter, r *http.Request) {
		var req PruneRequest
		if err := decode(r.Body, &req); err != nil {
			reply(rw, nil, err)
			return
		}
		v, err := s.prune(r.Context(), req)
		reply(rw, v, err)
	})
	mux.HandleFunc("POST /v1/gc", func(rw http.ResponseWriter, r *http.Request) {
		var req GCRequest
		if err := decode(r.Body, &req); err != nil {
			reply(rw, nil, err)
			return
		}
		v, err := s.collect(r.Context(), req)
		reply(rw, v, err)
	})
}

func boolQuery(r *http.Request, name string) (bool, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("%w: %s=%q is not true or false", ErrBadRequest, name, v)
	}
	return b, nil
}

// reply writes v as JSON, or err with its kind and status.
func reply(rw http.ResponseWriter, v any, err error) {
	rw.Header().Set("Content-Type", "application/json")
	if err != nil {
		k := kindOf(err)
		rw.WriteHeader(statusOf(k))
		json.NewEncoder(rw).Encode(errorBody{Error: err.Error(), Kind: k})
		return
	}
	json.NewEncoder(rw).Encode(v)
}

// SocketPath is the control socket of the repository in dir.
func SocketPath(dir string) string { return filepath.Join(dir, "run", "control.sock") }

// ServeControl serves the control protocol on the repository's socket
// until ctx ends. The socket is its owner's only (mode 0600 in a 0700
// directory), and every connection's peer must be the service's user or
// root (SO_PEERCRED): a mode opened by mistake lets no one else in.
func (s *Service) ServeControl(ctx context.Context) error {
	l, err := listenControl(s.r.Dir())
	if err != nil {
		return err
	}
	return s.serveControl(ctx, l, controlLimits{conns: maxConns, timeout: requestTimeout})
}

// controlLimits are the socket's limits; tests shorten the timeout.
type controlLimits struct {
	conns   int
	timeout time.Duration
}

func (s *Service) serveControl(ctx context.Context, l net.Listener, lim controlLimits) error {
	srv := newControlServer(s.handler(), lim, s.log)
	gl := &guardedListener{Listener: l, slots: make(chan struct{}, lim.conns), refusing: make(chan struct{}, lim.conns), euid: uint32(os.Geteuid()), logf: s.logf("socket", "control")}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(gl) }()
	select {
	case <-ctx.Done():
		shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(shut)
		<-done
		os.Remove(l.Addr().String())
		return nil
	case err := <-done:
		return err
	}
}

// newControlServer is the control socket's HTTP server. Its timeout bounds
// the arrival of a request (its headers and body), never the work: Go's
// server clears the read deadline once the body is read, and there is no
// write timeout, so a prune or gc runs as long as what it removes takes
// and ends when its client goes away (TestControlLongRequest).
func newControlServer(h http.Handler, lim controlLimits, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: lim.timeout,
		ReadTimeout:       lim.timeout,
		IdleTimeout:       30 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// listenControl creates the control socket of the repository in dir. The
// caller holds the repository's writer lock, so a socket left there is
// stale.
func listenControl(dir string) (net.Listener, error) {
	path := SocketPath(dir)
	run := filepath.Dir(path)
	if err := os.MkdirAll(run, 0o700); err != nil {
		return nil, err
	}
	// The directory keeps others out from the start; the socket's own mode
	// says the same once it exists.
	if err := os.Chmod(run, 0o700); err != nil {
		return nil, err
	}
	os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false) // removed by serveControl
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// guardedListener admits connections from the service's own user and
// root, at most cap(slots) at once.
type guardedListener struct {
	net.Listener
	slots    chan struct{}
	refusing chan struct{} // busy answers being written
	euid     uint32
	logf     func(string, ...any)
}

func (g *guardedListener) Accept() (net.Conn, error) {
	for {
		c, err := g.Listener.Accept()
		if err != nil {
			return nil, err
		}
		uid, err := peerUID(c)
		if err != nil || (uid != g.euid && uid != 0) {
			g.logf("control: refused a connection from uid %d: only uid %d and root may use the service (%v)", uid, g.euid, err)
			c.Close()
			continue
		}
		select {
		case g.slots <- struct{}{}:
			return &slotConn{Conn: c, release: func() { <-g.slots }}, nil
		default:
			select {
			case g.refusing <- struct{}{}:
				go func() { g.busy(c); <-g.refusing }()
			default: // a flood: no answer, no goroutine
				c.Close()
			}
		}
	}
}

// busy answers 503 busy and closes c. The request's header is read first,
// for a moment: Go's HTTP client drops an answer that comes before it has
// sent its request ("unsolicited response"). The rest is drained after
// the answer: closing a socket with unread data resets it, and the client
// would see "connection reset" instead of busy.
func (g *guardedListener) busy(c net.Conn) {
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	br := bufio.NewReaderSize(io.LimitReader(c, 64<<10), 4<<10)
	for {
		line, err := br.ReadSlice('\n')
		if err != nil || len(bytes.TrimSpace(line)) == 0 {
			break // the end of the header, a silent client, or junk
		}
	}
	c.SetDeadline(time.Now().Add(time.Second))
	b, _ := json.Marshal(errorBody{Error: ErrBusy.Error(), Kind: "busy"})
	if _, err := fmt.Fprintf(c, "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(b), b); err != nil {
		return
	}
	if uc, ok := c.(*net.UnixConn); ok {
		uc.CloseWrite()
	}
	io.Copy(io.Discard, io.LimitReader(c, MaxRequest+64<<10))
}

// slotConn gives its slot back when closed.
type slotConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *slotConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}

// peerUID is the uid of the process that connected (SO_PEERCRED).
func peerUID(c net.Conn) (uint32, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return 0, errors.New("not a Unix socket")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) { cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) }); err != nil {
		return 0, err
	}
	if cerr != nil {
		return 0, cerr
	}
	return cred.Uid, nil
}
