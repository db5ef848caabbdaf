package main

import (
	"fmt"
	"time"

	"github.com/hindsight-cdp/hindsight/cdp/replica"
	"github.com/hindsight-cdp/hindsight/service"
	"github.com/hindsight-cdp/hindsight/store"
	"github.com/urfave/cli/v2"
)

// repoSummary is what `hindsight status` without a DISK reports.
type repoSummary struct {
	Repo  string     `json:"repo"`
	Disks []diskLine `json:"disks"`
	// Replicas are the disks and groups kept here from another site.
	Replicas []replicaLine `json:"replicas"`
	// Replications are this site's streams to others (with a service).
	Replications []service.ReplicationStatus `json:"replications,omitempty"`
	Space        *space                      `json:"space,omitempty"`
}

type diskLine struct {
	Name     string           `json:"name"`
	Group    string           `json:"group,omitempty"`
	Latest   *store.Point     `json:"latest,omitempty"`
	Replica  *store.ReplicaOf `json:"replica,omitempty"`
	Handover *store.Handover  `json:"handover,omitempty"`
}

// replicaLine is one replica: what the repository holds of it, and what
// the running service's listener knows of its stream.
type replicaLine struct {
	Name      string                 `json:"name"`
	Source    string                 `json:"source"`
	Position  time.Time              `json:"position"` // the newest point received
	Seq       uint64                 `json:"seq"`      // its position here
	Connected bool                   `json:"connected"`
	Stream    *replica.ReplicaStatus `json:"stream,omitempty"`
}

func repoStatus(c *cli.Context) error {
	return withRepo(c, true, func(r *store.Repo) error {
		sum := repoSummary{Repo: r.Dir(), Disks: []diskLine{}, Replicas: []replicaLine{}}
		disks, err := r.Disks()
		if err != nil {
			return err
		}
		streams := map[string]replica.ReplicaStatus{}
		if cl, err := dialService(c); err == nil && cl != nil {
			if rs, err := cl.Replicas(c.Context); err == nil {
				for _, st := range rs {
					streams[st.Name] = st
				}
			}
			if sum.Replications, err = cl.Replications(c.Context); err != nil {
				return err
			}
		}
		seen := map[string]bool{}
		for _, d := range disks {
			line := diskLine{Name: d.Name, Group: d.Group, Replica: d.Replica, Handover: d.Handover}
			p, err := r.LastPoint(d.Timeline)
			if err == nil {
				line.Latest = &p
			}
			sum.Disks = append(sum.Disks, line)
			owner := d.Name
			if d.Group != "" {
				owner = d.Group
			}
			if d.Replica == nil || seen[owner] {
				continue
			}
			seen[owner] = true
			rl := replicaLine{Name: owner, Source: d.Replica.Source}
			if line.Latest != nil {
				rl.Position, rl.Seq = line.Latest.Time, line.Latest.Seq
			}
			if st, ok := streams[owner]; ok {
				rl.Connected, rl.Stream = st.Connected, &st
			}
			sum.Replicas = append(sum.Replicas, rl)
		}
		sum.Space = repoSpace(c, r)
		if c.Bool("json") {
			return printJSON(c, sum)
		}
		w := c.App.Writer
		fmt.Fprintf(w, "repository  %s, %d disks\n", sum.Repo, len(sum.Disks))
		for _, d := range sum.Disks {
			latest := "no point yet"
			if d.Latest != nil {
				latest = "latest " + fmtTime(d.Latest.Time)
			}
			fmt.Fprintf(w, "disk        %s: %s\n", d.Name, latest)
		}
		for _, rl := range sum.Replicas {
			conn := "not connected"
			if rl.Connected {
				conn = "stream connected"
			}
			pos := "nothing received yet"
			if !rl.Position.IsZero() {
				pos = "received up to " + fmtTime(rl.Position)
			}
			fmt.Fprintf(w, "replica     %s of %s: %s, %s\n", rl.Name, rl.Source, pos, conn)
		}
		for _, st := range sum.Replications {
			fmt.Fprintf(w, "replicating %s to %s: acknowledged %s, lag %.3fs, %s\n", st.Spec.Name, st.Spec.To, fmtAck(st.Status), st.LagSeconds, st.State)
		}
		return nil
	})
}
