package store

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"

	"golang.org/x/sync/errgroup"
)

// stored is one piece of content as the hash index records it.
type storedContent struct {
	hash Hash
	loc  location
}

// verifyWindow is how much of a segment one read of verify --full takes.
const verifyWindow = 8 << 20

// content re-reads every piece of stored content the hash index records, in
// segment order (large sequential reads), and checks its checksum and its
// BLAKE3 hash on all cores. Content that fails goes to bad; it returns the
// index records it could not read. Memory: ~64 bytes per stored block, for
// the sort. It runs beside versions: it touches no verifier state but bad.
func (v *verifier) content(ctx context.Context, bad map[segPos]string) ([]Problem, error) {
	var all []storedContent
	var total int64
	var probs []Problem
	err := v.r.scan([]byte{kindHash}, func(k, val []byte) error {
		loc, err := decodeLocation(val)
		if len(k) != 1+len(Hash{}) || err != nil {
			probs = append(probs, Problem{Kind: "index", Detail: fmt.Sprintf("content record %x is malformed", k)})
			return nil
		}
		all = append(all, storedContent{Hash(k[1:]), loc})
		total += int64(loc.n)
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(all, func(a, b storedContent) int {
		return cmp.Or(cmp.Compare(a.loc.seg, b.loc.seg), cmp.Compare(a.loc.off, b.loc.off))
	})
	type result struct {
		at  segPos
		msg string
	}
	g, gctx := errgroup.WithContext(ctx)
	windows := make(chan []storedContent, 2)
	results := make(chan result, 64)
	var done int64
	g.Go(func() error { // one reader of windows in segment order
		defer close(windows)
		for i := 0; i < len(all); {
			j := i + 1
			for j < len(all) && all[j].loc.seg == all[i].loc.seg &&
				all[j].loc.off+uint64(all[j].loc.n)-all[i].loc.off <= verifyWindow {
				j++
			}
			select {
			case windows <- all[i:j]:
			case <-gctx.Done():
				return gctx.Err()
			}
			i = j
		}
		return nil
	})
	workers := runtime.GOMAXPROCS(0)
	var wg errgroup.Group
	for range workers {
		wg.Go(func() error {
			var buf []byte
			block := make([]byte, 0, 1<<20)
			for w := range windows {
				if gctx.Err() != nil {
					continue
				}
				first, last := w[0].loc, w[len(w)-1].loc
				if _, bad := v.badSeg[first.seg]; bad {
					continue // reported with its segment
				}
				n := int(last.off + uint64(last.n) - first.off)
				buf = slices.Grow(buf[:0], n)[:n]
				if err := v.r.segs.readRaw(buf, first.seg, first.off); err != nil {
					for _, c := range w {
						results <- result{segPos{c.loc.seg, c.loc.off}, "unreadable: " + err.Error()}
					}
					continue
				}
				for _, c := range w {
					stored := buf[c.loc.off-first.off:][:c.loc.n]
					if msg := checkStored(v.r.segs, c, stored, &block); msg != "" {
						results <- result{segPos{c.loc.seg, c.loc.off}, msg}
					}
				}
				results <- result{msg: "", at: segPos{^uint32(0), uint64(n)}} // progress
			}
			return nil
		})
	}
	go func() { wg.Wait(); close(results) }()
	for res := range results {
		if res.at.seg == ^uint32(0) {
			done += int64(res.at.off)
			if v.opt.Progress != nil {
				v.opt.Progress(done, total)
			}
			continue
		}
		bad[res.at] = res.msg
	}
	v.rep.ContentBytes = done
	return probs, errors.Join(g.Wait(), ctx.Err())
}

// checkStored checks one piece of stored content: its checksum, that it
// decodes, and its BLAKE3 hash; "" when it holds.
func checkStored(segs *segments, c storedContent, stored []byte, block *[]byte) string {
	if c.loc.flags&flagSum != 0 && checksum(stored) != c.loc.sum {
		return "stored bytes fail their checksum"
	}
	plain := stored
	if c.loc.flags&flagZstd != 0 {
		out, err := segs.dec.DecodeAll(stored, (*block)[:0])
		if err != nil {
			return "compressed content does not decode: " + err.Error()
		}
		*block, plain = out, out
	}
	if HashBlock(plain) != c.hash {
		return "content fails its BLAKE3 hash"
	}
	return ""
}
