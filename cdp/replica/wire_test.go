package replica

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/hindsight-cdp/hindsight/store"
)

func sampleSteps() *stepsMsg {
	at := time.Date(2026, 11, 25, 10, 15, 30, 123456789, time.UTC)
	return &stepsMsg{ID: 7, Flags: flagSync, Steps: []wireStep{
		{Seq: 10, Time: at, Blocks: []wireBlock{
			{Disk: 0, Block: 5, Kind: kindZeros},
			{Disk: 1, Block: 1 << 40, Kind: kindHeld, Hash: store.Hash{1, 2, 3}},
			{Disk: 0, Block: 6, Kind: kindRaw, Hash: store.Hash{4}, Content: []byte("raw content")},
			{Disk: 2, Block: 7, Kind: kindZstd, Hash: store.Hash{5}, Content: []byte{0x28, 0xb5, 0x2f, 0xfd}},
		}, Marks: []store.Bookmark{{Name: "app", Disk: "web", Seq: 10, Time: at, Kind: store.KindApplication, Created: at, Files: map[string]string{"backup_label": "x"}}}},
		{Seq: 11, Time: at.Add(time.Nanosecond), Part: partMore, Blocks: []wireBlock{}},
	}}
}

func TestStepsRoundTrip(t *testing.T) {
	m := sampleSteps()
	f, err := appendSteps(nil, m)
	if err != nil {
		t.Fatal(err)
	}
	ft, p, err := readFrame(bytes.NewReader(f), MaxFrame)
	if err != nil || ft != frameSteps {
		t.Fatalf("read back %v, %v", ft, err)
	}
	got, err := decodeSteps(p)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, m) {
		t.Fatalf("decoded\n%+v\nwant\n%+v", got, m)
	}
	// Every cut of the payload is refused, never a panic.
	for i := range len(p) {
		if _, err := decodeSteps(p[:i]); !errors.Is(err, errBadFrame) {
			t.Fatalf("payload cut at %d of %d: %v", i, len(p), err)
		}
	}
}

func TestSmallFramesRoundTrip(t *testing.T) {
	hs := []store.Hash{{1}, {2}, {3}}
	ft, p, err := readFrame(bytes.NewReader(appendAsk(nil, 9, hs)), MaxFrame)
	if err != nil || ft != frameAsk {
		t.Fatal(ft, err)
	}
	if id, got, err := decodeAsk(p); err != nil || id != 9 || !reflect.DeepEqual(got, hs) {
		t.Fatalf("ASK: %d %v %v", id, got, err)
	}
	held := []bool{true, false, true, true, false, false, false, false, true}
	_, p, _ = readFrame(bytes.NewReader(appendHave(nil, 9, held)), MaxFrame)
	if id, got, err := decodeHave(p); err != nil || id != 9 || !reflect.DeepEqual(got, held) {
		t.Fatalf("HAVE: %d %v %v", id, got, err)
	}
	at := time.Unix(0, 1764065730123456789).UTC()
	_, p, _ = readFrame(bytes.NewReader(appendAck(nil, 42, at)), MaxFrame)
	if seq, got, err := decodeAck(p); err != nil || seq != 42 || !got.Equal(at) {
		t.Fatalf("ACK: %d %v %v", seq, got, err)
	}
	bms := []store.Bookmark{{Name: "a", Kind: store.KindUser, Time: at}}
	f, err := appendMarksFrame(nil, bms)
	if err != nil {
		t.Fatal(err)
	}
	_, p, _ = readFrame(bytes.NewReader(f), MaxFrame)
	if got, err := decodeMarksFrame(p); err != nil || len(got) != 1 || got[0].Name != "a" || !got[0].Time.Equal(at) {
		t.Fatalf("MARKS: %+v %v", got, err)
	}
}

func TestReadFrameRefuses(t *testing.T) {
	for _, c := range []struct {
		name  string
		in    []byte
		limit int
		want  error
	}{
		{"unknown type", []byte{0, 0, 0, 0, 0}, MaxFrame, errBadFrame},
		{"type 11", []byte{11, 0, 0, 0, 0}, MaxFrame, errBadFrame},
		{"over the limit", []byte{byte(frameSteps), 0, 0, 1, 1}, 256, errFrameTooLarge},
		{"over MaxFrame", binary.BigEndian.AppendUint32([]byte{byte(frameSteps)}, MaxFrame+1), MaxFrame, errFrameTooLarge},
		{"short payload", []byte{byte(frameAck), 0, 0, 0, 16, 1, 2}, MaxFrame, io.ErrUnexpectedEOF},
		{"short header", []byte{byte(frameAck), 0}, MaxFrame, io.ErrUnexpectedEOF},
	} {
		if _, _, err := readFrame(bytes.NewReader(c.in), c.limit); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	// A frame announced large allocates as its bytes arrive, not before.
	f := binary.BigEndian.AppendUint32([]byte{byte(frameSteps)}, MaxFrame)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	readFrame(bytes.NewReader(f), MaxFrame)
	runtime.ReadMemStats(&after)
	if grown := after.TotalAlloc - before.TotalAlloc; grown > 4<<20 {
		t.Errorf("a 40 MiB frame's header alone made the reader allocate %d bytes", grown)
	}
}

func TestDecodersBoundCounts(t *testing.T) {
	// Counts larger than the payload can hold are refused before allocating.
	p := binary.BigEndian.AppendUint32(append(make([]byte, 8), 0), 1<<31)
	if _, err := decodeSteps(p); !errors.Is(err, errBadFrame) {
		t.Errorf("2^31 steps in no bytes: %v", err)
	}
	if _, _, err := decodeAsk(binary.BigEndian.AppendUint32(make([]byte, 8), 1<<31)); !errors.Is(err, errBadFrame) {
		t.Errorf("ASK of 2^31 hashes: %v", err)
	}
	if _, _, err := decodeHave(binary.BigEndian.AppendUint32(make([]byte, 8), 1<<31)); !errors.Is(err, errBadFrame) {
		t.Errorf("HAVE of 2^31 bits: %v", err)
	}
	if _, err := decodeMarksFrame([]byte{0xff, 0xff}); !errors.Is(err, errBadFrame) {
		t.Errorf("65535 bookmarks in no bytes: %v", err)
	}
}

func TestTokensFile(t *testing.T) {
	dir := t.TempDir()
	write := func(mode os.FileMode, s string) string {
		p := filepath.Join(dir, "tokens")
		os.Remove(p)
		if err := os.WriteFile(p, []byte(s), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := "# sources\n\nprimary 0123456789abcdef web,db\n  other   fedcba9876543210fedcba   g  \n"
	tk, err := LoadTokens(write(0o600, good))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		token, source string
		names         []string
	}{
		{"0123456789abcdef", "primary", []string{"web", "db"}},
		{"fedcba9876543210fedcba", "other", []string{"g"}},
		{"0123456789abcdeF", "", nil},
		{"0123456789abcdef0", "", nil},
		{"", "", nil},
	} {
		src, names, ok := tk.lookup(c.token)
		if ok != (c.source != "") || src != c.source || !reflect.DeepEqual(names, c.names) {
			t.Errorf("lookup %q: %q %v %v, want %q %v", c.token, src, names, ok, c.source, c.names)
		}
	}
	if _, err := LoadTokens(write(0o640, good)); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("a group-readable tokens file: %v", err)
	}
	for _, c := range []struct{ body, want string }{
		{"primary short web\n", "at least 16"},
		{"primary 0123456789abcdef\n", "want SOURCE TOKEN NAME"},
		{"primary 0123456789abcdef web\nother 0123456789abcdef db\n", "also the token of"},
		{"primary 0123456789abcdef web,../x\n", "invalid name"},
		{"pri/mary 0123456789abcdef web\n", "invalid name"},
	} {
		if _, err := LoadTokens(write(0o600, c.body)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("tokens %q: %v, want %q", c.body, err, c.want)
		}
	}
}

func TestParseURL(t *testing.T) {
	for in, want := range map[string]string{
		"hs://dr.example:7443":  "dr.example:7443",
		"hs://127.0.0.1:7443/":  "127.0.0.1:7443",
		"hs://[::1]:7443":       "[::1]:7443",
		"https://dr.example:1":  "not an hs:// URL",
		"hs://dr.example":       "no port",
		"hs://dr.example:0":     "no port",
		"hs://u:p@dr.example:1": "user part",
		"hs://dr.example:1/x":   "more than a host",
		"hs://:7443":            "no host",
		"dr.example:7443":       "not an hs:// URL",
	} {
		got, err := ParseURL(in)
		if err != nil {
			got = err.Error()
		}
		if !strings.Contains(got, want) {
			t.Errorf("ParseURL(%q) = %q, want %q", in, got, want)
		}
	}
}
