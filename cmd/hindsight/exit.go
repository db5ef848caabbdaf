package main

import (
	"context"
	"errors"
	"fmt"
	"github.com/hindsight-cdp/hindsight/service"

	"github.com/hindsight-cdp/hindsight/cdp/retention"
	"github.com/hindsight-cdp/hindsight/cdp/timespec"
	"github.com/hindsight-cdp/hindsight/store"
)

// Exit codes, stable for scripts (the README and 'hindsight --help' list them).
const (
	exitOK          = 0
	exitFailure     = 1 // also: a damaged repository
	exitUsage       = 2 // bad usage or input
	exitNotFound    = 3 // no such repository, disk, group, bookmark, point or instant
	exitBusy        = 4 // another writer holds the repository, or the name exists
	exitInterrupted = 130
)

// exitError is an error that carries the exit code of its class. Commands
// wrap an error with it where they know the class: they parsed the input,
// looked the name up, resolved the instant (gocryptfs exitcodes.Err).
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func withCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &exitError{code: code, err: err}
}

// usageErr: the user typed something wrong (exit 2).
func usageErr(err error) error           { return withCode(exitUsage, err) }
func usagef(f string, args ...any) error { return usageErr(fmt.Errorf(f, args...)) }

// notFound: what the user named does not exist (exit 3).
func notFound(err error) error { return withCode(exitNotFound, err) }

// busy: the repository or the name is taken (exit 4).
func busy(err error) error { return withCode(exitBusy, err) }

// damaged: the repository is damaged (exit 1), whatever sentinel the
// error also wraps.
func damaged(err error) error { return withCode(exitFailure, err) }

// exitCode is the process's exit code for err. An interruption and damage
// come first: they explain whatever else went wrong. Then the code an
// exitError carries (the outermost, so a command can reclassify), then the
// few sentinels of sentinelCode; anything else is a failure.
func exitCode(err error) int {
	var e *exitError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, context.Canceled):
		return exitInterrupted
	case errors.Is(err, store.ErrCorrupt):
		return exitFailure
	case errors.As(err, &e):
		return e.code
	}
	return sentinelCode(err)
}

// sentinelCode maps the sentinels that mean one thing wherever they come
// from: the store's answers to a request that names something absent, taken
// or malformed, and a time that does not parse. They reach the command line
// from many calls and across the control socket (cdp/control), so they are
// mapped here once. Sentinels whose class depends on the caller are not
// here but classified by the command: cdp.ErrFuture (resolveAt: no such
// instant; import: a bad --at), store.ErrNotRepository (openErr: missing or
// damaged), store.ErrTimeOrder and cdp.ErrSizeMismatch (import's input).
func sentinelCode(err error) int {
	switch {
	case errors.Is(err, store.ErrUnknownDisk), errors.Is(err, store.ErrUnknownGroup),
		errors.Is(err, store.ErrUnknownBookmark), errors.Is(err, store.ErrNoPoint),
		errors.Is(err, service.ErrNotFound), errors.Is(err, service.ErrNoService), errors.Is(err, retention.ErrNoPolicy):
		return exitNotFound
	case errors.Is(err, store.ErrLocked), errors.Is(err, store.ErrDiskExists),
		errors.Is(err, store.ErrBookmarkExists), errors.Is(err, store.ErrInUse),
		errors.Is(err, service.ErrExists), errors.Is(err, service.ErrForeignMount), errors.Is(err, service.ErrBusy),
		errors.Is(err, store.ErrReplica):
		return exitBusy
	case errors.Is(err, store.ErrBadName), errors.Is(err, store.ErrBadGeometry), errors.Is(err, store.ErrNotEmpty), errors.Is(err, timespec.ErrBadTime),
		errors.Is(err, service.ErrBadSpec), errors.Is(err, service.ErrBadRequest), errors.Is(err, service.ErrTooLarge),
		errors.Is(err, retention.ErrBadPolicy), errors.Is(err, store.ErrNotReplica):
		return exitUsage
	}
	return exitFailure
}
