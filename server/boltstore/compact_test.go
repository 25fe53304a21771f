package boltstore_test

import (
	"bytes"
	"encoding/json"
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
