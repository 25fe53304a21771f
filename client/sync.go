package client

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

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
	res, again, err := c.session(ctx, false, o.Progress)
	if err == nil && again {
		// Changes accepted in this round that the device could not place
		// were filed after the backlog it read: one more round brings them,
		// so that a caseworker sees her own writes once Sync returns, not
		// after the next one. If it fails, they come with the next.
		more, _, merr := c.session(ctx, false, o.Progress)
		if merr == nil {
			res = res.then(more)
		} else if permanent(merr) || errors.Is(merr, ErrRevoked) {
			err = merr
		} else {
			c.log.Info("sync: the follow-up round failed; the next sync completes it", "err", merr)
		}
	}
	c.setLastError(err)
	return res, err
}

// then is the result of round r followed by round next.
func (r SyncResult) then(next SyncResult) SyncResult {
	return SyncResult{
		Pushed:    r.Pushed + next.Pushed,
		Rejected:  r.Rejected + next.Rejected,
		Deferred:  next.Deferred,
		Pulled:    r.Pulled + next.Pulled,
		Evicted:   r.Evicted + next.Evicted,
		Conflicts: max(r.Conflicts, next.Conflicts),
		Seq:       next.Seq,
	}
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
		_, _, err := c.session(ctx, true, nil)
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

// session runs one connection. The caller holds syncMu. again reports
// that a one-shot round ended before the backlog reached changes it had
// pushed and could not place (round.unplaced).
func (c *Client) session(ctx context.Context, live bool, progress func(Progress)) (res SyncResult, again bool, err error) {
	var m Meta
	if err := c.view(func(tx *stx) error { var err error; m, err = tx.meta(); return err }); err != nil {
		return SyncResult{}, false, err
	}
	if m.Device == "" {
		return SyncResult{}, false, ErrNotEnrolled
	}
	ws, err := c.dial(ctx, m)
	if err != nil {
		c.recordOutcome(err)
		return SyncResult{}, false, c.terminal(err)
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
		return r.res, false, c.terminal(err)
	}
	c.setConnected(true)
	err = r.loop(ctx)
	if r.purged {
		c.compact()
	}
	c.recordOutcome(err)
	if err == nil || errors.Is(err, context.Canceled) {
		_ = c.view(func(tx *stx) error {
			// Only the records this round touched, and of those only the
			// ones the conflict index or the outbox names: a cold pull
			// touches every record, and decrypting them all again took
			// longer than the pull.
			m, _ := tx.meta()
			keys, err := tx.conflictCandidates()
			if err != nil {
				return err
			}
			for _, k := range keys {
				if !r.touched[k] {
					continue
				}
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
	again = err == nil && !live && r.unplaced > r.m.Checkpoint.Seq
	return r.res, again, c.terminal(err)
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
// The notice it leaves (revoked.go) is written first, so that a wipe cut
// short is finished by the next Open, and the user learns of it even if
// this process dies before saying so.
func (c *Client) wipe() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.revoked != nil {
		return c.revoked
	}
	if c.st == nil {
		return ErrClosed
	}
	var n notice
	_ = c.st.view(func(tx *stx) error {
		n.Lost, _ = tx.outboxLen()
		n.Rejected, _ = tx.count(bucketRejected)
		if m, err := tx.meta(); err == nil {
			n.Device, n.User = m.Device, m.User
		}
		return nil
	})
	n.At = c.opts.Now().UTC()
	if err := writeNotice(c.dir, n); err != nil {
		// Nothing is wiped yet: the next contact with the server tries again.
		return fmt.Errorf("client: this device was revoked, but %w", err)
	}
	path := c.st.path()
	if err := c.st.close(); err != nil {
		c.log.Error("close store before wipe", "err", err)
	}
	c.st = nil
	c.revoked = n.err()
	if err := wipeStore(path); err != nil {
		return fmt.Errorf("client: device revoked, but wiping %s failed (the next start finishes it): %w", path, err)
	}
	c.log.Warn("device revoked by the server; local store wiped", "lost_changes", n.Lost, "rejected_changes", n.Rejected)
	return c.revoked
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
