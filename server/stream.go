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
// session) changes as they commit and scope changes as they happen: it
// follows until nothing is pending, and wake-ups start followers later.
func (ss *session) stream(cp syncproto.Checkpoint) {
	if !ss.backlog(cp) || !ss.live {
		ss.stopStreaming()
		return
	}
	ss.follow()
}

// follow sends what wake-ups and scope changes left pending, and returns,
// clearing running, once nothing is: an idle live session keeps no
// streamer goroutine.
func (ss *session) follow() {
	for {
		ss.streamMu.Lock()
		wake, scope := ss.pendingWake, ss.pendingScope
		ss.pendingWake, ss.pendingScope = false, false
		if ss.streamOver || (!wake && !scope) {
			ss.running = false
			ss.streamMu.Unlock()
			return
		}
		ss.streamMu.Unlock()
		ok := true
		if scope {
			ok = ss.reloadScope(ss.cursor)
		}
		if ok {
			_, ok = ss.sendBacklog(ss.cursor)
		}
		if !ok {
			ss.stopStreaming()
			ss.streamMu.Lock()
			ss.running = false
			ss.streamMu.Unlock()
			return
		}
	}
}

// backlog sends the backlog since cp, then caught_up. It reports false if
// the session must end.
func (ss *session) backlog(cp syncproto.Checkpoint) bool {
	epoch := ss.srv.store.Meta().Epoch
	scope := ss.currentScope()
	cursor := make(map[string]uint64)
	ss.cursor = cursor
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
	if len(lost) > 0 && !ss.sendMsg(&syncproto.ScopeUpdate{Scope: scope, Lost: lost}) {
		return false
	}
	// Wake-ups until now are covered by the backlog up to the head it reads.
	ss.streamMu.Lock()
	ss.pendingWake = false
	ss.streamMu.Unlock()
	head, ok := ss.sendBacklog(cursor)
	if !ok {
		return false
	}
	return ss.sendMsg(&syncproto.CaughtUp{Checkpoint: ss.checkpoint(head)})
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
	return ss.sendMsg(&syncproto.ScopeUpdate{Scope: scope, Lost: lost})
}

// sendBacklog sends every item of the scope after cursor up to the log
// head, in bounded batches, advancing cursor. It returns the head reached.
//
// A message that other sessions would send too (the same scope, cursor,
// head and compression: a live change fanned out to a caseload's devices)
// is built by the first of them and sent as it is by the others (frames.go).
func (ss *session) sendBacklog(cursor map[string]uint64) (uint64, bool) {
	if head, sent, ok := ss.sendShared(cursor); sent {
		return head, ok
	}
	share := true
	for {
		var (
			head  uint64
			last  uint64
			full  bool
			batch = newBatch()
			sf    *sharedFrame
			build bool
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
			if share {
				sf, build = ss.srv.hub.frames.get(newFrameKey(scope, after, head, ss.compress))
				if sf != nil && !build {
					return nil // another session builds this very message
				}
			}
			return tx.ScanRaw(after, head, func(it Item) (bool, error) {
				last = it.Seq
				if it.Raw == nil {
					// A marker names the area the record moved to then; it
					// may have moved on since (A→B→C leaves A's marker
					// pointing at B). What counts is where it is now.
					to := it.MovedTo
					if cur, err := tx.RecordArea(it.Key); err == nil {
						to = cur
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
		if sf != nil && !build {
			if !sf.wait(ss.stop) {
				return 0, false
			}
			if !sf.ok {
				share = false // build it alone, as before sharing
				continue
			}
			ss.advance(cursor, head)
			if !sf.empty {
				ss.srv.metrics.frames.WithLabelValues("shared").Inc()
				if !ss.sendFrame(sf.frame, sf.cp) {
					return 0, false
				}
			}
			return head, true
		}
		if err != nil {
			if build {
				ss.srv.hub.frames.publish(sf, false, false, nil, syncproto.Checkpoint{})
			}
			ss.log.Error("scan backlog", "err", err)
			ss.fail(syncproto.ToWire(err))
			return 0, false
		}
		reached := head
		if full {
			reached = last
		}
		ss.advance(cursor, reached)
		if build {
			if !full && len(batch.order) == 0 {
				ss.srv.hub.frames.publish(sf, true, true, nil, syncproto.Checkpoint{})
				return head, true
			}
			var frame []byte
			cp := ss.checkpoint(reached)
			if !full {
				frame, err = ss.srv.codec.Encode(batch.message(cp), ss.compress)
			}
			if full || err != nil {
				// Not one message: this session's own backlog, in parts.
				ss.srv.hub.frames.publish(sf, false, false, nil, syncproto.Checkpoint{})
			} else {
				ss.srv.hub.frames.publish(sf, true, false, frame, cp)
				ss.srv.metrics.frames.WithLabelValues("built").Inc()
				if !ss.sendFrame(frame, cp) {
					return 0, false
				}
				return head, true
			}
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

// sendShared sends the changes message another session has built for this
// session's scope and cursors up to the head of the server's latest commit,
// without a transaction (headStore), and reports whether it did. A lead's
// scope is read in a transaction, and a frame not built yet is built
// there: sendBacklog does both.
func (ss *session) sendShared(cursor map[string]uint64) (head uint64, sent, ok bool) {
	scope := ss.currentScope()
	if scope.All {
		return 0, false, false
	}
	head = ss.srv.store.head.Load()
	after := make(map[string]uint64, len(scope.Areas))
	for _, a := range scope.Areas {
		after[a] = cursor[a]
	}
	sf := ss.srv.hub.frames.lookup(newFrameKey(scope, after, head, ss.compress))
	if sf == nil {
		return 0, false, false
	}
	if !sf.wait(ss.stop) {
		return 0, true, false
	}
	if !sf.ok {
		return 0, false, false
	}
	ss.advance(cursor, head)
	if !sf.empty {
		ss.srv.metrics.frames.WithLabelValues("shared").Inc()
		if !ss.sendFrame(sf.frame, sf.cp) {
			return 0, true, false
		}
	}
	return head, true, true
}

// advance moves every area's cursor, and the scope's, to at least seq.
func (ss *session) advance(cursor map[string]uint64, seq uint64) {
	for a := range cursor {
		cursor[a] = max(cursor[a], seq)
	}
	for _, a := range ss.currentScope().Areas {
		cursor[a] = max(cursor[a], seq)
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
	return ss.sendFrame(frame, cp)
}

// sendFrame sends an encoded changes message that brings the client to cp.
func (ss *session) sendFrame(frame []byte, cp syncproto.Checkpoint) bool {
	ss.srv.metrics.bytes.WithLabelValues("out").Add(float64(len(frame)))
	ss.sentCP = cp
	return ss.send(frame)
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
	b.bytes += len(it.Raw)
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
		if it.Raw != nil {
			msg.Raw = append(msg.Raw, it.Raw)
		} else {
			msg.Evicted = append(msg.Evicted, syncproto.Eviction{Collection: k.Collection, ID: k.ID, Area: it.MovedTo})
		}
	}
	return msg
}
