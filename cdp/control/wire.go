package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hindsight-cdp/hindsight/store"
)

type request struct {
	Op       string          `json:"op"` // "head" or "mark"
	Target   string          `json:"target"`
	Bookmark *store.Bookmark `json:"bookmark,omitempty"`
}

type response struct {
	Head     *Head           `json:"head,omitempty"`
	Bookmark *store.Bookmark `json:"bookmark,omitempty"`
	Error    string          `json:"error,omitempty"`
	// Kind names the store error the failure wraps, so that the client's
	// errors.Is (and the CLI's exit code) work across the socket.
	Kind string `json:"kind,omitempty"`
}

// kinds are the store errors carried across the socket by name.
var kinds = map[string]error{
	"unknown_disk":     store.ErrUnknownDisk,
	"unknown_group":    store.ErrUnknownGroup,
	"unknown_bookmark": store.ErrUnknownBookmark,
	"bookmark_exists":  store.ErrBookmarkExists,
	"no_point":         store.ErrNoPoint,
	"bad_name":         store.ErrBadName,
	"too_large":        ErrTooLarge,
	"busy":             ErrBusy,
}

func kindOf(err error) string {
	for k, e := range kinds {
		if errors.Is(err, e) {
			return k
		}
	}
	return ""
}

// Limits of the server: a local process that may open the socket (its
// owner's) still must not exhaust the writer's memory or its goroutines.
const (
	// MaxRequest is the longest request line, its newline included; a
	// longer one is refused once MaxRequest+1 bytes are read, never whole.
	MaxRequest = 1 << 20
	// maxConns is how many connections are served at once; one beyond it
	// is answered ErrBusy and closed at once.
	maxConns = 32
	// requestTimeout bounds the wait for a request line and for the answer
	// to be taken, so a silent client does not hold its slot.
	requestTimeout = 10 * time.Second
)

var (
	// ErrTooLarge: the request was longer than MaxRequest. Use errors.Is.
	ErrTooLarge = fmt.Errorf("control: request longer than %d MiB refused", MaxRequest>>20)
	// ErrBusy: the writer serves as many control connections as it takes;
	// try again. Use errors.Is.
	ErrBusy = fmt.Errorf("control: the writer is busy with %d control connections; try again", maxConns)
	// errBadRequest: the request is not one the server understands.
	errBadRequest = errors.New("control: bad request")
)

// decodeRequest reads one request, a JSON line (or the JSON before EOF),
// from r; io.EOF when r ends before any byte. It reads at most MaxRequest+1
// bytes of r: a longer line is ErrTooLarge, whatever follows it.
func decodeRequest(r io.Reader) (request, error) {
	br := bufio.NewReaderSize(io.LimitReader(r, MaxRequest+1), 64<<10)
	line, err := br.ReadSlice('\n')
	var long []byte // only for lines longer than br's buffer
	for errors.Is(err, bufio.ErrBufferFull) {
		long = append(long, line...)
		line, err = br.ReadSlice('\n')
	}
	if long != nil {
		line = append(long, line...)
	}
	if len(line) > MaxRequest {
		return request{}, ErrTooLarge
	}
	switch {
	case errors.Is(err, io.EOF) && len(line) == 0:
		return request{}, io.EOF
	case err != nil && !errors.Is(err, io.EOF):
		return request{}, fmt.Errorf("%w: %w", errBadRequest, err)
	}
	var req request
	if err := json.Unmarshal(line, &req); err != nil {
		return request{}, fmt.Errorf("%w: %w", errBadRequest, err)
	}
	switch {
	case req.Op != "head" && req.Op != "mark":
		return request{}, fmt.Errorf("%w: unknown operation %q (head or mark)", errBadRequest, req.Op)
	case req.Op == "mark" && req.Bookmark == nil:
		return request{}, fmt.Errorf("%w: mark without a bookmark", errBadRequest)
	}
	return req, nil
}

// Server answers requests on the control socket with a Journal.
type Server struct {
	j    Journal
	l    net.Listener
	path string
	wg   sync.WaitGroup

	slots   chan struct{} // one per connection being served
	timeout time.Duration // requestTimeout, shorter in tests
}

// Listen creates the control socket of the repository in dir. The caller
// holds the repository's writer lock, so a socket left there is stale.
func Listen(dir string, j Journal) (*Server, error) {
	path := SocketPath(dir)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	// The directory keeps others out from the start; the socket's own mode
	// says the same once it exists.
	if err := os.Chmod(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, err
	}
	return &Server{j: j, l: l, path: path, slots: make(chan struct{}, maxConns), timeout: requestTimeout}, nil
}

// Serve answers until ctx ends, then removes the socket.
func (s *Server) Serve(ctx context.Context) error {
	go func() { <-ctx.Done(); s.l.Close() }()
	for {
		conn, err := s.l.Accept()
		if err != nil {
			s.wg.Wait()
			os.Remove(s.path)
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		select {
		case s.slots <- struct{}{}:
		default:
			// A fresh socket's buffer takes the short answer without
			// blocking; the deadline only guards the accept loop.
			conn.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
			s.answer(conn, response{}, ErrBusy)
			conn.Close()
			continue
		}
		s.wg.Add(1)
		go func() {
			defer func() { <-s.slots; s.wg.Done() }()
			s.handle(ctx, conn)
		}()
	}
}

func (s *Server) handle(ctx context.Context, conn net.Conn) {
	defer conn.Close()
	// Ending the server ends the wait for a silent client at once.
	defer context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })()
	conn.SetReadDeadline(time.Now().Add(s.timeout))
	req, err := decodeRequest(conn)
	conn.SetWriteDeadline(time.Now().Add(s.timeout))
	switch {
	case errors.Is(err, io.EOF): // closed without a word: Dial's probe
		return
	case errors.Is(err, os.ErrDeadlineExceeded):
		err = fmt.Errorf("%w: no request within %v", errBadRequest, s.timeout)
	}
	if err != nil {
		s.answer(conn, response{}, err)
		return
	}
	var resp response
	switch req.Op {
	case "head":
		var h Head
		if h, err = s.j.Head(ctx, req.Target); err == nil {
			resp.Head = &h
		}
	case "mark":
		var bm store.Bookmark
		if bm, err = s.j.Mark(ctx, req.Target, *req.Bookmark); err == nil {
			resp.Bookmark = &bm
		}
	}
	conn.SetWriteDeadline(time.Now().Add(s.timeout))
	s.answer(conn, resp, err)
}

// answer writes resp, or err in its place, as one JSON line.
func (s *Server) answer(conn net.Conn, resp response, err error) {
	if err != nil {
		resp = response{Error: err.Error(), Kind: kindOf(err)}
	}
	json.NewEncoder(conn).Encode(resp)
}

// Client is a Journal served by the writer process over its socket.
type Client struct{ path string }

// Dial returns a client of the writer running on the repository in dir, or
// ErrNoWriter when none listens.
func Dial(dir string) (*Client, error) {
	c := &Client{path: SocketPath(dir)}
	conn, err := net.DialTimeout("unix", c.path, time.Second)
	if err != nil {
		return nil, fmt.Errorf("%w (%v)", ErrNoWriter, err)
	}
	conn.Close()
	return c, nil
}

func (c *Client) call(ctx context.Context, req request) (response, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.path)
	if err != nil {
		return response{}, fmt.Errorf("control: the writer process went away: %w", err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	if err := json.NewEncoder(conn).Encode(req); err != nil {
		return response{}, fmt.Errorf("control: %w", err)
	}
	var resp response
	if err := json.NewDecoder(conn).Decode(&resp); err != nil {
		return response{}, fmt.Errorf("control: no answer from the writer: %w", err)
	}
	if resp.Error != "" {
		if e, ok := kinds[resp.Kind]; ok {
			return resp, fmt.Errorf("%s: %w", resp.Error, e)
		}
		return resp, errors.New(resp.Error)
	}
	return resp, nil
}

// Head asks the writer for target's newest durable point.
func (c *Client) Head(ctx context.Context, target string) (Head, error) {
	resp, err := c.call(ctx, request{Op: "head", Target: target})
	if err != nil {
		return Head{}, err
	}
	if resp.Head == nil {
		return Head{}, errors.New("control: answer without a point")
	}
	return *resp.Head, nil
}

// Mark asks the writer to record bm.
func (c *Client) Mark(ctx context.Context, target string, bm store.Bookmark) (store.Bookmark, error) {
	resp, err := c.call(ctx, request{Op: "mark", Target: target, Bookmark: &bm})
	if err != nil {
		return store.Bookmark{}, err
	}
	if resp.Bookmark == nil {
		return store.Bookmark{}, errors.New("control: answer without a bookmark")
	}
	return *resp.Bookmark, nil
}
