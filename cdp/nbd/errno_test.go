package nbd

import (
	"errors"
	"fmt"
	"syscall"
	"testing"

	"github.com/hindsight-cdp/hindsight/store"
)

// TestErrnoOf: a backend's error reaches the client as the NBD error of
// its errno; a write refused on a full repository is NBD_ENOSPC (28), not
// the EIO that would make a guest take its disk offline.
func TestErrnoOf(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want uint32
	}{
		{fmt.Errorf("journal write to %q at %d: %w", "d", 4096, store.ErrNoSpace), errnoNoSpace},
		{fmt.Errorf("write: %w", syscall.ENOSPC), errnoNoSpace},
		{fmt.Errorf("write: %w", syscall.EROFS), errnoPerm},
		{fmt.Errorf("write: %w", syscall.EINVAL), errnoInval},
		{errors.New("disk on fire"), errnoIO},
		{store.ErrCorrupt, errnoIO},
	} {
		if got := errnoOf(tc.err); got != tc.want {
			t.Errorf("errnoOf(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
	if errnoNoSpace != 28 {
		t.Errorf("NBD_ENOSPC is %d, the protocol says 28", errnoNoSpace)
	}
}
