package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/casesync/casesync/syncproto"
)

// push applies a push from a session and returns its ack. Changes are
// applied in order, each accepted or rejected on its own; the accepted ones
// are durable when push returns. An error means nothing could be committed.
func (srv *Server) push(ss *session, p *syncproto.Push) (*syncproto.Ack, error) {
	if len(p.Changes) > srv.cfg.MaxBatch {
		return nil, syncproto.Errorf(syncproto.ErrBatchTooLarge, "push of %d changes; this server takes at most %d", len(p.Changes), srv.cfg.MaxBatch)
	}
	// Once a push is held back, every later push of the session is too
	// until the wait is over: a small later push must not overtake a held
	// one and arrive before the changes it builds on.
	now := srv.cfg.Now()
	if now.Before(ss.rateHold) || !ss.pushes.take(float64(len(p.Changes))) {
		wait := ss.pushes.wait(float64(len(p.Changes)))
		if now.Before(ss.rateHold) {
			wait = max(wait, ss.rateHold.Sub(now))
		}
		ss.rateHold = now.Add(wait)
		ack := &syncproto.Ack{}
		for _, c := range p.Changes {
			ack.Rejected = append(ack.Rejected, syncproto.Error{
				Code: syncproto.CodeRate, Message: "this device pushes faster than allowed; retry later",
				Change: c.Seq, RetryAfterMS: max(1, wait.Milliseconds()),
			})
		}
		srv.metrics.changes.WithLabelValues(string(syncproto.CodeRate)).Add(float64(len(p.Changes)))
		err := srv.store.View(context.Background(), func(tx Tx) error {
			var err error
			ack.Seq, err = tx.Head()
			return err
		})
		return ack, err
	}
	actor := syncproto.Actor{User: ss.user.Name, Device: ss.device.ID}
	scope := ss.currentScope()
	// What depends only on the change is done here, on the session's
	// goroutine, so that sessions do it in parallel (up to Decoders at a
	// time): the store's single writer only reads, merges and writes
	// (BENCHMARKS.md, load).
	preps, err := srv.prepare(p.Changes, actor)
	if err != nil {
		return nil, fmt.Errorf("apply push: %w", err)
	}
	var ack *syncproto.Ack
	var touched map[string]struct{}
	var dups int
	start := time.Now()
	// The push must commit even if the session is ending: a graceful
	// shutdown finishes in-flight batches and acknowledges them.
	err = srv.update(context.Background(), len(p.Changes), func(tx Tx) error {
		ack = &syncproto.Ack{}
		touched = make(map[string]struct{})
		dups = 0
		cases := newCaseIndex(tx)
		at := srv.cfg.Now().UTC()
		for i := range preps {
			areas, err := srv.applyChange(tx, cases, actor, scope, &preps[i], at)
			var pe *syncproto.Error
			switch {
			case err == nil:
				ack.Accepted = append(ack.Accepted, preps[i].ch.Seq)
				if areas == nil {
					dups++ // a resend of a change accepted before
				}
				for _, a := range areas {
					touched[a] = struct{}{}
				}
			case errors.As(err, &pe):
				r := *pe
				r.Change = preps[i].ch.Seq
				ack.Rejected = append(ack.Rejected, r)
			default:
				return err
			}
		}
		var err error
		ack.Seq, err = tx.Head()
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("apply push: %w", err)
	}
	srv.metrics.commit.Observe(time.Since(start).Seconds())
	srv.metrics.changes.WithLabelValues("accepted").Add(float64(len(ack.Accepted) - dups))
	if dups > 0 {
		srv.metrics.changes.WithLabelValues("duplicate").Add(float64(dups))
	}
	for _, r := range ack.Rejected {
		srv.metrics.changes.WithLabelValues(string(r.Code)).Inc()
	}
	if len(ack.Rejected) > 0 {
		ss.log.Info("push partly rejected", "accepted", len(ack.Accepted), "rejected", len(ack.Rejected), "first_code", string(ack.Rejected[0].Code), "first_reason", ack.Rejected[0].Reason)
	}
	if len(touched) > 0 {
		srv.hub.wake(touched)
	}
	return ack, nil
}

// weightedStore is a Store whose group commits can be bounded by the work
// in them rather than by the number of updates (boltstore.Store).
type weightedStore interface {
	UpdateWeight(ctx context.Context, weight int, fn func(tx Tx) error) error
}

// update runs fn as a store update that does weight units of work (a
// push's changes), so a group commit stays bounded in changes and an
// ack does not wait for ten thousand others.
func (srv *Server) update(ctx context.Context, weight int, fn func(tx Tx) error) error {
	return srv.store.UpdateWeight(ctx, weight, fn)
}

// caseIndex answers validation's questions about cases from a transaction.
// It reads a case's area from the record's stored head, without decoding
// the case (decoding it was a quarter of the writer's time, BENCHMARKS.md,
// load), and remembers the areas it has read for the transaction's life: a
// push of notes asks for the same case's area twice per note.
type caseIndex struct {
	tx    Tx
	areas map[string]string
}

func newCaseIndex(tx Tx) *caseIndex { return &caseIndex{tx: tx, areas: make(map[string]string)} }

func (ci *caseIndex) CaseArea(id string) (string, bool) {
	if a, ok := ci.areas[id]; ok {
		return a, true
	}
	a, err := ci.tx.RecordArea(syncproto.Key{Collection: syncproto.Cases, ID: id})
	if err != nil {
		return "", false // not cached: the push may create the case later
	}
	ci.areas[id] = a
	return a, true
}

// forget drops a case whose record changed, so its area is read again.
func (ci *caseIndex) forget(id string) { delete(ci.areas, id) }

// applyChange validates one change and, if it is acceptable, merges it into
// the record, logs it and files it. It returns the areas it touched. A
// *syncproto.Error rejects the change; any other error aborts the push.
//
// It runs on the store's writer, and may run again after a failed group
// commit: it leaves p as it found it.
func (srv *Server) applyChange(tx Tx, cases *caseIndex, actor syncproto.Actor, scope syncproto.Scope, p *prepared, at time.Time) ([]string, error) {
	if p.invalid != nil {
		return nil, p.invalid
	}
	// p.ch is shared with the function's next run: ValidateChange and the
	// clock bound write to a copy.
	ch := p.ch
	digest := p.digest
	prev, seen, err := tx.Accepted(actor.Device, ch.Seq)
	if err != nil {
		return nil, err
	}
	if seen {
		if string(prev) == string(digest) {
			return nil, nil // a resend: accepted before, nothing to do
		}
		return nil, syncproto.Errorf(syncproto.ErrBadChange, "change %d of this device was already accepted with other content; device sequence numbers must not be reused", ch.Seq)
	}
	cur, _, err := tx.Record(ch.Key())
	switch {
	case errors.Is(err, ErrNotFound):
		cur = nil
	case err != nil:
		return nil, err
	}
	area, err := srv.changeArea(cases, ch, cur)
	if err != nil {
		return nil, err
	}
	if !scope.Contains(area) {
		ok, err := movedAway(tx, ch, cur, scope)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, syncproto.Errorf(syncproto.ErrOutOfScope, "%s is in an area outside your scope", ch.Key())
		}
	}
	// A new record's validation was done before the push reached the
	// writer: it does not depend on the store, but for its case existing,
	// which changeArea has just checked with the same lookup.
	fresh := cur == nil
	if fresh {
		if p.newInvalid != nil {
			return nil, p.newInvalid
		}
	} else {
		ch = cloneChange(p.ch)
		if err := syncproto.ValidateChange(ch, cur, actor, cases); err != nil {
			return nil, err
		}
	}
	if err := checkClaims(ch, cur, actor.Device); err != nil {
		return nil, err
	}
	// A laptop clock far ahead gets the server's time instead (PROTOCOL.md §6.4).
	state, changeJSON := p.state, p.js
	if stamp, _ := srv.clock.Bound(ch.Stamp); stamp != ch.Stamp {
		if ch == p.ch {
			ch = cloneChange(p.ch)
		}
		ch.Stamp = stamp
		state, changeJSON, fresh = ch.State(actor.Device), nil, false
	}

	var rec *syncproto.Record
	var js []byte
	oldArea := area
	if fresh {
		// The new record is the prepared one, filed under area.
		r := *p.newRec
		r.Area = area
		rec = &r
		if js, err = p.newRecordJSON(area); err != nil {
			return nil, err
		}
	} else {
		rec = cur
		if rec == nil {
			rec = &syncproto.Record{Collection: ch.Collection, ID: ch.ID, Area: area}
		}
		oldArea = rec.Area
		rec.Join(state)
		if ch.Collection == syncproto.Entries {
			rec.Area = area
		}
		if js, err = encodeChecked(rec); err != nil {
			return nil, err
		}
	}
	seq, err := tx.NextSeq()
	if err != nil {
		return nil, err
	}
	entry, err := encodeLogEntry(LogEntry{Device: actor.Device, User: actor.User, Area: rec.Area, Change: *ch, At: at}, changeJSON)
	if err != nil {
		return nil, err
	}
	if err := tx.AppendLogJSON(seq, entry); err != nil {
		return nil, err
	}
	conflicted := p.newConflicted
	if !fresh {
		conflicted = len(rec.Conflicts()) > 0
	}
	if err := tx.PutRecordJSON(rec, js, seq); err != nil {
		return nil, err
	}
	// A record stored for the first time has no conflict to clear.
	if cur != nil || conflicted {
		if err := tx.SetConflict(rec.Key(), rec.Area, conflicted); err != nil {
			return nil, err
		}
	}
	if ch.Collection == syncproto.Cases {
		cases.forget(ch.ID) // its area may have changed
	}
	if err := tx.MarkAccepted(actor.Device, ch.Seq, digest); err != nil {
		return nil, err
	}
	touched := []string{rec.Area}
	if ch.Collection == syncproto.Cases && oldArea != "" && rec.Area != oldArea {
		// The case moved (a tenant was rehoused): its journal moves with it.
		if err := tx.AddCaseMove(ch.ID, Move{From: oldArea, To: rec.Area, Stamp: ch.Stamp}); err != nil {
			return nil, err
		}
		if err := srv.refileEntries(tx, ch.ID, rec.Area, false); err != nil {
			return nil, err
		}
		touched = append(touched, oldArea)
	} else if to, ok := ch.String(syncproto.FieldArea); ok && ch.Collection == syncproto.Cases && cur != nil && to != rec.Area && !scope.Contains(to) {
		// The writer handed the case over to an area it does not see, but
		// a concurrent area value it had not seen won, and the case stays.
		// Its device, judging by its own write, concluded that the case
		// left its scope and dropped the journal once this change was
		// acknowledged (client confirm). The case's new state reaches it;
		// the entries, which did not change, would not: file them again at
		// new sequences. It costs what a move costs.
		if err := srv.refileEntries(tx, ch.ID, rec.Area, true); err != nil {
			return nil, err
		}
	}
	return touched, nil
}

// movedAway reports whether ch is a new entry, written before its case
// moved out of the writer's scope, about a case that was in scope when it
// was written: a caseworker's offline note about a tenant rehoused
// meanwhile. Such a note is accepted and follows the case to its new area;
// nothing else outside the scope is.
func movedAway(tx Tx, ch *syncproto.Change, cur *syncproto.Record, scope syncproto.Scope) (bool, error) {
	if ch.Collection != syncproto.Entries || cur != nil {
		return false, nil
	}
	caseID, _ := ch.String(syncproto.FieldCaseID)
	moves, err := tx.CaseMoves(caseID)
	if err != nil {
		return false, err
	}
	// The case's area at the time of the write is the From of the first
	// move made after it.
	for _, m := range moves {
		if ch.Stamp < m.Stamp {
			return scope.Contains(m.From), nil
		}
	}
	return false, nil
}

// checkClaims refuses a change that claims to have seen writes of other
// devices the server does not have. Devices only learn of each other's
// writes through the server, so such a claim is forged, and storing it
// would make the server drop the other device's real later writes as
// already superseded: a freeze-out.
func checkClaims(ch *syncproto.Change, cur *syncproto.Record, device string) error {
	var ctx syncproto.Versions
	if cur != nil {
		ctx = cur.Context()
	}
	for name, w := range ch.Fields {
		var seen syncproto.Versions
		if cur != nil {
			seen = cur.Fields[name].Seen
		}
		for d, n := range w.Seen {
			if d != device && n > seen[d] {
				return syncproto.Errorf(syncproto.ErrBadChange, "change %d claims writes of device %s to field %q that the server never received", ch.Seq, d, name)
			}
		}
		for d, n := range w.Covers {
			if d != device && n > ctx[d] {
				return syncproto.Errorf(syncproto.ErrBadChange, "change %d claims writes of device %s to this record that the server never received", ch.Seq, d)
			}
		}
	}
	return nil
}

// changeArea returns the area that decides whether the change is in scope:
// the case's current area, the area a new case names, or an entry's case's
// area.
func (srv *Server) changeArea(cases *caseIndex, ch *syncproto.Change, cur *syncproto.Record) (string, error) {
	if ch.Collection == syncproto.Cases {
		if cur != nil {
			return cur.Area, nil
		}
		a, _ := ch.String(syncproto.FieldArea)
		if a == "" {
			return "", syncproto.Errorf(syncproto.ErrMissingField, "a new case needs field %q", syncproto.FieldArea)
		}
		return a, nil
	}
	var caseID string
	if cur != nil {
		caseID, _ = cur.String(syncproto.FieldCaseID)
	} else {
		caseID, _ = ch.String(syncproto.FieldCaseID)
	}
	if caseID == "" {
		return "", syncproto.Errorf(syncproto.ErrMissingField, "a new entry needs field %q", syncproto.FieldCaseID)
	}
	area, ok := cases.CaseArea(caseID)
	if !ok {
		return "", syncproto.Errorf(syncproto.ErrUnknownCase, "entry %s names case %q, which does not exist", ch.ID, caseID)
	}
	return area, nil
}

// file stores rec at seq and keeps the conflict index in step.
func (srv *Server) file(tx Tx, rec *syncproto.Record, seq uint64) error {
	if err := tx.PutRecord(rec, seq); err != nil {
		return err
	}
	return tx.SetConflict(rec.Key(), rec.Area, len(rec.Conflicts()) > 0)
}

// refileEntries files every entry of a case under its new area, each at a
// new sequence, leaving eviction markers in the old area. With again set,
// entries already in area are filed again too, so that every device of
// the area receives them once more.
func (srv *Server) refileEntries(tx Tx, caseID, area string, again bool) error {
	ids, err := tx.CaseEntries(caseID)
	if err != nil {
		return err
	}
	for _, id := range ids {
		e, _, err := tx.Record(syncproto.Key{Collection: syncproto.Entries, ID: id})
		if err != nil {
			return fmt.Errorf("refile entry %s: %w", id, err)
		}
		if e.Area == area && !again {
			continue
		}
		e.Area = area
		seq, err := tx.NextSeq()
		if err != nil {
			return err
		}
		if err := srv.file(tx, e, seq); err != nil {
			return err
		}
	}
	return nil
}
