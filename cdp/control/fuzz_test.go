package control

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"testing"
)

// FuzzDecodeRequest feeds decodeRequest data repeated up to repeat times
// (so that inputs can exceed MaxRequest without the fuzzer making them):
// it must not panic, must read at most MaxRequest+1 bytes, must refuse
// exactly the first lines longer than MaxRequest, and what it accepts must
// be a valid request that survives encoding and decoding again unchanged.
func FuzzDecodeRequest(f *testing.F) {
	for _, seed := range []string{
		`{"op":"head","target":"web"}` + "\n",
		`{"op":"mark","target":"db","bookmark":{"name":"n","time":"2026-11-25T10:00:00Z","kind":"application","quiesce":{"agents":[]},"files":{"backup_label":"x"}}}` + "\n",
		`{"op":"mark","target":"web"}`,
		`{"op":"head","target":"web"}{"op":"mark"}`,
		`{"op":"head","target":"web"}` + "\ntrailing",
		`{"op":"head","target":"` + "\xff\xfe" + `"}`,
		`[[[[[[[[[[[[[[[[`,
		"\n",
		"",
	} {
		f.Add([]byte(seed), uint16(1))
	}
	f.Add(bytes.Repeat([]byte("a"), 32), uint16(65535)) // 2 MiB without a newline
	f.Add([]byte(`{"op":"head","target":"`), uint16(50000))
	f.Fuzz(func(t *testing.T, data []byte, repeat uint16) {
		total := int64(len(data)) * int64(repeat)
		r := &countingReader{r: io.LimitReader(&cycleReader{data: data}, total)}
		if len(data) == 0 {
			r.r = bytes.NewReader(nil)
		}
		// The first line as the model sees it: up to the first newline,
		// else everything.
		first := total
		if i := bytes.IndexByte(data, '\n'); i >= 0 && repeat > 0 {
			first = int64(i) + 1
		}

		req, err := decodeRequest(r)
		if r.n > MaxRequest+1 {
			t.Fatalf("read %d bytes, more than MaxRequest+1", r.n)
		}
		if tooLarge := errors.Is(err, ErrTooLarge); tooLarge != (first > MaxRequest) {
			t.Fatalf("first line of %d bytes: error %v", first, err)
		}
		if total == 0 && !errors.Is(err, io.EOF) {
			t.Fatalf("empty input: %v, want io.EOF", err)
		}
		if err != nil {
			return
		}
		if req.Op != "head" && req.Op != "mark" || req.Op == "mark" && req.Bookmark == nil {
			t.Fatalf("accepted %+v", req)
		}
		once, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		again, err := decodeRequest(bytes.NewReader(append(once, '\n')))
		if err != nil {
			t.Fatalf("%s decoded, then its encoding did not: %v", once, err)
		}
		twice, _ := json.Marshal(again)
		if !bytes.Equal(once, twice) {
			t.Fatalf("encoding changed after a round trip:\n%s\n%s", once, twice)
		}
	})
}

// cycleReader repeats data forever.
type cycleReader struct {
	data []byte
	off  int
}

func (c *cycleReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		k := copy(p[n:], c.data[c.off:])
		n += k
		c.off = (c.off + k) % len(c.data)
	}
	return n, nil
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
