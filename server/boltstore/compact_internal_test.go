package boltstore

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"testing"

	"pgregory.net/rapid"

	"github.com/casesync/casesync/syncproto"
)

// oneWrite returns a record that one write of d:seq made, with fields as
// JSON values.
func oneWrite(coll syncproto.Collection, id, area, d string, seq uint64, fields map[string]string) *syncproto.Record {
	r := &syncproto.Record{Collection: coll, ID: id, Area: area, Fields: map[string]syncproto.Field{}}
	for name, val := range fields {
		r.Fields[name] = syncproto.Field{
			Values: []syncproto.Value{{Device: d, Seq: seq, Stamp: 0x1a23ea5030b00018, Data: json.RawMessage(val)}},
			Seen:   syncproto.Versions{d: seq},
		}
	}
	return r
}

func note() *syncproto.Record {
	return oneWrite(syncproto.Entries, "01M8Z9RJQ7EWCXSW2MZPKXJFBS", "Zuilen", "dolbzrdghrpwgbsuy", 999, map[string]string{
		"author": `"bram"`, "case_id": `"01M8Z9RH6JCB94A357G4MYDHZ8"`, "kind": `"visit"`,
		"occurred_at": `"2026-12-04T01:22:11Z"`, "text": strconv.Quote("Mould behind the wardrobe <again> & the landlord's desk did not answer."),
	})
}

func TestCompactRecord(t *testing.T) {
	conflicted := note()
	f := conflicted.Fields["kind"]
	f.Values = append(f.Values, syncproto.Value{Device: "dother", Seq: 3, Stamp: 5, Data: json.RawMessage(`"call"`)})
	f.Seen = syncproto.Versions{"dolbzrdghrpwgbsuy": 999, "dother": 3}
	conflicted.Fields["kind"] = f

	edited := note() // a later write to one field: two dots
	f = edited.Fields["text"]
	f.Values[0].Seq, f.Seen = 1000, syncproto.Versions{"dolbzrdghrpwgbsuy": 1000}
	edited.Fields["text"] = f

	seenMore := note() // the field's writer had seen another device
	f = seenMore.Fields["kind"]
	f.Seen = syncproto.Versions{"dolbzrdghrpwgbsuy": 999, "dother": 2}
	seenMore.Fields["kind"] = f

	deleted := note()
	deleted.Fields[syncproto.FieldDeleted] = syncproto.Field{
		Values: []syncproto.Value{{Device: "dolbzrdghrpwgbsuy", Seq: 999, Stamp: 0x1a23ea5030b00018, Data: json.RawMessage(`true`),
			Covers: syncproto.Versions{"dolbzrdghrpwgbsuy": 998}}},
		Seen: syncproto.Versions{"dolbzrdghrpwgbsuy": 999},
	}

	tests := []struct {
		name    string
		r       *syncproto.Record
		compact bool
	}{
		{"a new note", note(), true},
		{"a new case without area", oneWrite(syncproto.Cases, "c1", "", "d1", 1, map[string]string{"title": `"Leak"`}), true},
		{"HTML characters, which Marshal leaves alone", oneWrite(syncproto.Cases, "c<1>&", "Zuilen & <Ondiep>", "d1", 1, map[string]string{"a<b": `"x"`}), true},
		{"non-ASCII area and field name", oneWrite(syncproto.Cases, "c1", "Lombok-Oost é", "d1", 1, map[string]string{"titel_ü": `"Lekkage"`}), true},
		{"a quote in the area: JSON escapes it", oneWrite(syncproto.Cases, "c1", `Zuilen "west"`, "d1", 1, map[string]string{"title": `"x"`}), false},
		{"a backslash in a field name", oneWrite(syncproto.Cases, "c1", "Zuilen", "d1", 1, map[string]string{`a\b`: `"x"`}), false},
		{"U+2028 in the ID, which Marshal escapes", oneWrite(syncproto.Cases, "c\u20281", "Zuilen", "d1", 1, map[string]string{"title": `"x"`}), false},
		{"a control character in the device", oneWrite(syncproto.Cases, "c1", "Zuilen", "d\x01", 1, map[string]string{"title": `"x"`}), false},
		{"a value that is not canonical", oneWrite(syncproto.Cases, "c1", "Zuilen", "d1", 1, map[string]string{"title": `{ "b":1 }`}), false},
		{"no fields", &syncproto.Record{Collection: syncproto.Cases, ID: "c1", Area: "Zuilen", Fields: map[string]syncproto.Field{}}, false},
		{"a conflict", conflicted, false},
		{"an edited field", edited, false},
		{"a field whose writer had seen more", seenMore, false},
		{"a deletion, whose value covers", deleted, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			js, err := syncproto.Marshal(tt.r)
			if err != nil {
				t.Fatal(err)
			}
			c, ok := compactRecord(tt.r, js)
			if ok != tt.compact {
				t.Fatalf("compacted = %v, want %v\nJSON %s", ok, tt.compact, js)
			}
			if !ok {
				return
			}
			if c[0] != compactTag {
				t.Errorf("compact form starts with %#x", c[0])
			}
			got, fresh, err := recordJSON(tt.r.Key(), tt.r.Area, c)
			if err != nil || !fresh || !bytes.Equal(got, js) {
				t.Errorf("recordJSON = %s, %v, %v\nwant %s", got, fresh, err, js)
			}
			t.Logf("%d bytes of JSON → %d compact", len(js), len(c))
		})
	}
	// The note's state shrinks by more than a third: what the form is for.
	r := note()
	js, _ := syncproto.Marshal(r)
	if c, _ := compactRecord(r, js); len(c)*3 > len(js)*2 {
		t.Errorf("a new note's compact state is %d bytes for %d of JSON", len(c), len(js))
	}
}

// A JSON state is returned as it is, aliasing the stored bytes.
func TestRecordJSON_JSONForm(t *testing.T) {
	js := []byte(`{"coll":"cases","id":"c1","fields":{}}`)
	got, fresh, err := recordJSON(syncproto.Key{Collection: syncproto.Cases, ID: "c1"}, "", js)
	if err != nil || fresh || &got[0] != &js[0] {
		t.Errorf("recordJSON of JSON = %s, fresh %v, %v; want the same slice", got, fresh, err)
	}
}

// Every truncation and every corrupted length of a compact state is an
// ErrCorrupt, never a panic or a wrong expansion.
func TestExpandCompact_Corrupt(t *testing.T) {
	r := note()
	js, _ := syncproto.Marshal(r)
	c, ok := compactRecord(r, js)
	if !ok {
		t.Fatal("the note was not compacted")
	}
	for n := range len(c) {
		if _, err := expandCompact(r.Key(), r.Area, c[:n]); !errors.Is(err, ErrCorrupt) {
			t.Errorf("expand of the first %d of %d bytes: %v, want ErrCorrupt", n, len(c), err)
		}
	}
	extra := append(bytes.Clone(c), 0)
	if _, err := expandCompact(r.Key(), r.Area, extra); !errors.Is(err, ErrCorrupt) {
		t.Errorf("expand with a trailing byte: %v, want ErrCorrupt", err)
	}
}

// Property: for any record one write made, of names, IDs and values drawn
// with the characters JSON escapes among them, a compact form, when made,
// expands to exactly its JSON, and decodes to the record.
func TestCompactRecord_Property(t *testing.T) {
	safe := []rune{'a', 'Z', '0', '-', '_', ' ', '<', '>', '&', 'é', '😀'}
	escaped := []rune{'"', '\\', '\n', '\x01', '\u2028', '\u2029'}
	rapid.Check(t, func(t *rapid.T) {
		// Half the records use only characters JSON writes as they are:
		// those must be compacted.
		plain := rapid.Bool().Draw(t, "plain")
		chars := rapid.SampledFrom(safe)
		if !plain {
			chars = rapid.SampledFrom(append(slices.Clone(safe), escaped...))
		}
		str := func(min int) *rapid.Generator[string] {
			return rapid.Custom(func(t *rapid.T) string {
				return string(rapid.SliceOfN(chars, min, 12).Draw(t, "runes"))
			})
		}
		fields := map[string]string{}
		for range rapid.IntRange(1, 6).Draw(t, "fields") {
			v, _ := json.Marshal(str(0).Draw(t, "value"))
			if rapid.Bool().Draw(t, "number") {
				v = []byte(strconv.Itoa(rapid.IntRange(-5, 1e6).Draw(t, "n")))
			}
			fields[str(1).Draw(t, "name")] = string(v)
		}
		coll := rapid.SampledFrom([]syncproto.Collection{syncproto.Cases, syncproto.Entries}).Draw(t, "coll")
		r := oneWrite(coll, str(1).Draw(t, "id"), str(0).Draw(t, "area"), str(1).Draw(t, "device"), rapid.Uint64().Draw(t, "seq"), fields)
		js, err := syncproto.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		c, ok := compactRecord(r, js)
		if !ok {
			if plain {
				t.Fatalf("a record of plain characters was not compacted: %s", js)
			}
			return
		}
		got, _, err := recordJSON(r.Key(), r.Area, c)
		if err != nil || !bytes.Equal(got, js) {
			t.Fatalf("expansion %s, %v; want %s", got, err, js)
		}
		back, err := decodeJSONRecord(got)
		if err != nil {
			t.Fatal(err)
		}
		if again, _ := syncproto.Marshal(back); !bytes.Equal(again, js) {
			t.Fatalf("decoded record encodes to %s, want %s", again, js)
		}
	})
}

// FuzzExpandCompact: no stored bytes make the expansion panic; what it
// refuses it refuses as ErrCorrupt.
func FuzzExpandCompact(f *testing.F) {
	r := note()
	js, _ := syncproto.Marshal(r)
	c, _ := compactRecord(r, js)
	f.Add(c, "Zuilen")
	f.Add([]byte{compactTag}, "")
	f.Add([]byte{compactTag, 1, 'd', 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 'a', 1, '1'}, "X")
	f.Fuzz(func(t *testing.T, body []byte, area string) {
		out, err := expandCompact(r.Key(), area, body)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v is not ErrCorrupt", err)
			}
			return
		}
		if !bytes.HasPrefix(out, []byte(`{"coll":`)) || !bytes.HasSuffix(out, []byte("}}")) {
			t.Fatalf("expansion %q", out)
		}
	})
}
