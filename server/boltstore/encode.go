package boltstore

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/casesync/casesync/syncproto"
)

// Every function here returns freshly allocated keys and values: bbolt keeps
// the slices given to Put until the transaction ends.

// itob encodes a sequence as a big-endian key, so keys sort as numbers.
func itob(v uint64) []byte { return binary.BigEndian.AppendUint64(make([]byte, 0, 8), v) }

// btoi decodes a sequence key; it reports false if b is not 8 bytes.
func btoi(b []byte) (uint64, bool) {
	if len(b) != 8 {
		return 0, false
	}
	return binary.BigEndian.Uint64(b), true
}

// recordKey is a record's key in records, the area buckets and conflicts.
func recordKey(k syncproto.Key) []byte {
	return []byte(string(k.Collection) + "/" + k.ID)
}

// parseKey decodes recordKey. Collections never contain "/".
func parseKey(b []byte) (syncproto.Key, error) {
	i := bytes.IndexByte(b, '/')
	if i <= 0 {
		return syncproto.Key{}, fmt.Errorf("%w: bad record key %q", ErrCorrupt, b)
	}
	return syncproto.Key{Collection: syncproto.Collection(b[:i]), ID: string(b[i+1:])}, nil
}

// appendString appends s with a uvarint length prefix.
func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// readString decodes appendString from the front of b.
func readString(b []byte) (s string, rest []byte, ok bool) {
	n, w := binary.Uvarint(b)
	if w <= 0 || n > uint64(len(b)-w) {
		return "", nil, false
	}
	return string(b[w : w+int(n)]), b[w+int(n):], true
}

// recordHead is what PutRecord needs of a stored record without decoding
// its JSON.
type recordHead struct {
	seq    uint64
	area   string
	caseID string // entries only: the case the entry is indexed under
}

// encodeRecord returns a records value: head, then the record's state, its
// JSON or its compact form (compact.go).
func encodeRecord(h recordHead, state []byte) []byte {
	b := make([]byte, 0, 8+2+len(h.area)+2+len(h.caseID)+len(state))
	b = binary.BigEndian.AppendUint64(b, h.seq)
	b = appendString(b, h.area)
	b = appendString(b, h.caseID)
	return append(b, state...)
}

// decodeRecord splits a records value into its head and state; the state
// aliases v. recordJSON gives the state's JSON.
func decodeRecord(v []byte) (recordHead, []byte, error) {
	var h recordHead
	if len(v) < 8 {
		return h, nil, fmt.Errorf("%w: record value of %d bytes", ErrCorrupt, len(v))
	}
	h.seq = binary.BigEndian.Uint64(v)
	var ok1, ok2 bool
	rest := v[8:]
	h.area, rest, ok1 = readString(rest)
	h.caseID, rest, ok2 = readString(rest)
	if !ok1 || !ok2 {
		return h, nil, fmt.Errorf("%w: record value has a bad head", ErrCorrupt)
	}
	return h, rest, nil
}

// Kinds of area index entries: the first byte of the value.
const (
	entryRecord = 0x00
	entryMarker = 0x01
)

// encodeFiled returns the index value of a record filed in the area.
func encodeFiled(key []byte) []byte {
	return append([]byte{entryRecord}, key...)
}

// encodeMarker returns the index value of an eviction marker: key moved to
// movedTo.
func encodeMarker(key []byte, movedTo string) []byte {
	b := binary.AppendUvarint([]byte{entryMarker}, uint64(len(key)))
	return append(append(b, key...), movedTo...)
}

// decodeEntry decodes an index value; key aliases v, movedTo is "" for a
// filed record.
func decodeEntry(v []byte) (key []byte, movedTo string, marker bool, err error) {
	if len(v) < 2 {
		return nil, "", false, fmt.Errorf("%w: index entry of %d bytes", ErrCorrupt, len(v))
	}
	switch v[0] {
	case entryRecord:
		return v[1:], "", false, nil
	case entryMarker:
		n, w := binary.Uvarint(v[1:])
		if w <= 0 || n > uint64(len(v)-1-w) {
			break
		}
		k := v[1+w : 1+w+int(n)]
		return k, string(v[1+w+int(n):]), true, nil
	}
	return nil, "", false, fmt.Errorf("%w: bad index entry", ErrCorrupt)
}

// casePrefix is the prefix of a case's keys in case_entries. The length
// prefix keeps case "a" from matching the entries of case "ab".
func casePrefix(caseID string) []byte { return appendString(nil, caseID) }

// caseEntryKey is an entry's key in case_entries.
func caseEntryKey(caseID, entryID string) []byte {
	return append(casePrefix(caseID), entryID...)
}

// acceptedKey is a device change's key in accepted.
func acceptedKey(device string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(appendString(nil, device), seq)
}
