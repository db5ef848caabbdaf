// Package cdp is Hindsight's engine over the journal in package store: it
// imports images as points, resolves what users mean by an instant, and keeps
// a live read-only view of a repository for the FUSE tree and listings while
// another process writes.
//
// # Instants
//
// Users name an instant as a time (see package timespec), as "latest", or as
// "bookmark:NAME". An instant resolves to the newest point at or before it;
// instants before a disk's first point or in the future resolve to nothing.
//
// # Live views
//
// A Live holds the newest published view of a repository and moves to a newer
// one when the writer publishes it. Images are addressed by journal position,
// not by view: a position's image is the same in every later view, so readers
// of an old instant simply continue on the newest view.
package cdp
