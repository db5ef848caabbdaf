// Package retention decides which points of a timeline to keep, the way
// storage admins write it down, and asks the store to prune the others.
// It is pure logic over store's listings: the store's Prune removes points
// and collapses versions, and Collect frees content (store/retention.go).
//
// # Spans
//
// A Span is a calendar span: "24h", "90min", "7d", "26w", "24m", "2y",
// combined as "1y6m", or "0". As in restic's --keep-within, m is months
// and min is minutes. Measured back from now (Span.Before), years and
// months go by the calendar, clamped to the month's end (a month before
// March 31 is February 28 or 29), then weeks and days, then hours and
// minutes. Everything is UTC, which has no daylight saving.
//
// # Policies
//
// A Policy, recorded per timeline (a lone disk, or a group: a group's
// disks are pruned as one), keeps as of now:
//
//   - the newest point, always;
//   - every point after now: a clock that went back must not cost data;
//   - every point within KeepAll: instants there stay exact;
//   - within Hourly, Daily, Weekly and Monthly, each measured back from
//     now, the newest point of each UTC hour, UTC day, ISO week (Monday to
//     Sunday, UTC) and calendar month;
//   - the positions of pinned bookmarks, always, and of other bookmarks
//     whose instant lies within Bookmarks (zero: as far back as the
//     longest window); older bookmarks are removed;
//   - the base position of every clone of a disk of the timeline.
//
// A point kept for any reason keeps its instant exact; a removed point's
// instants then show the kept point before it. A policy that keeps nothing
// but the newest point is refused (Validate).
//
// Select makes the Plan from listings alone, so it is tested against a
// model; Run reads the listings of a repository (Pruner, which *store.Repo
// satisfies), plans and prunes; RunAll does it for every timeline that has
// a policy. The store stores a policy as its JSON, which this package
// writes and reads (Decode).
package retention
