package client

// Settling acknowledged pushes: accepted changes join the confirmed state,
// rejected ones are kept for the user.

import (
	"time"

	"github.com/casesync/casesync/syncproto"
)

// applyAck settles a push: accepted changes leave the outbox and join the
// server-confirmed state; rejected ones are kept, with the reason, for the
// user. Changes refused for rate stay in the outbox.
func (r *round) applyAck(batch []syncproto.Change, ack *syncproto.Ack) error {
	accepted := map[uint64]bool{}
	for _, s := range ack.Accepted {
		accepted[s] = true
	}
	rejected := map[uint64]syncproto.Error{}
	for _, e := range ack.Rejected {
		rejected[e.Change] = e
	}
	var pushed, refused, deferred int
	var retry time.Duration
	err := r.c.update(func(tx *stx) error {
		pushed, refused, deferred = 0, 0, 0
		areas := caseAreas{}
		for i := range batch {
			ch := &batch[i]
			k := ch.Key()
			switch e, isRej := rejected[ch.Seq]; {
			case accepted[ch.Seq]:
				pushed++
				r.touch(k)
				if err := tx.removeOutbox(ch.Seq, k); err != nil {
					return err
				}
				if err := r.confirm(tx, ch, areas, ack.Seq); err != nil {
					return err
				}
			case isRej && e.Code == syncproto.CodeRate:
				deferred++
				retry = max(retry, time.Duration(e.RetryAfterMS)*time.Millisecond)
			case isRej:
				refused++
				if err := tx.removeOutbox(ch.Seq, k); err != nil {
					return err
				}
				if err := tx.putRejected(Rejected{Change: *ch, Error: e, At: r.c.opts.Now().UTC()}); err != nil {
					return err
				}
			default:
				return syncproto.Errorf(syncproto.ErrMalformed, "ack does not mention change %d", ch.Seq)
			}
			if ev, err := tx.isEvicted(k); err != nil {
				return err
			} else if ev {
				if rest, err := tx.outboxFor(k); err != nil {
					return err
				} else if len(rest) == 0 {
					if err := tx.clearEvicted(k); err != nil {
						return err
					}
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	r.res.Pushed += pushed
	r.res.Rejected += refused
	if deferred > 0 {
		r.res.Deferred += deferred
		r.holdTill = time.Now().Add(max(retry, time.Second))
		// Resend the deferred ones after the hold.
		r.lastSent = min(r.lastSent, batch[0].Seq-1)
	}
	if refused > 0 {
		r.c.publish(Event{})
	}
	r.report()
	return nil
}

// caseAreas remembers, for one transaction, the confirmed area of each
// case looked up ("" where the device holds no confirmed case): a push of
// a day's notes confirms many entries of the same few cases.
type caseAreas map[string]string

func (ca caseAreas) area(tx *stx, id string) (string, error) {
	if a, ok := ca[id]; ok {
		return a, nil
	}
	c, ok, err := tx.record(syncproto.Key{Collection: syncproto.Cases, ID: id})
	if err != nil {
		return "", err
	}
	if ok {
		ca[id] = c.Area
	} else {
		ca[id] = ""
	}
	return ca[id], nil
}

// confirm joins an accepted change into the server-confirmed state, unless
// the record has left the device's scope meanwhile. head is the log head
// the server acknowledged it at.
func (r *round) confirm(tx *stx, ch *syncproto.Change, areas caseAreas, head uint64) error {
	k := ch.Key()
	if ev, err := tx.isEvicted(k); err != nil {
		return err
	} else if ev {
		// Evicted while the change was pending (a scope update, say, came
		// first). A hand-over must still be remembered: a backlog read
		// before it committed may yet bring the case, where it was then.
		if to, moved := ch.String(syncproto.FieldArea); moved && k.Collection == syncproto.Cases && !r.m.Scope.Contains(to) {
			areas[k.ID] = ""
			r.movedAway(k.ID, syncproto.Dot{Device: r.m.Device, Seq: ch.Seq}, head)
			return r.dropJournal(tx, k.ID)
		}
		r.unplaced = max(r.unplaced, head)
		return nil
	}
	base, ok, err := tx.record(k)
	if err != nil {
		return err
	}
	if !ok {
		base = &syncproto.Record{Collection: k.Collection, ID: k.ID}
	}
	base.Join(ch.State(r.m.Device))
	if k.Collection == syncproto.Entries {
		// An entry lies where its case lies on the server: take the area
		// from the server-confirmed case, never from pending local edits
		// (a move the server may yet reject). No confirmed case here means
		// the device does not see it.
		base.Area = ""
		if id, ok := base.String(syncproto.FieldCaseID); ok {
			if base.Area, err = areas.area(tx, id); err != nil {
				return err
			}
		}
	}
	if base.Area == "" || !r.m.Scope.Contains(base.Area) {
		// Accepted, but no longer the device's to hold, as far as it
		// knows: a note about a case that moved away meanwhile, a case
		// handed over, or a case in an area the welcome no longer lists
		// (the scope update and the backlog that may bring it back in
		// another area can come after this ack). The server files it
		// where it belongs now.
		if k.Collection == syncproto.Cases {
			areas[k.ID] = ""
			if _, moved := ch.Fields[syncproto.FieldArea]; moved {
				// Only this device's own hand-over makes states it reads
				// next stale: a backlog read before the move committed.
				// Any other change leaves the case to whatever the server
				// sends (seed 1463, internal/simtest).
				r.movedAway(k.ID, syncproto.Dot{Device: r.m.Device, Seq: ch.Seq}, head)
			} else {
				r.unplaced = max(r.unplaced, head)
			}
			if err := r.dropJournal(tx, k.ID); err != nil {
				return err
			}
		} else {
			r.unplaced = max(r.unplaced, head)
		}
		return tx.deleteRecord(k)
	}
	if k.Collection == syncproto.Cases {
		areas[k.ID] = base.Area
	}
	return tx.putRecord(base)
}
