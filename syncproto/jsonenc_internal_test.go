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

// stdMarshal is Marshal by encoding/json alone: the reference for the
// hand-written encoders, used on the mirror types (recordjson_test.go,
// changejson_test.go) that have no methods.
func stdMarshal(t *rapid.T, v any) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// anyValue draws a value as a push may carry it: canonical, or with white
// space that encoding/json compacts.
func anyValue(t *rapid.T, label string) json.RawMessage {
	v := canonicalValue(t, label)
	if v == nil || !rapid.Bool().Draw(t, label+" spaced") {
		return v
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, v, " ", "\t"); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestEncodeChange(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		c := &Change{
			Seq: rapid.Uint64().Draw(t, "seq"), Collection: Collection(jsonString().Draw(t, "coll")),
			ID: jsonString().Draw(t, "id"), Stamp: Stamp(rapid.Uint64().Draw(t, "at")),
		}
		ref := refChange{Seq: c.Seq, Collection: c.Collection, ID: c.ID, Stamp: c.Stamp}
		if n := rapid.IntRange(-1, 4).Draw(t, "fields"); n >= 0 {
			c.Fields, ref.Fields = map[string]Write{}, map[string]refWrite{}
			for range n {
				w := Write{Data: anyValue(t, "val"), Seen: versions(t, "seen"), Covers: versions(t, "covers")}
				name := jsonString().Draw(t, "name")
				c.Fields[name], ref.Fields[name] = w, refWrite(w)
			}
		}
		got, err := Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		if want := stdMarshal(t, ref); !bytes.Equal(got, want) {
			t.Fatalf("Marshal(change) = %s\nwant %s", got, want)
		}
	})
	t.Run("ErrBadValue", func(t *testing.T) {
		for _, data := range []string{"", "{", `"x" 1`} {
			c := &Change{Seq: 1, Fields: map[string]Write{"a": {Data: json.RawMessage(data)}}}
			if _, err := Marshal(c); err == nil {
				t.Errorf("Marshal of a change with value %q succeeded", data)
			}
		}
	})
}

func TestEncodePush(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		p := &Push{}
		var ref struct {
			Changes []refChange `json:"changes"`
		}
		if n := rapid.IntRange(-1, 3).Draw(t, "changes"); n >= 0 {
			p.Changes, ref.Changes = []Change{}, []refChange{}
			for range n {
				c := Change{Seq: rapid.Uint64().Draw(t, "seq"), Collection: Collection(jsonString().Draw(t, "coll")),
					ID: jsonString().Draw(t, "id"), Stamp: Stamp(rapid.Uint64().Draw(t, "at"))}
				rc := refChange{Seq: c.Seq, Collection: c.Collection, ID: c.ID, Stamp: c.Stamp}
				if rapid.Bool().Draw(t, "has fields") {
					w := Write{Data: anyValue(t, "val"), Seen: versions(t, "seen")}
					c.Fields = map[string]Write{"text": w}
					rc.Fields = map[string]refWrite{"text": refWrite(w)}
				}
				p.Changes, ref.Changes = append(p.Changes, c), append(ref.Changes, rc)
			}
		}
		got, err := Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		if want := stdMarshal(t, ref); !bytes.Equal(got, want) {
			t.Fatalf("Marshal(push) = %s\nwant %s", got, want)
		}
	})
	bad := &Push{Changes: []Change{{Seq: 1, Fields: map[string]Write{"a": {Data: json.RawMessage("{")}}}}}
	if _, err := Marshal(bad); err == nil {
		t.Error("Marshal of a push with an invalid value succeeded")
	}
}

func TestEncodeFields(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		var fields map[string]Field
		var ref map[string]refField
		if n := rapid.IntRange(-1, 4).Draw(t, "fields"); n >= 0 {
			fields, ref = map[string]Field{}, map[string]refField{}
			for range n {
				f := Field{Seen: versions(t, "seen")}
				rf := refField{Seen: f.Seen}
				if m := rapid.IntRange(-1, 3).Draw(t, "values"); m >= 0 {
					f.Values, rf.Values = []Value{}, []refValue{}
					for range m {
						v := Value{
							Device: jsonString().Draw(t, "dev"), Seq: rapid.Uint64().Draw(t, "seq"),
							Stamp: Stamp(rapid.Uint64().Draw(t, "at")), Data: anyValue(t, "val"), Covers: versions(t, "covers"),
						}
						f.Values, rf.Values = append(f.Values, v), append(rf.Values, refValue(v))
					}
				}
				name := jsonString().Draw(t, "name")
				fields[name], ref[name] = f, rf
			}
		}
		got, err := Marshal(fields)
		if err != nil {
			t.Fatal(err)
		}
		if want := stdMarshal(t, ref); !bytes.Equal(got, want) {
			t.Fatalf("Marshal(fields) = %s\nwant %s", got, want)
		}
	})
}
