package syncproto_test

// Micro-benchmarks of the merge and the codec on dataset-like records:
// the shared caseload (shared/datasets/caseload-1k.jsonl.gz) where the
// checkout has it beside the module, a synthetic one of the same shape
// elsewhere. A push or a changes message carries at most 500 records, the
// client's push batch and the server's changes batch.
//
//	go test -run '^$' -bench . -benchmem ./syncproto

import (
	"encoding/json"
	"sync"
	"testing"

	"github.com/casesync/casesync/internal/caseload"
	"github.com/casesync/casesync/syncproto"
)

const benchBatch = 500

var (
	benchOnce    sync.Once
	benchChanges []syncproto.Change // notes, as pushed
	benchRecords []syncproto.Record // the same notes, as the server files them
	benchErr     error
)

// benchData loads the first benchBatch notes of the caseload (cases are
// 1,000 small records; notes are what a pull is made of).
func benchData(b *testing.B) ([]syncproto.Change, []syncproto.Record) {
	b.Helper()
	benchOnce.Do(func() {
		d, _, err := caseload.Default()
		if err != nil {
			benchErr = err
			return
		}
		n := len(d.Cases) + benchBatch
		ch, recs, err := d.Batch(n, "dlaptopbram00000001")
		if err != nil {
			benchErr = err
			return
		}
		benchChanges, benchRecords = ch[len(d.Cases):], recs[len(d.Cases):]
	})
	if benchErr != nil {
		b.Fatal(benchErr)
	}
	return benchChanges, benchRecords
}

// BenchmarkJoinField merges one field's states the three ways a sync
// meets them: into nothing (first pull), with itself (a resend), and with
// a newer write that saw it (an edit).
func BenchmarkJoinField(b *testing.B) {
	_, recs := benchData(b)
	f := recs[0].Fields[syncproto.FieldText]
	newer := syncproto.Field{
		Values: []syncproto.Value{{Device: "dlaptopanouk0000001", Seq: 9, Stamp: f.Values[0].Stamp + 1, Data: json.RawMessage(`"edited"`)}},
		Seen:   f.Seen.Join(syncproto.Versions{"dlaptopanouk0000001": 9}),
	}
	for _, c := range []struct {
		name string
		a, b syncproto.Field
	}{{"new", syncproto.Field{}, f}, {"same", f, f}, {"newer", f, newer}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = syncproto.JoinField(c.a, c.b)
			}
		})
	}
}

// BenchmarkRecordJoin joins a batch of note states into a replica's
// copies: into empty records (a cold pull) and into equal ones (a pull
// that repeats what the replica has).
func BenchmarkRecordJoin(b *testing.B) {
	_, recs := benchData(b)
	b.Run("into-empty", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			for i := range recs {
				r := &syncproto.Record{Collection: recs[i].Collection, ID: recs[i].ID}
				r.Join(&recs[i])
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(recs)), "ns/record")
	})
	b.Run("into-same", func(b *testing.B) {
		base := make([]*syncproto.Record, len(recs))
		for i := range recs {
			base[i] = recs[i].Clone()
		}
		b.ReportAllocs()
		for b.Loop() {
			for i := range recs {
				base[i].Join(&recs[i])
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(recs)), "ns/record")
	})
}

// BenchmarkCodec encodes and decodes a changes message of 500 note states
// (a pull's unit) and a push of 500 note changes, with and without zstd.
// SetBytes is the decoded payload, so MB/s compare with JSON and zstd
// speeds; "wire-%" is the frame's size relative to it.
func BenchmarkCodec(b *testing.B) {
	changes, recs := benchData(b)
	codec, err := syncproto.NewCodec(0)
	if err != nil {
		b.Fatal(err)
	}
	defer codec.Close()
	cp := syncproto.Checkpoint{Epoch: "8f1c2a9d0b3e4f56", Seq: 21000, Areas: []string{"Lombok", "Zuilen"}}
	msgs := []struct {
		name string
		m    syncproto.Message
	}{
		{"changes", &syncproto.Changes{Records: recs, Checkpoint: cp}},
		{"push", &syncproto.Push{Changes: changes}},
	}
	for _, m := range msgs {
		payload, err := syncproto.Marshal(m.m)
		if err != nil {
			b.Fatal(err)
		}
		for _, z := range []bool{false, true} {
			name := m.name + map[bool]string{false: "/plain", true: "/zstd"}[z]
			frame, err := codec.Encode(m.m, z)
			if err != nil {
				b.Fatal(err)
			}
			b.Run("Encode/"+name, func(b *testing.B) {
				b.SetBytes(int64(len(payload)))
				b.ReportAllocs()
				for b.Loop() {
					if _, err := codec.Encode(m.m, z); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(100*float64(len(frame))/float64(len(payload)), "wire-%")
			})
			b.Run("Decode/"+name, func(b *testing.B) {
				b.SetBytes(int64(len(payload)))
				b.ReportAllocs()
				for b.Loop() {
					if _, err := codec.Decode(frame, z); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkCanonical re-encodes a note's text and a case's tags the way
// the server canonicalises every pushed value, twice per value per push
// (changeDigest and ValidateChange).
func BenchmarkCanonical(b *testing.B) {
	changes, _ := benchData(b)
	text := changes[0].Fields[syncproto.FieldText].Data
	b.Run("text", func(b *testing.B) {
		b.SetBytes(int64(len(text)))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := syncproto.Canonical(text); err != nil {
				b.Fatal(err)
			}
		}
	})
	tags := json.RawMessage(`["huisvesting","huurachterstand"]`)
	b.Run("tags", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := syncproto.Canonical(tags); err != nil {
				b.Fatal(err)
			}
		}
	})
}
