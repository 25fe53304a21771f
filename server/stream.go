package server

import (
	"context"
	"errors"
	"slices"

	"github.com/casesync/casesync/syncproto"
)

// scopeOf returns the scope of user u: the assigned areas for caseworkers,
// every area known to the store for leads.
func (srv *Server) scopeOf(tx Tx, u User) (syncproto.Scope, error) {
	if u.Role != syncproto.RoleLead {
		return u.Scope(nil), nil
	}
	areas, err := tx.Areas()
	if err != nil {
		return syncproto.Scope{}, err
	}
	return u.Scope(areas), nil
}

// batchBytes bounds the record data in one changes message, well inside
// the payload limit, so a batch is cheap to retransmit after a drop.
const batchBytes = 1 << 20

// stream sends the backlog since cp, then caught_up, then (in a live
// session) changes as they commit and scope changes as they happen.
func (ss *session) stream(cp syncproto.Checkpoint) {
	epoch := ss.srv.store.Meta().Epoch
	scope := ss.currentScope()
	cursor := make(map[string]uint64)
	valid := cp.Epoch == epoch
	// The checkpoint to repeat until the first batch completes: the
	// client's own, minus areas it no longer sees.
	ss.sentCP = syncproto.Checkpoint{Epoch: epoch}
	if valid {
		ss.sentCP.Seq = cp.Seq
		for _, a := range cp.Areas {
			if scope.Contains(a) {
				ss.sentCP.Areas = append(ss.sentCP.Areas, a)
			}
		}
	}
	for _, a := range scope.Areas {
		if valid && slices.Contains(cp.Areas, a) {
			cursor[a] = cp.Seq
		}
	}
	var lost []string
	for _, a := range cp.Areas {
		if !scope.Contains(a) {
			lost = append(lost, a)
		}
	}
	if len(lost) > 0 && !ss.sendMsg(&syncproto.ScopeUpdate{Scope: scope, Lost: lost}, true) {
		return
	}
	caughtUp := false
	for {
		head, ok := ss.sendBacklog(cursor)
		if !ok {
			return
		}
		if !caughtUp {
			caughtUp = true
			msg := &syncproto.CaughtUp{Checkpoint: ss.checkpoint(head)}
			if !ss.sendMsg(msg, true) || !ss.live {
				return
			}
		}
		select {
		case <-ss.stop:
			return
		case <-ss.wakeCh:
		case <-ss.scopeCh:
			if !ss.reloadScope(cursor) {
				return
			}
		}
	}
}

// checkpoint returns the checkpoint for seq over the current scope.
func (ss *session) checkpoint(seq uint64) syncproto.Checkpoint {
	areas := slices.Clone(ss.currentScope().Areas)
	slices.Sort(areas)
	return syncproto.Checkpoint{Epoch: ss.srv.store.Meta().Epoch, Seq: seq, Areas: areas}
}

// reloadScope reads the user's new scope, tells the client what it lost and
// starts the gained areas from the beginning.
func (ss *session) reloadScope(cursor map[string]uint64) bool {
	var scope syncproto.Scope
	err := ss.srv.store.View(context.Background(), func(tx Tx) error {
		u, err := tx.User(ss.user.Name)
		if err != nil {
			return err
		}
		scope, err = ss.srv.scopeOf(tx, u)
		return err
	})
	if err != nil {
		ss.log.Error("reload scope", "err", err)
		ss.fail(syncproto.ToWire(err))
		return false
	}
	old := ss.currentScope()
	var lost []string
	for _, a := range old.Areas {
		if !scope.Contains(a) {
			lost = append(lost, a)
			delete(cursor, a)
		}
	}
	ss.setScope(scope)
	ss.log.Info("scope changed", "areas", len(scope.Areas), "lost", len(lost))
	return ss.sendMsg(&syncproto.ScopeUpdate{Scope: scope, Lost: lost}, true)
}

// sendBacklog sends every item of the scope after cursor up to the log
// head, in bounded batches, advancing cursor. It returns the head reached.
func (ss *session) sendBacklog(cursor map[string]uint64) (uint64, bool) {
	for {
		var (
			head  uint64
			last  uint64
			full  bool
			batch = newBatch()
		)
		err := ss.srv.store.View(context.Background(), func(tx Tx) error {
			var err error
			if head, err = tx.Head(); err != nil {
				return err
			}
			scope := ss.currentScope()
			if scope.All {
				// Leads see areas created since the session began.
				if scope, err = ss.srv.scopeOf(tx, ss.user); err != nil {
					return err
				}
				ss.setScope(scope)
			}
			after := make(map[string]uint64, len(scope.Areas))
			for _, a := range scope.Areas {
				after[a] = cursor[a]
			}
			return tx.Scan(after, head, func(it Item) (bool, error) {
				last = it.Seq
				if it.Record == nil {
					// A marker names the area the record moved to then; it
					// may have moved on since (A→B→C leaves A's marker
					// pointing at B). What counts is where it is now.
					to := it.MovedTo
					if cur, _, err := tx.Record(it.Key); err == nil {
						to = cur.Area
					} else if !errors.Is(err, ErrNotFound) {
						return false, err
					}
					if scope.Contains(to) {
						return true, nil // still in scope: its current filing carries it
					}
					it.MovedTo = to
				}
				batch.add(it)
				full = len(batch.order) >= ss.srv.cfg.BatchRecords || batch.bytes >= batchBytes
				return !full, nil
			})
		})
		if err != nil {
			ss.log.Error("scan backlog", "err", err)
			ss.fail(syncproto.ToWire(err))
			return 0, false
		}
		reached := head
		if full {
			reached = last
		}
		for a := range cursor {
			cursor[a] = max(cursor[a], reached)
		}
		for _, a := range ss.currentScope().Areas {
			cursor[a] = max(cursor[a], reached)
		}
		if len(batch.order) > 0 {
			if !ss.sendChanges(batch, ss.checkpoint(reached)) {
				return 0, false
			}
		}
		if !full {
			return head, true
		}
	}
}

// sendChanges sends a batch, splitting it if it encodes over the limit.
func (ss *session) sendChanges(b *batch, cp syncproto.Checkpoint) bool {
	msg := b.message(cp)
	frame, err := ss.srv.codec.Encode(msg, ss.compress)
	var pe *syncproto.Error
	if errors.As(err, &pe) && errors.Is(pe, syncproto.ErrFrameTooLarge) && len(b.order) > 1 {
		// Halve it. The first half repeats the checkpoint last sent: the
		// client may advance only once the second half is applied too.
		first, second := b.split()
		return ss.sendChanges(first, ss.sentCP) && ss.sendChanges(second, cp)
	}
	if err != nil {
		ss.log.Error("encode changes", "err", err)
		ss.fail(syncproto.ToWire(err))
		return false
	}
	ss.srv.metrics.bytes.WithLabelValues("out").Add(float64(len(frame)))
	ss.sentCP = cp
	return ss.send(frame, true)
}

// batch collects items for one changes message; a key appears once, as
// its latest item.
type batch struct {
	items map[syncproto.Key]Item
	order []syncproto.Key
	bytes int
}

func newBatch() *batch { return &batch{items: make(map[syncproto.Key]Item)} }

func (b *batch) add(it Item) {
	if _, ok := b.items[it.Key]; !ok {
		b.order = append(b.order, it.Key)
	}
	b.items[it.Key] = it
	if it.Record != nil {
		for _, f := range it.Record.Fields {
			for _, v := range f.Values {
				b.bytes += len(v.Data) + 64
			}
		}
	}
}

func (b *batch) split() (*batch, *batch) {
	half := len(b.order) / 2
	x, y := newBatch(), newBatch()
	for i, k := range b.order {
		if i < half {
			x.add(b.items[k])
		} else {
			y.add(b.items[k])
		}
	}
	return x, y
}

func (b *batch) message(cp syncproto.Checkpoint) *syncproto.Changes {
	msg := &syncproto.Changes{Checkpoint: cp}
	for _, k := range b.order {
		it := b.items[k]
		if it.Record != nil {
			msg.Records = append(msg.Records, *it.Record)
		} else {
			msg.Evicted = append(msg.Evicted, syncproto.Eviction{Collection: k.Collection, ID: k.ID, Area: it.MovedTo})
		}
	}
	return msg
}
