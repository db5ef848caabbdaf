package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/hindsight-cdp/hindsight/cdp"
	"github.com/hindsight-cdp/hindsight/cdp/timespec"
	"github.com/hindsight-cdp/hindsight/fs/export"
	"github.com/hindsight-cdp/hindsight/store"
)

// Exit codes, stable for scripts.
const (
	exitOK          = 0
	exitFailure     = 1
	exitUsage       = 2
	exitNotFound    = 3
	exitBusy        = 4
	exitInterrupted = 130
)

// errUsage marks errors in what the user typed.
var errUsage = errors.New("usage")

type usageError struct{ err error }

func (u usageError) Error() string       { return u.err.Error() }
func (u usageError) Unwrap() []error     { return []error{u.err, errUsage} }
func usageErr(err error) error           { return usageError{err} }
func usagef(f string, args ...any) error { return usageErr(fmt.Errorf(f, args...)) }

func exitCode(err error) int {
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, context.Canceled):
		return exitInterrupted
	case errors.Is(err, errUsage), errors.Is(err, timespec.ErrBadTime), errors.Is(err, store.ErrBadName),
		errors.Is(err, cdp.ErrSizeMismatch), errors.Is(err, cdp.ErrFuture), errors.Is(err, store.ErrTimeOrder),
		errors.Is(err, store.ErrOutOfRange), errors.Is(err, export.ErrBadTarget), errors.Is(err, store.ErrNotEmpty):
		return exitUsage
	case errors.Is(err, store.ErrUnknownDisk), errors.Is(err, store.ErrUnknownBookmark), errors.Is(err, store.ErrUnknownGroup),
		errors.Is(err, store.ErrNoPoint), errors.Is(err, store.ErrNotRepository):
		return exitNotFound
	case errors.Is(err, store.ErrLocked), errors.Is(err, store.ErrDiskExists), errors.Is(err, store.ErrBookmarkExists),
		errors.Is(err, export.ErrExists), errors.Is(err, store.ErrInUse):
		return exitBusy
	}
	return exitFailure
}
