package boltstore

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"strconv"
	"sync"

	"github.com/casesync/casesync/syncproto"
)

// A record's state is stored in one of two forms, told apart by its first
// byte (after the head, encode.go):
//
//	'{'   the record's JSON, syncproto.Marshal(r): any record (format 1's
//	      only form).
//	0x01  the compact form of a record that one write made: the write's
//	      device, sequence and stamp once, then each field's name and value:
//
//	      0x01 | uvarint len | device | uvarint seq | stamp (8, big-endian) |
//	      uvarint field count | per field, by name: uvarint len | name |
//	      uvarint len | value (canonical JSON)
//
// Why: a new note's JSON is ~1.4 KB for ~700 bytes of values, because each
// of its fields repeats the write's device, sequence and stamp in "vals"
// and "seen"; two such states fill a 4 KiB page, and writing pages is the
// store writer's largest cost after the change's own work (BENCHMARKS.md,
// load). Most records are written once and never edited (notes), and their
// compact form is about half the size, four or five to a page.
//
// The compact form is only a way of storing the JSON: expandCompact gives
// back, byte for byte, the JSON syncproto.Marshal made, and every reader
// (Record, Scan, ScanRaw) goes through it, so pulls send what they sent
// before. compactRecord proves that for each record it compacts, by
// expanding the result and comparing it with the JSON; a record whose
// expansion would differ (a name or ID that JSON must escape, say) is
// stored as JSON.

// compactTag is the first byte of a compact state. JSON starts with '{'.
const compactTag = 0x01

// compactRecord returns the compact form of r, whose JSON is js, if one
// write made the whole record and the form expands to exactly js.
func compactRecord(r *syncproto.Record, js []byte) ([]byte, bool) {
	if len(r.Fields) == 0 {
		return nil, false
	}
	var w syncproto.Value
	first := true
	size := 0
	for _, f := range r.Fields {
		if len(f.Values) != 1 || len(f.Seen) != 1 {
			return nil, false
		}
		v := f.Values[0]
		if len(v.Covers) != 0 || f.Seen[v.Device] != v.Seq {
			return nil, false
		}
		if first {
			w, first = v, false
		} else if v.Device != w.Device || v.Seq != w.Seq || v.Stamp != w.Stamp {
			return nil, false
		}
		size += len(v.Data) + 8
	}
	names := make([]string, 0, len(r.Fields))
	for name := range r.Fields {
		names = append(names, name)
		size += len(name)
	}
	slices.Sort(names)

	b := make([]byte, 0, 1+binary.MaxVarintLen64*2+len(w.Device)+8+size)
	b = append(b, compactTag)
	b = appendString(b, w.Device)
	b = binary.AppendUvarint(b, w.Seq)
	b = binary.BigEndian.AppendUint64(b, uint64(w.Stamp))
	b = binary.AppendUvarint(b, uint64(len(names)))
	for _, name := range names {
		b = appendString(b, name)
		b = appendBytes(b, r.Fields[name].Values[0].Data)
	}
	buf := scratch.Get().(*[]byte)
	exp, err := appendExpanded((*buf)[:0], r.Key(), r.Area, b)
	same := err == nil && bytes.Equal(exp, js)
	*buf = exp[:0]
	scratch.Put(buf)
	if !same {
		return nil, false
	}
	return b, true
}

// scratch holds buffers for compactRecord's check, so that the store's
// writer does not allocate an expansion per record only to compare it.
var scratch = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// expandCompact returns the JSON of a compact state of the record k,
// filed under area: what syncproto.Marshal gave for the record when it was
// compacted. Strings are written between quotes as they are; compactRecord
// keeps the compact form only of records for which that is their JSON.
func expandCompact(k syncproto.Key, area string, body []byte) ([]byte, error) {
	return appendExpanded(nil, k, area, body)
}

// appendExpanded appends expandCompact's JSON to out.
func appendExpanded(out []byte, k syncproto.Key, area string, body []byte) ([]byte, error) {
	if len(body) == 0 || body[0] != compactTag {
		return nil, fmt.Errorf("%w: record state is not in the compact form", ErrCorrupt)
	}
	dev, rest, ok := readString(body[1:])
	if !ok {
		return nil, fmt.Errorf("%w: compact state of %s: bad device", ErrCorrupt, k)
	}
	seq, w := binary.Uvarint(rest)
	if w <= 0 || len(rest) < w+8 {
		return nil, fmt.Errorf("%w: compact state of %s: bad sequence or stamp", ErrCorrupt, k)
	}
	stamp := binary.BigEndian.Uint64(rest[w:])
	rest = rest[w+8:]
	n, w := binary.Uvarint(rest)
	if w <= 0 || n == 0 || n > uint64(len(rest)) {
		return nil, fmt.Errorf("%w: compact state of %s: bad field count", ErrCorrupt, k)
	}
	rest = rest[w:]

	// What every field's state repeats around its value.
	var preBuf, sufBuf [128]byte
	pre, suf := preBuf[:0], sufBuf[:0]
	pre = append(pre, `{"vals":[{"dev":"`...)
	pre = append(pre, dev...)
	pre = append(pre, `","seq":`...)
	pre = strconv.AppendUint(pre, seq, 10)
	pre = append(pre, `,"at":"`...)
	pre = appendHex16(pre, stamp)
	pre = append(pre, `","val":`...)
	suf = append(suf, `}],"seen":{"`...)
	suf = append(suf, dev...)
	suf = append(suf, `":`...)
	suf = strconv.AppendUint(suf, seq, 10)
	suf = append(suf, `}}`...)

	out = slices.Grow(out, 48+len(k.Collection)+len(k.ID)+len(area)+len(rest)+int(n)*(len(pre)+len(suf)+4))
	out = append(out, `{"coll":"`...)
	out = append(out, k.Collection...)
	out = append(out, `","id":"`...)
	out = append(out, k.ID...)
	out = append(out, '"')
	if area != "" {
		out = append(out, `,"area":"`...)
		out = append(out, area...)
		out = append(out, '"')
	}
	out = append(out, `,"fields":{`...)
	for i := range n {
		name, r, ok1 := readString(rest)
		val, r, ok2 := readBytes(r)
		if !ok1 || !ok2 || len(val) == 0 {
			return nil, fmt.Errorf("%w: compact state of %s: bad field %d", ErrCorrupt, k, i)
		}
		rest = r
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, '"')
		out = append(out, name...)
		out = append(out, `":`...)
		out = append(out, pre...)
		out = append(out, val...)
		out = append(out, suf...)
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("%w: compact state of %s: %d bytes after the fields", ErrCorrupt, k, len(rest))
	}
	return append(out, "}}"...), nil
}

// appendHex16 appends v as 16 lowercase hex digits, as a Stamp's JSON.
func appendHex16(b []byte, v uint64) []byte {
	const digits = "0123456789abcdef"
	for shift := 60; shift >= 0; shift -= 4 {
		b = append(b, digits[v>>uint(shift)&0xf])
	}
	return b
}

// appendBytes appends p with a uvarint length prefix.
func appendBytes(b, p []byte) []byte {
	return append(binary.AppendUvarint(b, uint64(len(p))), p...)
}

// readBytes decodes appendBytes from the front of b; p aliases b.
func readBytes(b []byte) (p, rest []byte, ok bool) {
	n, w := binary.Uvarint(b)
	if w <= 0 || n > uint64(len(b)-w) {
		return nil, nil, false
	}
	return b[w : w+int(n)], b[w+int(n):], true
}

// recordJSON returns the JSON of a stored state of record k, filed under
// area: the state itself, aliasing the file, for the JSON form (fresh is
// false), or the expansion of the compact form, a new slice.
func recordJSON(k syncproto.Key, area string, state []byte) (js []byte, fresh bool, err error) {
	if len(state) > 0 && state[0] == compactTag {
		js, err = expandCompact(k, area, state)
		return js, true, err
	}
	return state, false, nil
}
