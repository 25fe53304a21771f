package boltstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/casesync/casesync/server"
)

var _ server.Store = (*Store)(nil)

// formatVersion is the layout version kept in meta/format. Open refuses a
// file with another version instead of misreading it, except format 1,
// which format 2 reads as it is (2 added the compact record state,
// compact.go): Open marks such a file 2, so that an older casesyncd, which
// cannot read compact states, refuses it rather than calling them corrupt.
const (
	formatVersion = "2"
	formatV1      = "1"
)

// Top-level bucket names; see the package documentation.
var (
	bucketMeta        = []byte("meta")
	bucketLog         = []byte("log")
	bucketRecords     = []byte("records")
	bucketAreas       = []byte("areas")
	bucketCaseEntries = []byte("case_entries")
	bucketAccepted    = []byte("accepted")
	bucketConflicts   = []byte("conflicts")
	bucketUsers       = []byte("users")
	bucketDevices     = []byte("devices")
	bucketTokens      = []byte("tokens")

	allBuckets = [][]byte{
		bucketMeta, bucketLog, bucketRecords, bucketAreas, bucketCaseEntries,
		bucketAccepted, bucketConflicts, bucketUsers, bucketDevices, bucketTokens,
	}

	// Buckets nested in each area's bucket.
	bucketIdx  = []byte("idx")
	bucketKeys = []byte("keys")

	// Keys of the meta bucket.
	metaFormat   = []byte("format")
	metaServerID = []byte("server_id")
	metaEpoch    = []byte("epoch")
	metaHead     = []byte("head")
)

// Options configures Open. The zero value of each field selects its default.
type Options struct {
	// Timeout is how long Open waits for the file lock before it returns
	// ErrLocked. Default 1 s: long enough to ride out a restart, short
	// enough that a second casesyncd fails at once instead of hanging.
	Timeout time.Duration
	// Logger receives panics of update functions, failed commits and
	// opening. Default: discard.
	Logger *slog.Logger
	// MaxBatch caps how many updates one commit takes, so a long queue
	// does not make one huge transaction. Default 256.
	MaxBatch int
	// MaxWeight caps the summed weight of the updates one commit takes:
	// Update weighs 1, UpdateWeight what its caller says (the server: the
	// changes in a push). A commit of 10,000 changes made every ack wait
	// ~1.5 s (BENCHMARKS.md, load); an update heavier than the cap still
	// commits, alone. Default 4096.
	MaxWeight int
}

// DefaultOptions are the options Open uses for nil.
var DefaultOptions = Options{Timeout: time.Second, MaxBatch: 256, MaxWeight: 4096}

// Stats counts the writer's work, to see how well group commit batches.
type Stats struct {
	// Commits is the number of read-write transactions committed.
	Commits uint64
	// Updates is the number of Update calls that committed.
	Updates uint64
	// Rollbacks is the number of transactions rolled back because an
	// update function failed; every function of such a batch runs again.
	Rollbacks uint64
	// Queued is the number of updates waiting for the writer now.
	Queued int
}

// Store is a server.Store on one bbolt file. It is safe for concurrent use.
type Store struct {
	db        *bolt.DB
	path      string
	meta      server.Meta
	log       *slog.Logger
	maxBatch  int
	maxWeight int

	reqs chan *request // to the writer goroutine; closed by Close
	wg   sync.WaitGroup

	// mu guards closed. Callers register in callers under mu, so that
	// Close can wait for every Update and View in flight before it closes
	// reqs and the file.
	mu        sync.RWMutex
	closed    bool
	callers   sync.WaitGroup
	closeOnce sync.Once
	closeErr  error

	commits   atomic.Uint64
	updates   atomic.Uint64
	rollbacks atomic.Uint64
}

// Open opens or creates the store at path (mode 0600) and starts its writer
// goroutine. A new store gets a random ServerID and Epoch, kept from then
// on. Open returns ErrLocked if another handle has the file open, and an
// error naming the file if the file is corrupt or not a casesync store.
func Open(path string, opts *Options) (*Store, error) {
	o := DefaultOptions
	if opts != nil {
		if opts.Timeout > 0 {
			o.Timeout = opts.Timeout
		}
		if opts.MaxBatch > 0 {
			o.MaxBatch = opts.MaxBatch
		}
		if opts.MaxWeight > 0 {
			o.MaxWeight = opts.MaxWeight
		}
		o.Logger = opts.Logger
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	db, meta, created, err := openBolt(path, o.Timeout)
	if err != nil {
		return nil, err
	}
	s := &Store{
		db:        db,
		path:      path,
		meta:      meta,
		log:       o.Logger,
		maxBatch:  o.MaxBatch,
		maxWeight: o.MaxWeight,
		reqs:      make(chan *request, o.MaxBatch),
	}
	s.log.Info("store opened", "path", path, "server_id", meta.ServerID, "epoch", meta.Epoch, "created", created)
	s.wg.Add(1)
	go s.writer()
	return s, nil
}

// openBolt opens the file and creates the layout. bbolt can panic reading
// a corrupt file (its freelist, for one); the panic is turned into an
// error, and the file is closed so its lock does not outlive the failure.
func openBolt(path string, timeout time.Duration) (db *bolt.DB, meta server.Meta, created bool, err error) {
	var file *os.File
	defer func() {
		if p := recover(); p != nil {
			if file != nil {
				unlock(file)
				_ = file.Close() // bbolt's mapping of the file leaks
			}
			db, err = nil, fmt.Errorf("boltstore: open %s: file is corrupt (bbolt panicked: %v)", path, p)
		}
	}()
	db, err = bolt.Open(path, 0o600, &bolt.Options{
		Timeout: timeout,
		OpenFile: func(name string, flag int, mode os.FileMode) (*os.File, error) {
			f, err := os.OpenFile(name, flag, mode)
			file = f
			return f, err
		},
	})
	switch {
	case errors.Is(err, bolterrors.ErrTimeout):
		return nil, meta, false, fmt.Errorf("%w: %s stayed locked for %s", ErrLocked, path, timeout)
	case err != nil:
		return nil, meta, false, fmt.Errorf("boltstore: open %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		meta, created, err = initLayout(tx)
		return err
	})
	if err != nil {
		_ = db.Close()
		return nil, meta, false, fmt.Errorf("boltstore: open %s: %w", path, err)
	}
	return db, meta, created, nil
}

// initLayout creates the buckets and identity of a new store, or checks
// those of an existing one.
func initLayout(tx *bolt.Tx) (meta server.Meta, created bool, err error) {
	m := tx.Bucket(bucketMeta)
	if m == nil {
		empty := true
		_ = tx.ForEach(func([]byte, *bolt.Bucket) error { empty = false; return nil })
		if !empty {
			return meta, false, errors.New("file is a bbolt database but not a casesync server store")
		}
		created = true
	} else if f := string(m.Get(metaFormat)); f == formatV1 {
		if err := m.Put(metaFormat, []byte(formatVersion)); err != nil {
			return meta, false, fmt.Errorf("mark format %s: %w", formatVersion, err)
		}
	} else if f != formatVersion {
		return meta, false, fmt.Errorf("store format %q is not the supported %q (or %q)", f, formatVersion, formatV1)
	}
	for _, name := range allBuckets {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return meta, false, fmt.Errorf("create bucket %s: %w", name, err)
		}
	}
	m = tx.Bucket(bucketMeta)
	if created {
		id, err := randomID()
		if err != nil {
			return meta, false, err
		}
		epoch, err := randomID()
		if err != nil {
			return meta, false, err
		}
		for k, v := range map[string]string{string(metaFormat): formatVersion, string(metaServerID): id, string(metaEpoch): epoch} {
			if err := m.Put([]byte(k), []byte(v)); err != nil {
				return meta, false, err
			}
		}
	}
	meta = server.Meta{ServerID: string(m.Get(metaServerID)), Epoch: string(m.Get(metaEpoch))}
	if meta.ServerID == "" || meta.Epoch == "" {
		return meta, false, fmt.Errorf("%w: meta has no server_id or epoch", ErrCorrupt)
	}
	return meta, created, nil
}

// randomID returns 16 hex characters from crypto/rand.
func randomID() (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("random ID: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// Meta returns the store's identity, read once by Open.
func (s *Store) Meta() server.Meta { return s.meta }

// Path returns the store's file.
func (s *Store) Path() string { return s.path }

// Stats returns the writer's counters.
func (s *Store) Stats() Stats {
	return Stats{
		Commits:   s.commits.Load(),
		Updates:   s.updates.Load(),
		Rollbacks: s.rollbacks.Load(),
		Queued:    len(s.reqs),
	}
}

// enter registers a caller, or returns ErrClosed. A registered caller must
// call s.callers.Done.
func (s *Store) enter() error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	s.callers.Add(1)
	return nil
}

// Update runs fn in a read-write transaction, possibly together with other
// callers' functions, and returns once that transaction is committed and
// synced to disk. fn may run more than once and must have no effects
// outside tx. If ctx is done before fn starts, Update returns ctx.Err()
// without running it; once fn has started, Update waits for the outcome.
//
// fn runs on the writer goroutine: it must not call Update, View or Close
// of the same store (that deadlocks), nor runtime.Goexit (t.FailNow).
func (s *Store) Update(ctx context.Context, fn func(tx server.Tx) error) error {
	return s.UpdateWeight(ctx, 1, fn)
}

// UpdateWeight is Update for a function that does weight units of work
// (at least 1): a commit takes updates up to Options.MaxWeight in all.
func (s *Store) UpdateWeight(ctx context.Context, weight int, fn func(tx server.Tx) error) error {
	if fn == nil {
		return errors.New("boltstore: Update with a nil function")
	}
	if err := s.enter(); err != nil {
		return err
	}
	defer s.callers.Done()
	if err := ctx.Err(); err != nil {
		return err
	}
	r := &request{ctx: ctx, fn: fn, weight: max(1, weight), done: make(chan error, 1)}
	select {
	case s.reqs <- r:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		if r.state.CompareAndSwap(stateQueued, stateCancelled) {
			return ctx.Err()
		}
		return <-r.done // started: the outcome is near, and binding
	}
}

// View runs fn in a read-only transaction. Reads do not wait for the
// writer: bbolt gives them a snapshot of the last commit.
//
// fn must not call Update of the same store: bbolt can deadlock when a
// goroutine holding a read transaction waits for a write.
func (s *Store) View(ctx context.Context, fn func(tx server.Tx) error) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.callers.Done()
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.db.View(func(btx *bolt.Tx) error {
		t := &tx{btx: btx}
		defer t.finish()
		return fn(t)
	})
}

// Close stops accepting calls, waits for every Update and View in flight
// (queued updates are committed), stops the writer and closes the file.
// It is idempotent: later calls return the first call's result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		s.callers.Wait()
		close(s.reqs)
		s.wg.Wait()
		if err := s.db.Close(); err != nil {
			s.closeErr = fmt.Errorf("boltstore: close %s: %w", s.path, err)
		}
		s.log.Info("store closed", "path", s.path)
	})
	return s.closeErr
}
