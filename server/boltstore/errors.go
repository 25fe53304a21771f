package boltstore

import "errors"

// ErrLocked is returned by Open when another process or handle holds the
// file: two servers writing one bbolt file would corrupt it, so the second
// one must stop instead of waiting forever.
var ErrLocked = errors.New("boltstore: data directory is in use by another casesyncd")

// ErrClosed is returned by Update and View after Close.
var ErrClosed = errors.New("boltstore: store is closed")

// ErrPanicked is returned by Update when its function panicked. The writer
// goroutine recovers, so one bad request cannot stop every other write.
var ErrPanicked = errors.New("boltstore: update function panicked")

// ErrReadOnly is returned by the writing methods of a Tx given to View.
var ErrReadOnly = errors.New("boltstore: transaction is read-only")

// ErrTxDone is returned by every method of a Tx used after the function it
// was given to has returned: with group commit its bbolt transaction may
// already belong to another caller.
var ErrTxDone = errors.New("boltstore: transaction used after its function returned")

// ErrCorrupt is returned when stored data breaks the layout's invariants,
// for example an index entry pointing at a record filed elsewhere.
var ErrCorrupt = errors.New("boltstore: store is corrupt")
