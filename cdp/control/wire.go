package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
}

func kindOf(err error) string {
	for k, e := range kinds {
		if errors.Is(err, e) {
			return k
		}
	}
	return ""
}

// Server answers requests on the control socket with a Journal.
type Server struct {
	j    Journal
	l    net.Listener
	path string
	wg   sync.WaitGroup
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
	return &Server{j: j, l: l, path: path}, nil
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
		s.wg.Add(1)
		go func() { defer s.wg.Done(); s.handle(ctx, conn) }()
	}
}

func (s *Server) handle(ctx context.Context, conn net.Conn) {
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(time.Minute))
	var req request
	if err := json.NewDecoder(bufio.NewReader(conn)).Decode(&req); err != nil {
		json.NewEncoder(conn).Encode(response{Error: "bad request: " + err.Error()})
		return
	}
	var resp response
	var err error
	switch req.Op {
	case "head":
		var h Head
		if h, err = s.j.Head(ctx, req.Target); err == nil {
			resp.Head = &h
		}
	case "mark":
		if req.Bookmark == nil {
			err = errors.New("mark without a bookmark")
			break
		}
		var bm store.Bookmark
		if bm, err = s.j.Mark(ctx, req.Target, *req.Bookmark); err == nil {
			resp.Bookmark = &bm
		}
	default:
		err = fmt.Errorf("unknown operation %q", req.Op)
	}
	if err != nil {
		resp.Error, resp.Kind = err.Error(), kindOf(err)
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
