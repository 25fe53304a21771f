package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/casesync/casesync/syncproto"
)

// testKDF keeps Argon2id cheap in tests; one test uses DefaultKDF.
var testKDF = KDFParams{Time: 1, MemoryKiB: 8 * 1024, Threads: 1}

func passKS(p string) keySource { return keySource{passphrase: []byte(p), kdf: testKDF} }

func storePath(t *testing.T) string { return filepath.Join(t.TempDir(), "sub", "replica.db") }

func openTest(t *testing.T, path string, ks keySource) *store {
	t.Helper()
	s, err := openStore(path, ks, time.Second)
	if err != nil {
		t.Fatalf("openStore: %v", err)
	}
	t.Cleanup(func() { s.close() })
	return s
}

func mustUpdate(t *testing.T, s *store, fn func(*stx) error) {
	t.Helper()
	if err := s.update(fn); err != nil {
		t.Fatalf("update: %v", err)
	}
}

func mustView(t *testing.T, s *store, fn func(*stx) error) {
	t.Helper()
	if err := s.view(fn); err != nil {
		t.Fatalf("view: %v", err)
	}
}

var t0 = time.Date(2025, 3, 14, 9, 30, 0, 0, time.UTC)

func str(s string) json.RawMessage { b, _ := json.Marshal(s); return b }

func field(dev string, seq uint64, v string) syncproto.Field {
	return syncproto.Field{
		Values: []syncproto.Value{{Device: dev, Seq: seq, Stamp: syncproto.MakeStamp(t0), Data: str(v)}},
		Seen:   syncproto.Versions{dev: seq},
	}
}

func caseRecord(id, area, tenant string) *syncproto.Record {
	return &syncproto.Record{Collection: syncproto.Cases, ID: id, Area: area, Fields: map[string]syncproto.Field{
		syncproto.FieldTenant: field("dev1", 1, tenant),
		syncproto.FieldArea:   field("dev1", 1, area),
	}}
}

func entryRecord(id, area, text string) *syncproto.Record {
	return &syncproto.Record{Collection: syncproto.Entries, ID: id, Area: area, Fields: map[string]syncproto.Field{
		syncproto.FieldText: field("dev1", 2, text),
	}}
}

func change(seq uint64, coll syncproto.Collection, id, text string) syncproto.Change {
	return syncproto.Edit(nil, coll, id, seq, syncproto.MakeStamp(t0), map[string]json.RawMessage{syncproto.FieldText: str(text)})
}

func sampleMeta(token, area string) Meta {
	return Meta{
		Device: "dev1", Server: "wss://sync.example.org/v1", Token: token, User: "u1", Role: "caseworker",
		Scope:      syncproto.Scope{Areas: []string{area}},
		Checkpoint: syncproto.Checkpoint{Epoch: "e1", Seq: 42, Areas: []string{area}},
		NextSeq:    7, ClockLast: syncproto.MakeStamp(t0), ClockOffsetMS: -120, LastSync: t0,
	}
}

func TestStoreRoundTrip(t *testing.T) {
	s := openTest(t, storePath(t), passKS("correct horse"))
	kc := syncproto.Key{Collection: syncproto.Cases, ID: "01HZCASE0000000000000000A1"}
	ke := syncproto.Key{Collection: syncproto.Entries, ID: "01HZENTRY000000000000000B1"}
	rc, re := caseRecord(kc.ID, "Zuilen", "Tenant A"), entryRecord(ke.ID, "Zuilen", "a note")
	m := sampleMeta("tok", "Zuilen")
	ch1, ch2 := change(1, kc.Collection, kc.ID, "x"), change(2, ke.Collection, ke.ID, "y")
	rej := Rejected{Change: change(3, ke.Collection, ke.ID, "z"), Error: syncproto.Error{Code: syncproto.CodeScope, Message: "no", Change: 3}, At: t0}

	mustView(t, s, func(tx *stx) error {
		got, err := tx.meta()
		if err != nil || !reflect.DeepEqual(got, Meta{}) {
			t.Errorf("meta of a new store = %+v, %v; want zero", got, err)
		}
		if _, ok, err := tx.record(kc); ok || err != nil {
			t.Errorf("record in a new store: %v %v", ok, err)
		}
		return nil
	})
	mustUpdate(t, s, func(tx *stx) error {
		return errors.Join(tx.putMeta(m), tx.putRecord(rc), tx.putRecord(re), tx.appendOutbox(ch1),
			tx.appendOutbox(ch2), tx.putRejected(rej), tx.markEvicted(kc))
	})
	var got *syncproto.Record
	mustView(t, s, func(tx *stx) error {
		if gm, err := tx.meta(); err != nil || !reflect.DeepEqual(gm, m) {
			t.Errorf("meta = %+v, %v; want %+v", gm, err, m)
		}
		var ok bool
		var err error
		if got, ok, err = tx.record(kc); !ok || err != nil || !reflect.DeepEqual(got, rc) {
			t.Errorf("record = %+v %v %v; want %+v", got, ok, err, rc)
		}
		var keys []syncproto.Key
		if err := tx.forEachRecord(func(r *syncproto.Record) error { keys = append(keys, r.Key()); return nil }); err != nil {
			t.Error(err)
		}
		if !slices.Equal(keys, []syncproto.Key{kc, ke}) {
			t.Errorf("forEachRecord keys = %v", keys)
		}
		if ob, err := tx.outbox(); err != nil || !reflect.DeepEqual(ob, []syncproto.Change{ch1, ch2}) {
			t.Errorf("outbox = %+v, %v", ob, err)
		}
		if ob, err := tx.outboxFor(ke); err != nil || !reflect.DeepEqual(ob, []syncproto.Change{ch2}) {
			t.Errorf("outboxFor = %+v, %v", ob, err)
		}
		if n, err := tx.outboxLen(); n != 2 || err != nil {
			t.Errorf("outboxLen = %d, %v", n, err)
		}
		if rj, err := tx.rejected(); err != nil || !reflect.DeepEqual(rj, []Rejected{rej}) {
			t.Errorf("rejected = %+v, %v", rj, err)
		}
		if ev, err := tx.isEvicted(kc); !ev || err != nil {
			t.Errorf("isEvicted(case) = %v, %v", ev, err)
		}
		if ev, err := tx.isEvicted(ke); ev || err != nil {
			t.Errorf("isEvicted(entry) = %v, %v", ev, err)
		}
		return nil
	})
	// What a read returns is the caller's: changing it changes nothing stored.
	got.Fields[syncproto.FieldTenant].Values[0].Data[1] = 'X'
	delete(got.Fields, syncproto.FieldArea)
	mustView(t, s, func(tx *stx) error {
		if again, _, _ := tx.record(kc); !reflect.DeepEqual(again, rc) {
			t.Errorf("stored record changed through a returned copy: %+v", again)
		}
		return nil
	})

	mustUpdate(t, s, func(tx *stx) error {
		return errors.Join(tx.deleteRecord(kc), tx.removeOutbox(1, ch1.Key()), tx.removeRejected(3), tx.clearEvicted(kc))
	})
	mustView(t, s, func(tx *stx) error {
		if _, ok, err := tx.record(kc); ok || err != nil {
			t.Errorf("deleted record still there: %v %v", ok, err)
		}
		if ob, _ := tx.outboxFor(kc); len(ob) != 0 {
			t.Errorf("outboxFor after remove = %+v", ob)
		}
		if rj, _ := tx.rejected(); len(rj) != 0 {
			t.Errorf("rejected after remove = %+v", rj)
		}
		if ev, _ := tx.isEvicted(kc); ev {
			t.Error("still evicted after clearEvicted")
		}
		return nil
	})
}

func TestStoreRejectsBadInput(t *testing.T) {
	s := openTest(t, storePath(t), passKS("pw"))
	bad := []struct {
		name string
		fn   func(*stx) error
	}{
		{"nil record", func(tx *stx) error { return tx.putRecord(nil) }},
		{"ID with a slash", func(tx *stx) error { return tx.putRecord(caseRecord("a/b", "Z", "T")) }},
		{"empty ID", func(tx *stx) error { return tx.putRecord(caseRecord("", "Z", "T")) }},
		{"seq 0 outbox", func(tx *stx) error { return tx.appendOutbox(change(0, syncproto.Cases, "c1", "x")) }},
		{"seq 0 rejected", func(tx *stx) error { return tx.putRejected(Rejected{}) }},
		{"duplicate seq", func(tx *stx) error {
			if err := tx.appendOutbox(change(9, syncproto.Cases, "c1", "x")); err != nil {
				return nil
			}
			return tx.appendOutbox(change(9, syncproto.Cases, "c2", "y"))
		}},
	}
	for _, tc := range bad {
		if err := s.update(tc.fn); err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
}

func TestStoreReopenKeepsEverything(t *testing.T) {
	path := storePath(t)
	s := openTest(t, path, passKS("pw"))
	k := syncproto.Key{Collection: syncproto.Entries, ID: "e1"}
	m := sampleMeta("tok", "Lombok")
	mustUpdate(t, s, func(tx *stx) error {
		return errors.Join(tx.putMeta(m), tx.putRecord(entryRecord("e1", "Lombok", "n")),
			tx.appendOutbox(change(1, k.Collection, k.ID, "o")), tx.putRejected(Rejected{Change: change(2, k.Collection, k.ID, "r"), At: t0}),
			tx.markEvicted(k))
	})
	if err := s.close(); err != nil {
		t.Fatal(err)
	}
	if err := s.close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	s = openTest(t, path, passKS("pw"))
	mustView(t, s, func(tx *stx) error {
		gm, err1 := tx.meta()
		r, ok, err2 := tx.record(k)
		ob, err3 := tx.outboxFor(k)
		rj, err4 := tx.rejected()
		ev, err5 := tx.isEvicted(k)
		if err := errors.Join(err1, err2, err3, err4, err5); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(gm, m) || !ok || !reflect.DeepEqual(r, entryRecord("e1", "Lombok", "n")) ||
			len(ob) != 1 || ob[0].Seq != 1 || len(rj) != 1 || rj[0].Change.Seq != 2 || !ev {
			t.Errorf("after reopen: meta %+v, record %+v %v, outbox %+v, rejected %+v, evicted %v", gm, r, ok, ob, rj, ev)
		}
		return nil
	})
}

func TestOutboxOrderAndIndex(t *testing.T) {
	s := openTest(t, storePath(t), passKS("pw"))
	keys := []syncproto.Key{{Collection: syncproto.Cases, ID: "A"}, {Collection: syncproto.Cases, ID: "A-1"}, {Collection: syncproto.Entries, ID: "A"}}
	// Appended out of order, across transactions: order comes from Seq.
	keyOf := func(seq uint64) syncproto.Key { return keys[int(seq)%len(keys)] }
	seqs := []uint64{5, 1, 9, 3, 2, 8, 4, 7, 6, 10, 12, 11, 256, 255, 257}
	for i, seq := range seqs {
		k := keyOf(seq)
		c := change(seq, k.Collection, k.ID, fmt.Sprint("v", seq))
		mustUpdate(t, s, func(tx *stx) error { return tx.appendOutbox(c) })
		if i == 7 {
			mustUpdate(t, s, func(tx *stx) error {
				return errors.Join(tx.removeOutbox(4, keyOf(4)), tx.removeOutbox(999, keyOf(999)))
			})
		}
	}
	mustUpdate(t, s, func(tx *stx) error {
		return errors.Join(tx.removeOutbox(9, keyOf(9)), tx.removeOutbox(256, keyOf(256)), tx.removeOutbox(9, keyOf(9)))
	})

	want := []uint64{1, 2, 3, 5, 6, 7, 8, 10, 11, 12, 255, 257}
	mustView(t, s, func(tx *stx) error {
		all, err := tx.outbox()
		if err != nil {
			t.Fatal(err)
		}
		var got []uint64
		for _, c := range all {
			got = append(got, c.Seq)
		}
		if !slices.Equal(got, want) {
			t.Errorf("outbox seqs = %v, want %v", got, want)
		}
		if n, _ := tx.outboxLen(); n != len(want) {
			t.Errorf("outboxLen = %d, want %d", n, len(want))
		}
		total := 0
		for _, k := range keys {
			per, err := tx.outboxFor(k)
			if err != nil {
				t.Fatal(err)
			}
			var wantPer []syncproto.Change
			for _, c := range all {
				if c.Key() == k {
					wantPer = append(wantPer, c)
				}
			}
			if !reflect.DeepEqual(per, wantPer) {
				t.Errorf("outboxFor(%s) = %+v, want %+v", k, per, wantPer)
			}
			total += len(per)
		}
		if n := tx.tx.Bucket(bucketOutboxIdx).Stats().KeyN; n != len(want) || total != len(want) {
			t.Errorf("index holds %d entries, outboxFor found %d; outbox holds %d", n, total, len(want))
		}
		return nil
	})
}

func TestForEachRecordOrderAndPurge(t *testing.T) {
	s := openTest(t, storePath(t), passKS("pw"))
	var want []syncproto.Key
	mustUpdate(t, s, func(tx *stx) error {
		for i := 20; i > 0; i-- {
			e, c := entryRecord(fmt.Sprintf("E%02d", i), "B", "t"), caseRecord(fmt.Sprintf("C%02d", i), "B", "n")
			if i%2 == 0 {
				e.Area, c.Area = "A", "A"
			}
			if err := errors.Join(tx.putRecord(e), tx.putRecord(c)); err != nil {
				return err
			}
		}
		return nil
	})
	for _, coll := range []syncproto.Collection{syncproto.Cases, syncproto.Entries} {
		for i := 1; i <= 20; i++ {
			want = append(want, syncproto.Key{Collection: coll, ID: fmt.Sprintf("%c%02d", coll[0]-'a'+'A', i)})
		}
	}
	// A purge deletes while iterating: every record must still be seen once.
	var seen []syncproto.Key
	mustUpdate(t, s, func(tx *stx) error {
		return tx.forEachRecord(func(r *syncproto.Record) error {
			seen = append(seen, r.Key())
			if r.Area != "A" {
				return tx.deleteRecord(r.Key())
			}
			return nil
		})
	})
	if !slices.Equal(seen, want) {
		t.Errorf("forEachRecord order = %v\nwant %v", seen, want)
	}
	n := 0
	mustView(t, s, func(tx *stx) error {
		return tx.forEachRecord(func(r *syncproto.Record) error {
			n++
			if r.Area != "A" {
				t.Errorf("%s survived the purge", r.Key())
			}
			return nil
		})
	})
	if n != 20 {
		t.Errorf("%d records left, want 20", n)
	}
}

func TestUpdateRollbackLeavesNothing(t *testing.T) {
	s := openTest(t, storePath(t), passKS("pw"))
	k := syncproto.Key{Collection: syncproto.Cases, ID: "c1"}
	boom := errors.New("boom")
	err := s.update(func(tx *stx) error {
		if err := errors.Join(tx.putMeta(sampleMeta("t", "a")), tx.putRecord(caseRecord("c1", "a", "T")),
			tx.appendOutbox(change(1, k.Collection, k.ID, "x")), tx.putRejected(Rejected{Change: change(2, k.Collection, k.ID, "y")}),
			tx.markEvicted(k)); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("update returned %v, want boom", err)
	}
	mustView(t, s, func(tx *stx) error {
		m, _ := tx.meta()
		_, ok, _ := tx.record(k)
		n, _ := tx.outboxLen()
		ix, _ := tx.outboxFor(k)
		rj, _ := tx.rejected()
		ev, _ := tx.isEvicted(k)
		if !reflect.DeepEqual(m, Meta{}) || ok || n != 0 || len(ix) != 0 || len(rj) != 0 || ev {
			t.Errorf("rolled-back writes visible: meta %+v record %v outbox %d index %d rejected %d evicted %v", m, ok, n, len(ix), len(rj), ev)
		}
		return nil
	})
}

func TestClosedStore(t *testing.T) {
	s := openTest(t, storePath(t), passKS("pw"))
	var kept *stx
	mustView(t, s, func(tx *stx) error { kept = tx; return nil })
	if _, err := kept.meta(); err == nil {
		t.Error("a transaction used after it ended gave no error")
	}
	if err := s.close(); err != nil {
		t.Fatal(err)
	}
	noop := func(*stx) error { return nil }
	for name, err := range map[string]error{"view": s.view(noop), "update": s.update(noop), "compact": s.compact(), "close": s.close()} {
		if want := error(ErrClosed); name == "close" {
			if err != nil {
				t.Errorf("close after close = %v", err)
			}
		} else if !errors.Is(err, want) {
			t.Errorf("%s after close = %v, want ErrClosed", name, err)
		}
	}
}

func TestSecondOpenIsLocked(t *testing.T) {
	path := storePath(t)
	s := openTest(t, path, passKS("pw"))
	const timeout = 200 * time.Millisecond
	start := time.Now()
	s2, err := openStore(path, passKS("pw"), timeout)
	if elapsed := time.Since(start); !errors.Is(err, ErrLocked) || elapsed > timeout+2*time.Second {
		if s2 != nil {
			s2.close()
		}
		t.Fatalf("second open = %v after %v; want ErrLocked within about %v", err, elapsed, timeout)
	}
	if err := wipeStore(path); !errors.Is(err, ErrLocked) {
		t.Errorf("wipe of an open store = %v, want ErrLocked", err)
	}
	s.close()
	openTest(t, path, passKS("pw"))
}

func TestConcurrentReadersAndWriter(t *testing.T) {
	s := openTest(t, storePath(t), passKS("pw"))
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 25 {
				if g == 0 {
					r := caseRecord(fmt.Sprintf("c%03d", i), "A", "T")
					if err := s.update(func(tx *stx) error { return tx.putRecord(r) }); err != nil {
						t.Error(err)
					}
					continue
				}
				if err := s.view(func(tx *stx) error { return tx.forEachRecord(func(*syncproto.Record) error { return nil }) }); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
}

func TestWipeStore(t *testing.T) {
	path := storePath(t)
	s := openTest(t, path, passKS("pw"))
	mustUpdate(t, s, func(tx *stx) error { return tx.putMeta(sampleMeta("tok", "A")) })
	s.close()
	if err := os.WriteFile(path+compactSuffix, []byte("leftover"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := wipeStore(path); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, path + compactSuffix} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still there after wipe: %v", p, err)
		}
	}
	if err := wipeStore(path); err != nil {
		t.Errorf("wipe of a missing store = %v", err)
	}
	// A wiped store starts afresh, with any passphrase.
	s = openTest(t, path, passKS("another"))
	mustView(t, s, func(tx *stx) error {
		if m, _ := tx.meta(); m.Token != "" {
			t.Error("data survived the wipe")
		}
		return nil
	})
}

func TestFileModes(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no Unix permissions")
	}
	path := storePath(t)
	s := openTest(t, path, passKS("pw"))
	mustUpdate(t, s, func(tx *stx) error { return tx.putMeta(Meta{Device: "d"}) })
	s.close()
	for p, want := range map[string]os.FileMode{path: 0o600, filepath.Dir(path): 0o700} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, %v; want %v", p, fi.Mode().Perm(), err, want)
		}
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	openTest(t, path, passKS("pw")).close()
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("a lax mode was not tightened: %v", fi.Mode().Perm())
	}
}
