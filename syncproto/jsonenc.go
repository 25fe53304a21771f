package syncproto

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"unicode/utf8"
)

// The push path encodes every change twice (its digest, the new record's
// fields) and encoding/json spent a quarter of the server's CPU doing it
// through reflection (BENCHMARKS.md, load). These encoders, and Record's in
// recordjson.go, write the bytes encoding/json writes for the struct tags
// of Change, Write, Field and Value, with HTML escaping off; Marshal takes
// them. jsonenc_internal_test.go checks them against encoding/json.

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

// appendJSON appends c's encoding to b, as encoding/json encodes its
// fields: a push's changes are encoded for their digest and the log on the
// server, and for the outbox on the client.
func (c *Change) appendJSON(b []byte) ([]byte, error) {
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
		return append(b, "null}"...), nil
	}
	b = append(b, '{')
	for i, name := range sortedKeys(c.Fields) {
		w := c.Fields[name]
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, name)
		b = append(b, `:{"val":`...)
		var err error
		if b, err = appendRaw(b, w.Data); err != nil {
			return nil, fmt.Errorf("syncproto: change %d, field %q: %w", c.Seq, name, err)
		}
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
	return append(b, "}}"...), nil
}

// appendJSON appends p's encoding to b, as encoding/json encodes it: the
// client and the load generator encode every push (through encoding/json
// its changes' values were compacted twice, BENCHMARKS.md).
func (p *Push) appendJSON(b []byte) ([]byte, error) {
	b = append(b, `{"changes":`...)
	if p.Changes == nil {
		return append(b, "null}"...), nil
	}
	b = append(b, '[')
	for i := range p.Changes {
		if i > 0 {
			b = append(b, ',')
		}
		var err error
		if b, err = p.Changes[i].appendJSON(b); err != nil {
			return nil, err
		}
	}
	return append(b, "]}"...), nil
}

// appendRaw appends a json.RawMessage as encoding/json does: null for nil,
// otherwise the value compacted, and an error if it is not one valid value.
func appendRaw(b []byte, raw []byte) ([]byte, error) {
	if raw == nil {
		return append(b, "null"...), nil
	}
	b, ok := appendCompact(b, raw)
	if !ok {
		return nil, errors.New("value is not valid JSON")
	}
	return b, nil
}
