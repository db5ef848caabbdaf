package export

import (
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"

	"github.com/hindsight-cdp/hindsight/store"
	"golang.org/x/sync/errgroup"
)

// sink hashes everything written and, on a sparse target, seeks over zero
// runs instead of writing them.
type sink struct {
	w      io.Writer
	f      *os.File
	sparse bool
	h      hash.Hash
	n      int64
}

// holeUnit is the granularity at which zeros become holes.
const holeUnit = 64 << 10

func (s *sink) Write(p []byte) (int, error) {
	s.h.Write(p)
	if !s.sparse {
		n, err := s.w.Write(p)
		s.n += int64(n)
		return n, err
	}
	for done := 0; done < len(p); {
		n := min(holeUnit, len(p)-done)
		part := p[done : done+n]
		if store.IsZero(part) {
			if _, err := s.f.Seek(int64(n), io.SeekCurrent); err != nil {
				return done, err
			}
		} else if _, err := s.f.Write(part); err != nil {
			return done, err
		}
		done += n
		s.n += int64(n)
	}
	return len(p), nil
}

// finish sets a sparse file's size (a trailing hole is not written) and syncs.
func (s *sink) finish() error {
	if s.f == nil {
		return nil
	}
	if s.sparse {
		if err := s.f.Truncate(s.n); err != nil {
			return err
		}
	}
	return s.f.Sync()
}

// copyChunk is the unit of reading; chunks are read ahead in parallel.
const copyChunk = 4 << 20

// readAhead is how many chunks are read while an earlier one is written.
const readAhead = 4

// copyImage writes size bytes of r to w in order, reading ahead. It returns
// only when no read of r is under way: the caller may close what r reads
// (the repository) as soon as it returns, even after an error.
func copyImage(ctx context.Context, w io.Writer, r io.ReaderAt, size int64, progress func(int64)) error {
	g, ctx := errgroup.WithContext(ctx)
	type chunk struct {
		buf  []byte
		err  error
		done chan struct{}
	}
	order := make(chan *chunk, readAhead)
	g.Go(func() error {
		defer close(order)
		for off := int64(0); off < size; off += copyChunk {
			c := &chunk{buf: make([]byte, min(copyChunk, size-off)), done: make(chan struct{})}
			select {
			case order <- c:
			case <-ctx.Done():
				return ctx.Err()
			}
			// In the group, so that g.Wait also waits for reads the writer
			// no longer wants. A read's error is reported in order, by the
			// writer, so that the first bad chunk is the one named.
			g.Go(func() error {
				defer close(c.done)
				if ctx.Err() != nil {
					c.err = ctx.Err()
					return nil
				}
				if _, err := r.ReadAt(c.buf, off); err != nil && !errors.Is(err, io.EOF) {
					c.err = fmt.Errorf("read image at %d: %w", off, err)
				}
				return nil
			})
		}
		return nil
	})
	g.Go(func() error {
		var done int64
		for c := range order {
			<-c.done
			if c.err != nil {
				return c.err
			}
			if _, err := w.Write(c.buf); err != nil {
				return err
			}
			done += int64(len(c.buf))
			if progress != nil {
				progress(done)
			}
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		return nil
	})
	return g.Wait()
}
