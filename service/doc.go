// Package service is the one writer of a Hindsight repository: a
// long-running process (`hindsight serve`) that owns the journal and runs
// every front end that writes to it, side by side, each disk or group on
// its own timeline.
//
// # What it runs
//
// A protection is a front end through which the disks of its targets (disks
// or groups) are written: a tap (the disks as files DIR/<disk>.img over
// FUSE) or NBD exports (unix:PATH or HOST:PORT). A clone is a writable
// copy-on-write disk made from a disk's instant and served through a tap,
// beside the protections. Imports, bookmarks, disk and group creation go
// through the service too when it runs (Writer: Client over the socket,
// Local in one process; the service answers with a Local of its own).
//
// Every write wakes the publisher (Service.wake), which syncs and publishes
// the journal SyncInterval after the first write since its last round: an
// idle service does not poll. A front end's flush (fsync on the tap, NBD
// FLUSH or FUA) syncs the journal at once.
//
// # Desired state
//
// With Options.Record (`hindsight serve`), every protection and clone that
// starts is recorded in R/service.json ({"version":1,"protections":[...]},
// a list of ProtectSpec), written whole to service.json.tmp, synced and
// renamed over the old file, the directory synced after: a crash leaves the
// old record or the new one, never a mix, and a .tmp left behind is
// ignored. Unprotect and clone-end drop the record before stopping the
// front end. Restore brings every recorded protection back at start, after
// a clean stop, a kill -9 or a reboot alike; one that cannot start is listed
// as failed with why, and the others go on. A damaged service.json stops
// the service with the file's name and what to do, rather than start with
// protections silently missing. A foreground `protect` (no service
// running) records nothing.
//
// A tap whose process was killed leaves its FUSE mount behind, answering
// ENOTCONN. Before mounting a tap the service reads /proc/self/mountinfo:
// a dead Hindsight tap (type fuse.hindsight-tap, ENOTCONN) is detached; a
// live tap, or any other file system mounted there, is never touched and
// the protection fails with ErrForeignMount (kind foreign_mount).
//
// # Control protocol, version 1
//
// Command-line tools are the service's clients over R/run/control.sock:
// a Unix socket of mode 0600 in the directory R/run of mode 0700. Each
// connection's peer is checked with SO_PEERCRED: only the service's own
// user and root are served; anyone else's connection is closed without an
// answer and logged ("control: refused a connection from uid N"), so a
// mode opened by mistake still lets no one in.
//
// The protocol is HTTP/1.1 with JSON bodies; the version is the path
// prefix /v1 and the "version" of GET /v1/service. Any host name will do:
//
//	curl --unix-socket R/run/control.sock http://x/v1/protections
//	curl --unix-socket R/run/control.sock -X POST -d '{"targets":["web"],"tap":{"mount":"/run/hs/web"}}' http://x/v1/protections
//	curl --unix-socket R/run/control.sock -X DELETE http://x/v1/protections/web
//
// The routes, each with its request body and its answer (200 OK):
//
//	GET    /v1/service                 -                 ServiceInfo
//	GET    /v1/protections             -                 []ProtectionStatus
//	POST   /v1/protections             ProtectSpec       ProtectionStatus (once the front end serves)
//	DELETE /v1/protections/{name}      -                 ProtectionStatus (flushed and detached)
//	POST   /v1/clones                  CloneSpec         ProtectionStatus
//	DELETE /v1/clones/{name}[?keep=true] -               ProtectionStatus
//	POST   /v1/head                    HeadRequest       Head
//	POST   /v1/bookmarks               MarkRequest       store.Bookmark
//	POST   /v1/disks                   DiskRequest       store.Disk
//	POST   /v1/groups                  GroupRequest      store.Group
//	POST   /v1/groups/{name}/disks     JoinRequest       store.Group
//	POST   /v1/imports                 ImportRequest     cdp.ImportResult
//	PUT    /v1/policies/{name}         retention.Policy  retention.Entry
//	DELETE /v1/policies/{name}         -                 retention.Entry (the policy removed)
//	POST   /v1/prune                   PruneRequest      []retention.Report
//	POST   /v1/gc                      GCRequest         store.GCResult
//
// plus the vSphere instant recovery routes when Options.Instants is set.
// Policies are read from the repository's views, as every listing is.
// Field names are those of the types' json tags. A request body is one
// JSON value: unknown fields and anything after the value are refused, so
// that a misspelt option is an error, not a default. POST /v1/protections
// takes no "clone" (clones are made with POST /v1/clones).
//
// # Errors
//
// Every failure answers {"error": MESSAGE, "kind": KIND} with the status of
// its kind; the client turns a kind back into its sentinel error, so
// errors.Is (and the command line's exit codes) work as in one process:
//
//	400 Bad Request            bad_request (ErrBadRequest: malformed JSON, an unknown field,
//	                           trailing data, a route or method this version does not have),
//	                           bad_spec (ErrBadSpec), bad_time, bad_name, size_mismatch, time_order,
//	                           bad_policy (retention.ErrBadPolicy)
//	404 Not Found              not_found (ErrNotFound), unknown_disk, unknown_group,
//	                           unknown_bookmark, no_point, future, no_policy (retention.ErrNoPolicy)
//	409 Conflict               exists (ErrExists), disk_exists, bookmark_exists, in_use,
//	                           not_empty, foreign_mount (ErrForeignMount)
//	413 Request Entity Too Large  too_large (ErrTooLarge)
//	503 Service Unavailable    busy (ErrBusy)
//	507 Insufficient Storage   no_space (store.ErrNoSpace: the repository's filesystem is at its reserve)
//	500 Internal Server Error  corrupt (store.ErrCorrupt), and any other failure, without a kind
//
// The store's and cdp's kinds map to their sentinels (unknown_disk is
// store.ErrUnknownDisk, future is cdp.ErrFuture, ...): see kinds in api.go.
//
// # Limits
//
// A local process that may open the socket still must not exhaust the
// service: a request body longer than MaxRequest (1 MiB) is refused (413
// too_large) once MaxRequest+1 bytes are read, never read whole; at most 32
// connections are served at once, and one more is answered 503 busy at
// once, before it sends anything, and closed; a request must arrive whole
// within 10 seconds: a client silent that long is dropped without an
// answer, one whose body is still arriving gets 400 bad_request; an idle
// keep-alive connection is closed after 30 seconds. Prune and gc, once
// their request has arrived, run as long as their work needs (up to a
// day; see longRequest), and stop when their client goes away.
//
// # Retention
//
// With Options.PruneEvery (`serve --prune-every`, 1h by default), the
// service applies every recorded policy (retention.RunAll) and then
// garbage collects once, every PruneEvery. Prunes and collections run one
// at a time, asked or scheduled. A run that fails is logged and counted
// in hindsight_retention_last_run_success; the service goes on, and the
// next run tries again.
//
// # Metrics
//
// ServeMetrics serves Prometheus text at /metrics (`serve --metrics ADDR`):
// per disk the counters of `protections` (hindsight_disk_writes_total,
// hindsight_disk_written_bytes_total, hindsight_disk_flushes_total, ...),
// read from the devices at scrape time, and the flush latency histogram
// hindsight_disk_flush_duration_seconds, one observation per flush; and
// what retention did: hindsight_retention_points_removed_total and
// hindsight_retention_pruned_bytes_total by disk or group,
// hindsight_gc_freed_bytes_total, hindsight_gc_reclaimed_bytes_total, and
// the last scheduled run's start, duration and outcome
// (hindsight_retention_last_run_timestamp_seconds, ..._duration_seconds,
// ..._success).
package service
