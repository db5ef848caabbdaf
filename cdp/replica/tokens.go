package replica

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/hindsight-cdp/hindsight/store"
)

// A tokens file names the sources a server accepts, one a line:
//
//	# SOURCE  TOKEN                              NAMES
//	primary   6f1c0d2e8a9b4c3d5e6f7a8b9c0d1e2f   web,db
//
// SOURCE is recorded on each replica the token creates, so a source writes
// nothing but its own replicas; NAMES are the disks and groups it may
// replicate. A token is at least minToken characters and appears once.

// minToken is the shortest token accepted.
const minToken = 16

// Tokens are the credentials of the sources a server accepts: each token
// names its source and the disks and groups it may replicate.
type Tokens struct {
	entries []tokenEntry
}

type tokenEntry struct {
	source string
	sum    [sha256.Size]byte // the token's SHA-256: compared in constant time
	names  []string
}

// LoadTokens reads a tokens file (owner-only: another mode is refused).
func LoadTokens(path string) (*Tokens, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("replica: tokens file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("replica: tokens file %s is readable or writable by others (mode %04o): run chmod 600 %s", path, fi.Mode().Perm(), path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("replica: tokens file: %w", err)
	}
	t, err := parseTokens(b)
	if err != nil {
		return nil, fmt.Errorf("replica: tokens file %s: %w", path, err)
	}
	return t, nil
}

// parseTokens reads the lines of a tokens file.
func parseTokens(b []byte) (*Tokens, error) {
	t := &Tokens{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 3 {
			return nil, fmt.Errorf("line %d: %d fields: want SOURCE TOKEN NAME[,NAME...]", n, len(f))
		}
		if err := store.ValidName("source", f[0]); err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		if len(f[1]) < minToken {
			return nil, fmt.Errorf("line %d: the token of %q has %d characters: use at least %d (e.g. the output of 'openssl rand -hex 32')", n, f[0], len(f[1]), minToken)
		}
		e := tokenEntry{source: f[0], sum: sha256.Sum256([]byte(f[1]))}
		for _, name := range strings.Split(f[2], ",") {
			if err := store.ValidName("disk or group", name); err != nil {
				return nil, fmt.Errorf("line %d: %w", n, err)
			}
			e.names = append(e.names, name)
		}
		for _, o := range t.entries {
			if o.sum == e.sum {
				return nil, fmt.Errorf("line %d: the token of %q is also the token of %q: give each source its own", n, e.source, o.source)
			}
		}
		t.entries = append(t.entries, e)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return t, nil
}

// lookup finds token's entry: every entry's digest is compared in constant
// time, with no early exit, so the time taken says nothing of which one
// matched or how much of a token was right (digests also hide its length).
func (t *Tokens) lookup(token string) (source string, names []string, ok bool) {
	if t == nil {
		return "", nil, false
	}
	sum := sha256.Sum256([]byte(token))
	found := -1
	for i := range t.entries {
		eq := subtle.ConstantTimeCompare(t.entries[i].sum[:], sum[:])
		found = subtle.ConstantTimeSelect(eq, i, found)
	}
	if found < 0 {
		return "", nil, false
	}
	e := t.entries[found]
	return e.source, e.names, true
}

// allows reports whether a token's names include name.
func allows(names []string, name string) bool { return slices.Contains(names, name) }
