package client

// The local store: one bbolt file per replica.
//
// Layout (every bucket at the top level):
//
//	header         plaintext  "format" → storeFormat, "key" → keyHeader JSON
//	meta           sealed     "meta" → Meta JSON; "conflicts" → JSON list of the keys
//	                          of records whose confirmed state is in conflict (conflictset.go)
//	records        sealed     collection "/" id → Record JSON (server-confirmed state)
//	outbox         sealed     seq (8 bytes, big-endian) → Change JSON
//	outbox_by_key  sealed     collection "/" id 0x00 seq → seq (index for outboxFor)
//	rejected       sealed     seq → Rejected JSON
//	evicted        sealed     collection "/" id → empty
//
// Keys are plaintext so bbolt can order and seek them; they hold only
// collection names, random record IDs and sequence numbers, never names,
// areas or text. A copied file shows how many records and pending changes
// there are, their IDs, and the sizes of the sealed values, and nothing
// else.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/casesync/casesync/syncproto"
	"go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Meta is the replica's own state. It is stored as one sealed JSON value:
// the token, the user and the scope's area names are as sensitive as the
// records.
type Meta struct {
	Device        string               `json:"device"`
	Server        string               `json:"server"` // sync URL, ws:// or wss://
	Token         string               `json:"token"`
	User          string               `json:"user"`
	Role          string               `json:"role"`
	Scope         syncproto.Scope      `json:"scope"`
	Checkpoint    syncproto.Checkpoint `json:"checkpoint"`
	NextSeq       uint64               `json:"next_seq"` // next device change sequence to use (starts at 1)
	ClockLast     syncproto.Stamp      `json:"clock_last"`
	ClockOffsetMS int64                `json:"clock_offset_ms"`
	LastSync      time.Time            `json:"last_sync,omitzero"`
	// LastError is why the last sync failed; empty after a success.
	LastError string `json:"last_error,omitempty"`
}

// Rejected is a local change the server refused, kept until the user deals
// with it: dropping it silently would lose a caseworker's note.
type Rejected struct {
	Change syncproto.Change `json:"change"`
	Error  syncproto.Error  `json:"error"`
	At     time.Time        `json:"at"`
}

var (
	bucketHeader     = []byte("header")
	bucketMeta       = []byte("meta")
	bucketRecords    = []byte("records")
	bucketOutbox     = []byte("outbox")
	bucketOutboxIdx  = []byte("outbox_by_key")
	bucketRejected   = []byte("rejected")
	bucketEvicted    = []byte("evicted")
	dataBuckets      = [][]byte{bucketMeta, bucketRecords, bucketOutbox, bucketOutboxIdx, bucketRejected, bucketEvicted}
	headerFormatKey  = []byte("format")
	headerKeyKey     = []byte("key")
	metaKey          = []byte("meta")
	compactSuffix    = ".compact"
	compactTxMaxSize = int64(32 << 20) // bounds Compact's memory on a large store
)

// store is the open, unlocked local store. It is safe for concurrent use:
// bbolt serialises writers and lets readers run alongside; mu only keeps
// transactions out while close or compact swap the file.
type store struct {
	mu      sync.RWMutex
	db      *bbolt.DB // nil once closed, and between transactions when shared
	sealer  *sealer   // nil once closed
	file    string
	timeout time.Duration
	// shared: the file is opened for each transaction and released after
	// it, so that other processes (the CLI's commands while 'casesync run'
	// syncs in the background) can use the store too. Set once, by share,
	// before the store is used concurrently.
	shared bool
}

// share switches the store to opening its file for each transaction only.
func (s *store) share() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closeDB()
	s.shared = true
}

// sharedTx runs fn in a transaction on a handle opened for it alone. bbolt
// locks the file for the handle's life: shared for reads, exclusive for
// writes, waiting up to the store's timeout for other processes.
func (s *store) sharedTx(readOnly bool, fn func(t *stx) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sealer == nil {
		return ErrClosed
	}
	db, err := openBolt(s.file, readOnly, s.timeout)
	if err != nil {
		return err
	}
	defer db.Close()
	run := db.Update
	if readOnly {
		run = db.View
	}
	return run(func(tx *bbolt.Tx) error { return runTx(tx, s.sealer, fn) })
}

// openStore opens the store at path, creating it (and its parent directory,
// mode 0700) if missing, and unlocks it with ks. It waits up to timeout for
// another handle to let go of the file, then fails with ErrLocked; a
// timeout of zero or less fails at once if the file is held.
//
// An existing store is first opened read-only to read its key header, and
// reopened for writing only once the key has unwrapped: on Windows bbolt
// grows the file on a read-write open, and a wrong passphrase must leave
// the file's bytes exactly as they were. The file is thus locked twice, so
// a busy store can make open wait up to twice timeout (plus the KDF).
func openStore(path string, ks keySource, timeout time.Duration) (*store, error) {
	if ks.empty() {
		return nil, ErrNoKey
	}
	if timeout <= 0 {
		timeout = time.Nanosecond // bbolt waits forever on zero
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("client: store directory: %w", err)
	}
	// A second attempt covers another process creating the store between
	// our look and our open; a third race in a row is not worth handling.
	for attempt := 0; ; attempt++ {
		s, err := tryOpen(path, ks, timeout)
		if !errors.Is(err, errRetry) {
			return s, err
		}
		if attempt == 1 {
			return nil, fmt.Errorf("%w: %s: the key header changed while opening", ErrLocked, path)
		}
	}
}

var errRetry = errors.New("retry")

func tryOpen(path string, ks keySource, timeout time.Duration) (*store, error) {
	rawHdr, hdr, err := readHeader(path, timeout)
	if err != nil {
		return nil, err
	}
	var dataKey []byte
	if hdr != nil {
		dataKey, err = unwrap(hdr, ks)
	} else {
		hdr, dataKey, err = newKey(ks)
	}
	if err != nil {
		return nil, err
	}
	s := &store{sealer: newSealer(dataKey), file: path, timeout: timeout}
	clear(dataKey)
	if s.db, err = openBolt(path, false, timeout); err != nil {
		return nil, err
	}
	if rawHdr != nil {
		err = s.checkHeader(rawHdr)
	} else {
		err = s.initialize(hdr)
	}
	if err != nil {
		s.db.Close()
		return nil, err
	}
	if runtime.GOOS != "windows" {
		// A file made by an older version or copied in with a lax umask:
		// tighten it now that we know it is ours.
		if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
			os.Chmod(path, 0o600)
		}
	}
	return s, nil
}

// readHeader returns the raw and decoded key header of the store at path,
// or nils if there is no store there yet (no file, an empty file, or a
// bbolt file whose first transaction never committed).
func readHeader(path string, timeout time.Duration) (raw []byte, hdr *keyHeader, err error) {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) || err == nil && fi.Size() == 0 {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("client: store: %w", err)
	}
	db, err := openBolt(path, true, timeout)
	if err != nil {
		return nil, nil, err
	}
	defer db.Close()
	err = safeView(db, path, func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketHeader)
		if b == nil {
			return nil
		}
		if f := b.Get(headerFormatKey); string(f) != storeFormat {
			return fmt.Errorf("%w: %s: format %q is not %q (a newer casesync, or not a casesync store)", ErrCorrupt, path, f, storeFormat)
		}
		raw = bytes.Clone(b.Get(headerKeyKey))
		return nil
	})
	if err != nil || raw == nil {
		return nil, nil, err
	}
	hdr, err = decodeHeader(raw)
	return raw, hdr, err
}

// checkHeader makes sure the file opened for writing still holds the
// header that was unwrapped, and that every bucket exists.
func (s *store) checkHeader(want []byte) error {
	var missing bool
	err := safeView(s.db, s.file, func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketHeader)
		if b == nil || !bytes.Equal(b.Get(headerKeyKey), want) {
			return errRetry
		}
		for _, name := range dataBuckets {
			missing = missing || tx.Bucket(name) == nil
		}
		return nil
	})
	if err != nil || !missing {
		return err
	}
	// Only a store from a version with fewer buckets gets here.
	return s.db.Update(func(tx *bbolt.Tx) error {
		for _, name := range dataBuckets {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		return nil
	})
}

// initialize writes the header and creates the buckets, in one transaction
// so a crash leaves either no store or a whole one.
func (s *store) initialize(hdr *keyHeader) error {
	return s.db.Update(func(tx *bbolt.Tx) error {
		if tx.Bucket(bucketHeader) != nil {
			return errRetry // another process created it meanwhile
		}
		for _, name := range dataBuckets {
			if tx.Bucket(name) != nil {
				return fmt.Errorf("%w: %s: data without a key header", ErrCorrupt, s.file)
			}
		}
		h, err := tx.CreateBucket(bucketHeader)
		if err != nil {
			return err
		}
		if err := h.Put(headerFormatKey, []byte(storeFormat)); err != nil {
			return err
		}
		if err := h.Put(headerKeyKey, encodeHeader(hdr)); err != nil {
			return err
		}
		for _, name := range dataBuckets {
			if _, err := tx.CreateBucket(name); err != nil {
				return err
			}
		}
		return nil
	})
}

// openBolt opens path with bbolt, turning its failures into the client's
// errors. bbolt can panic on a damaged file instead of returning an error,
// so the open is guarded.
func openBolt(path string, readOnly bool, timeout time.Duration) (db *bbolt.DB, err error) {
	defer func() {
		if r := recover(); r != nil {
			db, err = nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, path, r)
		}
	}()
	db, err = bbolt.Open(path, 0o600, &bbolt.Options{Timeout: timeout, ReadOnly: readOnly})
	switch {
	case err == nil:
		return db, nil
	case errors.Is(err, berrors.ErrTimeout):
		return nil, fmt.Errorf("%w: %s", ErrLocked, path)
	case errorsIsAny(err, berrors.ErrInvalid, berrors.ErrChecksum, berrors.ErrVersionMismatch):
		return nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, path, err)
	default:
		return nil, fmt.Errorf("client: open store %s: %w", path, err)
	}
}

// safeView runs an internal read transaction, turning a bbolt panic on a
// damaged page into ErrCorrupt.
func safeView(db *bbolt.DB, path string, fn func(*bbolt.Tx) error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %s: %v", ErrCorrupt, path, r)
		}
	}()
	return db.View(fn)
}

// close closes the store; later calls return nil, later operations ErrClosed.
func (s *store) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sealer == nil {
		return nil
	}
	var err error
	if s.db != nil {
		err = s.db.Close()
	}
	s.db, s.sealer = nil, nil
	return err
}

func (s *store) path() string { return s.file }

// update runs fn in one read-write transaction and returns after it is
// committed and fsynced (bbolt's default; the store never sets NoSync, since
// on a laptop losing power a NoSync commit can corrupt the file, not just
// lose the write). If fn returns an error nothing it wrote is kept. fn must
// not keep t, nor call view, update, compact or close.
func (s *store) update(fn func(t *stx) error) error {
	if s.shared {
		return s.sharedTx(false, fn)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.db == nil {
		return ErrClosed
	}
	return s.db.Update(func(tx *bbolt.Tx) error { return runTx(tx, s.sealer, fn) })
}

// view runs fn in a read-only transaction, concurrently with others.
func (s *store) view(fn func(t *stx) error) error {
	if s.shared {
		return s.sharedTx(true, fn)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.db == nil {
		return ErrClosed
	}
	return s.db.View(func(tx *bbolt.Tx) error { return runTx(tx, s.sealer, fn) })
}

// runTx runs fn on tx and, in a read-write transaction that fn completed,
// writes back the indexes fn changed, before bbolt commits.
func runTx(tx *bbolt.Tx, sl *sealer, fn func(t *stx) error) error {
	t := &stx{tx: tx, s: sl}
	defer t.end()
	if err := fn(t); err != nil {
		return err
	}
	return t.flush()
}

// compact rewrites the store into a fresh file. bbolt never returns freed
// pages to the OS nor clears them, so after a purge (scope lost, a case
// moved away) the deleted records' sealed bytes stay in the file: useless
// without the key, but recoverable by anyone who later learns the
// passphrase. Compacting copies only live data, so a copy of the file made
// afterwards holds nothing that was deleted.
//
// The new file is written beside the old one, fsynced, renamed over it and
// the directory fsynced, so a crash leaves either the old or the new store.
// On Windows an open file cannot be replaced, so there the old handle is
// closed before the rename; elsewhere it is closed after, keeping the lock
// across the rename. The caller must have no transaction open; if the
// reopen fails the store is left closed.
func (s *store) compact() (err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sealer == nil {
		return ErrClosed
	}
	if s.shared {
		if s.db, err = openBolt(s.file, false, s.timeout); err != nil {
			return fmt.Errorf("client: compact: %w", err)
		}
		defer s.closeDB()
	}
	tmp := s.file + compactSuffix
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("client: compact: %w", err)
	}
	dst, err := openBolt(tmp, false, s.timeout)
	if err != nil {
		return fmt.Errorf("client: compact: %w", err)
	}
	err = bbolt.Compact(dst, s.db, compactTxMaxSize)
	if err == nil {
		err = dst.Sync()
	}
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("client: compact: %w", err)
	}
	if runtime.GOOS == "windows" {
		s.closeDB()
	}
	if err := os.Rename(tmp, s.file); err != nil {
		os.Remove(tmp)
		if s.db == nil {
			s.db, _ = openBolt(s.file, false, s.timeout)
		}
		return fmt.Errorf("client: compact: %w", err)
	}
	syncErr := syncDir(filepath.Dir(s.file))
	s.closeDB()
	if s.db, err = openBolt(s.file, false, s.timeout); err != nil {
		return fmt.Errorf("client: compact: reopen (store closed): %w", err)
	}
	if syncErr != nil {
		return fmt.Errorf("client: compact: sync directory: %w", syncErr)
	}
	return nil
}

func (s *store) closeDB() {
	if s.db != nil {
		s.db.Close()
		s.db = nil
	}
}

// syncDir makes a rename in dir durable. Windows has no directory fsync;
// NTFS journals the rename itself.
func syncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// wipeStore deletes the store at path and any compaction leftover. The
// caller has closed the store; a store another process holds gives
// ErrLocked. The file is overwritten with zeros and fsynced before it is
// unlinked so its blocks, wrapped key included, do not survive on disks
// that write in place. On SSDs and copy-on-write file systems that is best
// effort; the encryption is what protects the data there.
func wipeStore(path string) error {
	if db, err := openBolt(path, true, 50*time.Millisecond); errors.Is(err, ErrLocked) {
		return err
	} else if db != nil {
		db.Close()
	}
	var errs []error
	for _, p := range []string{path, path + compactSuffix} {
		if err := zeroAndRemove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := syncDir(filepath.Dir(path)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("client: wipe store: %w", errors.Join(errs...))
	}
	return nil
}

func zeroAndRemove(p string) error {
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err == nil {
		_, err = io.CopyN(f, zeroReader{}, fi.Size())
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	// Remove even if overwriting failed: a deleted file beats a kept one.
	if rerr := os.Remove(p); err == nil {
		err = rerr
	}
	return err
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
