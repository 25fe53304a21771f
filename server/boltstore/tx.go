package boltstore

import (
	"bytes"
	"container/heap"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/casesync/casesync/server"
	"github.com/casesync/casesync/syncproto"
)

// tx is one function's view of a bbolt transaction. With group commit one
// bbolt transaction serves several functions in turn, so each gets its own
// tx, which stops working when its function returns.
type tx struct {
	btx  *bolt.Tx
	done bool

	// What this view has looked up, so that a push's changes do not look
	// it up again each (bbolt lookups were a third of the writer's time,
	// BENCHMARKS.md, load): the buckets of the areas it filed under, and
	// the keys Record found absent that nothing has written since. Only
	// this view writes to btx while it lives, so neither goes stale.
	areas  map[string]areaBuckets
	absent map[string]struct{}
	// head is the log head as this view has it, once read (headRead);
	// NextSeq advances it here and flush stores it once, not per change.
	head      uint64
	headRead  bool
	headDirty bool
}

// flush stores what the view keeps in memory. The store calls it when the
// view's function has succeeded, before the transaction goes on.
func (t *tx) flush() error {
	if !t.headDirty {
		return nil
	}
	if err := t.bucket(bucketMeta).Put(metaHead, itob(t.head)); err != nil {
		return fmt.Errorf("boltstore: put head: %w", err)
	}
	t.headDirty = false
	return nil
}

// areaBuckets are one area's nested buckets.
type areaBuckets struct{ idx, keys *bolt.Bucket }

var _ server.Tx = (*tx)(nil)

func (t *tx) finish() { t.done = true }

// read checks that t may still be used.
func (t *tx) read() error {
	if t.done {
		return ErrTxDone
	}
	return nil
}

// write checks that t may still be used to write.
func (t *tx) write() error {
	if t.done {
		return ErrTxDone
	}
	if !t.btx.Writable() {
		return ErrReadOnly
	}
	return nil
}

// bucket returns a top-level bucket, which Open created.
func (t *tx) bucket(name []byte) *bolt.Bucket {
	b := t.btx.Bucket(name)
	if b == nil {
		panic(fmt.Sprintf("bug: bucket %s missing", name))
	}
	return b
}

// appendOnly returns a bucket that is only appended to. Filling its pages
// completely shrinks the file by a third; FillPercent is per transaction.
func appendOnly(b *bolt.Bucket) *bolt.Bucket {
	b.FillPercent = 1.0
	return b
}

// appendMostly returns a bucket whose keys mostly arrive in order: a
// device's records (IDs that sort by creation time), its accepted changes,
// a case's entries. bbolt's default splits a full page in two halves,
// which for keys in order leaves every page half empty, and a commit
// writes twice the pages; 0.9 fills them and leaves room for a state
// that grows when it is edited.
func appendMostly(b *bolt.Bucket) *bolt.Bucket {
	b.FillPercent = 0.9
	return b
}

// Head returns the highest sequence NextSeq has assigned, 0 for none.
func (t *tx) Head() (uint64, error) {
	if err := t.read(); err != nil {
		return 0, err
	}
	if t.headRead {
		return t.head, nil
	}
	var n uint64
	if v := t.bucket(bucketMeta).Get(metaHead); v != nil {
		var ok bool
		if n, ok = btoi(v); !ok {
			return 0, fmt.Errorf("%w: meta head of %d bytes", ErrCorrupt, len(v))
		}
	}
	t.head, t.headRead = n, true
	return n, nil
}

// NextSeq increments and returns the persisted head.
func (t *tx) NextSeq() (uint64, error) {
	if err := t.write(); err != nil {
		return 0, err
	}
	n, err := t.Head()
	if err != nil {
		return 0, err
	}
	t.head, t.headDirty = n+1, true
	return t.head, nil
}

// AppendLog stores e under seq. The log is append-only: a sequence that is
// already taken is an error, not an overwrite.
func (t *tx) AppendLog(seq uint64, e server.LogEntry) error {
	if err := t.write(); err != nil {
		return err
	}
	b := appendOnly(t.bucket(bucketLog))
	k := itob(seq)
	if b.Get(k) != nil {
		return fmt.Errorf("boltstore: log entry %d already exists", seq)
	}
	v, err := syncproto.Marshal(e)
	if err != nil {
		return fmt.Errorf("boltstore: encode log entry %d: %w", seq, err)
	}
	return b.Put(k, v)
}

// AppendLogJSON stores a log entry already encoded, as AppendLog would
// have encoded it, under seq. It keeps js, not a copy, until the commit.
func (t *tx) AppendLogJSON(seq uint64, js []byte) error {
	if err := t.write(); err != nil {
		return err
	}
	b := appendOnly(t.bucket(bucketLog))
	k := itob(seq)
	if b.Get(k) != nil {
		return fmt.Errorf("boltstore: log entry %d already exists", seq)
	}
	return b.Put(k, js)
}

// Record returns a copy of the current state of k and its sequence.
func (t *tx) Record(k syncproto.Key) (*syncproto.Record, uint64, error) {
	if err := t.read(); err != nil {
		return nil, 0, err
	}
	key := recordKey(k)
	v := t.bucket(bucketRecords).Get(key)
	if v == nil {
		if t.btx.Writable() {
			if t.absent == nil {
				t.absent = make(map[string]struct{})
			}
			t.absent[string(key)] = struct{}{}
		}
		return nil, 0, server.ErrNotFound
	}
	h, state, err := decodeRecord(v)
	if err != nil {
		return nil, 0, err
	}
	js, _, err := recordJSON(k, h.area, state)
	if err != nil {
		return nil, 0, err
	}
	r, err := decodeJSONRecord(js)
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", k, err)
	}
	return r, h.seq, nil
}

// RecordArea returns the area k is filed under, read from the record's
// head without decoding its JSON.
func (t *tx) RecordArea(k syncproto.Key) (string, error) {
	if err := t.read(); err != nil {
		return "", err
	}
	v := t.bucket(bucketRecords).Get(recordKey(k))
	if v == nil {
		return "", server.ErrNotFound
	}
	h, _, err := decodeRecord(v)
	if err != nil {
		return "", fmt.Errorf("%s: %w", k, err)
	}
	return h.area, nil
}

func decodeJSONRecord(js []byte) (*syncproto.Record, error) {
	r := new(syncproto.Record)
	// The record's own decoder checks the syntax as it goes: through
	// json.Unmarshal the bytes would be scanned once more first.
	if err := r.UnmarshalJSON(js); err != nil {
		return nil, fmt.Errorf("%w: decode record: %v", ErrCorrupt, err)
	}
	return r, nil
}

// PutRecord stores r and files it under r.Area at seq. Its previous entry
// in r.Area, a record or an old eviction marker, is removed; if it was
// filed under another area, an eviction marker to r.Area replaces its entry
// there. Each step is a keyed lookup: O(log n) whatever the area's size.
func (t *tx) PutRecord(r *syncproto.Record, seq uint64) error {
	return t.putRecord(r, nil, seq)
}

// PutRecordJSON is PutRecord with r's encoding, syncproto.Marshal(r),
// already made: the server has it from checking the record's size.
func (t *tx) PutRecordJSON(r *syncproto.Record, js []byte, seq uint64) error {
	if js == nil {
		return errors.New("boltstore: PutRecordJSON without JSON")
	}
	return t.putRecord(r, js, seq)
}

// putRecord stores r, encoding it unless js holds its encoding.
func (t *tx) putRecord(r *syncproto.Record, js []byte, seq uint64) error {
	if err := t.write(); err != nil {
		return err
	}
	switch {
	case r == nil:
		return errors.New("boltstore: PutRecord of a nil record")
	case r.Collection == "" || r.ID == "":
		return errors.New("boltstore: PutRecord of a record without collection or ID")
	case r.Area == "":
		return fmt.Errorf("boltstore: PutRecord of %s without an area", r.Key())
	case seq == 0:
		return fmt.Errorf("boltstore: PutRecord of %s at sequence 0", r.Key())
	}
	key := recordKey(r.Key())
	records := appendMostly(t.bucket(bucketRecords))
	var old recordHead
	found := false
	if _, ok := t.absent[string(key)]; ok {
		delete(t.absent, string(key))
	} else if v := records.Get(key); v != nil {
		h, _, err := decodeRecord(v)
		if err != nil {
			return fmt.Errorf("%s: %w", r.Key(), err)
		}
		old, found = h, true
	}

	idx, keys, err := t.createArea(r.Area)
	if err != nil {
		return err
	}
	// A record not stored yet has no entry in any area: markers are left
	// only by records that moved.
	if found {
		if err := unfile(idx, keys, key); err != nil {
			return err
		}
	}
	if found && old.area != r.Area {
		oidx, okeys := t.area(old.area)
		if oidx == nil {
			return fmt.Errorf("%w: %s is filed under area %q, which has no bucket", ErrCorrupt, r.Key(), old.area)
		}
		if err := unfile(oidx, okeys, key); err != nil {
			return err
		}
		if err := file(oidx, okeys, key, seq, encodeMarker(key, r.Area)); err != nil {
			return err
		}
	}
	if err := file(idx, keys, key, seq, encodeFiled(key)); err != nil {
		return err
	}

	var caseID string
	if r.Collection == syncproto.Entries {
		caseID, _ = r.String(syncproto.FieldCaseID)
	}
	ce := appendMostly(t.bucket(bucketCaseEntries))
	if found && old.caseID != "" && old.caseID != caseID {
		if err := ce.Delete(caseEntryKey(old.caseID, r.ID)); err != nil {
			return err
		}
	}
	if caseID != "" && (!found || old.caseID != caseID) {
		if err := ce.Put(caseEntryKey(caseID, r.ID), nil); err != nil {
			return err
		}
	}

	if js == nil {
		if js, err = syncproto.Marshal(r); err != nil {
			return fmt.Errorf("boltstore: encode %s: %w", r.Key(), err)
		}
	}
	state := js
	if c, ok := compactRecord(r, js); ok {
		state = c
	}
	return records.Put(key, encodeRecord(recordHead{seq: seq, area: r.Area, caseID: caseID}, state))
}

// area returns an area's index and reverse map, or nils if the area has
// never been used.
func (t *tx) area(name string) (idx, keys *bolt.Bucket) {
	if name == "" {
		return nil, nil
	}
	if ab, ok := t.areas[name]; ok {
		return ab.idx, ab.keys
	}
	a := t.bucket(bucketAreas).Bucket([]byte(name))
	if a == nil {
		return nil, nil
	}
	return a.Bucket(bucketIdx), a.Bucket(bucketKeys)
}

// createArea returns an area's index and reverse map, creating them.
func (t *tx) createArea(name string) (idx, keys *bolt.Bucket, err error) {
	if ab, ok := t.areas[name]; ok {
		return ab.idx, ab.keys, nil
	}
	a, err := t.bucket(bucketAreas).CreateBucketIfNotExists([]byte(name))
	if err != nil {
		return nil, nil, fmt.Errorf("boltstore: create area %q: %w", name, err)
	}
	if idx, err = a.CreateBucketIfNotExists(bucketIdx); err != nil {
		return nil, nil, fmt.Errorf("boltstore: create area %q: %w", name, err)
	}
	if keys, err = a.CreateBucketIfNotExists(bucketKeys); err != nil {
		return nil, nil, fmt.Errorf("boltstore: create area %q: %w", name, err)
	}
	if t.areas == nil {
		t.areas = make(map[string]areaBuckets)
	}
	t.areas[name] = areaBuckets{appendOnly(idx), appendMostly(keys)}
	return idx, keys, nil
}

// unfile removes key's entry, record or marker, from an area.
func unfile(idx, keys *bolt.Bucket, key []byte) error {
	v := keys.Get(key)
	if v == nil {
		return nil
	}
	if _, ok := btoi(v); !ok {
		return fmt.Errorf("%w: reverse map of %s holds %d bytes", ErrCorrupt, key, len(v))
	}
	if err := idx.Delete(bytes.Clone(v)); err != nil {
		return err
	}
	return keys.Delete(key)
}

// file puts key's entry val at seq in an area. A sequence names one item
// per area: reusing one for another key would hide an item from Scan.
func file(idx, keys *bolt.Bucket, key []byte, seq uint64, val []byte) error {
	k := itob(seq)
	if prev := idx.Get(k); prev != nil {
		pk, _, _, _ := decodeEntry(prev)
		return fmt.Errorf("boltstore: sequence %d is already filed for %s, cannot file %s", seq, pk, key)
	}
	if err := idx.Put(k, val); err != nil {
		return err
	}
	return keys.Put(key, itob(seq))
}

// CaseEntries returns the IDs of the entries filed with caseID, sorted.
func (t *tx) CaseEntries(caseID string) ([]string, error) {
	if err := t.read(); err != nil {
		return nil, err
	}
	var ids []string
	prefix := casePrefix(caseID)
	c := t.bucket(bucketCaseEntries).Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		ids = append(ids, string(k[len(prefix):]))
	}
	return ids, nil
}

// scanCursor is one area's position in Scan's merge.
type scanCursor struct {
	area string
	c    *bolt.Cursor
	seq  uint64
	val  []byte
}

// scanHeap orders the areas' cursors by sequence, then area name.
type scanHeap []*scanCursor

func (h scanHeap) Len() int { return len(h) }
func (h scanHeap) Less(i, j int) bool {
	if h[i].seq != h[j].seq {
		return h[i].seq < h[j].seq
	}
	return h[i].area < h[j].area
}
func (h scanHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *scanHeap) Push(x any)   { *h = append(*h, x.(*scanCursor)) }
func (h *scanHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// set positions sc at k, v; it reports false past upTo or the end.
func (sc *scanCursor) set(k, v []byte, upTo uint64) (bool, error) {
	if k == nil {
		return false, nil
	}
	seq, ok := btoi(k)
	if !ok {
		return false, fmt.Errorf("%w: index key of %d bytes in area %q", ErrCorrupt, len(k), sc.area)
	}
	if seq > upTo {
		return false, nil
	}
	sc.seq, sc.val = seq, v
	return true, nil
}

// Scan merges the indexes of the areas in after by ascending sequence (ties
// by area name). It reads only those areas' buckets and the records they
// name. fn must not write to the store while Scan runs: bbolt cursors do
// not survive changes to their bucket.
func (t *tx) Scan(after map[string]uint64, upTo uint64, fn func(server.Item) (bool, error)) error {
	return t.scan(after, upTo, false, fn)
}

// ScanRaw is Scan with each record's stored JSON, copied, in Item.Raw
// instead of decoded into Item.Record: what a pull sends as it is.
func (t *tx) ScanRaw(after map[string]uint64, upTo uint64, fn func(server.Item) (bool, error)) error {
	return t.scan(after, upTo, true, fn)
}

func (t *tx) scan(after map[string]uint64, upTo uint64, raw bool, fn func(server.Item) (bool, error)) error {
	if err := t.read(); err != nil {
		return err
	}
	h := make(scanHeap, 0, len(after))
	for area, from := range after {
		if from >= upTo {
			continue
		}
		idx, _ := t.area(area)
		if idx == nil {
			continue
		}
		sc := &scanCursor{area: area, c: idx.Cursor()}
		k, v := sc.c.Seek(itob(from + 1))
		ok, err := sc.set(k, v, upTo)
		if err != nil {
			return err
		}
		if ok {
			h = append(h, sc)
		}
	}
	heap.Init(&h)
	records := t.bucket(bucketRecords)
	for len(h) > 0 {
		sc := h[0]
		it, err := t.item(records, sc, raw)
		if err != nil {
			return err
		}
		if more, err := fn(it); err != nil || !more {
			return err
		}
		k, v := sc.c.Next()
		ok, err := sc.set(k, v, upTo)
		if err != nil {
			return err
		}
		if ok {
			heap.Fix(&h, 0)
		} else {
			heap.Pop(&h)
		}
	}
	return nil
}

// item decodes the entry under sc into an Item, loading the record: its
// JSON as it is if raw is set, else decoded.
func (t *tx) item(records *bolt.Bucket, sc *scanCursor, raw bool) (server.Item, error) {
	key, movedTo, marker, err := decodeEntry(sc.val)
	if err != nil {
		return server.Item{}, err
	}
	k, err := parseKey(key)
	if err != nil {
		return server.Item{}, err
	}
	it := server.Item{Seq: sc.seq, Area: sc.area, Key: k}
	if marker {
		it.MovedTo = movedTo
		return it, nil
	}
	v := records.Get(key)
	if v == nil {
		return it, fmt.Errorf("%w: area %q files %s at %d, which does not exist", ErrCorrupt, sc.area, k, sc.seq)
	}
	rh, state, err := decodeRecord(v)
	if err != nil {
		return it, err
	}
	if rh.seq != sc.seq || rh.area != sc.area {
		return it, fmt.Errorf("%w: area %q files %s at %d, but it is filed under %q at %d", ErrCorrupt, sc.area, k, sc.seq, rh.area, rh.seq)
	}
	js, fresh, err := recordJSON(k, rh.area, state)
	if err != nil {
		return it, err
	}
	if raw {
		if !fresh {
			js = bytes.Clone(js) // js lives in the mapped file, only as long as the transaction
		}
		it.Raw = js
		return it, nil
	}
	if it.Record, err = decodeJSONRecord(js); err != nil {
		return it, fmt.Errorf("%s: %w", k, err)
	}
	return it, nil
}

// Areas returns the name of every area bucket, sorted.
func (t *tx) Areas() ([]string, error) {
	if err := t.read(); err != nil {
		return nil, err
	}
	var out []string
	err := t.bucket(bucketAreas).ForEachBucket(func(k []byte) error {
		out = append(out, string(k))
		return nil
	})
	return out, err
}

// Accepted returns a copy of the digest stored for a device's change.
func (t *tx) Accepted(device string, seq uint64) ([]byte, bool, error) {
	if err := t.read(); err != nil {
		return nil, false, err
	}
	v := t.bucket(bucketAccepted).Get(acceptedKey(device, seq))
	if v == nil {
		return nil, false, nil
	}
	return bytes.Clone(v), true, nil
}

// MarkAccepted stores a copy of digest for a device's change.
func (t *tx) MarkAccepted(device string, seq uint64, digest []byte) error {
	if err := t.write(); err != nil {
		return err
	}
	return appendMostly(t.bucket(bucketAccepted)).Put(acceptedKey(device, seq), bytes.Clone(digest))
}

// SetConflict adds k to, or removes it from, the open conflicts.
func (t *tx) SetConflict(k syncproto.Key, area string, open bool) error {
	if err := t.write(); err != nil {
		return err
	}
	b := t.bucket(bucketConflicts)
	if !open {
		return b.Delete(recordKey(k))
	}
	return b.Put(recordKey(k), []byte(area))
}

// Conflicts calls fn for each open conflict, by key. It reads them all
// first, so fn may call SetConflict.
func (t *tx) Conflicts(fn func(k syncproto.Key, area string) error) error {
	if err := t.read(); err != nil {
		return err
	}
	type conflict struct {
		k    syncproto.Key
		area string
	}
	var all []conflict
	err := t.bucket(bucketConflicts).ForEach(func(k, v []byte) error {
		key, err := parseKey(k)
		all = append(all, conflict{key, string(v)})
		return err
	})
	if err != nil {
		return err
	}
	for _, c := range all {
		if err := fn(c.k, c.area); err != nil {
			return err
		}
	}
	return nil
}
