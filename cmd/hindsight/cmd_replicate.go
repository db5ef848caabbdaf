package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hindsight-cdp/hindsight/cdp/replica"
	"github.com/hindsight-cdp/hindsight/service"
	"github.com/urfave/cli/v2"
)

// errNeedService: replication runs in the service.
var errNeedService = errors.New("replication runs in the repository's service: start it first ('hindsight serve', or systemctl start hindsight@NAME)")

func cmdReplicate() *cli.Command {
	return &cli.Command{
		Name:      "replicate",
		Usage:     "stream a DISK's or GROUP's journal to a second site, continuously, from the service",
		ArgsUsage: "DISK|GROUP",
		Description: `The service sends every point of the disk or group, in order and at its time, to the
service at the other site ('serve --replication-listen'), which keeps it as a replica:
a full repository of its own where every instant equals this one's. Only durable
points are sent; block content crosses only when the target lacks its BLAKE3 hash
(asked in batches, several in flight), compressed; zero blocks cost nothing. The
target acknowledges a position once it is durable there; after a cut, a restart or
a crash on either side the stream resumes where the target stands, with no gap and
no repeat. It is recorded: a restarted service resumes it.

--sync makes every fsync/FLUSH of the disk return only once the replica has it
durable (RPO 0). When the replica does not answer within --sync-timeout (5s), the
flush follows --on-link-loss: stall (the default: it waits, the application waits)
or async (it returns, replication goes on asynchronously and says so in
'replications' and the log, and is synchronous again once caught up).

--failback, after 'hindsight failover NAME' made this site's replica writable,
streams back to the original site only what was written here since the handover:
the original site's disk is brought back to the divergence and becomes a replica
of this one (its own later writes stay in its history, bookmarked).

  hindsight replicate web --to hs://dr.example:7443 --ca dr-ca.pem --token-file /etc/hindsight/dr.token
  hindsight replicate db --to hs://dr.example:7443 --ca dr-ca.pem --token-file t --sync --on-link-loss async
  hindsight replicate web --to hs://primary:7443 --ca ca.pem --token-file t --failback
  hindsight replications          # what each stream has acknowledged, its lag and state
  hindsight unreplicate web

The token file holds the token the target's --tokens file gives this source. Plain
TCP only with --insecure, to a loopback address (tests).`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "to", Required: true, Usage: "the target service, `hs://HOST:PORT`"},
			&cli.StringFlag{Name: "ca", Usage: "PEM `FILE` of the certificate authority the target's certificate must chain to"},
			&cli.StringFlag{Name: "token-file", Required: true, Usage: "`FILE` holding this source's token at the target"},
			&cli.StringFlag{Name: "bandwidth", Usage: "at most this many bytes per second on the wire, e.g. `20MiB/s`"},
			&cli.BoolFlag{Name: "sync", Usage: "an fsync returns only once the replica has the write durable (RPO 0)"},
			&cli.StringFlag{Name: "on-link-loss", Value: string(replica.Stall), Usage: "with --sync, when the replica does not answer: `stall` or async"},
			&cli.DurationFlag{Name: "sync-timeout", Value: 5 * time.Second, Usage: "with --sync, how long a flush waits for the replica before --on-link-loss applies"},
			&cli.BoolFlag{Name: "failback", Usage: "stream back what was written since 'hindsight failover' to the original site"},
			&cli.BoolFlag{Name: "insecure", Usage: "plain TCP, no TLS: only to a loopback address"},
		},
		Action: func(c *cli.Context) error {
			if err := needArgs(c, 1, "a DISK or GROUP"); err != nil {
				return err
			}
			spec := service.ReplicateSpec{Name: c.Args().First(), To: c.String("to"), Insecure: c.Bool("insecure"),
				Sync: c.Bool("sync"), OnLinkLoss: replica.LinkLoss(c.String("on-link-loss")), SyncTimeout: c.Duration("sync-timeout"), Failback: c.Bool("failback")}
			var err error
			if spec.TokenFile, err = filepath.Abs(c.String("token-file")); err != nil {
				return usageErr(err)
			}
			if ca := c.String("ca"); ca != "" {
				if spec.CA, err = filepath.Abs(ca); err != nil {
					return usageErr(err)
				}
			}
			if bw := c.String("bandwidth"); bw != "" {
				if spec.Bandwidth, err = parseRate(bw); err != nil {
					return usageErr(err)
				}
			}
			cl, err := dialService(c)
			if err != nil {
				return err
			}
			if cl == nil {
				return withCode(exitFailure, errNeedService)
			}
			st, err := cl.Replicate(c.Context, spec)
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return printJSON(c, st)
			}
			fmt.Fprintf(c.App.Writer, "replicating %s to %s (%s); 'hindsight replications' shows how far it is\n", spec.Name, spec.To, mode(spec))
			return nil
		},
	}
}

func mode(spec service.ReplicateSpec) string {
	if spec.Sync {
		return "synchronous, on link loss: " + string(spec.OnLinkLoss)
	}
	return "asynchronous"
}

// parseRate reads a rate such as 20MiB/s (the /s may be left out).
func parseRate(s string) (int64, error) {
	n, err := parseSize(strings.TrimSuffix(strings.TrimSpace(s), "/s"))
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("--bandwidth %q: want bytes per second, such as 20MiB/s or 100M", s)
	}
	return n, nil
}

func cmdUnreplicate() *cli.Command {
	return &cli.Command{
		Name:      "unreplicate",
		Usage:     "stop replicating a DISK or GROUP (the replica keeps what it has)",
		ArgsUsage: "DISK|GROUP",
		Action: func(c *cli.Context) error {
			if err := needArgs(c, 1, "a DISK or GROUP"); err != nil {
				return err
			}
			cl, err := dialService(c)
			if err != nil {
				return err
			}
			if cl == nil {
				return withCode(exitFailure, errNeedService)
			}
			st, err := cl.Unreplicate(c.Context, c.Args().First())
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return printJSON(c, st)
			}
			fmt.Fprintf(c.App.Writer, "stopped replicating %s; the target acknowledged up to %s\n", st.Spec.Name, fmtAck(st.Status))
			return nil
		},
	}
}

func fmtAck(st replica.Status) string {
	if st.Acked == 0 {
		return "nothing yet"
	}
	return fmt.Sprintf("%s (seq %d)", fmtTime(st.AckedTime), st.Acked)
}

func cmdReplications() *cli.Command {
	return &cli.Command{
		Name:  "replications",
		Usage: "list the streams to other sites: acknowledged position, lag, bytes on the wire, state",
		Description: `Per replicated disk or group: the target, the newest position the target has durable
and its time, the lag behind what is durable here (in time and in bytes of blocks not
yet acknowledged), the bytes sent and received, the blocks whose content crossed, and
the state (connecting, streaming, caught-up, retrying with the last error). With --sync
it says whether the stream fell back to asynchronous.`,
		Action: func(c *cli.Context) error {
			cl, err := dialService(c)
			if err != nil {
				return err
			}
			if cl == nil {
				return withCode(exitFailure, errNeedService)
			}
			sts, err := cl.Replications(c.Context)
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return printJSON(c, sts)
			}
			rows := [][]string{}
			for _, st := range sts {
				state := st.State
				if st.Degraded {
					state += " (sync fell back to async)"
				}
				if st.LastError != "" {
					state += ": " + st.LastError
				}
				rows = append(rows, []string{st.Spec.Name, st.Spec.To, mode(st.Spec), fmtAck(st.Status),
					strconv.FormatFloat(st.LagSeconds, 'f', 3, 64) + "s", humanBytes(st.LagBytes), humanBytes(int64(st.WireBytes)), state})
			}
			if len(rows) == 0 {
				fmt.Fprintln(c.App.Writer, "no replications (start one with 'hindsight replicate NAME --to hs://HOST:PORT ...')")
				return nil
			}
			return table(c.App.Writer, []string{"NAME", "TARGET", "MODE", "ACKNOWLEDGED", "LAG", "LAG BYTES", "WIRE", "STATE"}, rows)
		},
	}
}

func cmdFailover() *cli.Command {
	return &cli.Command{
		Name:      "failover",
		Usage:     "make a replica DISK or GROUP writable here, at its newest complete point",
		ArgsUsage: "DISK|GROUP",
		Description: `Run at the second site when the first is lost (or for a planned move). The replica
stops taking its stream and becomes a disk this site protects and writes; the
handover is recorded on it and bookmarked (failover-TIME). Its newest point is the
divergence: the last instant both sites share. Later, 'hindsight replicate NAME --to
hs://FIRST-SITE:PORT --failback' sends back only what was written here since.

To test a failover without stopping replication, clone the replica instead
('hindsight clone NAME --at T'): the clone is writable and the replica goes on.

  hindsight --repo /srv/dr failover web
  hindsight --repo /srv/dr protect web --mount /run/hs/web`,
		Action: func(c *cli.Context) error {
			if err := needArgs(c, 1, "a DISK or GROUP"); err != nil {
				return err
			}
			return withWriter(c, func(w service.Writer) error {
				h, err := w.Failover(c.Context, c.Args().First())
				if err != nil {
					return err
				}
				if c.Bool("json") {
					return printJSON(c, h)
				}
				fmt.Fprintf(c.App.Writer, "%s is writable here from %s; it diverged from %s at %s\n", c.Args().First(), fmtTime(h.At), h.Source, fmtTime(h.Diverged))
				return nil
			})
		},
	}
}
