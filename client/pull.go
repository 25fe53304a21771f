package client

// Applying what the server sends: record states, evictions, scope changes.

import (
	"github.com/casesync/casesync/syncproto"
)

// applyChanges merges record states, removes evicted records and saves the
// checkpoint, in one transaction: a crash leaves either all or none.
func (r *round) applyChanges(msg *syncproto.Changes) error {
	var keys []syncproto.Key
	err := r.c.update(func(tx *stx) error {
		keys = keys[:0]
		// Cases first: a current state of a case this device handed over
		// makes its entries in the same message current too.
		stale := make([]bool, len(msg.Records))
		for _, cases := range []bool{true, false} {
			for i := range msg.Records {
				if in := &msg.Records[i]; (in.Collection == syncproto.Cases) == cases {
					stale[i] = r.staleForUs(in)
				}
			}
		}
		for i := range msg.Records {
			in := &msg.Records[i]
			k := in.Key()
			if stale[i] {
				// A state from before this device handed the case over (the
				// backlog was read before the move committed): never store
				// what the device may no longer see.
				continue
			}
			base, ok, err := tx.record(k)
			if err != nil {
				return err
			}
			if ok {
				base.Join(in)
			} else {
				base = in // the message is this round's own: no copy
			}
			if err := tx.putRecord(base); err != nil {
				return err
			}
			if err := tx.clearEvicted(k); err != nil {
				return err
			}
			keys = append(keys, k)
		}
		cases := map[string]bool{}
		for _, e := range msg.Evicted {
			if err := r.evict(tx, e.Key()); err != nil {
				return err
			}
			keys = append(keys, e.Key())
			if e.Collection == syncproto.Cases {
				cases[e.ID] = true
			}
		}
		if len(cases) > 0 {
			// A case's journal leaves with it, including entries the server
			// filed elsewhere and so never evicts here: a note written
			// offline and confirmed before the case's eviction arrived.
			orphans, err := entriesOf(tx, cases)
			if err != nil {
				return err
			}
			for _, k := range orphans {
				if err := r.evict(tx, k); err != nil {
					return err
				}
				keys = append(keys, k)
			}
		}
		m, err := tx.meta()
		if err != nil {
			return err
		}
		if msg.Checkpoint.Epoch != "" {
			m.Checkpoint = msg.Checkpoint
		}
		r.m = m
		return tx.putMeta(m)
	})
	if err != nil {
		return err
	}
	r.res.Pulled += len(msg.Records)
	r.res.Evicted += len(msg.Evicted)
	if len(msg.Evicted) > 0 {
		r.purged = true
	}
	for _, k := range keys {
		r.touch(k)
	}
	if len(keys) > 0 {
		r.c.publish(Event{Keys: keys, Remote: true})
	}
	r.report()
	return nil
}

// handOver is a case this device moved out of its own scope during the
// session: the change that moved it, and the log head the server
// acknowledged it at.
type handOver struct {
	move syncproto.Dot
	head uint64
}

// movedAway remembers, for the rest of the session, a case this device
// moved out of its own scope, with the change that moved it and the head
// it was acknowledged at.
func (r *round) movedAway(id string, move syncproto.Dot, head uint64) {
	if r.gone == nil {
		r.gone = map[string]handOver{}
	}
	r.gone[id] = handOver{move, head}
}

// staleForUs reports whether an incoming state predates this device's own
// hand-over of its case during the session: a backlog read before the move
// committed. Anything in a message that starts at or after the head the
// move was acknowledged at was filed after the move, and is current. Before
// that, a case state whose area has seen the move is current (the case may
// be back in scope: moved back, or the user's areas grew), and from it on
// the case and its journal are taken as usual; applyChanges judges a
// message's cases before its entries, since a later write to the case can
// file it after its entries (seed 750, internal/simtest).
func (r *round) staleForUs(in *syncproto.Record) bool {
	if len(r.gone) == 0 {
		return false
	}
	id := in.ID
	if in.Collection != syncproto.Cases {
		id, _ = in.String(syncproto.FieldCaseID)
	}
	g, ok := r.gone[id]
	switch {
	case !ok:
		return false
	case r.m.Checkpoint.Seq >= g.head:
		delete(r.gone, id)
		return false
	case in.Collection == syncproto.Cases && in.Fields[syncproto.FieldArea].Seen.Covers(g.move):
		delete(r.gone, id)
		return false
	}
	return true
}

// dropJournal removes the stored entries of a case the device no longer sees.
func (r *round) dropJournal(tx *stx, caseID string) error {
	keys, err := entriesOf(tx, map[string]bool{caseID: true})
	if err != nil {
		return err
	}
	for _, k := range keys {
		if err := r.evict(tx, k); err != nil {
			return err
		}
	}
	return nil
}

// entriesOf returns the keys of the stored entries of the given cases.
func entriesOf(tx *stx, cases map[string]bool) ([]syncproto.Key, error) {
	var out []syncproto.Key
	err := tx.forEachRecord(func(rec *syncproto.Record) error {
		if rec.Collection != syncproto.Entries {
			return nil
		}
		if id, _ := rec.String(syncproto.FieldCaseID); cases[id] {
			out = append(out, rec.Key())
		}
		return nil
	})
	return out, err
}

// evict removes a record the device may no longer see. Pending changes to
// it stay in the outbox and are still pushed: the server accepts or rejects
// them, and a rejection is kept for the user.
func (r *round) evict(tx *stx, k syncproto.Key) error {
	if err := tx.deleteRecord(k); err != nil {
		return err
	}
	pending, err := tx.outboxFor(k)
	if err != nil {
		return err
	}
	if len(pending) > 0 {
		return tx.markEvicted(k)
	}
	return nil
}

func (r *round) applyScope(su *syncproto.ScopeUpdate) error {
	lost := map[string]bool{}
	for _, a := range su.Lost {
		lost[a] = true
	}
	err := r.c.update(func(tx *stx) error {
		var gone []syncproto.Key
		err := tx.forEachRecord(func(rec *syncproto.Record) error {
			if lost[rec.Area] {
				gone = append(gone, rec.Key())
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range gone {
			if err := r.evict(tx, k); err != nil {
				return err
			}
		}
		r.res.Evicted += len(gone)
		m, err := tx.meta()
		if err != nil {
			return err
		}
		m.Scope = su.Scope
		var keep []string
		for _, a := range m.Checkpoint.Areas {
			if !lost[a] {
				keep = append(keep, a)
			}
		}
		m.Checkpoint.Areas = keep
		r.m = m
		return tx.putMeta(m)
	})
	if err == nil && len(su.Lost) > 0 {
		r.purged = true
		r.c.publish(Event{Remote: true})
	}
	return err
}
