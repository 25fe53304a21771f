package boltstore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"testing/synctest"

	"github.com/casesync/casesync/server"
	"github.com/casesync/casesync/server/boltstore"
	"github.com/casesync/casesync/syncproto"
)

func TestTx_RecordArea(t *testing.T) {
	s := MustOpenStore(t, nil)
	put(t, s, caseRecord("c1", "X"), entryRecord("e1", "c1", "X"), caseRecord("c1", "Y"))
	tests := []struct {
		key     syncproto.Key
		want    string
		wantErr error
	}{
		{syncproto.Key{Collection: syncproto.Cases, ID: "c1"}, "Y", nil}, // moved: the head follows
		{syncproto.Key{Collection: syncproto.Entries, ID: "e1"}, "X", nil},
		{syncproto.Key{Collection: syncproto.Cases, ID: "c9"}, "", server.ErrNotFound},
	}
	mustView(t, s, func(tx server.Tx) error {
		for _, tt := range tests {
			got, err := tx.RecordArea(tt.key)
			if got != tt.want || !errors.Is(err, tt.wantErr) {
				t.Errorf("RecordArea(%s) = %q, %v, want %q, %v", tt.key, got, err, tt.want, tt.wantErr)
			}
			if err == nil {
				r, _, err := tx.Record(tt.key)
				if err != nil || r.Area != got {
					t.Errorf("RecordArea(%s) = %q, but Record says %q (%v)", tt.key, got, r.Area, err)
				}
			}
		}
		return nil
	})
}

func TestTx_PutRecordJSON(t *testing.T) {
	s := MustOpenStore(t, nil)
	r := entryRecord("e1", "c1", "X")
	js, err := syncproto.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	mustUpdate(t, s, func(tx server.Tx) error { return tx.PutRecordJSON(r, js, 1) })
	mustView(t, s, func(tx server.Tx) error {
		got, seq, err := tx.Record(r.Key())
		if err != nil {
			return err
		}
		if seq != 1 || !reflect.DeepEqual(got, r) {
			t.Errorf("Record = %+v at %d, want %+v at 1", got, seq, r)
		}
		if ids, _ := tx.CaseEntries("c1"); len(ids) != 1 || ids[0] != "e1" {
			t.Errorf("CaseEntries(c1) = %v, want [e1]: PutRecordJSON must index like PutRecord", ids)
		}
		return nil
	})
	if err := s.Update(context.Background(), func(tx server.Tx) error { return tx.PutRecordJSON(r, nil, 2) }); err == nil {
		t.Error("PutRecordJSON without JSON succeeded")
	}
}

// TestTx_ScanRaw: ScanRaw visits the same items as Scan, with each record
// as the JSON that Scan decodes, byte for byte what Marshal makes of it.
func TestTx_ScanRaw(t *testing.T) {
	s := MustOpenStore(t, nil)
	put(t, s,
		caseRecord("a1", "A"), entryRecord("e1", "a1", "A"), caseRecord("b1", "B"),
		caseRecord("a1", "B"), // a marker in A
		record(syncproto.Cases, "c<&>", "A", map[string]string{"title": "Vocht \u2028 <b>&amp;</b> \"quoted\"\n"}),
	)
	after := map[string]uint64{"A": 0, "B": 0}
	var decoded, raw []server.Item
	mustView(t, s, func(tx server.Tx) error {
		if err := tx.Scan(after, 100, func(it server.Item) (bool, error) { decoded = append(decoded, it); return true, nil }); err != nil {
			return err
		}
		return tx.ScanRaw(after, 100, func(it server.Item) (bool, error) { raw = append(raw, it); return true, nil })
	})
	if len(raw) != len(decoded) || len(raw) != 5 {
		t.Fatalf("ScanRaw gave %d items, Scan %d, want 5", len(raw), len(decoded))
	}
	markers := 0
	for i, it := range raw {
		d := decoded[i]
		if it.Seq != d.Seq || it.Area != d.Area || it.Key != d.Key || it.MovedTo != d.MovedTo || it.Record != nil {
			t.Errorf("item %d: ScanRaw %+v, Scan %+v", i, it, d)
		}
		if d.Record == nil {
			markers++
			if it.Raw != nil {
				t.Errorf("item %d: a marker with Raw %s", i, it.Raw)
			}
			continue
		}
		want, err := syncproto.Marshal(d.Record)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(it.Raw, want) {
			t.Errorf("item %d: Raw = %s, want %s", i, it.Raw, want)
		}
	}
	if markers != 1 {
		t.Errorf("%d markers, want 1", markers)
	}
}

// TestStore_MaxWeight: queued updates share a commit only up to MaxWeight;
// the one that would go over opens the next commit, and an update heavier
// than the cap commits alone.
func TestStore_MaxWeight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := MustOpenStore(t, &boltstore.Options{MaxWeight: 100})
		release, gated := gate(t, s)
		var (
			wg    sync.WaitGroup
			mu    sync.Mutex
			order []int
		)
		weights := []int{40, 40, 40, 250, 10}
		for i, w := range weights {
			wg.Go(func() {
				err := s.UpdateWeight(context.Background(), w, func(tx server.Tx) error {
					mu.Lock()
					order = append(order, i)
					mu.Unlock()
					_, err := tx.NextSeq()
					return err
				})
				if err != nil {
					t.Errorf("UpdateWeight %d: %v", i, err)
				}
			})
			synctest.Wait() // queued in this order
		}
		before := s.Stats().Commits
		release()
		wg.Wait()
		if err := <-gated; err != nil {
			t.Fatal(err)
		}
		// {40,40} | {40} (250 would overflow) | {250} alone | {10}.
		if got := s.Stats().Commits - before; got != 5 {
			t.Errorf("%d commits after the gate (gate included), want 5", got)
		}
		if fmt.Sprint(order) != "[0 1 2 3 4]" {
			t.Errorf("updates ran in order %v, want queue order", order)
		}
	})
}
