package recovery

import "errors"

// Errors of this package. Check them with errors.Is.
var (
	// ErrNoFilesystem: no mounted filesystem of the instant holds a path.
	ErrNoFilesystem = errors.New("recovery: no mounted filesystem holds the path")
	// ErrExists: a restore target exists and overwriting was not asked for.
	ErrExists = errors.New("recovery: target exists")
)
