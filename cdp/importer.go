package cdp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"time"

	"github.com/hindsight-cdp/hindsight/store"
	"golang.org/x/sync/errgroup"
)

// ErrSizeMismatch: an imported image is not exactly the disk's size.
var ErrSizeMismatch = errors.New("cdp: image size differs from the disk size")

// ImportResult says what an import journaled.
type ImportResult struct {
	Point   store.Point `json:"point"`
	Read    int64       `json:"bytes_read"`
	Changed uint64      `json:"blocks_changed"`
}

// importChunk is how much of the image one pipeline stage handles at a time.
const importChunk = 1 << 20

type chunk struct {
	first  uint64 // first block
	data   []byte
	hashes []store.Hash
	err    error
	done   chan struct{}
}

// Import journals the image src (size bytes) as one point of disk d at time
// at (zero: now). Only blocks whose content differs from the disk's newest
// state are journaled; reading and hashing run ahead of the journal on all
// cores. Progress, if not nil, is called with the bytes read so far.
func Import(ctx context.Context, r *store.Repo, d store.Disk, src io.ReaderAt, size int64, at time.Time, progress func(int64)) (ImportResult, error) {
	return importImage(ctx, r, d, src, size, at, progress, true)
}

// importImage is Import; without keepEmpty, an image equal to the newest
// state makes no point.
func importImage(ctx context.Context, r *store.Repo, d store.Disk, src io.ReaderAt, size int64, at time.Time, progress func(int64), keepEmpty bool) (ImportResult, error) {
	if size != d.Size {
		return ImportResult{}, fmt.Errorf("%w: the image is %d bytes, disk %q is %d bytes", ErrSizeMismatch, size, d.Name, d.Size)
	}
	if now := time.Now(); at.After(now) {
		return ImportResult{}, fmt.Errorf("%w: --at %s (now is %s)", ErrFuture, at.UTC().Format(time.RFC3339Nano), now.UTC().Format(time.RFC3339Nano))
	}
	latest, err := r.Image(d, r.Head())
	if err != nil {
		return ImportResult{}, err
	}
	step, err := r.Begin(d.Timeline, at)
	if err != nil {
		return ImportResult{}, fmt.Errorf("import into %q: %w", d.Name, err)
	}
	res, err := runImport(ctx, step, latest, d, src, progress)
	if err != nil {
		step.Abort()
		return ImportResult{}, fmt.Errorf("import into %q: %w", d.Name, err)
	}
	if res.Changed == 0 && !keepEmpty {
		return res, step.Abort()
	}
	if res.Point, err = step.Commit(); err != nil {
		return ImportResult{}, fmt.Errorf("import into %q: %w", d.Name, err)
	}
	return res, nil
}

func runImport(ctx context.Context, step *store.Step, latest *store.Image, d store.Disk, src io.ReaderAt, progress func(int64)) (ImportResult, error) {
	bs := d.BlockSize
	per := max(importChunk/bs, 1)
	workers := runtime.GOMAXPROCS(0)
	g, ctx := errgroup.WithContext(ctx)
	work := make(chan *chunk)
	order := make(chan *chunk, 2*workers)

	g.Go(func() error { // producer: chunks in disk order
		defer close(work)
		defer close(order)
		for first := uint64(0); first < d.Blocks(); first += uint64(per) {
			n := min(uint64(per), d.Blocks()-first)
			c := &chunk{first: first, data: make([]byte, int(n)*bs), hashes: make([]store.Hash, n), done: make(chan struct{})}
			select {
			case order <- c:
			case <-ctx.Done():
				return ctx.Err()
			}
			select {
			case work <- c:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	})
	for w := 0; w < workers; w++ {
		g.Go(func() error { // read and hash
			for c := range work {
				if _, err := src.ReadAt(c.data, int64(c.first)*int64(bs)); err != nil && !errors.Is(err, io.EOF) {
					c.err = fmt.Errorf("read image at %d: %w", int64(c.first)*int64(bs), err)
				}
				zero := store.ZeroHash(bs)
				for i := range c.hashes {
					b := c.data[i*bs : (i+1)*bs]
					if store.IsZero(b) {
						c.hashes[i] = zero
					} else {
						c.hashes[i] = store.HashBlock(b)
					}
				}
				close(c.done)
				if c.err != nil {
					return c.err
				}
			}
			return nil
		})
	}
	var res ImportResult
	g.Go(func() error { // journal, in order
		var old []store.Hash
		for c := range order {
			select {
			case <-c.done:
			case <-ctx.Done():
				return ctx.Err()
			}
			if c.err != nil {
				return c.err
			}
			if cap(old) < len(c.hashes) {
				old = make([]store.Hash, len(c.hashes))
			}
			old = old[:len(c.hashes)]
			if err := latest.Hashes(c.first, old); err != nil {
				return err
			}
			for i, h := range c.hashes {
				if h == old[i] {
					continue
				}
				if err := step.PutHashed(d, c.first+uint64(i), c.data[i*bs:(i+1)*bs], h); err != nil {
					return err
				}
				res.Changed++
			}
			res.Read += int64(len(c.data))
			if progress != nil {
				progress(res.Read)
			}
		}
		return ctx.Err()
	})
	return res, g.Wait()
}
