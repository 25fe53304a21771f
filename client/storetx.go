package client

// Transactions on the store: the typed accessors the sync engine uses. Each
// value is sealed on the way in and opened on the way out (crypto.go); the
// bucket layout is described in store.go.

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/casesync/casesync/syncproto"
	"go.etcd.io/bbolt"
)

// stx is one transaction on the store. Values are sealed on the way in and
// opened on the way out; everything returned is a fresh copy the caller
// owns, safe to keep after the transaction ends.
type stx struct {
	tx   *bbolt.Tx
	s    *sealer
	conf *conflictSet // the conflict index, once read (conflictset.go)
}

func (t *stx) end() { t.tx = nil }

// recoverCorrupt turns a bbolt panic on a damaged page into ErrCorrupt: a
// damaged store should produce a message, not crash the app every start.
func recoverCorrupt(err *error) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("%w: %v", ErrCorrupt, r)
	}
}

func (t *stx) bucket(name []byte) (*bbolt.Bucket, error) {
	if t.tx == nil {
		return nil, errors.New("client: store transaction used after it ended")
	}
	b := t.tx.Bucket(name)
	if b == nil {
		return nil, fmt.Errorf("%w: bucket %s is missing", ErrCorrupt, name)
	}
	return b, nil
}

// get opens and decodes the value at name/key into v; false if absent.
func (t *stx) get(name, key []byte, v any) (found bool, err error) {
	defer recoverCorrupt(&err)
	b, err := t.bucket(name)
	if err != nil {
		return false, err
	}
	sealed := b.Get(key)
	if sealed == nil {
		return false, nil
	}
	return true, t.decode(name, key, sealed, v)
}

func (t *stx) decode(name, key, sealed []byte, v any) error {
	plain, err := t.s.open(name, key, sealed)
	if err != nil {
		return err
	}
	defer clear(plain)
	if v == nil {
		return nil
	}
	switch v := v.(type) {
	case *syncproto.Record, *syncproto.Change:
		err = v.(json.Unmarshaler).UnmarshalJSON(plain) // their own codecs check the syntax too
	default:
		err = json.Unmarshal(plain, v)
	}
	if err != nil {
		return fmt.Errorf("%w: %s %q: %v", ErrCorrupt, name, key, err)
	}
	return nil
}

// put seals plain (or v encoded as JSON, if plain is nil) at name/key.
func (t *stx) put(name, key []byte, v any) (err error) {
	defer recoverCorrupt(&err)
	b, err := t.bucket(name)
	if err != nil {
		return err
	}
	var plain []byte
	switch v := v.(type) {
	case []byte:
		plain = bytes.Clone(v)
	case *syncproto.Record:
		// Its own encoder: through Marshal, encoding/json would check and
		// compact the bytes once more.
		if plain, err = v.MarshalJSON(); err != nil {
			return fmt.Errorf("client: store %s: %w", name, err)
		}
	default:
		if plain, err = syncproto.Marshal(v); err != nil {
			return fmt.Errorf("client: store %s: %w", name, err)
		}
	}
	defer clear(plain)
	if bytes.Equal(name, bucketOutbox) || bytes.Equal(name, bucketRejected) {
		b.FillPercent = 1.0 // appended in key order: pack pages full
	}
	return b.Put(bytes.Clone(key), t.s.seal(name, key, plain))
}

func (t *stx) del(name, key []byte) (err error) {
	defer recoverCorrupt(&err)
	b, err := t.bucket(name)
	if err != nil {
		return err
	}
	return b.Delete(key)
}

// each calls fn with every key and sealed value of bucket name whose key
// starts with prefix, in key order. fn may write to the bucket: the cursor
// re-seeks after each call, since a bbolt cursor does not survive writes.
// A panic in fn is fn's own and is not taken for damage.
func (t *stx) each(name, prefix []byte, fn func(key, sealed []byte) error) (err error) {
	inFn := false
	defer func() {
		if r := recover(); r != nil {
			if inFn {
				panic(r)
			}
			err = fmt.Errorf("%w: %v", ErrCorrupt, r)
		}
	}()
	b, err := t.bucket(name)
	if err != nil {
		return err
	}
	c := b.Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); {
		k = bytes.Clone(k)
		inFn = true
		err := fn(k, v)
		inFn = false
		if err != nil {
			return err
		}
		var next []byte
		if next, v = c.Seek(k); bytes.Equal(next, k) {
			next, v = c.Next()
		}
		k = next
	}
	return nil
}

// recordKey is collection "/" id. Both must be valid IDs, which rules out
// '/' and 0x00 and so keeps keys unambiguous and free of free text.
func recordKey(k syncproto.Key) ([]byte, error) {
	if !syncproto.ValidID(string(k.Collection)) || !syncproto.ValidID(k.ID) {
		return nil, fmt.Errorf("client: store: invalid record key %q", k.String())
	}
	return []byte(k.String()), nil
}

// parseRecordKey is recordKey's inverse.
func parseRecordKey(rk []byte) (syncproto.Key, error) {
	coll, id, ok := bytes.Cut(rk, []byte("/"))
	k := syncproto.Key{Collection: syncproto.Collection(coll), ID: string(id)}
	if !ok || !syncproto.ValidID(string(coll)) || !syncproto.ValidID(k.ID) {
		return syncproto.Key{}, fmt.Errorf("%w: record key %q", ErrCorrupt, rk)
	}
	return k, nil
}

func seqKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

// outboxIdxKey is recordKey ‖ 0x00 ‖ seq, so one prefix scan finds a
// record's pending changes in sequence order.
func outboxIdxKey(rk []byte, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(append(append([]byte(nil), rk...), 0), seq)
}

// meta returns the replica's state, or the zero Meta in a new store.
func (t *stx) meta() (Meta, error) {
	var m Meta
	_, err := t.get(bucketMeta, metaKey, &m)
	return m, err
}

func (t *stx) putMeta(m Meta) error { return t.put(bucketMeta, metaKey, m) }

// record returns the server-confirmed state of record k.
func (t *stx) record(k syncproto.Key) (*syncproto.Record, bool, error) {
	rk, err := recordKey(k)
	if err != nil {
		return nil, false, err
	}
	var r syncproto.Record
	if ok, err := t.get(bucketRecords, rk, &r); !ok || err != nil {
		return nil, false, err
	}
	if r.Key() != k {
		return nil, false, fmt.Errorf("%w: records %q holds %s", ErrCorrupt, rk, r.Key())
	}
	return &r, true, nil
}

func (t *stx) putRecord(r *syncproto.Record) error {
	if r == nil {
		return errors.New("client: store: nil record")
	}
	rk, err := recordKey(r.Key())
	if err != nil {
		return err
	}
	if err := t.markConflicted(r.Key(), hasConflict(r)); err != nil {
		return err
	}
	return t.put(bucketRecords, rk, r)
}

func (t *stx) deleteRecord(k syncproto.Key) error {
	rk, err := recordKey(k)
	if err != nil {
		return err
	}
	if err := t.markConflicted(k, false); err != nil {
		return err
	}
	return t.del(bucketRecords, rk)
}

// forEachRecord calls fn with each record, ordered by collection then ID.
// fn may put or delete records, e.g. to purge those out of scope.
func (t *stx) forEachRecord(fn func(*syncproto.Record) error) error {
	return t.each(bucketRecords, nil, func(key, sealed []byte) error {
		var r syncproto.Record
		if err := t.decode(bucketRecords, key, sealed, &r); err != nil {
			return err
		}
		if r.Key().String() != string(key) {
			return fmt.Errorf("%w: records %q holds %s", ErrCorrupt, key, r.Key())
		}
		return fn(&r)
	})
}

// appendOutbox adds c, keyed by c.Seq, and indexes it under its record. A
// sequence number already in the outbox is an error, not an overwrite:
// reusing one would silently drop a pending change.
func (t *stx) appendOutbox(c syncproto.Change) error {
	if c.Seq == 0 {
		return errors.New("client: store: outbox change has sequence 0")
	}
	rk, err := recordKey(c.Key())
	if err != nil {
		return err
	}
	sk := seqKey(c.Seq)
	if ok, err := t.get(bucketOutbox, sk, nil); err != nil || ok {
		if ok {
			err = fmt.Errorf("client: store: outbox already holds change %d", c.Seq)
		}
		return err
	}
	if err := t.put(bucketOutbox, sk, c); err != nil {
		return err
	}
	return t.put(bucketOutboxIdx, outboxIdxKey(rk, c.Seq), sk)
}

// outbox returns every pending change in ascending Seq.
func (t *stx) outbox() ([]syncproto.Change, error) {
	var out []syncproto.Change
	err := t.each(bucketOutbox, nil, func(key, sealed []byte) error {
		var c syncproto.Change
		if err := t.decode(bucketOutbox, key, sealed, &c); err != nil {
			return err
		}
		if !bytes.Equal(seqKey(c.Seq), key) {
			return fmt.Errorf("%w: outbox %x holds change %d", ErrCorrupt, key, c.Seq)
		}
		out = append(out, c)
		return nil
	})
	return out, err
}

// outboxAfter returns up to limit pending changes with Seq greater than
// after, in ascending Seq, without reading the rest of the outbox: a push
// loop over a large outbox must not decrypt it all on every turn.
func (t *stx) outboxAfter(after uint64, limit int) ([]syncproto.Change, error) {
	b, err := t.bucket(bucketOutbox)
	if err != nil {
		return nil, err
	}
	var out []syncproto.Change
	c := b.Cursor()
	for k, v := c.Seek(seqKey(after + 1)); k != nil && len(out) < limit; k, v = c.Next() {
		var ch syncproto.Change
		if err := t.decode(bucketOutbox, k, v, &ch); err != nil {
			return nil, err
		}
		if !bytes.Equal(seqKey(ch.Seq), k) {
			return nil, fmt.Errorf("%w: outbox %x holds change %d", ErrCorrupt, k, ch.Seq)
		}
		out = append(out, ch)
	}
	return out, nil
}

// outboxFor returns the pending changes to record k in ascending Seq.
func (t *stx) outboxFor(k syncproto.Key) ([]syncproto.Change, error) {
	rk, err := recordKey(k)
	if err != nil {
		return nil, err
	}
	prefix := append(rk, 0)
	var out []syncproto.Change
	err = t.each(bucketOutboxIdx, prefix, func(key, sealed []byte) error {
		if len(key) != len(prefix)+8 {
			return nil // another record whose key extends this one
		}
		if err := t.decode(bucketOutboxIdx, key, sealed, nil); err != nil {
			return err
		}
		seq := binary.BigEndian.Uint64(key[len(prefix):])
		var c syncproto.Change
		ok, err := t.get(bucketOutbox, seqKey(seq), &c)
		if err != nil {
			return err
		}
		if !ok || c.Key() != k {
			return fmt.Errorf("%w: outbox index %s/%d has no matching change", ErrCorrupt, rk, seq)
		}
		out = append(out, c)
		return nil
	})
	return out, err
}

// outboxLen counts pending changes without decrypting them.
func (t *stx) outboxLen() (n int, err error) { return t.count(bucketOutbox) }

// count counts the items of a bucket without decrypting them.
func (t *stx) count(bucket []byte) (n int, err error) {
	err = t.each(bucket, nil, func(_, _ []byte) error { n++; return nil })
	return n, err
}

// removeOutbox removes change seq, a change to record k, and its index
// entry; absent is fine, so a repeated ack is harmless. The caller names
// the record (it holds the change it sent), so nothing is decrypted; a seq
// whose index entry names another record is damage, not a removal.
func (t *stx) removeOutbox(seq uint64, k syncproto.Key) error {
	rk, err := recordKey(k)
	if err != nil {
		return err
	}
	b, err := t.bucket(bucketOutbox)
	if err != nil {
		return err
	}
	sk := seqKey(seq)
	if b.Get(sk) == nil {
		return nil
	}
	idx, err := t.bucket(bucketOutboxIdx)
	if err != nil {
		return err
	}
	ik := outboxIdxKey(rk, seq)
	if idx.Get(ik) == nil {
		return fmt.Errorf("%w: outbox change %d is not indexed under %s", ErrCorrupt, seq, k)
	}
	if err := t.del(bucketOutboxIdx, ik); err != nil {
		return err
	}
	return t.del(bucketOutbox, sk)
}

// pendingKeys returns the keys of the records with pending changes, from
// the outbox index's keys alone: nothing is decrypted.
func (t *stx) pendingKeys() ([]syncproto.Key, error) {
	var out []syncproto.Key
	err := t.each(bucketOutboxIdx, nil, func(key, _ []byte) error {
		if len(key) < 9 || key[len(key)-9] != 0 {
			return fmt.Errorf("%w: outbox index key %q", ErrCorrupt, key)
		}
		k, err := parseRecordKey(key[:len(key)-9])
		if err != nil {
			return err
		}
		if n := len(out); n == 0 || out[n-1] != k {
			out = append(out, k)
		}
		return nil
	})
	return out, err
}

// hasPending reports whether record k has pending changes, by the index.
func (t *stx) hasPending(k syncproto.Key) (bool, error) {
	rk, err := recordKey(k)
	if err != nil {
		return false, err
	}
	b, err := t.bucket(bucketOutboxIdx)
	if err != nil {
		return false, err
	}
	prefix := append(rk, 0)
	key, _ := b.Cursor().Seek(prefix)
	return key != nil && len(key) == len(prefix)+8 && bytes.HasPrefix(key, prefix), nil
}

// putRejected keeps r, keyed by its change's Seq; a later one replaces it.
func (t *stx) putRejected(r Rejected) error {
	if r.Change.Seq == 0 {
		return errors.New("client: store: rejected change has sequence 0")
	}
	return t.put(bucketRejected, seqKey(r.Change.Seq), r)
}

// rejected returns the rejected changes in ascending Seq.
func (t *stx) rejected() ([]Rejected, error) {
	var out []Rejected
	err := t.each(bucketRejected, nil, func(key, sealed []byte) error {
		var r Rejected
		if err := t.decode(bucketRejected, key, sealed, &r); err != nil {
			return err
		}
		out = append(out, r)
		return nil
	})
	return out, err
}

func (t *stx) removeRejected(seq uint64) error { return t.del(bucketRejected, seqKey(seq)) }

// markEvicted records that k was evicted while it had pending changes, so
// the user can be told why those changes went nowhere.
func (t *stx) markEvicted(k syncproto.Key) error {
	rk, err := recordKey(k)
	if err != nil {
		return err
	}
	return t.put(bucketEvicted, rk, []byte{})
}

// isEvicted reports whether k is in the evicted set. The sealed marker is
// authenticated too, so an entry planted in the file is reported as damage.
func (t *stx) isEvicted(k syncproto.Key) (bool, error) {
	rk, err := recordKey(k)
	if err != nil {
		return false, err
	}
	return t.get(bucketEvicted, rk, nil)
}

func (t *stx) clearEvicted(k syncproto.Key) error {
	rk, err := recordKey(k)
	if err != nil {
		return err
	}
	return t.del(bucketEvicted, rk)
}
