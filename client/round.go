package client

// A sync round: one connection's handshake, push loop and message dispatch.
// What the messages do to the replica is in pull.go (changes, scope) and
// ack.go (acknowledged pushes).

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/gorilla/websocket"

	"github.com/casesync/casesync/syncproto"
)

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
	gone     map[string]handOver // cases this device moved out of its scope this session
	// unplaced is the highest ack head of accepted changes the device
	// stored nowhere, not knowing where their record is now (it left the
	// scope by the device's last knowledge, or was evicted while they were
	// pending): if the server filed them in scope, they come back with the
	// backlog past that head.
	unplaced uint64
	touched  map[syncproto.Key]bool
}

func (r *round) touch(k syncproto.Key) {
	if r.touched == nil {
		r.touched = map[syncproto.Key]bool{}
	}
	r.touched[k] = true
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
