package replica

import (
	"crypto/tls"
	"log/slog"
	"time"

	"github.com/hindsight-cdp/hindsight/store"
)

// Version is the protocol version this package speaks.
const Version = 1

// MaxFrame bounds a frame's payload: a larger length is refused before
// anything is read or allocated.
const MaxFrame = 40 << 20

// Hello opens a stream (frame HELLO).
type Hello struct {
	Version int              `json:"version"`
	Token   string           `json:"token"`
	Name    string           `json:"name"` // the disk or group replicated
	Group   bool             `json:"group"`
	Disks   []store.DiskSpec `json:"disks"`
	Sync    bool             `json:"sync,omitempty"`
	// Failback, set, asks the target to take the stream into its writable
	// disk that shares history with the source up to Diverged.
	Failback *Failback `json:"failback,omitempty"`
}

// Failback is the handover a failback stream starts from.
type Failback struct {
	Diverged time.Time `json:"diverged"`
	At       time.Time `json:"at"`
}

// Welcome answers a Hello the target accepts (frame WELCOME).
type Welcome struct {
	// Position is the time of the replica's newest point: the source sends
	// the points after it. Zero: the replica is empty.
	Position time.Time `json:"position"`
}

// Target is where a Sender streams to.
type Target struct {
	Addr     string // host:port
	CA       []byte // PEM of the CA the target's certificate must chain to
	Token    string
	Insecure bool // plain TCP: loopback only
}

// ParseURL returns the host:port of an hs://host:port URL.
func ParseURL(u string) (string, error) { return parseURL(u) }

// LinkLoss is what a --sync flush does when the replica cannot be reached
// within SendOptions.SyncTimeout.
type LinkLoss string

const (
	// Stall: the flush waits until the replica has the write (RPO 0 kept,
	// the application waits).
	Stall LinkLoss = "stall"
	// Async: the flush returns; replication goes on asynchronously, says so
	// in its state and log, and is synchronous again once caught up.
	Async LinkLoss = "async"
)

// SendOptions tune a Sender.
type SendOptions struct {
	Bandwidth   int64 // bytes per second on the wire; 0: unlimited
	Sync        bool
	OnLinkLoss  LinkLoss      // "": Stall
	SyncTimeout time.Duration // 0: 5 s
	Failback    bool
	Log         *slog.Logger // nil: nothing logged
}

// Status is what `hindsight replications` shows of one Sender.
type Status struct {
	Name   string `json:"name"`
	Target string `json:"target"`
	// State: connecting, streaming, caught-up, retrying or stopped.
	State    string `json:"state"`
	Sync     bool   `json:"sync"`
	Degraded bool   `json:"degraded,omitempty"` // --sync fell back to asynchronous
	// Acked is the newest source position the target has durable, and its time.
	Acked     uint64    `json:"acked_seq"`
	AckedTime time.Time `json:"acked_time"`
	// Lag is how far the acknowledged position is behind what is durable
	// here: in time, and in logical bytes of the steps not acknowledged.
	LagSeconds float64 `json:"lag_seconds"`
	LagBytes   int64   `json:"lag_bytes"`
	// WireBytes counts the bytes sent and received on the connections.
	WireBytes    uint64 `json:"wire_bytes"`
	Steps        uint64 `json:"steps_sent"`
	Blocks       uint64 `json:"blocks_sent"`
	ContentSent  uint64 `json:"content_blocks_sent"` // blocks whose content crossed
	ContentBytes uint64 `json:"content_bytes_sent"`
	Reconnects   uint64 `json:"reconnects"`
	LastError    string `json:"last_error,omitempty"`
}

// ServerOptions tune a Server.
type ServerOptions struct {
	TLS    *tls.Config // nil: plain TCP, only for a loopback listener
	Tokens *Tokens
	Log    *slog.Logger // nil: nothing logged
	// MaxConns bounds the connections served at once (0: 256).
	MaxConns int
	// HelloTimeout bounds how long a connection may take to say HELLO,
	// IdleTimeout how long a stream may send nothing (0: 10 s and 60 s).
	HelloTimeout, IdleTimeout time.Duration
}

// ReplicaStatus is what `hindsight status` shows of one replica.
type ReplicaStatus struct {
	Name      string    `json:"name"`
	Source    string    `json:"source"`
	Connected bool      `json:"connected"`
	Remote    string    `json:"remote,omitempty"`
	Position  time.Time `json:"position"`  // newest point received
	Seq       uint64    `json:"acked_seq"` // its source position
	Received  time.Time `json:"received"`  // when the newest step arrived
	Steps     uint64    `json:"steps_received"`
	Bytes     uint64    `json:"wire_bytes"`
}
