package server

import (
	"context"
	"sync/atomic"
)

// headStore is the server's Store, wrapped so that the server knows the
// log head of its latest commit without opening a transaction: a session
// woken for a commit whose changes message another session has already
// built sends that frame as it is. A read transaction per delivery was a
// fifth of the server's CPU in a fan-out to 1,000 devices (BENCHMARKS.md,
// load). Every write of the server goes through it, so the head it knows
// is never behind a commit that woke anyone.
type headStore struct {
	Store
	head *atomic.Uint64
}

func (s headStore) Update(ctx context.Context, fn func(tx Tx) error) error {
	return s.track(func(f func(Tx) error) error { return s.Store.Update(ctx, f) }, fn)
}

// UpdateWeight is the store's weightedStore method if it has one, else
// Update.
func (s headStore) UpdateWeight(ctx context.Context, weight int, fn func(tx Tx) error) error {
	ws, ok := s.Store.(weightedStore)
	if !ok {
		return s.Update(ctx, fn)
	}
	return s.track(func(f func(Tx) error) error { return ws.UpdateWeight(ctx, weight, f) }, fn)
}

// track runs fn through run and, once it has committed, raises the known
// head to the head fn's transaction ended at.
func (s headStore) track(run func(func(Tx) error) error, fn func(Tx) error) error {
	var h uint64
	err := run(func(tx Tx) error {
		if err := fn(tx); err != nil {
			return err
		}
		var err error
		h, err = tx.Head()
		return err
	})
	if err != nil {
		return err
	}
	for cur := s.head.Load(); h > cur && !s.head.CompareAndSwap(cur, h); cur = s.head.Load() {
	}
	return nil
}
