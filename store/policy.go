package store

import (
	"encoding/binary"
	"fmt"
)

// SetPolicy records the retention policy of timeline tl (JSON, as
// cdp/retention writes it; nil removes it). It is durable when it returns,
// and in records.log like every other metadata change, so a rebuilt index
// keeps it. The store does not read the JSON: cdp/retention does.
func (r *Repo) SetPolicy(tl uint32, policy []byte) error {
	if err := r.writable(); err != nil {
		return err
	}
	r.acquire()
	defer r.wmu.Unlock()
	b := r.db.NewBatch()
	defer b.Close()
	if policy == nil {
		b.Delete(policyKey(tl), nil)
	} else {
		b.Set(policyKey(tl), policy, nil)
	}
	if err := r.commitSynced(b, r.head.Load()); err != nil {
		return fmt.Errorf("store: policy of timeline %d: %w", tl, err)
	}
	return r.publish()
}

// Policy returns the retention policy recorded for timeline tl (false: none).
func (r *Repo) Policy(tl uint32) ([]byte, bool, error) {
	v, ok, err := r.get(policyKey(tl))
	if err != nil || !ok {
		return nil, false, err
	}
	return v, true, nil
}

// Policies returns every recorded policy by timeline.
func (r *Repo) Policies() (map[uint32][]byte, error) {
	out := map[uint32][]byte{}
	err := r.scan([]byte{kindPolicy}, func(k, v []byte) error {
		if len(k) != 5 {
			return fmt.Errorf("store: policy key %x: %w", k, ErrCorrupt)
		}
		out[binary.BigEndian.Uint32(k[1:])] = append([]byte(nil), v...)
		return nil
	})
	return out, err
}
