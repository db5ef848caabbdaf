package main

import (
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/hindsight-cdp/hindsight/cdp"
	"github.com/hindsight-cdp/hindsight/store"
	"github.com/urfave/cli/v2"
)

// status is what `hindsight status` reports of a disk.
type status struct {
	Disk         store.Disk   `json:"disk"`
	Latest       *store.Point `json:"latest,omitempty"`
	LogicalBytes int64        `json:"logical_bytes"` // non-zero block versions journaled, uncompressed
	StoredBytes  int64        `json:"stored_bytes"`  // content of the whole repository, after dedupe and compression
	Reduction    float64      `json:"reduction_ratio,omitempty"`
	Capture      *cdp.Status  `json:"capture,omitempty"` // the front end protecting it, if one ran
	LagSeconds   float64      `json:"lag_seconds"`       // newest write not yet visible to other processes
	Space        *space       `json:"space,omitempty"`   // the repository's filesystem
}

// space is the repository's filesystem as `status` reports it.
type space struct {
	FreeBytes    uint64 `json:"free_bytes"`     // available, as df shows
	SizeBytes    uint64 `json:"size_bytes"`     // the filesystem's size
	MinFreeBytes uint64 `json:"min_free_bytes"` // the writer's reserve: writes are refused below it
	Low          bool   `json:"low"`            // below twice the reserve
}

// repoSpace reads the free space of r's filesystem and the reserve its
// writer keeps: the running service's (serve --min-free), else the
// default one a writer opened here keeps. Nil when it cannot be read.
func repoSpace(c *cli.Context, r *store.Repo) *space {
	free, total, _ := r.Space()
	if total == 0 {
		return nil
	}
	res := r.MinFree()
	if cl, err := dialService(c); err == nil && cl != nil && cl.Info.MinFree > 0 {
		res = cl.Info.MinFree
	}
	return &space{FreeBytes: free, SizeBytes: total, MinFreeBytes: res, Low: free < 2*res}
}

func cmdStatus() *cli.Command {
	return &cli.Command{
		Name:      "status",
		Usage:     "show how DISK is protected: journal size, reduction, capture rate and lag (no DISK: the repository)",
		ArgsUsage: "[DISK]",
		Description: `While 'hindsight protect' runs, it reports writes per second, bytes journaled, the
last write and the lag (how far the newest write is ahead of what other processes
see) every sync interval. Stored bytes are the whole repository's content.

Without DISK it shows the repository: each disk's newest point, and each replica
(kept here from another site's stream): its source, the last position received and
its time, and whether its stream is connected now.`,
		Action: func(c *cli.Context) error {
			if c.NArg() == 0 {
				return repoStatus(c)
			}
			return withDisk(c, 1, "a DISK", true, func(r *store.Repo, d store.Disk) error {
				st := status{Disk: d}
				var err error
				if p, err := r.LastPoint(d.Timeline); err == nil {
					st.Latest = &p
				}
				if st.LogicalBytes, err = r.LogicalBytes(d); err != nil {
					return err
				}
				if st.StoredBytes, err = r.ContentBytes(); err != nil {
					return err
				}
				if st.StoredBytes > 0 {
					st.Reduction = float64(st.LogicalBytes) / float64(st.StoredBytes)
				}
				cs, err := cdp.ReadStatus(r.Dir(), d.Name)
				switch {
				case err == nil:
					st.Capture = &cs
					if cs.LastWrite.After(cs.PublishedTime) && cs.Head > cs.Published {
						st.LagSeconds = cs.LastWrite.Sub(cs.PublishedTime).Seconds()
					}
				case !errors.Is(err, fs.ErrNotExist):
					return err
				}
				st.Space = repoSpace(c, r)
				if c.Bool("json") {
					return printJSON(c, st)
				}
				w := c.App.Writer
				fmt.Fprintf(w, "disk        %s, %s, block size %d\n", d.Name, humanBytes(d.Size), d.BlockSize)
				if st.Latest != nil {
					fmt.Fprintf(w, "latest      %s (seq %d)\n", fmtTime(st.Latest.Time), st.Latest.Seq)
				}
				fmt.Fprintf(w, "journaled   %s of blocks, repository stores %s (%.2fx reduction)\n",
					humanBytes(st.LogicalBytes), humanBytes(st.StoredBytes), st.Reduction)
				if cs := st.Capture; cs != nil {
					state := "stopped"
					if cs.Running {
						state = fmt.Sprintf("running (pid %d)", cs.PID)
					}
					fmt.Fprintf(w, "capture     %s %s since %s, updated %s ago\n", cs.FrontEnd, state, fmtTime(cs.Since), time.Since(cs.Updated).Round(time.Second))
					fmt.Fprintf(w, "writes      %d (%.0f/s), %s (%s/s), %d flushes, last %s\n", cs.Writes, cs.WritesPerSec,
						humanBytes(int64(cs.BytesWritten)), humanBytes(int64(cs.BytesPerSec)), cs.Flushes, fmtTime(cs.LastWrite))
					fmt.Fprintf(w, "lag         %.3fs\n", st.LagSeconds)
				}
				if sp := st.Space; sp != nil {
					fmt.Fprintf(w, "space       %s free of %s on the repository's filesystem, %s kept in reserve\n",
						humanBytes(int64(sp.FreeBytes)), humanBytes(int64(sp.SizeBytes)), humanBytes(int64(sp.MinFreeBytes)))
					if sp.Low {
						fmt.Fprintf(w, "warning     the repository's filesystem is low on space: writes are refused (ENOSPC) below %s free; thin old history ('hindsight prune', then 'hindsight gc') or add space\n",
							humanBytes(int64(sp.MinFreeBytes)))
					}
				}
				return nil
			})
		},
	}
}
