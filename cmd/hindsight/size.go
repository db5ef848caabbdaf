package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/hindsight-cdp/hindsight/store"
)

// parseSize reads a byte count as storage tools write it: 4096, 512K, 2G,
// 1.5T, 2GiB. Units are binary (K = 1024), as in qemu-img and truncate.
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	t = strings.TrimSuffix(strings.TrimSuffix(t, "B"), "i")
	mult := int64(1)
	if t != "" {
		if i := strings.IndexByte("KMGTP", strings.ToUpper(t[len(t)-1:])[0]); i >= 0 {
			mult = 1 << (10 * (i + 1))
			t = t[:len(t)-1]
		}
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || v <= 0 || v*float64(mult) > 1<<62 {
		return 0, usagef("size %q: use a positive byte count such as 4096, 512M, 2G or 1T", s)
	}
	n := int64(v * float64(mult))
	if float64(n) != v*float64(mult) {
		return 0, usagef("size %q is not a whole number of bytes", s)
	}
	return n, nil
}

func fmtSize(n int64) string { return fmt.Sprintf("%d (%s)", n, humanBytes(n)) }

// checkDiskSize checks a new disk's size and block size against the store's
// rules before the repository is opened, so that a bad one is bad input
// (exit 2) and the message says what would do.
func checkDiskSize(size, blockSize int64) error {
	if blockSize < store.MinBlockSize || blockSize > store.MaxBlockSize || blockSize&(blockSize-1) != 0 {
		return usagef("--block-size %d: use a power of two from %d to %d (512, 4K, 64K, 1M)", blockSize, store.MinBlockSize, store.MaxBlockSize)
	}
	if size > store.MaxDiskSize {
		return usagef("--size %s: a disk is at most %s", humanBytes(size), humanBytes(store.MaxDiskSize))
	}
	if size%blockSize != 0 {
		down := size / blockSize * blockSize
		return usagef("--size %d is not a multiple of the block size %d: use %d or %d", size, blockSize, down, down+blockSize)
	}
	return nil
}
