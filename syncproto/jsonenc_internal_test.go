package syncproto

import (
	"bytes"
	"encoding/json"
	"testing"

	"pgregory.net/rapid"
)

// jsonString draws strings that exercise every escape: control
// characters, quotes, HTML characters, U+2028/9 and invalid UTF-8.
func jsonString() *rapid.Generator[string] {
	return rapid.OneOf(
		rapid.String(),
		rapid.StringOf(rapid.SampledFrom([]rune{'a', 'Z', '"', '\\', '\n', '\b', '\f', '\r', '\t', '\x00', '\x1f', '\x7f', '<', '>', '&', '\u2028', '\u2029', 'é', '日', '\uFFFD'})),
		rapid.Map(rapid.SliceOf(rapid.Byte()), func(b []byte) string { return string(b) }),
	)
}

func versions(t *rapid.T, label string) Versions {
	switch rapid.IntRange(0, 2).Draw(t, label+" kind") {
	case 0:
		return nil
	case 1:
		return Versions{}
	}
	return rapid.MapOfN(jsonString(), rapid.Uint64(), 1, 4).Draw(t, label)
}

// canonicalValue draws a value as Canonical leaves it.
func canonicalValue(t *rapid.T, label string) json.RawMessage {
	if rapid.IntRange(0, 9).Draw(t, label+" nil") == 0 {
		return nil
	}
	v := rapid.OneOf(
		rapid.Map(jsonString(), func(s string) any { return s }),
		rapid.Map(rapid.Int64(), func(i int64) any { return i }),
		rapid.Just[any](true),
		rapid.Just[any](nil),
		rapid.Map(rapid.SliceOfN(jsonString(), 0, 3), func(s []string) any { return s }),
		rapid.Map(rapid.MapOfN(jsonString(), jsonString(), 0, 3), func(m map[string]string) any { return m }),
	).Draw(t, label)
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	c, err := Canonical(raw)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestAppendJSONString(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		s := jsonString().Draw(t, "s")
		want, err := Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendString(nil, s); !bytes.Equal(got, want) {
			t.Fatalf("appendString(%q) = %s, want %s", s, got, want)
		}
	})
}

func TestEncodeChange(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		c := &Change{
			Seq: rapid.Uint64().Draw(t, "seq"), Collection: Collection(jsonString().Draw(t, "coll")),
			ID: jsonString().Draw(t, "id"), Stamp: Stamp(rapid.Uint64().Draw(t, "at")),
		}
		if n := rapid.IntRange(-1, 4).Draw(t, "fields"); n >= 0 {
			c.Fields = map[string]Write{}
			for range n {
				c.Fields[jsonString().Draw(t, "name")] = Write{Data: canonicalValue(t, "val"), Seen: versions(t, "seen"), Covers: versions(t, "covers")}
			}
		}
		want, err := Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := EncodeCanonicalChange(c)
		if !ok || !bytes.Equal(got, want) {
			t.Fatalf("encodeChange = %s, %v\nwant %s", got, ok, want)
		}
	})
	t.Run("ErrEmptyValue", func(t *testing.T) {
		c := &Change{Seq: 1, Fields: map[string]Write{"a": {Data: json.RawMessage{}}}}
		if _, ok := EncodeCanonicalChange(c); ok {
			t.Error("encodeChange of an empty value reported ok")
		}
	})
}

func TestEncodeFields(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		var fields map[string]Field
		if n := rapid.IntRange(-1, 4).Draw(t, "fields"); n >= 0 {
			fields = map[string]Field{}
			for range n {
				f := Field{Seen: versions(t, "seen")}
				if m := rapid.IntRange(-1, 3).Draw(t, "values"); m >= 0 {
					f.Values = []Value{}
					for range m {
						f.Values = append(f.Values, Value{
							Device: jsonString().Draw(t, "dev"), Seq: rapid.Uint64().Draw(t, "seq"),
							Stamp: Stamp(rapid.Uint64().Draw(t, "at")), Data: canonicalValue(t, "val"), Covers: versions(t, "covers"),
						})
					}
				}
				fields[jsonString().Draw(t, "name")] = f
			}
		}
		want, err := Marshal(fields)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := EncodeCanonicalFields(fields)
		if !ok || !bytes.Equal(got, want) {
			t.Fatalf("encodeFields = %s, %v\nwant %s", got, ok, want)
		}
	})
}
