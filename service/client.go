package service

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/hindsight-cdp/hindsight/cdp"
	"github.com/hindsight-cdp/hindsight/cdp/replica"
	"github.com/hindsight-cdp/hindsight/cdp/retention"
	"github.com/hindsight-cdp/hindsight/store"
	"github.com/hindsight-cdp/hindsight/vsphere"
)

// ErrNoService: no service (nor foreground protect) listens on the
// repository's control socket. Use errors.Is.
var ErrNoService = errors.New("service: no service is running on the repository")

// Client is the service of a repository, over its control socket.
type Client struct {
	hc   *http.Client
	Info ServiceInfo
}

var _ Writer = (*Client)(nil)

// Dial returns a client of the service running on the repository in dir,
// or ErrNoService when none answers.
func Dial(ctx context.Context, dir string) (*Client, error) {
	path := SocketPath(dir)
	c := &Client{hc: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		DisableCompression: true,
	}}}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := c.do(ctx, http.MethodGet, "/v1/service", nil, &c.Info); err != nil {
		var ue *url.Error
		if errors.As(err, &ue) { // nothing answered: no service
			return nil, fmt.Errorf("%w (%v)", ErrNoService, ue.Err)
		}
		return nil, err
	}
	if c.Info.Version != APIVersion {
		return nil, fmt.Errorf("service: it speaks protocol version %d, this hindsight %d: run the same version", c.Info.Version, APIVersion)
	}
	return c, nil
}

// do sends a request (body, if not nil, as JSON) and decodes the answer
// into out, or returns the service's error with its kind.
func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://hindsight"+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("service: reading the answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var e errorBody
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			return fmt.Errorf("service: %s %s: %s", method, path, resp.Status)
		}
		if k, ok := kinds[e.Kind]; ok {
			return &remoteError{msg: e.Error, kind: k}
		}
		return errors.New(e.Error)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("service: an answer this hindsight does not understand: %w", err)
	}
	return nil
}

// remoteError is the service's error, with the sentinel it wrapped.
type remoteError struct {
	msg  string
	kind error
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.kind }

// Protect asks the service to start a protection; it returns once it serves.
func (c *Client) Protect(ctx context.Context, spec ProtectSpec) (ProtectionStatus, error) {
	var st ProtectionStatus
	return st, c.do(ctx, http.MethodPost, "/v1/protections", spec, &st)
}

// Unprotect ends a protection.
func (c *Client) Unprotect(ctx context.Context, name string) (ProtectionStatus, error) {
	var st ProtectionStatus
	return st, c.do(ctx, http.MethodDelete, "/v1/protections/"+url.PathEscape(name), nil, &st)
}

// Protections lists the protections.
func (c *Client) Protections(ctx context.Context) ([]ProtectionStatus, error) {
	var st []ProtectionStatus
	return st, c.do(ctx, http.MethodGet, "/v1/protections", nil, &st)
}

// Clone asks for a clone served beside the protections.
func (c *Client) Clone(ctx context.Context, spec CloneSpec) (ProtectionStatus, error) {
	var st ProtectionStatus
	return st, c.do(ctx, http.MethodPost, "/v1/clones", spec, &st)
}

// EndClone ends a clone, keeping it as a disk when keep.
func (c *Client) EndClone(ctx context.Context, name string, keep bool) (ProtectionStatus, error) {
	var st ProtectionStatus
	return st, c.do(ctx, http.MethodDelete, fmt.Sprintf("/v1/clones/%s?keep=%t", url.PathEscape(name), keep), nil, &st)
}

// Head asks for target's newest durable point.
func (c *Client) Head(ctx context.Context, target string) (Head, error) {
	var h Head
	return h, c.do(ctx, http.MethodPost, "/v1/head", HeadRequest{Target: target}, &h)
}

// Mark asks the service to record bm.
func (c *Client) Mark(ctx context.Context, target string, bm store.Bookmark) (store.Bookmark, error) {
	var out store.Bookmark
	return out, c.do(ctx, http.MethodPost, "/v1/bookmarks", MarkRequest{Target: target, Bookmark: bm}, &out)
}

// CreateDisk asks the service to create a disk.
func (c *Client) CreateDisk(ctx context.Context, req DiskRequest) (store.Disk, error) {
	var d store.Disk
	return d, c.do(ctx, http.MethodPost, "/v1/disks", req, &d)
}

// CreateGroup asks the service to create a group.
func (c *Client) CreateGroup(ctx context.Context, name string, disks []string) (store.Group, error) {
	var g store.Group
	return g, c.do(ctx, http.MethodPost, "/v1/groups", GroupRequest{Name: name, Disks: disks}, &g)
}

// JoinGroup asks the service to add disk to group.
func (c *Client) JoinGroup(ctx context.Context, group, disk string) (store.Group, error) {
	var g store.Group
	return g, c.do(ctx, http.MethodPost, "/v1/groups/"+url.PathEscape(group)+"/disks", JoinRequest{Disk: disk}, &g)
}

// Import asks the service to journal an image; progress is not reported
// across the socket.
func (c *Client) Import(ctx context.Context, req ImportRequest, progress func(int64)) (cdp.ImportResult, error) {
	var res cdp.ImportResult
	return res, c.do(ctx, http.MethodPost, "/v1/imports", req, &res)
}

// SetPolicy asks the service to record target's policy (nil: remove it).
func (c *Client) SetPolicy(ctx context.Context, target string, pol *retention.Policy) (retention.Entry, error) {
	var e retention.Entry
	path := "/v1/policies/" + url.PathEscape(target)
	if pol == nil {
		return e, c.do(ctx, http.MethodDelete, path, nil, &e)
	}
	return e, c.do(ctx, http.MethodPut, path, pol, &e)
}

// Prune asks the service to prune by the recorded policies.
func (c *Client) Prune(ctx context.Context, req PruneRequest) ([]retention.Report, error) {
	var reps []retention.Report
	return reps, c.do(ctx, http.MethodPost, "/v1/prune", req, &reps)
}

// Collect asks the service for a garbage collection; progress is not
// reported across the socket.
func (c *Client) Collect(ctx context.Context, req GCRequest, progress func(done, total int64)) (store.GCResult, error) {
	var res store.GCResult
	return res, c.do(ctx, http.MethodPost, "/v1/gc", req, &res)
}

// StartInstant asks the service for an instant recovery; it returns once
// the VM is registered. The instant then runs in the service.
func (c *Client) StartInstant(ctx context.Context, req InstantRequest) (vsphere.InstantReady, error) {
	var rd vsphere.InstantReady
	return rd, c.do(ctx, http.MethodPost, "/v1/instants", req, &rd)
}

// EndInstant ends the instant recovery vm, keeping its clones when keep;
// cfg (may be nil) is needed only for an instant no process serves.
func (c *Client) EndInstant(ctx context.Context, vm string, keep bool, cfg *vsphere.Config) (vsphere.EndResult, error) {
	var res vsphere.EndResult
	var body any
	if cfg != nil {
		body = EndInstantRequest{VSphere: cfg}
	}
	return res, c.do(ctx, http.MethodDelete, fmt.Sprintf("/v1/instants/%s?keep=%t", url.PathEscape(vm), keep), body, &res)
}

// MigrateInstant makes the instant VM vm permanent.
func (c *Client) MigrateInstant(ctx context.Context, vm string, req MigrateRequest) (vsphere.Registered, error) {
	var res vsphere.Registered
	return res, c.do(ctx, http.MethodPost, "/v1/instants/"+url.PathEscape(vm)+"/migrate", req, &res)
}

// Instants lists the instant recoveries.
func (c *Client) Instants(ctx context.Context) ([]InstantStatus, error) {
	var st []InstantStatus
	return st, c.do(ctx, http.MethodGet, "/v1/instants", nil, &st)
}

// Replicate starts a replication in the service and records it.
func (c *Client) Replicate(ctx context.Context, spec ReplicateSpec) (ReplicationStatus, error) {
	var st ReplicationStatus
	return st, c.do(ctx, http.MethodPost, "/v1/replications", spec, &st)
}

// Unreplicate stops a replication and forgets it.
func (c *Client) Unreplicate(ctx context.Context, name string) (ReplicationStatus, error) {
	var st ReplicationStatus
	return st, c.do(ctx, http.MethodDelete, "/v1/replications/"+url.PathEscape(name), nil, &st)
}

// Replications lists the service's replications.
func (c *Client) Replications(ctx context.Context) ([]ReplicationStatus, error) {
	var st []ReplicationStatus
	return st, c.do(ctx, http.MethodGet, "/v1/replications", nil, &st)
}

// Replicas lists the replicas the service takes streams into.
func (c *Client) Replicas(ctx context.Context) ([]replica.ReplicaStatus, error) {
	var st []replica.ReplicaStatus
	return st, c.do(ctx, http.MethodGet, "/v1/replicas", nil, &st)
}

// Failover makes the replica name writable.
func (c *Client) Failover(ctx context.Context, name string) (store.Handover, error) {
	var h store.Handover
	return h, c.do(ctx, http.MethodPost, "/v1/failover/"+url.PathEscape(name), nil, &h)
}
