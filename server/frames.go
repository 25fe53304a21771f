package server

import (
	"encoding/binary"
	"slices"
	"strings"
	"sync"

	"github.com/casesync/casesync/syncproto"
)

// A commit wakes every session that sees one of its areas, and each used to
// read, encode and compress the same changes for itself: 64 µs of CPU per
// delivery, 64 ms per note to 1,000 devices (BENCHMARKS.md, load). Sessions
// whose next changes message is the same share one encoded frame instead.
//
// The message a session sends is a function of what it scans and how it is
// encoded: the areas and cursor of each (its scope), whether the scope is a
// lead's (a lead skips every eviction marker, its records being in scope
// wherever they go), the log head the scan stops at, and compression. Those
// make the key; a session only ever takes a frame built for exactly its own
// scope, so sharing cannot widen what it sees.

// Bounds on the frames kept for one log head: beyond them sessions encode
// their own, as before.
const (
	maxSharedFrames = 256
	maxSharedBytes  = 16 << 20
)

// frameKey identifies a changes message: see above.
type frameKey struct {
	scope    string // All flag, then each area and its cursor, areas sorted
	head     uint64
	compress bool
}

// newFrameKey returns the key of the scan of scope's areas after their
// cursors in after, up to head.
func newFrameKey(scope syncproto.Scope, after map[string]uint64, head uint64, compress bool) frameKey {
	areas := slices.Clone(scope.Areas) // as the checkpoint lists them
	slices.Sort(areas)
	var b strings.Builder
	if scope.All {
		b.WriteByte('*')
	} else {
		b.WriteByte('-')
	}
	var n [8]byte
	for _, a := range areas {
		// Area names hold no control characters (syncproto.ValidArea):
		// the zero byte ends each name, and 8 bytes of cursor follow.
		b.WriteString(a)
		b.WriteByte(0)
		binary.BigEndian.PutUint64(n[:], after[a])
		b.Write(n[:])
	}
	return frameKey{scope: b.String(), head: head, compress: compress}
}

// sharedFrame is one changes message being built by one session for every
// session with its key.
type sharedFrame struct {
	head uint64
	done chan struct{} // closed by publish
	// Set before done is closed, read-only after.
	ok    bool // false: not shareable (too large, or it failed); build your own
	empty bool // the scan found nothing to send
	frame []byte
	cp    syncproto.Checkpoint
}

// wait returns once f is published, or false if stop closes first.
func (f *sharedFrame) wait(stop <-chan struct{}) bool {
	select {
	case <-f.done:
		return true
	case <-stop:
		return false
	}
}

// frameCache holds the frames built for the latest log head. Frames of an
// older head are dropped as soon as a session asks for a newer one: every
// session woken for a commit reads the new head.
type frameCache struct {
	mu     sync.Mutex
	head   uint64
	frames map[frameKey]*sharedFrame
	bytes  int
}

func newFrameCache() *frameCache { return &frameCache{frames: make(map[frameKey]*sharedFrame)} }

// get returns the frame for k. If build is set the caller must build it
// and publish it, whatever happens; otherwise it waits for it. A nil frame
// means no sharing: the key's head is older than the cache's, or the cache
// is full.
func (fc *frameCache) get(k frameKey) (f *sharedFrame, build bool) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	switch {
	case k.head < fc.head:
		return nil, false
	case k.head > fc.head:
		fc.head, fc.bytes = k.head, 0
		clear(fc.frames)
	}
	if f := fc.frames[k]; f != nil {
		return f, false
	}
	if len(fc.frames) >= maxSharedFrames || fc.bytes >= maxSharedBytes {
		return nil, false
	}
	f = &sharedFrame{head: k.head, done: make(chan struct{})}
	fc.frames[k] = f
	return f, true
}

// lookup returns the frame for k if a session has asked for it already,
// without making one.
func (fc *frameCache) lookup(k frameKey) *sharedFrame {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if k.head != fc.head {
		return nil
	}
	return fc.frames[k]
}

// publish completes f: frame and cp if ok, nothing to send if empty. It
// must be called exactly once by the session that got build from get.
func (fc *frameCache) publish(f *sharedFrame, ok, empty bool, frame []byte, cp syncproto.Checkpoint) {
	f.ok, f.empty, f.frame, f.cp = ok, empty, frame, cp
	fc.mu.Lock()
	if f.head == fc.head {
		fc.bytes += len(frame)
	}
	fc.mu.Unlock()
	close(f.done)
}
