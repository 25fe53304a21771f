package boltstore

import (
	"context"
	"fmt"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"sync/atomic"

	bolt "go.etcd.io/bbolt"

	"github.com/casesync/casesync/server"
)

// States of a request. The caller and the writer race to move a queued
// request: the caller to cancelled when its ctx ends, the writer to started
// before it first runs fn. Whoever wins decides whether fn runs at all.
const (
	stateQueued int32 = iota
	stateStarted
	stateCancelled
)

// request is one Update waiting for the writer.
type request struct {
	ctx    context.Context
	fn     func(server.Tx) error
	weight int // the work in fn, in the caller's units (a push: its changes)
	state  atomic.Int32
	done   chan error // buffered: the writer never waits for the caller
}

// writer owns every read-write transaction. It takes the first queued
// request plus every other one already waiting, up to MaxBatch requests
// and MaxWeight of work, so that concurrent callers share one commit and
// one fsync, and returns when Close closes the queue. A request that would
// take a batch over MaxWeight opens the next one: the cap bounds how long
// the first caller of a batch waits for the last one's work.
func (s *Store) writer() {
	defer s.wg.Done()
	// A label to tell the writer's time apart in a CPU profile
	// (go tool pprof -tagfocus role=writer).
	pprof.SetGoroutineLabels(pprof.WithLabels(context.Background(), pprof.Labels("role", "writer")))
	batch := make([]*request, 0, s.maxBatch)
	var next *request // taken from the queue, for the next batch
	for {
		r := next
		next = nil
		if r == nil {
			var ok bool
			if r, ok = <-s.reqs; !ok {
				return
			}
		}
		batch = append(batch[:0], r)
		weight := r.weight
	fill:
		for len(batch) < s.maxBatch && weight < s.maxWeight {
			select {
			case r, ok := <-s.reqs:
				if !ok {
					break fill // closed: run what we have; the receive above ends the loop next
				}
				if weight+r.weight > s.maxWeight {
					next = r
					break fill
				}
				batch = append(batch, r)
				weight += r.weight
			default:
				break fill
			}
		}
		s.runBatch(batch)
		clear(batch[:cap(batch)]) // let answered requests be collected
	}
}

// runBatch runs batch in as few transactions as it can and answers every
// request. When a function fails, the transaction is rolled back (bbolt
// has no savepoints), the failing function runs again alone so its answer
// is its own outcome, and the others run again without it.
func (s *Store) runBatch(batch []*request) {
	for {
		batch = s.admit(batch)
		if len(batch) == 0 {
			return
		}
		failed, err := s.commit(batch)
		if failed < 0 {
			for _, r := range batch {
				r.done <- err
			}
			if err == nil {
				s.updates.Add(uint64(len(batch)))
			}
			return
		}
		bad := batch[failed]
		if len(batch) > 1 {
			batch = slices.Delete(batch, failed, failed+1)
			_, err = s.commit([]*request{bad})
		} else {
			batch = nil
		}
		if err == nil {
			s.updates.Add(1)
		}
		bad.done <- err
	}
}

// admit drops the requests whose callers gave up before their function
// started, answers those whose ctx ended unnoticed, and marks the rest
// started. It filters batch in place.
func (s *Store) admit(batch []*request) []*request {
	out := batch[:0]
	for _, r := range batch {
		if r.state.Load() == stateStarted {
			out = append(out, r) // ran in a rolled-back batch; runs again
			continue
		}
		if err := r.ctx.Err(); err != nil {
			if r.state.CompareAndSwap(stateQueued, stateCancelled) {
				r.done <- err
			}
			continue
		}
		if r.state.CompareAndSwap(stateQueued, stateStarted) {
			out = append(out, r)
		}
	}
	clear(batch[len(out):])
	return out
}

// commit runs the functions of batch in one transaction and commits it. It
// returns the index of the first function that failed, with its error, or
// -1 with the outcome of the commit.
func (s *Store) commit(batch []*request) (int, error) {
	btx, err := s.db.Begin(true)
	if err != nil {
		s.log.Error("begin transaction failed", "err", err)
		return -1, fmt.Errorf("boltstore: begin transaction: %w", err)
	}
	for i, r := range batch {
		if err := s.call(btx, r.fn); err != nil {
			_ = btx.Rollback()
			s.rollbacks.Add(1)
			return i, err
		}
	}
	if err := btx.Commit(); err != nil {
		s.log.Error("commit failed", "updates", len(batch), "err", err)
		return -1, fmt.Errorf("boltstore: commit: %w", err)
	}
	s.commits.Add(1)
	return -1, nil
}

// call runs fn on its own view of btx and turns a panic into an error, so
// the writer survives a bad function. The view is invalidated afterwards:
// btx goes on to serve other callers.
func (s *Store) call(btx *bolt.Tx, fn func(server.Tx) error) (err error) {
	t := &tx{btx: btx}
	defer func() {
		t.finish()
		if p := recover(); p != nil {
			s.log.Error("update function panicked", "panic", p, "stack", string(debug.Stack()))
			err = fmt.Errorf("%w: %v", ErrPanicked, p)
		}
	}()
	if err := fn(t); err != nil {
		return err
	}
	return t.flush()
}
