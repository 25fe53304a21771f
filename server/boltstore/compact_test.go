package boltstore_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/casesync/casesync/server"
	"github.com/casesync/casesync/server/boltstore"
	"github.com/casesync/casesync/syncproto"
)

// Records stored in either form (compact.go) read back as the JSON they
// were stored as, through Record, Scan and ScanRaw, and stay so when an
// edit turns a compact record into one that is not.
func TestStore_StateForms(t *testing.T) {
	s := MustOpenStore(t, nil)
	note := entryRecord("e1", "c1", "Zuilen")   // one write: compact
	quoted := caseRecord("c2", `Zuilen "west"`) // an area JSON escapes: JSON
	conflicted := caseRecord("c3", "Zuilen")    // two values of one field: JSON
	f := conflicted.Fields[syncproto.FieldTitle]
	f.Values = append(f.Values, syncproto.Value{Device: "d2", Seq: 4, Stamp: 1, Data: json.RawMessage(`"Lekkage"`)})
	f.Seen = syncproto.Versions{"d1": 1, "d2": 4}
	conflicted.Fields[syncproto.FieldTitle] = f
	recs := []*syncproto.Record{caseRecord("c1", "Zuilen"), note, quoted, conflicted}
	put(t, s, recs...)

	// An edit of the note by another write: its state is no longer one write's.
	edited := note.Clone()
	edited.Join(&syncproto.Record{Collection: note.Collection, ID: note.ID, Fields: map[string]syncproto.Field{
		syncproto.FieldText: {Values: []syncproto.Value{{Device: "d1", Seq: 2, Stamp: 2 << 16, Data: json.RawMessage(`"visit e1, later"`)}}, Seen: syncproto.Versions{"d1": 2}},
	}})
	put(t, s, edited)
	recs[1] = edited

	want := map[syncproto.Key][]byte{}
	for _, r := range recs {
		js, err := syncproto.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		want[r.Key()] = js
	}
	mustView(t, s, func(tx server.Tx) error {
		for k, js := range want {
			r, _, err := tx.Record(k)
			if err != nil {
				t.Fatalf("Record(%s): %v", k, err)
			}
			if got, _ := syncproto.Marshal(r); !bytes.Equal(got, js) {
				t.Errorf("Record(%s) = %s\nwant %s", k, got, js)
			}
		}
		after := map[string]uint64{"Zuilen": 0, `Zuilen "west"`: 0}
		n := 0
		err := tx.ScanRaw(after, 1<<62, func(it server.Item) (bool, error) {
			n++
			if !bytes.Equal(it.Raw, want[it.Key]) {
				t.Errorf("ScanRaw %s = %s\nwant %s", it.Key, it.Raw, want[it.Key])
			}
			return true, nil
		})
		if err != nil || n != len(want) {
			t.Errorf("ScanRaw gave %d items, %v; want %d", n, err, len(want))
		}
		return tx.Scan(after, 1<<62, func(it server.Item) (bool, error) {
			if got, _ := syncproto.Marshal(it.Record); !bytes.Equal(got, want[it.Key]) {
				t.Errorf("Scan %s = %s\nwant %s", it.Key, got, want[it.Key])
			}
			return true, nil
		})
	})
}

// A format 1 store (JSON states only) opens and is marked format 2, which
// an older casesyncd refuses; an unknown format is refused.
func TestOpen_Format(t *testing.T) {
	path := filepath.Join(t.TempDir(), "casesync.db")
	setFormat := func(f string) {
		t.Helper()
		db, err := bolt.Open(path, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte("meta")).Put([]byte("format"), []byte(f)) }); err != nil {
			t.Fatal(err)
		}
	}
	format := func() string {
		t.Helper()
		db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		var f string
		_ = db.View(func(tx *bolt.Tx) error { f = string(tx.Bucket([]byte("meta")).Get([]byte("format"))); return nil })
		return f
	}
	s, err := boltstore.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	put(t, s, caseRecord("c1", "Zuilen"))
	s.Close()
	if f := format(); f != "2" {
		t.Fatalf("a new store has format %q, want 2", f)
	}

	setFormat("1")
	s, err = boltstore.Open(path, nil)
	if err != nil {
		t.Fatalf("Open of a format 1 store: %v", err)
	}
	mustView(t, s, func(tx server.Tx) error {
		_, _, err := tx.Record(syncproto.Key{Collection: syncproto.Cases, ID: "c1"})
		return err
	})
	s.Close()
	if f := format(); f != "2" {
		t.Errorf("after Open, a format 1 store has format %q, want 2", f)
	}

	setFormat("3")
	if _, err := boltstore.Open(path, nil); err == nil || !strings.Contains(err.Error(), `store format "3"`) {
		t.Errorf("Open of a format 3 store: %v, want a refusal naming the format", err)
	}
}

// testdata/format1.db was written by the format 1 code (d4dfefe): cases
// c1 (Zuilen), c2 (Ondiep, then moved to Lombok), c3 (Zuilen, two values
// of its title, an open conflict), entries e1 (Zuilen) and e2 (Ondiep).
// Format 2 opens it, reads every record as it was, and goes on writing
// compact states beside its JSON ones.
func TestOpen_Format1File(t *testing.T) {
	src, err := os.ReadFile(filepath.Join("testdata", "format1.db"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "casesync.db")
	if err := os.WriteFile(path, src, 0o600); err != nil {
		t.Fatal(err)
	}
	conflicted := caseRecord("c3", "Zuilen")
	f := conflicted.Fields[syncproto.FieldTitle]
	f.Values = append(f.Values, syncproto.Value{Device: "d2", Seq: 4, Stamp: 1, Data: json.RawMessage(`"Lekkage"`)})
	f.Seen = syncproto.Versions{"d1": 1, "d2": 4}
	conflicted.Fields[syncproto.FieldTitle] = f
	want := map[syncproto.Key]*syncproto.Record{}
	for _, r := range []*syncproto.Record{caseRecord("c1", "Zuilen"), entryRecord("e1", "c1", "Zuilen"), caseRecord("c2", "Lombok"), entryRecord("e2", "c2", "Ondiep"), conflicted} {
		want[r.Key()] = r
	}
	check := func(s *boltstore.Store) {
		t.Helper()
		mustView(t, s, func(tx server.Tx) error {
			for k, r := range want {
				got, _, err := tx.Record(k)
				if err != nil {
					t.Fatalf("Record(%s): %v", k, err)
				}
				g, _ := syncproto.Marshal(got)
				w, _ := syncproto.Marshal(r)
				if !bytes.Equal(g, w) {
					t.Errorf("Record(%s) = %s\nwant %s", k, g, w)
				}
			}
			var moved []string
			err := tx.ScanRaw(map[string]uint64{"Zuilen": 0, "Ondiep": 0, "Lombok": 0}, 1<<62, func(it server.Item) (bool, error) {
				if it.MovedTo != "" {
					moved = append(moved, it.Key.ID+"→"+it.MovedTo)
					return true, nil
				}
				if w, _ := syncproto.Marshal(want[it.Key]); !bytes.Equal(it.Raw, w) {
					t.Errorf("ScanRaw %s in %s = %s\nwant %s", it.Key, it.Area, it.Raw, w)
				}
				return true, nil
			})
			if err != nil || len(moved) != 1 || moved[0] != "c2→Lombok" {
				t.Errorf("ScanRaw: eviction markers %v, %v; want c2→Lombok", moved, err)
			}
			n := 0
			err = tx.Conflicts(func(k syncproto.Key, area string) error {
				n++
				if k != conflicted.Key() || area != "Zuilen" {
					t.Errorf("conflict %s in %q, want %s in Zuilen", k, area, conflicted.Key())
				}
				return nil
			})
			if err != nil || n != 1 {
				t.Errorf("conflicts: %d, %v; want 1", n, err)
			}
			return nil
		})
	}
	s, err := boltstore.Open(path, nil)
	if err != nil {
		t.Fatalf("Open of a format 1 file: %v", err)
	}
	check(s)
	note := entryRecord("e3", "c1", "Zuilen") // one write: stored compact
	put(t, s, note)
	want[note.Key()] = note
	check(s)
	s.Close()
	s, err = boltstore.Open(path, nil)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s.Close()
	check(s)
}
