package cdp

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/hindsight-cdp/hindsight/store"
)

func TestDeviceModel(t *testing.T) {
	r := newRepo(t)
	d, _ := r.CreateDisk("dev", 1<<20, 4096)
	v := NewDevice(r, d, "test")
	model := make([]byte, d.Size)
	rng := rand.New(rand.NewPCG(9, 9))
	for i := 0; i < 300; i++ {
		off := int64(rng.IntN(int(d.Size/SectorSize))) * SectorSize
		n := min(int64(rng.IntN(24)+1)*SectorSize, d.Size-off)
		if rng.IntN(6) == 0 {
			if err := v.Zero(off, n); err != nil {
				t.Fatal(err)
			}
			clear(model[off : off+n])
		} else {
			p := make([]byte, n)
			for j := range p {
				p[j] = byte(rng.Uint32())
			}
			if _, err := v.WriteAt(p, off); err != nil {
				t.Fatal(err)
			}
			copy(model[off:], p)
		}
		if i%50 == 0 {
			if err := v.Flush(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if got := readAll(t, v, d.Size); !bytes.Equal(got, model) {
		t.Fatal("device reads differ from the model")
	}
	if st := v.Stats(); st.Writes != 300 || st.Head != r.Head() || st.Flushes != 6 {
		t.Fatalf("stats %+v", st)
	}
	if _, err := v.WriteAt(make([]byte, 512), 100); !errors.Is(err, ErrMisaligned) {
		t.Fatalf("misaligned write: %v", err)
	}
	if _, err := v.WriteAt(make([]byte, 1024), d.Size-512); !errors.Is(err, store.ErrOutOfRange) {
		t.Fatalf("write past the end: %v", err)
	}
	if _, err := v.WriteFileAt(make([]byte, 1000), d.Size-999); !errors.Is(err, store.ErrOutOfRange) {
		t.Fatalf("file write past the end: %v", err)
	}
	if got := readAll(t, v, d.Size); !bytes.Equal(got, model) {
		t.Fatal("a refused write changed the disk")
	}
}

func TestDeviceConcurrentWriters(t *testing.T) {
	r := newRepo(t)
	d, _ := r.CreateDisk("dev", 256*4096, 4096)
	v := NewDevice(r, d, "test")
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			// Each writer owns the odd or even 512-byte sectors of a shared
			// range: partial-block writes of one block must never lose another's.
			for i := 0; i < 64; i++ {
				off := int64(i*8+w*2) * SectorSize
				if _, err := v.WriteAt(bytes.Repeat([]byte{byte(w + 1)}, SectorSize), off); err != nil {
					t.Error(err)
				}
			}
		}(w)
	}
	wg.Wait()
	got := readAll(t, v, 64*8*SectorSize)
	for i := 0; i < 64; i++ {
		for w := 0; w < 4; w++ {
			off := (i*8 + w*2) * SectorSize
			if got[off] != byte(w+1) || got[off+SectorSize-1] != byte(w+1) {
				t.Fatalf("sector %d lost writer %d's write", i*8+w*2, w)
			}
		}
	}
}
