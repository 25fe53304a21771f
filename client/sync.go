package client

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/gorilla/websocket"

	"github.com/casesync/casesync/syncproto"
)

// SyncResult summarises a sync round.
type SyncResult struct {
	// Pushed counts local changes the server accepted.
	Pushed int `json:"pushed"`
	// Rejected counts local changes the server refused (see Rejected).
	Rejected int `json:"rejected"`
	// Deferred counts changes left in the outbox for later (rate limit).
	Deferred int `json:"deferred"`
	// Pulled counts record states received.
	Pulled int `json:"pulled"`
	// Evicted counts records removed because they left the device's scope.
	Evicted int `json:"evicted"`
	// Conflicts is the number of records this round touched that have
	// open conflicts afterwards (Status counts them all).
	Conflicts int `json:"conflicts"`
	// Seq is the server log sequence the replica reached.
	Seq uint64 `json:"seq"`
}

// Progress reports a running sync round, for a progress bar.
type Progress struct {
	Pushed, ToPush int
	Pulled         int
	Seq, Head      uint64
}

// SyncOptions adjust one round.
type SyncOptions struct {
	// Progress, if set, is called as the round advances.
	Progress func(Progress)
}

// Sync runs one sync round: hello, push the outbox in batches (a change
// leaves the outbox only once acknowledged), pull everything since the
// checkpoint, and close. It is safe to interrupt at any point: a retried
// round duplicates nothing and loses nothing.
func (c *Client) Sync(ctx context.Context, opts *SyncOptions) (SyncResult, error) {
	c.syncMu.Lock()
	defer c.syncMu.Unlock()
	var o SyncOptions
	if opts != nil {
		o = *opts
	}
	res, err := c.session(ctx, false, o.Progress)
	c.setLastError(err)
	return res, err
}

// Run keeps the replica in sync until ctx ends: it stays connected, applies
// live changes, pushes local writes as they happen, and reconnects with
// exponential backoff and jitter when the network drops. It returns nil
// when ctx ends, or the error that makes syncing pointless (revoked,
// unauthorised, incompatible version).
func (c *Client) Run(ctx context.Context) error {
	backoff := c.opts.ReconnectMin
	for {
		c.syncMu.Lock()
		start := time.Now()
		_, err := c.session(ctx, true, nil)
		c.syncMu.Unlock()
		if ctx.Err() != nil {
			return nil
		}
		c.setLastError(err)
		if permanent(err) {
			return err
		}
		c.log.Info("sync session ended; reconnecting", "err", err, "after", backoff)
		if time.Since(start) > 10*c.opts.ReconnectMax {
			backoff = c.opts.ReconnectMin // it was a long healthy session
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(2*backoff, c.opts.ReconnectMax)
	}
}

// permanent reports errors that retrying cannot fix.
func permanent(err error) bool {
	if errors.Is(err, ErrRevoked) || errors.Is(err, ErrNotEnrolled) || errors.Is(err, ErrClosed) {
		return true
	}
	var pe *syncproto.Error
	if errors.As(err, &pe) {
		switch pe.Code {
		case syncproto.CodeAuth, syncproto.CodeRevoked, syncproto.CodeVersion:
			return true
		}
	}
	return false
}

// maxInflight bounds the pushes awaiting acknowledgement.
const maxInflight = 4

// round is the state of one session.
type round struct {
	c        *Client
	cn       *conn
	m        Meta
	res      SyncResult
	live     bool
	limits   syncproto.Limits
	inflight [][]syncproto.Change
	lastSent uint64    // highest outbox seq sent this session
	holdTill time.Time // rate limited: push nothing before
	caughtUp bool
	purged   bool
	head     uint64
	progress func(Progress)
	toPush   int
	gone     map[string]syncproto.Dot // cases this device moved out of its scope this session
	touched  map[syncproto.Key]bool
}

func (r *round) touch(k syncproto.Key) {
	if r.touched == nil {
		r.touched = map[syncproto.Key]bool{}
	}
	r.touched[k] = true
}

// session runs one connection. The caller holds syncMu.
func (c *Client) session(ctx context.Context, live bool, progress func(Progress)) (SyncResult, error) {
	var m Meta
	if err := c.view(func(tx *stx) error { var err error; m, err = tx.meta(); return err }); err != nil {
		return SyncResult{}, err
	}
	if m.Device == "" {
		return SyncResult{}, ErrNotEnrolled
	}
	ws, err := c.dial(ctx, m)
	if err != nil {
		c.recordOutcome(err)
		return SyncResult{}, c.terminal(err)
	}
	cn := newConn(ws, c.codec)
	quit := make(chan struct{})
	defer func() {
		close(quit)
		cn.close(syncproto.CloseNormal)
		<-cn.done
		c.setConnected(false)
	}()
	r := &round{c: c, cn: cn, m: m, live: live, progress: progress}
	if err := r.handshake(ctx, quit); err != nil {
		c.recordOutcome(err)
		return r.res, c.terminal(err)
	}
	c.setConnected(true)
	err = r.loop(ctx)
	if r.purged {
		c.compact()
	}
	c.recordOutcome(err)
	if err == nil || errors.Is(err, context.Canceled) {
		_ = c.view(func(tx *stx) error {
			// Only the records this round touched: counting every
			// conflict decodes the whole replica (Status does that).
			m, _ := tx.meta()
			for k := range r.touched {
				rec, _, err := visible(tx, m, k)
				if err != nil {
					return err
				}
				if rec != nil && len(rec.Conflicts()) > 0 {
					r.res.Conflicts++
				}
			}
			return nil
		})
	}
	return r.res, c.terminal(err)
}

// recordOutcome persists when the replica last synced, or why it failed,
// so that 'casesync status' in another process can show it.
func (c *Client) recordOutcome(err error) {
	var pe *syncproto.Error
	if errors.As(err, &pe) && pe.Code == syncproto.CodeRevoked {
		return // the replica is about to be wiped
	}
	_ = c.update(func(tx *stx) error {
		m, merr := tx.meta()
		if merr != nil {
			return merr
		}
		if err == nil || errors.Is(err, context.Canceled) {
			m.LastSync, m.LastError = c.opts.Now().UTC(), ""
		} else {
			m.LastError = err.Error()
		}
		return tx.putMeta(m)
	})
}

// terminal handles errors that end the replica: revocation wipes it.
func (c *Client) terminal(err error) error {
	var pe *syncproto.Error
	if errors.As(err, &pe) && pe.Code == syncproto.CodeRevoked {
		return c.wipe()
	}
	return err
}

// wipe deletes the replica after revocation and reports what was lost.
func (c *Client) wipe() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.wiped || c.st == nil {
		return ErrRevoked
	}
	lost := 0
	_ = c.st.view(func(tx *stx) error { lost, _ = tx.outboxLen(); return nil })
	path := c.st.path()
	if err := c.st.close(); err != nil {
		c.log.Error("close store before wipe", "err", err)
	}
	c.st = nil
	c.wiped = true
	if err := wipeStore(path); err != nil {
		return fmt.Errorf("client: device revoked, but wiping %s failed: %w", path, err)
	}
	c.log.Warn("device revoked by the server; local store wiped", "lost_changes", lost)
	return &RevokedError{Lost: lost}
}

func (c *Client) compact() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.st == nil {
		return
	}
	if err := c.st.compact(); err != nil {
		c.log.Error("compact store after purge", "err", err)
	}
}

func (r *round) handshake(ctx context.Context, quit chan struct{}) error {
	c := r.c
	sent := c.opts.Now()
	hello := &syncproto.Hello{
		Version: syncproto.Version, Device: r.m.Device, Checkpoint: r.m.Checkpoint,
		Compression: []string{syncproto.CompressionZstd}, Time: sent.UnixMilli(), Live: r.live,
		Agent: "casesync-client/1",
	}
	if err := r.cn.send(hello); err != nil {
		return fmt.Errorf("%w: send hello: %v", ErrUnreachable, err)
	}
	timeout := 45 * time.Second
	go r.cn.readLoop(timeout, quit)
	var in inbound
	select {
	case in = <-r.cn.msgs:
	case <-ctx.Done():
		return ctx.Err()
	}
	if in.err != nil {
		return closeError(in.err)
	}
	switch m := in.msg.(type) {
	case *syncproto.Error:
		return m
	case *syncproto.Welcome:
		recv := c.opts.Now()
		mid := sent.Add(recv.Sub(sent) / 2)
		offset := time.UnixMilli(m.Time).Sub(mid)
		c.clock.SetOffset(offset)
		r.limits, r.head = m.Limits, m.Seq
		if r.m.User == m.User && r.m.Role == m.Role && r.m.Scope.All == m.Scope.All && slices.Equal(r.m.Scope.Areas, m.Scope.Areas) &&
			r.m.ClockOffsetMS == offset.Milliseconds() && (r.m.Checkpoint.Epoch == "" || r.m.Checkpoint.Epoch == m.Epoch) {
			return nil // nothing new: spare the fsync
		}
		return c.update(func(tx *stx) error {
			meta, err := tx.meta()
			if err != nil {
				return err
			}
			meta.User, meta.Role, meta.Scope = m.User, m.Role, m.Scope
			meta.ClockOffsetMS = offset.Milliseconds()
			if meta.Checkpoint.Epoch != "" && meta.Checkpoint.Epoch != m.Epoch {
				// The server's log was replaced: our checkpoint is void and
				// the server resends everything.
				c.log.Warn("server epoch changed; pulling everything again")
				meta.Checkpoint = syncproto.Checkpoint{}
			}
			r.m = meta
			return tx.putMeta(meta)
		})
	default:
		return syncproto.Errorf(syncproto.ErrUnexpected, "server sent %s before welcome", in.msg.Type())
	}
}

func (r *round) loop(ctx context.Context) error {
	ping := time.NewTicker(15 * time.Second)
	defer ping.Stop()
	var poll <-chan time.Time
	if r.live && r.c.opts.Shared {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		poll = t.C
	}
	var hold <-chan time.Time
	for {
		if err := r.pushMore(); err != nil {
			return err
		}
		if r.done() {
			return nil
		}
		if !r.holdTill.IsZero() && hold == nil {
			hold = time.After(time.Until(r.holdTill))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case in := <-r.cn.msgs:
			if in.err != nil {
				return closeError(in.err)
			}
			if err := r.handle(in.msg); err != nil {
				return err
			}
		case <-r.c.kick:
			// A local write: pushMore picks it up.
		case <-hold:
			hold, r.holdTill = nil, time.Time{}
		case <-ping.C:
			_ = r.cn.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(5*time.Second))
		case <-poll:
			// Another process (the CLI beside 'casesync run') may have
			// queued changes: pushMore looks.
		}
	}
}

// done reports whether a one-shot round has finished.
func (r *round) done() bool {
	if r.live || !r.caughtUp || len(r.inflight) > 0 {
		return false
	}
	return true
}

// pushMore sends outbox changes not yet sent, keeping at most maxInflight
// pushes unacknowledged.
func (r *round) pushMore() error {
	if len(r.inflight) >= maxInflight || (!r.holdTill.IsZero() && time.Now().Before(r.holdTill)) {
		return nil
	}
	batch := min(r.c.opts.PushBatch, max(1, r.limits.MaxBatch))
	var next []syncproto.Change
	var queued int
	if err := r.c.view(func(tx *stx) error {
		var err error
		next, err = tx.outboxAfter(r.lastSent, batch*(maxInflight-len(r.inflight)))
		if err == nil && r.progress != nil {
			queued, err = tx.outboxLen()
		}
		return err
	}); err != nil {
		return err
	}
	r.toPush = r.res.Pushed + r.res.Rejected + queued
	for len(next) > 0 && len(r.inflight) < maxInflight {
		n := min(batch, len(next))
		b := next[:n]
		next = next[n:]
		if err := r.cn.send(&syncproto.Push{Changes: b}); err != nil {
			var pe *syncproto.Error
			if errors.As(err, &pe) && errors.Is(pe, syncproto.ErrFrameTooLarge) && n > 1 {
				batch = max(1, n/2) // large notes: halve and retry
				next = append(append([]syncproto.Change(nil), b...), next...)
				continue
			}
			return fmt.Errorf("%w: push: %v", ErrUnreachable, err)
		}
		r.inflight = append(r.inflight, b)
		r.lastSent = b[len(b)-1].Seq
	}
	r.report()
	return nil
}

func (r *round) report() {
	if r.progress != nil {
		r.progress(Progress{Pushed: r.res.Pushed + r.res.Rejected, ToPush: r.toPush, Pulled: r.res.Pulled, Seq: r.m.Checkpoint.Seq, Head: r.head})
	}
}

func (r *round) handle(msg syncproto.Message) error {
	switch m := msg.(type) {
	case *syncproto.Changes:
		return r.applyChanges(m)
	case *syncproto.CaughtUp:
		r.caughtUp = true
		r.res.Seq = m.Checkpoint.Seq
		return r.saveCheckpoint(m.Checkpoint)
	case *syncproto.ScopeUpdate:
		return r.applyScope(m)
	case *syncproto.Ack:
		if len(r.inflight) == 0 {
			return syncproto.Errorf(syncproto.ErrUnexpected, "ack without a push")
		}
		b := r.inflight[0]
		r.inflight = r.inflight[1:]
		return r.applyAck(b, m)
	case *syncproto.Error:
		return m
	case *syncproto.Unknown:
		return nil // a newer server's message
	}
	return syncproto.Errorf(syncproto.ErrUnexpected, "server sent %s mid-session", msg.Type())
}

func (r *round) saveCheckpoint(cp syncproto.Checkpoint) error {
	if cp.Epoch == r.m.Checkpoint.Epoch && cp.Seq == r.m.Checkpoint.Seq && slices.Equal(cp.Areas, r.m.Checkpoint.Areas) {
		return nil // nothing new: spare the fsync
	}
	return r.c.update(func(tx *stx) error {
		m, err := tx.meta()
		if err != nil {
			return err
		}
		m.Checkpoint = cp
		r.m = m
		return tx.putMeta(m)
	})
}

// applyChanges merges record states, removes evicted records and saves the
// checkpoint, in one transaction: a crash leaves either all or none.
func (r *round) applyChanges(msg *syncproto.Changes) error {
	var keys []syncproto.Key
	err := r.c.update(func(tx *stx) error {
		keys = keys[:0]
		for i := range msg.Records {
			in := &msg.Records[i]
			k := in.Key()
			if r.staleForUs(in) {
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
				base = in.Clone()
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

// movedAway remembers, for the rest of the session, a case this device
// moved out of its own scope, with the change that moved it.
func (r *round) movedAway(id string, move syncproto.Dot) {
	if r.gone == nil {
		r.gone = map[string]syncproto.Dot{}
	}
	r.gone[id] = move
}

// staleForUs reports whether an incoming state predates this device's own
// hand-over of its case during the session: a backlog read before the move
// committed. A case state whose area has seen the move is current (the case
// may be back in scope: moved back, or the user's areas grew), and from it
// on the case and its journal are taken as usual.
func (r *round) staleForUs(in *syncproto.Record) bool {
	if len(r.gone) == 0 {
		return false
	}
	if in.Collection == syncproto.Cases {
		move, ok := r.gone[in.ID]
		if !ok {
			return false
		}
		if in.Fields[syncproto.FieldArea].Seen.Covers(move) {
			delete(r.gone, in.ID)
			return false
		}
		return true
	}
	id, _ := in.String(syncproto.FieldCaseID)
	_, ok := r.gone[id]
	return ok
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
		for i := range batch {
			ch := &batch[i]
			k := ch.Key()
			switch e, isRej := rejected[ch.Seq]; {
			case accepted[ch.Seq]:
				pushed++
				r.touch(k)
				if err := tx.removeOutbox(ch.Seq); err != nil {
					return err
				}
				if err := r.confirm(tx, ch); err != nil {
					return err
				}
			case isRej && e.Code == syncproto.CodeRate:
				deferred++
				retry = max(retry, time.Duration(e.RetryAfterMS)*time.Millisecond)
			case isRej:
				refused++
				if err := tx.removeOutbox(ch.Seq); err != nil {
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

// confirm joins an accepted change into the server-confirmed state, unless
// the record has left the device's scope meanwhile.
func (r *round) confirm(tx *stx, ch *syncproto.Change) error {
	k := ch.Key()
	if ev, err := tx.isEvicted(k); err != nil || ev {
		return err
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
			if c, ok, err := tx.record(syncproto.Key{Collection: syncproto.Cases, ID: id}); err != nil {
				return err
			} else if ok {
				base.Area = c.Area
			}
		}
	}
	if base.Area == "" || !r.m.Scope.Contains(base.Area) {
		// Accepted, but no longer the device's to hold: a note about a
		// case that moved away meanwhile, or a case handed over. The
		// server files it where it belongs now.
		if k.Collection == syncproto.Cases {
			r.movedAway(k.ID, syncproto.Dot{Device: r.m.Device, Seq: ch.Seq})
			if err := r.dropJournal(tx, k.ID); err != nil {
				return err
			}
		}
		return tx.deleteRecord(k)
	}
	return tx.putRecord(base)
}
