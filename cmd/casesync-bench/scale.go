package main

// The scale server: the full server's data plus (scale−1) renamed copies
// of it in areas of their own ("Zuilen-x2", IDs "…-x2", devices "…x2").
// The copies are written straight into a copy of the stopped server's
// bbolt file through server/boltstore, with the same Tx calls the server
// makes when it accepts a change (NextSeq, AppendLog, PutRecord,
// MarkAccepted, SetConflict), 1,000 records per transaction: the layout is
// the server's own, and 189,000 records load in seconds instead of the
// minutes pushing them through replicas would take. Only the other areas'
// data is synthetic; the caseworker's pull is measured as always.

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"path/filepath"
	"time"

	"github.com/casesync/casesync/server"
	"github.com/casesync/casesync/server/boltstore"
	"github.com/casesync/casesync/syncproto"
)

func (b *bench) scaleData(ctx context.Context) error {
	if b.o.scale < 2 {
		return nil
	}
	dst := filepath.Join(b.tmp, "srv", fmt.Sprintf("scale-%dx", b.o.scale))
	if err := copyDir(b.fullDir, dst); err != nil {
		return err
	}
	st, err := boltstore.Open(filepath.Join(dst, "casesync.db"), nil)
	if err != nil {
		return err
	}
	defer st.Close()
	var recs []*syncproto.Record
	err = st.View(ctx, func(tx server.Tx) error {
		head, err := tx.Head()
		if err != nil {
			return err
		}
		areas, err := tx.Areas()
		if err != nil {
			return err
		}
		after := map[string]uint64{}
		for _, a := range areas {
			after[a] = 0
		}
		return tx.Scan(after, head, func(it server.Item) (bool, error) {
			if it.Record != nil {
				recs = append(recs, it.Record)
			}
			return true, nil
		})
	})
	if err != nil {
		return err
	}
	t := time.Now()
	now := time.Now().UTC()
	for j := 2; j <= b.o.scale; j++ {
		sfx := fmt.Sprintf("x%d", j)
		for i := 0; i < len(recs); i += 1000 {
			chunk := recs[i:min(i+1000, len(recs))]
			err := st.Update(ctx, func(tx server.Tx) error {
				for _, r := range chunk {
					if err := fileCopy(tx, rename(r, sfx), now); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
	}
	b.log.Info("scale data written", "records", len(recs)*(b.o.scale-1), "took", time.Since(t).Round(time.Millisecond))
	b.scaleDir = dst
	return st.Close()
}

// fileCopy files r as the server files an accepted change.
func fileCopy(tx server.Tx, r *syncproto.Record, at time.Time) error {
	ch := syncproto.Change{Collection: r.Collection, ID: r.ID, Fields: map[string]syncproto.Write{}}
	var dev string
	for name, f := range r.Fields {
		if v, ok := f.Winner(); ok {
			ch.Fields[name] = syncproto.Write{Data: v.Data}
			ch.Seq, ch.Stamp, dev = v.Seq, v.Stamp, v.Device
		}
	}
	seq, err := tx.NextSeq()
	if err != nil {
		return err
	}
	if err := tx.AppendLog(seq, server.LogEntry{Device: dev, Area: r.Area, Change: ch, At: at}); err != nil {
		return err
	}
	if err := tx.PutRecord(r, seq); err != nil {
		return err
	}
	b, _ := syncproto.Marshal(ch)
	sum := sha256.Sum256(b)
	if err := tx.MarkAccepted(dev, ch.Seq, sum[:]); err != nil {
		return err
	}
	return tx.SetConflict(r.Key(), r.Area, false)
}

// rename returns a copy of r in its own namespace: ID, area, case
// reference and devices carry sfx.
func rename(r *syncproto.Record, sfx string) *syncproto.Record {
	out := r.Clone()
	out.ID = r.ID + "-" + sfx
	out.Area = r.Area + "-" + sfx
	dev := func(v syncproto.Versions) syncproto.Versions {
		if v == nil {
			return nil
		}
		m := make(syncproto.Versions, len(v))
		for d, n := range v {
			m[d+sfx] = n
		}
		return m
	}
	for name, f := range out.Fields {
		f.Seen = dev(f.Seen)
		for i := range f.Values {
			v := &f.Values[i]
			v.Device += sfx
			v.Covers = dev(v.Covers)
			var s string
			switch {
			case name == syncproto.FieldArea && r.Collection == syncproto.Cases:
				_ = json.Unmarshal(v.Data, &s)
				v.Data, _ = syncproto.Marshal(s + "-" + sfx)
			case name == syncproto.FieldCaseID:
				_ = json.Unmarshal(v.Data, &s)
				v.Data, _ = syncproto.Marshal(s + "-" + sfx)
			}
		}
		out.Fields[name] = f
	}
	return out
}
