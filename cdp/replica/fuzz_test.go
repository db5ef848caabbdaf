package replica

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/hindsight-cdp/hindsight/store"
)

// FuzzDecodeSteps: any payload decodes without a panic, within the
// decoder's bounds; what decodes encodes back to what decodes the same.
func FuzzDecodeSteps(f *testing.F) {
	full, err := appendSteps(nil, sampleSteps())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(full[frameHeader:])
	empty, _ := appendSteps(nil, &stepsMsg{ID: 1})
	f.Add(empty[frameHeader:])
	f.Add([]byte{})
	f.Add(bytes.Repeat([]byte{0xff}, 64))
	f.Fuzz(func(t *testing.T, p []byte) {
		m, err := decodeSteps(p)
		if err != nil {
			return
		}
		blocks, marks := 0, 0
		for _, st := range m.Steps {
			blocks += len(st.Blocks)
			marks += len(st.Marks)
			for _, b := range st.Blocks {
				if len(b.Content) > store.MaxBlockSize || (b.Kind != kindRaw && b.Kind != kindZstd && b.Content != nil) {
					t.Fatalf("block %+v", b)
				}
			}
		}
		if len(m.Steps) > maxFrameSteps || blocks > maxFrameBlocks || marks > maxFrameMarks {
			t.Fatalf("%d steps, %d blocks, %d bookmarks decoded from %d bytes", len(m.Steps), blocks, marks, len(p))
		}
		again, err := appendSteps(nil, m)
		if err != nil {
			return // a bookmark whose JSON does not marshal the same way
		}
		m2, err := decodeSteps(again[frameHeader:])
		if err != nil {
			t.Fatalf("re-encoded frame refused: %v", err)
		}
		if !reflect.DeepEqual(normalize(m), normalize(m2)) {
			t.Fatalf("decode, encode, decode differs:\n%+v\n%+v", m, m2)
		}
	})
}

// normalize makes decoded messages comparable: bookmarks as their JSON
// (times keep their zones and maps their nil-ness otherwise).
func normalize(m *stepsMsg) any {
	type step struct {
		Seq    uint64
		Time   int64
		Part   uint8
		Blocks []wireBlock
		Marks  string
	}
	var out []step
	for _, st := range m.Steps {
		j, _ := json.Marshal(st.Marks)
		bl := st.Blocks
		if len(bl) == 0 {
			bl = nil
		}
		out = append(out, step{st.Seq, st.Time.UnixNano(), st.Part, bl, string(j)})
	}
	return []any{m.ID, m.Flags, out}
}

// FuzzReadFrame: any byte stream reads as frames within the limit, or as
// an error, and every decoder takes any payload without a panic.
func FuzzReadFrame(f *testing.F) {
	steps, _ := appendSteps(nil, sampleSteps())
	hello, _ := jsonFrame(frameHello, Hello{Version: Version, Token: testToken, Name: "web", Disks: []store.DiskSpec{{Name: "web", Size: 1 << 20, BlockSize: 4096}}})
	marks, _ := appendMarksFrame(nil, []store.Bookmark{{Name: "a", Kind: store.KindUser}})
	for _, seed := range [][]byte{
		steps, hello, marks,
		appendAsk(nil, 1, []store.Hash{{1}, {2}}),
		appendHave(nil, 1, []bool{true, false, true}),
		appendAck(nil, 5, time.Unix(0, 12345)),
		{byte(framePing), 0, 0, 0, 0},
		{byte(frameSteps), 0xff, 0xff, 0xff, 0xff},
		{0x42, 0, 0, 0, 1, 0},
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		const limit = 1 << 16
		r := bytes.NewReader(in)
		for {
			ft, p, err := readFrame(r, limit)
			if err != nil {
				return
			}
			if len(p) > limit || ft < frameHello || ft > frameMarks {
				t.Fatalf("%v of %d bytes read with limit %d", ft, len(p), limit)
			}
			decodeSteps(p)
			decodeAsk(p)
			decodeHave(p)
			decodeAck(p)
			decodeMarksFrame(p)
		}
	})
}
