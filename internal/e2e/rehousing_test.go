package e2e

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/casesync/casesync/client"
	"github.com/casesync/casesync/server"
	"github.com/casesync/casesync/server/servertest"
	"github.com/casesync/casesync/syncproto"
)

// skewedClock is a device's wall clock that a test can move, instead of
// waiting: PROTOCOL.md §7.3 decides whether a note was written before a
// move by comparing stamps, and two writes a millisecond apart on two
// laptops are not ordered by their stamps.
type skewedClock struct{ ahead atomic.Int64 }

func (c *skewedClock) now() time.Time          { return time.Now().Add(time.Duration(c.ahead.Load())) }
func (c *skewedClock) set(d time.Duration)     { c.ahead.Store(int64(d)) }
func (c *skewedClock) tweak(o *client.Options) { o.Now = c.now }

type rehousing struct {
	s          *servertest.Server
	x, y, l    *client.Client
	xClock     *skewedClock
	leadClock  *skewedClock
	caseID     string
	keepID     string
	entries    []string // the case's entries written before the move
	otherNotes []string
}

func newRehousing(t *testing.T, cfg server.Config) *rehousing {
	t.Helper()
	return newRehousingWrapped(t, cfg, nil)
}

func newRehousingWrapped(t *testing.T, cfg server.Config, wrap func(server.Store) server.Store) *rehousing {
	t.Helper()
	s := servertest.NewServer(t, &servertest.Options{Config: cfg, WrapStore: wrap})
	s.AddUser("xenia", "caseworker", "Zuilen")
	s.AddUser("yusuf", "caseworker", "Ondiep")
	s.AddUser("lotte", "lead")
	r := &rehousing{s: s, xClock: &skewedClock{}, leadClock: &skewedClock{}}
	r.x = openDevice(t, s, "xenia", s.URL, r.xClock.tweak).Client
	r.y = openClient(t, s, "yusuf")
	r.l = openDevice(t, s, "lotte", s.URL, r.leadClock.tweak).Client

	r.caseID = mustCreateCase(t, r.x, map[string]any{"area": "Zuilen", "title": "Rehousing request", "tenant": "M. Bakker"})
	r.entries = []string{
		mustAddEntry(t, r.x, r.caseID, "Intake: the flat is too small for the family."),
		mustAddEntry(t, r.x, r.caseID, "Visit: damp in two rooms."),
	}
	// An unrelated case stays with X.
	r.keepID = mustCreateCase(t, r.x, map[string]any{"area": "Zuilen", "title": "Noise complaint"})
	mustSync(t, r.x)
	mustSync(t, r.l)
	mustSync(t, r.y)
	mustNotFind(t, r.y, r.caseID, "Y before the move: case")
	return r
}

// move has the lead move the case to Ondiep and sync. The lead's clock
// runs 30 s ahead (within MaxSkew, so the server keeps the stamp): the
// move happens "later" than anything X wrote before it, without waiting.
func (r *rehousing) move(t *testing.T) {
	t.Helper()
	r.leadClock.set(30 * time.Second)
	if err := r.l.SetCase(context.Background(), r.caseID, map[string]any{"area": "Ondiep"}); err != nil {
		t.Fatal(err)
	}
	mustSync(t, r.l)
}

// xHoldsNothingOfTheCase asserts that X's device no longer holds the case
// or any of its entries, but keeps her other case.
func (r *rehousing) xHoldsNothingOfTheCase(t *testing.T, extra ...string) {
	t.Helper()
	ctx := context.Background()
	mustNotFind(t, r.x, r.caseID, "X after the move: case")
	for _, id := range append(append([]string(nil), r.entries...), extra...) {
		mustNotFind(t, r.x, id, "X after the move: entry")
	}
	if cs, err := r.x.Cases(ctx, client.Filter{}); err != nil {
		t.Fatal(err)
	} else if len(cs) != 1 || cs[0].ID != r.keepID {
		t.Errorf("X's cases after the move: %d, want only %s", len(cs), r.keepID)
	}
	if js, err := r.x.Entries(ctx, r.caseID); err != nil || len(js) != 0 {
		t.Errorf("X still lists %d entries of the moved case (%v)", len(js), err)
	}
	mustGet(t, r.x, caseKey(r.keepID))
}

// yHasTheCase asserts that Y has the case in Ondiep with exactly entries.
func (r *rehousing) yHasTheCase(t *testing.T, entries []string) {
	t.Helper()
	ctx := context.Background()
	mustSync(t, r.y)
	v := mustGet(t, r.y, caseKey(r.caseID))
	if v.Area != "Ondiep" || v.String("tenant") != "M. Bakker" {
		t.Errorf("Y's case: area %q, fields %v", v.Area, v.Fields)
	}
	got, err := r.y.Entries(ctx, r.caseID)
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, e := range got {
		have[e.ID] = true
		if e.Area != "Ondiep" {
			t.Errorf("Y's entry %s area %q, want Ondiep", e.ID, e.Area)
		}
	}
	for _, id := range entries {
		if !have[id] {
			t.Errorf("Y lacks entry %s", id)
		}
	}
	if len(got) != len(entries) {
		t.Errorf("Y has %d entries, want %d", len(got), len(entries))
	}
}

// Scenario 5: rehousing. Caseworker X (Zuilen) writes a note offline about
// a tenant; meanwhile the lead moves the case to Ondiep. When X syncs, her
// note reaches the case in Ondiep (the server accepts notes written before
// the move), and her laptop no longer holds the case or any of its
// entries. Y (Ondiep) has the case with every entry.
func TestRehousing(t *testing.T) {
	ctx := context.Background()
	r := newRehousing(t, server.Config{})

	offline := mustAddEntry(t, r.x, r.caseID, "Call: tenant accepted the flat in Ondiep.")
	r.move(t)
	res := mustSync(t, r.x)
	t.Logf("X's sync: %+v", res)

	// The note was not lost: not rejected, not pending, on the server.
	rej, err := r.x.Rejected(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, rj := range rej {
		t.Errorf("X's note was rejected: change %d %s: %v", rj.Change.Seq, rj.Change.Key(), &rj.Error)
	}
	if st := status(t, r.x); st.Pending != 0 || st.Rejected != 0 {
		t.Errorf("X's status: %+v", st)
	}
	if rec, ok := serverRecord(t, r.s, entryKey(offline)); !ok {
		t.Errorf("server does not have X's offline note")
	} else if rec.Area != "Ondiep" {
		t.Errorf("server files X's offline note under %q, want Ondiep", rec.Area)
	}
	r.xHoldsNothingOfTheCase(t, offline)
	r.yHasTheCase(t, append(r.entries, offline))
	if v := mustGet(t, r.y, entryKey(offline)); v.String(syncproto.FieldText) != "Call: tenant accepted the flat in Ondiep." || v.String(syncproto.FieldAuthor) != "xenia" {
		t.Errorf("Y's copy of the offline note: %v", v.Fields)
	}
}

// The same, but X's push is acknowledged while the backlog that carries
// the evictions is still streaming: the server sends one record per
// changes message, and many Zuilen changes precede the move. X's device
// confirms the accepted note while it still holds the case; the case's
// eviction must take the note with it.
func TestRehousingAckBeforeEviction(t *testing.T) {
	ctx := context.Background()
	// One record per changes message, and the backlog's scans held after
	// the tenth until X's push has committed: the ack then arrives in the
	// middle of the backlog however fast this machine streams it.
	gate := newBacklogGate(10)
	r := newRehousingWrapped(t, server.Config{BatchRecords: 1}, func(st server.Store) server.Store {
		gate.Store = st
		return gate
	})

	// Busy day in Zuilen: the lead journals on X's other case.
	for i := range 150 {
		if _, err := r.l.AddEntry(ctx, r.keepID, map[string]any{"kind": "note", "text": fmt.Sprintf("team note %d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	mustSync(t, r.l)
	offline := mustAddEntry(t, r.x, r.caseID, "Call: tenant accepted the flat in Ondiep.")
	r.move(t)

	pulledAtAck := -1
	gate.arm()
	res, err := r.x.Sync(ctx, &client.SyncOptions{Progress: func(p client.Progress) {
		if pulledAtAck < 0 && p.Pushed > 0 {
			pulledAtAck = p.Pulled
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("X's sync: %+v; pulled %d records before the ack", res, pulledAtAck)
	if pulledAtAck < 0 || pulledAtAck >= res.Pulled {
		t.Fatalf("precondition: the ack did not arrive mid-backlog (pulled %d of %d before it)", pulledAtAck, res.Pulled)
	}
	if rej, _ := r.x.Rejected(ctx); len(rej) != 0 || res.Pushed != 1 {
		t.Fatalf("X's note was not accepted: %+v, %+v", res, rej)
	}
	if _, ok := serverRecord(t, r.s, entryKey(offline)); !ok {
		t.Errorf("server does not have X's offline note")
	}
	r.xHoldsNothingOfTheCase(t, offline)
	r.yHasTheCase(t, append(r.entries, offline))
	// Nothing later repairs it: another sync leaves the device as it is.
	mustSync(t, r.x)
	mustNotFind(t, r.x, offline, "X after a second sync: offline note")
}

// If X's note is stamped after the move, the server refuses it with scope:
// it must then be kept in X's Rejected (never silently dropped), and X's
// device still drops the case.
func TestRehousingNoteAfterMove(t *testing.T) {
	ctx := context.Background()
	r := newRehousing(t, server.Config{})
	r.move(t)
	// X has not synced since the move; her note is stamped after it.
	r.xClock.set(45 * time.Second)
	late := mustAddEntry(t, r.x, r.caseID, "Call: written after the move.")
	r.xClock.set(0)

	res := mustSync(t, r.x)
	if res.Rejected != 1 {
		t.Errorf("X's sync: %+v, want the note rejected", res)
	}
	rej, err := r.x.Rejected(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(rej) != 1 || rej[0].Change.ID != late || rej[0].Error.Code != syncproto.CodeScope {
		t.Fatalf("X's rejected: %+v, want the late note with code scope", rej)
	}
	if got := string(rej[0].Change.Fields[syncproto.FieldText].Data); got != `"Call: written after the move."` {
		t.Errorf("the kept rejection lost the note's text: %s", got)
	}
	if st := status(t, r.x); st.Rejected != 1 || st.Pending != 0 {
		t.Errorf("X's status: %+v", st)
	}
	if _, ok := serverRecord(t, r.s, entryKey(late)); ok {
		t.Errorf("the server stored a rejected note")
	}
	r.xHoldsNothingOfTheCase(t, late)
	r.yHasTheCase(t, r.entries)
}

// backlogGate is a store that, once armed, lets n views (a session's
// backlog scans, one per changes message) through and holds the rest until
// the next update that logs changes has committed (X's push), which itself
// waits for the n views. Each wait gives up after gateWait, so a schedule the test did not
// foresee fails its precondition instead of hanging.
type backlogGate struct {
	server.Store
	n       int
	reached chan struct{} // closed at the n-th view
	pushed  chan struct{} // closed once the update has committed

	mu    sync.Mutex
	armed bool
	views int
	done  bool
}

const gateWait = 20 * time.Second

func newBacklogGate(n int) *backlogGate {
	return &backlogGate{n: n, reached: make(chan struct{}), pushed: make(chan struct{})}
}

func (g *backlogGate) arm() {
	g.mu.Lock()
	g.armed = true
	g.mu.Unlock()
}

func (g *backlogGate) View(ctx context.Context, fn func(server.Tx) error) error {
	g.mu.Lock()
	hold := false
	if g.armed && !g.done {
		g.views++
		if g.views == g.n {
			close(g.reached)
		}
		hold = g.views > g.n
	}
	g.mu.Unlock()
	if hold {
		select {
		case <-g.pushed:
		case <-time.After(gateWait):
		}
	}
	return g.Store.View(ctx, fn)
}

func (g *backlogGate) Update(ctx context.Context, fn func(server.Tx) error) error {
	g.mu.Lock()
	gated := g.armed && !g.done
	g.mu.Unlock()
	if !gated {
		return g.Store.Update(ctx, fn)
	}
	select {
	case <-g.reached:
	case <-time.After(gateWait):
	}
	var logged atomic.Bool
	err := g.Store.Update(ctx, func(tx server.Tx) error { return fn(seqTx{tx, &logged}) })
	if logged.Load() {
		// The push (an update that logs changes), not some other write
		// such as a device's last-seen time.
		g.mu.Lock()
		if !g.done {
			g.done = true
			close(g.pushed)
		}
		g.mu.Unlock()
	}
	return err
}

// seqTx notes whether its transaction took a log sequence number.
type seqTx struct {
	server.Tx
	logged *atomic.Bool
}

func (t seqTx) NextSeq() (uint64, error) {
	t.logged.Store(true)
	return t.Tx.NextSeq()
}
