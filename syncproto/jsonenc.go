package syncproto

import (
	"slices"
	"strconv"
	"unicode/utf8"
)

// The push path encodes every change twice (its digest, the new record's
// fields) and encoding/json spent a quarter of the server's CPU doing it
// through reflection (BENCHMARKS.md, load). These encoders write the same
// bytes as Marshal for the struct tags of Change, Write, Field
// and Value, for values already canonical (compact JSON, as Canonical
// makes them: Marshal would copy such a value unchanged).
// jsonenc_internal_test.go checks them against Marshal; recordjson.go
// shares the string, stamp and version-vector encoders.

// AppendString appends s as a JSON string, as Marshal writes it (HTML
// escaping off), for callers that build protocol JSON by hand.
func AppendString(b []byte, s string) []byte { return appendString(b, s) }

// appendString appends s as encoding/json writes a string with HTML
// escaping off.
func appendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// appendVersions appends a version vector: null for nil, keys sorted.
func appendVersions(b []byte, v Versions) []byte {
	if v == nil {
		return append(b, "null"...)
	}
	b = append(b, '{')
	for i, d := range sortedKeys(v) {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, d)
		b = append(b, ':')
		b = strconv.AppendUint(b, v[d], 10)
	}
	return append(b, '}')
}

// sortedKeys returns m's keys in the order encoding/json writes them.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// appendStamp appends a stamp as Stamp.MarshalJSON writes it.
func appendStamp(b []byte, s Stamp) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for shift := 60; shift >= 0; shift -= 4 {
		b = append(b, hex[(uint64(s)>>shift)&0xf])
	}
	return append(b, '"')
}

// appendValueJSON appends a canonical JSON value; an empty one is not JSON.
func appendValueJSON(b []byte, data []byte) ([]byte, bool) {
	if data == nil {
		return append(b, "null"...), true
	}
	return append(b, data...), len(data) > 0
}

// EncodeCanonicalChange returns Marshal(c) for a change whose values are
// all canonical, and false if one is empty.
func EncodeCanonicalChange(c *Change) ([]byte, bool) {
	size := 96
	for name, w := range c.Fields {
		size += len(name) + len(w.Data) + 48*(1+len(w.Seen)+len(w.Covers))
	}
	b := make([]byte, 0, size)
	b = append(b, `{"seq":`...)
	b = strconv.AppendUint(b, c.Seq, 10)
	b = append(b, `,"coll":`...)
	b = appendString(b, string(c.Collection))
	b = append(b, `,"id":`...)
	b = appendString(b, c.ID)
	b = append(b, `,"at":`...)
	b = appendStamp(b, c.Stamp)
	b = append(b, `,"fields":`...)
	if c.Fields == nil {
		return append(b, "null}"...), true
	}
	b = append(b, '{')
	ok := true
	for i, name := range sortedKeys(c.Fields) {
		w := c.Fields[name]
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, name)
		b = append(b, `:{"val":`...)
		var good bool
		b, good = appendValueJSON(b, w.Data)
		ok = ok && good
		if len(w.Seen) > 0 {
			b = append(b, `,"seen":`...)
			b = appendVersions(b, w.Seen)
		}
		if len(w.Covers) > 0 {
			b = append(b, `,"covers":`...)
			b = appendVersions(b, w.Covers)
		}
		b = append(b, '}')
	}
	return append(b, "}}"...), ok
}

// EncodeCanonicalFields returns Marshal(fields) for fields whose values
// are all canonical, and false if one is empty.
func EncodeCanonicalFields(fields map[string]Field) ([]byte, bool) {
	if fields == nil {
		return []byte("null"), true
	}
	size := 2
	for name, f := range fields {
		size += len(name) + 16 + 48*len(f.Seen)
		for _, v := range f.Values {
			size += len(v.Data) + 80 + 48*len(v.Covers)
		}
	}
	b := make([]byte, 0, size)
	b = append(b, '{')
	ok := true
	for i, name := range sortedKeys(fields) {
		f := fields[name]
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, name)
		b = append(b, `:{"vals":`...)
		if f.Values == nil {
			b = append(b, "null"...)
		} else {
			b = append(b, '[')
			for j, v := range f.Values {
				if j > 0 {
					b = append(b, ',')
				}
				b = append(b, `{"dev":`...)
				b = appendString(b, v.Device)
				b = append(b, `,"seq":`...)
				b = strconv.AppendUint(b, v.Seq, 10)
				b = append(b, `,"at":`...)
				b = appendStamp(b, v.Stamp)
				b = append(b, `,"val":`...)
				var good bool
				b, good = appendValueJSON(b, v.Data)
				ok = ok && good
				if len(v.Covers) > 0 {
					b = append(b, `,"covers":`...)
					b = appendVersions(b, v.Covers)
				}
				b = append(b, '}')
			}
			b = append(b, ']')
		}
		b = append(b, `,"seen":`...)
		b = appendVersions(b, f.Seen)
		b = append(b, '}')
	}
	return append(b, '}'), ok
}
