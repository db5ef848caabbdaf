package main

import (
	"fmt"
	"strconv"
	"strings"
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
