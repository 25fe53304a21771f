package server

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/casesync/casesync/syncproto"
)

// refDigest is changeDigest as the server computed it inside the writer
// before prepare existed. Stored digests depend on it, so prepare must
// give the same bytes for every change.
func refDigest(ch *syncproto.Change) []byte {
	c := cloneChange(ch)
	for k, w := range c.Fields {
		if v, err := syncproto.Canonical(w.Data); err == nil {
			w.Data = v
			c.Fields[k] = w
		}
	}
	b, err := syncproto.Marshal(c)
	if err != nil {
		panic(err)
	}
	sum := sha256.Sum256(b)
	return sum[:]
}

var testActor = syncproto.Actor{User: "anouk", Device: "dme"}

func prepTestChanges() map[string]syncproto.Change {
	at := syncproto.MakeStamp(time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC))
	w := func(s string) syncproto.Write { return syncproto.Write{Data: json.RawMessage(s)} }
	return map[string]syncproto.Change{
		"canonical": {Seq: 1, Collection: syncproto.Entries, ID: "e1", Stamp: at, Fields: map[string]syncproto.Write{
			"case_id": w(`"c1"`), "kind": w(`"visit"`), "author": w(`"anouk"`), "occurred_at": w(`"2026-11-28"`),
			"text": w(`"Visited.\nMould <behind> the wardrobe & more"`),
		}},
		"not canonical": {Seq: 2, Collection: syncproto.Cases, ID: "c1", Stamp: at, Fields: map[string]syncproto.Write{
			"title": w(` "Leak\u0020ing roof" `), "status": w(` "open"`), "tags": w(`[ "b" , "a" ]`), "extra": w(`{"z":1, "a":[1.50, -0e3]}`),
			"area": {Data: json.RawMessage(`"Zuilen"`), Seen: syncproto.Versions{"dother": 3}},
		}},
		// Values are valid JSON: the frame decoder guarantees it.
		"rejected value": {Seq: 3, Collection: syncproto.Cases, ID: "c2", Stamp: at, Fields: map[string]syncproto.Write{
			"title": w(`"ok"`), "summary": w(`{ "b" : 1.0 , "a" : "\u00e9\/" }`), "status": w(`17`),
		}},
		"deleted": {Seq: 4, Collection: syncproto.Entries, ID: "e1", Stamp: at, Fields: map[string]syncproto.Write{
			"_deleted": {Data: json.RawMessage(`true`), Seen: syncproto.Versions{"dme": 1}, Covers: syncproto.Versions{"dme": 1, "dother": 2}},
		}},
	}
}

func TestPrepare_SameAsWriter(t *testing.T) {
	newRecords := 0
	defer func() {
		if newRecords < 2 {
			t.Errorf("only %d changes made new records: the table does not test newRecordJSON", newRecords)
		}
	}()
	for name, c := range prepTestChanges() {
		t.Run(name, func(t *testing.T) {
			orig := cloneChange(&c)
			var p prepared
			if err := p.prepare(&c, testActor); err != nil {
				t.Fatal(err)
			}
			if p.invalid != nil {
				t.Fatalf("prepare marked a valid change invalid: %v", p.invalid)
			}
			if want := refDigest(&c); !bytes.Equal(p.digest, want) {
				t.Errorf("digest = %x, want %x", p.digest, want)
			}
			for k, w := range c.Fields {
				if !bytes.Equal(w.Data, orig.Fields[k].Data) {
					t.Errorf("prepare changed the pushed change's field %q", k)
				}
			}
			// The values are those ValidateChange leaves, so the state and
			// the log entry built from them are unchanged.
			for k, w := range c.Fields {
				want, err := syncproto.Canonical(w.Data)
				if err != nil {
					want = w.Data
				}
				if !bytes.Equal(p.ch.Fields[k].Data, want) {
					t.Errorf("field %q: prepared %s, want %s", k, p.ch.Fields[k].Data, want)
				}
			}
			v := cloneChange(&c)
			if syncproto.ValidateChange(v, nil, syncproto.Actor{User: "anouk", Device: "dme"}, nil) == nil {
				for k, w := range v.Fields {
					if !bytes.Equal(p.ch.Fields[k].Data, w.Data) {
						t.Errorf("field %q: prepared %s, ValidateChange made %s", k, p.ch.Fields[k].Data, w.Data)
					}
				}
			}
			if js, _ := syncproto.Marshal(p.ch); !bytes.Equal(js, p.js) {
				t.Errorf("js is not the prepared change's encoding")
			}
			if checkNewRecord(t, &c, &p) {
				newRecords++
			}
			st, _ := syncproto.Marshal(p.state)
			want, _ := syncproto.Marshal(p.ch.State("dme"))
			if !bytes.Equal(st, want) {
				t.Errorf("state = %s, want %s", st, want)
			}
		})
	}
	t.Run("ErrInvalid", func(t *testing.T) {
		c := syncproto.Change{Seq: 9, Collection: "nope", ID: "x", Stamp: 1, Fields: map[string]syncproto.Write{"a": {Data: json.RawMessage(`1`)}}}
		var p prepared
		if err := p.prepare(&c, testActor); err != nil {
			t.Fatal(err)
		}
		if !errors.Is(p.invalid, syncproto.ErrUnknownCollection) {
			t.Errorf("invalid = %v, want ErrUnknownCollection", p.invalid)
		}
	})
}

// checkNewRecord: what prepare made for a new record is what the writer
// made of the change on a record that does not exist yet.
func checkNewRecord(t *testing.T, c *syncproto.Change, p *prepared) (compared bool) {
	t.Helper()
	v := cloneChange(c)
	want := syncproto.ValidateChange(v, nil, testActor, anyCase{})
	if (want == nil) != (p.newInvalid == nil) || (want != nil && !errors.Is(p.newInvalid, syncproto.CodeOf(want).Err())) {
		t.Fatalf("newInvalid = %v, ValidateChange = %v", p.newInvalid, want)
	}
	if want != nil {
		return false
	}
	for _, area := range []string{"Zuilen", "Ondiep & <Noord>"} {
		rec := &syncproto.Record{Collection: v.Collection, ID: v.ID, Area: area}
		rec.Join(v.State(testActor.Device))
		if v.Collection == syncproto.Entries {
			rec.Area = area
		}
		wantJS, err := encodeChecked(rec)
		if err != nil {
			t.Fatal(err)
		}
		js, err := p.newRecordJSON(rec.Area)
		if err != nil || !bytes.Equal(js, wantJS) {
			t.Errorf("newRecordJSON(%q) = %s, %v, want %s", rec.Area, js, err, wantJS)
		}
		if got := len(rec.Conflicts()) > 0; got != p.newConflicted {
			t.Errorf("newConflicted = %v, want %v", p.newConflicted, got)
		}
	}
	return true
}

func TestEncodeLogEntry(t *testing.T) {
	at := time.Date(2026, 11, 28, 10, 0, 0, 123456789, time.UTC)
	for name, c := range prepTestChanges() {
		var p prepared
		if err := p.prepare(&c, testActor); err != nil {
			t.Fatal(err)
		}
		e := LogEntry{Device: "dme", User: "an<o>uk", Area: "Zuilen & co", Change: *p.ch, At: at}
		want, err := syncproto.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		for _, js := range [][]byte{p.js, nil} {
			got, err := encodeLogEntry(e, js)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s: encodeLogEntry = %s, want %s", name, got, want)
			}
		}
	}
}

func TestEncodeChecked(t *testing.T) {
	rec := func(text string, fields int) *syncproto.Record {
		r := &syncproto.Record{Collection: syncproto.Entries, ID: "e1", Area: "Zuilen", Fields: map[string]syncproto.Field{}}
		for i := range fields {
			name := "f" + strings.Repeat("x", i)
			r.Fields[name] = syncproto.Field{Values: []syncproto.Value{{Device: "dme", Seq: 1, Stamp: 1, Data: json.RawMessage(`"` + text + `"`)}}, Seen: syncproto.Versions{"dme": 1}}
		}
		return r
	}
	for name, r := range map[string]*syncproto.Record{
		"OK":              rec("hello", 3),
		"ErrTooManyField": rec("x", syncproto.MaxFields+1),
		"ErrTooLarge":     rec(strings.Repeat("a", syncproto.MaxText), 5),
	} {
		t.Run(name, func(t *testing.T) {
			js, err := encodeChecked(r)
			want := syncproto.CheckSize(r)
			if !errors.Is(err, syncproto.ErrRecordTooLarge) != !errors.Is(want, syncproto.ErrRecordTooLarge) || (err == nil) != (want == nil) {
				t.Fatalf("encodeChecked = %v, CheckSize = %v", err, want)
			}
			if err == nil {
				if m, _ := syncproto.Marshal(r); !bytes.Equal(js, m) {
					t.Errorf("encodeChecked JSON differs from Marshal")
				}
			} else {
				var a, b *syncproto.Error
				if !errors.As(err, &a) || !errors.As(want, &b) || a.Message != b.Message {
					t.Errorf("encodeChecked = %v, CheckSize = %v: the device must be told the same", err, want)
				}
			}
		})
	}
}
