//go:build unix

package chaos_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"

	"github.com/casesync/casesync/syncproto"
)

// The model is what the test knows independently of the code under test:
// every write a casesync command reported done, with the device change
// sequence it took and the values it wrote. A device's replica numbers its
// writes 1, 2, 3... from enrollment (client.Meta.NextSeq), one per write
// command that succeeds, so the test knows each write's dot without asking
// the client.

// write is one write a command reported done.
type write struct {
	n    int // start order across all devices: a write can only have seen writes with a smaller n
	step int
	dev  *device
	seq  uint64
	key  syncproto.Key
	vals map[string]json.RawMessage // canonical
	what string
}

func (w *write) String() string {
	return fmt.Sprintf("#%d (step %d, %s change %d, %s %s)", w.n, w.step, w.dev.name, w.seq, w.what, w.key)
}

type dot struct {
	device string
	seq    uint64
}

// caseRef is a case the test created, with the area it last wrote to it:
// where the schedule believes the case is, to pick writers for it.
type caseRef struct {
	id      string
	area    string
	writers map[*device]bool // devices that wrote to it or one of its notes
}

// entryRef is an entry the test created.
type entryRef struct {
	id, caseID string
	user       string // the author
}

// model is the test's own record of what was written. Writes of different
// devices may run concurrently, so it has a mutex.
type model struct {
	mu      sync.Mutex
	started int // write commands started, for write.n
	writes  []*write
	byDot   map[dot]*write
	cases   []*caseRef
	entries []*entryRef
	areas   map[string][]string // caseworker → areas, as last set through the admin CLI
}

func newModel() *model {
	return &model{byDot: map[dot]*write{}, areas: map[string][]string{}}
}

// begin numbers a write command about to start.
func (m *model) begin() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.started++
	return m.started
}

// done records a write that command n reported done on d: it took d's
// next change sequence.
func (m *model) done(n, step int, d *device, key syncproto.Key, vals map[string]any, what string) *write {
	m.mu.Lock()
	defer m.mu.Unlock()
	d.seq++
	w := &write{n: n, step: step, dev: d, seq: d.seq, key: key, vals: map[string]json.RawMessage{}, what: what}
	for f, v := range vals {
		w.vals[f] = canonical(v)
	}
	m.writes = append(m.writes, w)
	m.byDot[dot{d.id, d.seq}] = w
	for _, c := range m.cases {
		if key == caseKey(c.id) {
			c.writers[d] = true
		}
	}
	return w
}

// keys returns every record key ever created, cases first, in creation order.
func (m *model) keys() []syncproto.Key {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]syncproto.Key, 0, len(m.cases)+len(m.entries))
	for _, c := range m.cases {
		out = append(out, caseKey(c.id))
	}
	for _, e := range m.entries {
		out = append(out, entryKey(e.id))
	}
	return out
}

func caseKey(id string) syncproto.Key  { return syncproto.Key{Collection: syncproto.Cases, ID: id} }
func entryKey(id string) syncproto.Key { return syncproto.Key{Collection: syncproto.Entries, ID: id} }

// canonical encodes v as records hold it.
func canonical(v any) json.RawMessage {
	b, err := syncproto.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("bug: marshal %v: %v", v, err))
	}
	c, err := syncproto.Canonical([]byte(strings.TrimSpace(string(b))))
	if err != nil {
		panic(fmt.Sprintf("bug: canonical %s: %v", b, err))
	}
	return c
}
