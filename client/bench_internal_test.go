package client

// White-box micro-benchmarks of the replica on dataset-like records (the
// shared caseload, or a synthetic one of its shape): the store work of a
// cold pull (applyChanges' loop, putRecord), the whole-replica reads that
// every sync round ends with (allVisible, via conflicts), the outbox read
// that pushMore repeats, and a durable local write. The store uses the
// tests' cheap KDF: unlocking is not what is measured.
//
//	go test -run '^$' -bench . -benchmem ./client

import (
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/casesync/casesync/internal/caseload"
	"github.com/casesync/casesync/syncproto"
)

const benchDevice = "dlaptopbram00000001"

var (
	benchOnce sync.Once
	benchSet  *caseload.Dataset
	benchRecs []syncproto.Record // every record, as the server files it
	benchChs  []syncproto.Change // the changes that made them
	benchErr  error
)

func benchData(b *testing.B) ([]syncproto.Record, []syncproto.Change) {
	b.Helper()
	benchOnce.Do(func() {
		if benchSet, _, benchErr = caseload.Default(); benchErr == nil {
			benchChs, benchRecs, benchErr = benchSet.Batch(0, benchDevice)
		}
	})
	if benchErr != nil {
		b.Fatal(benchErr)
	}
	return benchRecs, benchChs
}

func benchStore(b *testing.B) *store {
	b.Helper()
	s, err := openStore(filepath.Join(b.TempDir(), "replica.db"), passKS("bench"), time.Second)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.close() })
	return s
}

// filled returns a store holding the first n records, filed 500 per
// transaction as a cold pull files them, and the meta of an enrolled
// caseworker who sees every area.
func filled(b *testing.B, n int) *store {
	b.Helper()
	recs, _ := benchData(b)
	s := benchStore(b)
	n = min(n, len(recs))
	for i := 0; i < n; i += 500 {
		err := s.update(func(tx *stx) error {
			for j := i; j < min(i+500, n); j++ {
				if err := tx.putRecord(&recs[j]); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	m := Meta{Device: benchDevice, Server: "http://127.0.0.1:8420", Token: "cs_bench", User: "w-bram",
		Role: "caseworker", Scope: syncproto.Scope{Areas: benchSet.Areas()}, NextSeq: 1}
	if err := s.update(func(tx *stx) error { return tx.putMeta(m) }); err != nil {
		b.Fatal(err)
	}
	return s
}

// BenchmarkStorePutRecord500 is one fsync'd transaction sealing and
// storing 500 note states: the floor of a cold pull's per-batch work.
func BenchmarkStorePutRecord500(b *testing.B) {
	recs, _ := benchData(b)
	notes := recs[len(benchSet.Cases):][:500]
	s := benchStore(b)
	b.ReportAllocs()
	for b.Loop() {
		err := s.update(func(tx *stx) error {
			for i := range notes {
				if err := tx.putRecord(&notes[i]); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(notes))/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkApplyChanges500 is applyChanges' transaction for a batch of 500
// note states the replica already holds (what a repeated pull does; a
// cold pull's lookups miss and skip the join): look up, join, seal and
// store each, clear its eviction mark.
func BenchmarkApplyChanges500(b *testing.B) {
	recs, _ := benchData(b)
	notes := recs[len(benchSet.Cases):][:500]
	s := benchStore(b)
	msg := &syncproto.Changes{Records: notes}
	b.ReportAllocs()
	for b.Loop() {
		err := s.update(func(tx *stx) error {
			for i := range msg.Records {
				in := &msg.Records[i]
				base, ok, err := tx.record(in.Key())
				if err != nil {
					return err
				}
				if ok {
					base.Join(in)
				} else {
					base = in.Clone()
				}
				if err := tx.putRecord(base); err != nil {
					return err
				}
				if err := tx.clearEvicted(in.Key()); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(notes))/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkAllVisible reads the whole replica as Status, Cases and every
// sync round's end (Client.conflicts) do: each record is decrypted and
// decoded to list the keys, then again by visible. Sizes: a caseworker's
// area (~2,000) and the whole caseload (21,000).
func BenchmarkAllVisible(b *testing.B) {
	for _, n := range []int{2000, 21000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			s := filled(b, n)
			b.ReportAllocs()
			for b.Loop() {
				err := s.view(func(tx *stx) error {
					m, err := tx.meta()
					if err != nil {
						return err
					}
					_, err = allVisible(tx, m)
					return err
				})
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkOutbox reads an outbox of 4,000 pending notes (a caseworker's
// share of an import), as pushMore does before every push it sends and
// after every message it receives.
func BenchmarkOutbox(b *testing.B) {
	_, chs := benchData(b)
	pending := chs[len(benchSet.Cases):][:4000]
	s := benchStore(b)
	for i := 0; i < len(pending); i += 500 {
		err := s.update(func(tx *stx) error {
			for _, c := range pending[i:min(i+500, len(pending))] {
				if err := tx.appendOutbox(c); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		err := s.view(func(tx *stx) error {
			out, err := tx.outbox()
			if len(out) != len(pending) {
				return fmt.Errorf("outbox holds %d", len(out))
			}
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAddEntry is a durable local note (Client.AddEntry: validate
// against the replica, append to the outbox, fsync) on a replica holding
// the whole caseload.
func BenchmarkAddEntry(b *testing.B) {
	recs, _ := benchData(b)
	s := filled(b, len(recs))
	c := &Client{opts: Options{Now: time.Now}, st: s, clock: syncproto.NewClock(time.Now, 0),
		ids: syncproto.NewIDGenerator(nil), subs: map[chan Event]struct{}{}, kick: make(chan struct{}, 1)}
	caseID := recs[0].ID
	text := benchSet.Notes[0].Text
	b.ReportAllocs()
	for b.Loop() {
		_, err := c.AddEntry(b.Context(), caseID, map[string]any{
			syncproto.FieldKind: syncproto.KindVisit, syncproto.FieldText: text, "duration_min": 45})
		if err != nil {
			b.Fatal(err)
		}
	}
}
