package store

import "fmt"

// ValidName checks a disk, group or bookmark name. Names become directory and
// file names in the FUSE tree and on datastores, so only a conservative set is
// accepted: a letter or digit first, then letters, digits, '.', '_' and '-',
// at most 64 bytes. That excludes '/', "..", control characters and spaces.
func ValidName(kind, name string) error {
	bad := func(why string) error {
		return fmt.Errorf("%w: %s name %q %s (use letters, digits, '.', '_' and '-', starting with a letter or digit, at most 64)", ErrBadName, kind, name, why)
	}
	if name == "" {
		return bad("is empty")
	}
	if len(name) > 64 {
		return bad("is too long")
	}
	for i, c := range []byte(name) {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case i > 0 && (c == '.' || c == '_' || c == '-'):
		default:
			return bad(fmt.Sprintf("has %q at byte %d", c, i))
		}
	}
	return nil
}
