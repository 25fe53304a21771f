package client

// The conflict index: which records' server-confirmed states hold
// concurrent values. Status and Conflicts read it instead of decrypting
// every record of the replica (a lead's 21,000 records took a second), and
// a sync round keeps it in step as it stores records.
//
// It is one sealed value in the meta bucket, not a bucket of plaintext
// keys: which records are in dispute is the replica's business, and a
// copied file should not show it.

import (
	"slices"
	"strings"

	"github.com/casesync/casesync/syncproto"
)

var conflictsKey = []byte("conflicts") // in bucketMeta: sealed JSON list of keys

// conflictSet is the index as one transaction sees it; flush writes it back.
type conflictSet struct {
	keys  map[syncproto.Key]bool
	dirty bool
}

// conflicted returns the transaction's conflict index, reading it on first
// use. A store written before the index existed has none: it is rebuilt
// from the records, and saved by the first read-write transaction.
func (t *stx) conflicted() (*conflictSet, error) {
	if t.conf != nil {
		return t.conf, nil
	}
	var list []syncproto.Key
	found, err := t.get(bucketMeta, conflictsKey, &list)
	if err != nil {
		return nil, err
	}
	cs := &conflictSet{keys: make(map[syncproto.Key]bool, len(list))}
	for _, k := range list {
		cs.keys[k] = true
	}
	if !found {
		cs.dirty = true
		err := t.forEachRecord(func(r *syncproto.Record) error {
			if hasConflict(r) {
				cs.keys[r.Key()] = true
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	t.conf = cs
	return cs, nil
}

// markConflicted records whether record k's confirmed state is in conflict.
func (t *stx) markConflicted(k syncproto.Key, in bool) error {
	cs, err := t.conflicted()
	if err != nil {
		return err
	}
	if cs.keys[k] != in {
		if in {
			cs.keys[k] = true
		} else {
			delete(cs.keys, k)
		}
		cs.dirty = true
	}
	return nil
}

// flush saves the conflict index if this read-write transaction changed it.
func (t *stx) flush() error {
	if t.conf == nil || !t.conf.dirty || !t.tx.Writable() {
		return nil
	}
	list := make([]syncproto.Key, 0, len(t.conf.keys))
	for k := range t.conf.keys {
		list = append(list, k)
	}
	slices.SortFunc(list, func(a, b syncproto.Key) int { return strings.Compare(a.String(), b.String()) })
	if err := t.put(bucketMeta, conflictsKey, list); err != nil {
		return err
	}
	t.conf.dirty = false
	return nil
}

// hasConflict reports whether r holds concurrent values anywhere, as
// r.Conflicts() would, without building the list for the common record
// that has none.
func hasConflict(r *syncproto.Record) bool {
	for name, f := range r.Fields {
		if f.Conflicted() || name == syncproto.FieldDeleted {
			return len(r.Conflicts()) > 0
		}
	}
	return false
}

// conflictCandidates returns the keys whose visible state may be in
// conflict: those the index names, and those with pending changes (a local
// edit made before a concurrent remote one arrived shows as a conflict
// only once joined with the confirmed state).
func (t *stx) conflictCandidates() ([]syncproto.Key, error) {
	cs, err := t.conflicted()
	if err != nil {
		return nil, err
	}
	keys, err := t.pendingKeys()
	if err != nil {
		return nil, err
	}
	for k := range cs.keys {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b syncproto.Key) int { return strings.Compare(a.String(), b.String()) })
	return slices.Compact(keys), nil
}
