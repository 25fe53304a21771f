package boltstore_test

// Micro-benchmarks of the server store on dataset-like records (the shared
// caseload, or a synthetic one of its shape): what a push of 500 notes
// costs the store, and what a pull of 500 costs it.
//
//	go test -run '^$' -bench . -benchmem ./server/boltstore

import (
	"context"
	"crypto/sha256"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/casesync/casesync/internal/caseload"
	"github.com/casesync/casesync/server"
	"github.com/casesync/casesync/server/boltstore"
	"github.com/casesync/casesync/syncproto"
)

const applyBatch = 500

var (
	applyOnce  sync.Once
	applyCases []syncproto.Record // every case, filed first
	applyNotes []syncproto.Record // note states, as the server files them
	applyChs   []syncproto.Change // the changes that made them
	applyErr   error
)

func applyData(b *testing.B) ([]syncproto.Record, []syncproto.Record, []syncproto.Change) {
	b.Helper()
	applyOnce.Do(func() {
		d, _, err := caseload.Default()
		if err != nil {
			applyErr = err
			return
		}
		chs, recs, err := d.Batch(len(d.Cases)+4*applyBatch, "dlaptopbram00000001")
		if err != nil {
			applyErr = err
			return
		}
		applyCases, applyNotes, applyChs = recs[:len(d.Cases)], recs[len(d.Cases):], chs[len(d.Cases):]
	})
	if applyErr != nil {
		b.Fatal(applyErr)
	}
	return applyCases, applyNotes, applyChs
}

// loadedStore returns a store holding every case, so that entries find
// theirs, as on a server that has the caseload's cases.
func loadedStore(b *testing.B) *boltstore.Store {
	b.Helper()
	cases, _, _ := applyData(b)
	st := MustOpenStore(b, nil)
	err := st.Update(context.Background(), func(tx server.Tx) error {
		for i := range cases {
			seq, err := tx.NextSeq()
			if err != nil {
				return err
			}
			if err := tx.PutRecord(&cases[i], seq); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return st
}

// renamed returns the batch under fresh IDs, so every iteration files new
// records as a push of new notes does.
func renamed(recs []syncproto.Record, iter int) []syncproto.Record {
	out := make([]syncproto.Record, len(recs))
	for i := range recs {
		out[i] = recs[i]
		out[i].ID = fmt.Sprintf("%s-%d", recs[i].ID, iter)
	}
	return out
}

// BenchmarkUpdatePutRecords500 is one Update (one fsync'd commit) filing
// 500 new note states: the store's share of a push, without the server's
// checks.
func BenchmarkUpdatePutRecords500(b *testing.B) {
	_, notes, _ := applyData(b)
	st := loadedStore(b)
	iter := 0
	b.ReportAllocs()
	for b.Loop() {
		batch := renamed(notes[:applyBatch], iter)
		iter++
		err := st.Update(context.Background(), func(tx server.Tx) error {
			for i := range batch {
				seq, err := tx.NextSeq()
				if err != nil {
					return err
				}
				if err := tx.PutRecord(&batch[i], seq); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*applyBatch)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkUpdateApply500 is one Update making every store call the server
// makes to accept 500 new notes (server.applyChange): the accepted-digest
// lookup, the record and case lookups (the case twice: scope, then
// validation), the log append, the filing, the digest and the conflict
// index. The gap to BenchmarkUpdatePutRecords500 is the cost of the
// lookups and bookkeeping around the filing.
func BenchmarkUpdateApply500(b *testing.B) {
	_, notes, chs := applyData(b)
	st := loadedStore(b)
	iter := 0
	now := time.Now().UTC()
	b.ReportAllocs()
	for b.Loop() {
		batch := renamed(notes[:applyBatch], iter)
		iter++
		err := st.Update(context.Background(), func(tx server.Tx) error {
			for i := range batch {
				r := &batch[i]
				ch := chs[i]
				ch.ID, ch.Seq = r.ID, uint64(iter*applyBatch+i+1)
				if _, _, err := tx.Accepted("dlaptopbram00000001", ch.Seq); err != nil {
					return err
				}
				if _, _, err := tx.Record(r.Key()); err == nil {
					return fmt.Errorf("%s exists", r.Key())
				}
				caseID, _ := r.String(syncproto.FieldCaseID)
				for range 2 {
					if _, _, err := tx.Record(syncproto.Key{Collection: syncproto.Cases, ID: caseID}); err != nil {
						return err
					}
				}
				seq, err := tx.NextSeq()
				if err != nil {
					return err
				}
				if err := tx.AppendLog(seq, server.LogEntry{Device: "dlaptopbram00000001", User: "w-bram", Area: r.Area, Change: ch, At: now}); err != nil {
					return err
				}
				if err := tx.PutRecord(r, seq); err != nil {
					return err
				}
				sum := sha256.Sum256([]byte(r.ID))
				if err := tx.MarkAccepted("dlaptopbram00000001", ch.Seq, sum[:]); err != nil {
					return err
				}
				if err := tx.SetConflict(r.Key(), r.Area, false); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*applyBatch)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkScan500 reads 500 filed notes back through Scan, as a session
// streaming a cold pull does (each item's record is decoded from JSON).
func BenchmarkScan500(b *testing.B) {
	_, notes, _ := applyData(b)
	st := loadedStore(b)
	var head uint64
	err := st.Update(context.Background(), func(tx server.Tx) error {
		for i := range notes[:applyBatch] {
			seq, err := tx.NextSeq()
			if err != nil {
				return err
			}
			if err := tx.PutRecord(&notes[i], seq); err != nil {
				return err
			}
			head = seq
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	after := map[string]uint64{}
	for _, n := range notes[:applyBatch] {
		after[n.Area] = head - applyBatch // past the cases filed before
	}
	b.ReportAllocs()
	for b.Loop() {
		n := 0
		err := st.View(context.Background(), func(tx server.Tx) error {
			return tx.Scan(after, head, func(it server.Item) (bool, error) {
				n++
				return true, nil
			})
		})
		if err != nil || n != applyBatch {
			b.Fatalf("scan: %d items, %v", n, err)
		}
	}
	b.ReportMetric(float64(b.N*applyBatch)/b.Elapsed().Seconds(), "records/s")
}
