package server_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/casesync/casesync/server"
	"github.com/casesync/casesync/server/servertest"
	"github.com/casesync/casesync/syncproto"
)

// sharedFrames reads casesync_shared_frames_total from /metrics.
func sharedFrames(t *testing.T, s *servertest.Server) (built, shared int) {
	t.Helper()
	resp, err := http.Get(s.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var n int
		if _, err := fmt.Sscanf(sc.Text(), `casesync_shared_frames_total{result="built"} %d`, &n); err == nil {
			built = n
		}
		if _, err := fmt.Sscanf(sc.Text(), `casesync_shared_frames_total{result="shared"} %d`, &n); err == nil {
			shared = n
		}
	}
	return built, shared
}

// TestServer_SharedFanoutScopes: one commit touching two areas reaches
// every live session through frames built once per scope; each session
// gets its scope's records and never a record of an area outside it.
func TestServer_SharedFanoutScopes(t *testing.T) {
	s := setup(t)
	s.AddUser("dirk", "caseworker", "Ondiep", "Zuilen")
	w := newDevice(t, s, "anouk")
	wc, _ := w.connect(t, s, nil)
	servertest.Until[*syncproto.CaughtUp](wc)
	push(t, wc, w.newCase("cz0", "Zuilen"))
	chantal := newDevice(t, s, "chantal")
	cc, _ := chantal.connect(t, s, nil)
	servertest.Until[*syncproto.CaughtUp](cc)
	push(t, cc, chantal.newCase("co0", "Ondiep"))

	type receiver struct {
		user  string
		areas map[string]bool
		c     *servertest.Conn
	}
	zuilen, ondiep, both := map[string]bool{"Zuilen": true}, map[string]bool{"Ondiep": true}, map[string]bool{"Zuilen": true, "Ondiep": true}
	var rs []receiver
	add := func(user string, areas map[string]bool, n int, hello func() *syncproto.Hello) {
		for range n {
			d := newDevice(t, s, user)
			c, _ := d.connect(t, s, hello())
			servertest.Until[*syncproto.CaughtUp](c)
			rs = append(rs, receiver{user, areas, c})
		}
	}
	live := func() *syncproto.Hello { return &syncproto.Hello{Live: true} }
	plain := func() *syncproto.Hello { return &syncproto.Hello{Live: true, Compression: []string{}} }
	add("bram", zuilen, 3, live)
	add("anouk", zuilen, 2, live)
	add("bram", zuilen, 1, plain) // same scope, uncompressed: a frame of its own
	add("chantal", ondiep, 2, live)
	add("dirk", both, 2, live)
	add("lead", both, 1, live)
	// expect reads what the sessions of area receive up to head: exactly
	// want, as the store holds it, and nothing outside their scope.
	expect := func(head uint64, byArea map[string][]syncproto.Key) {
		t.Helper()
		for i, r := range rs {
			want := map[syncproto.Key]bool{}
			for a, keys := range byArea {
				for _, k := range keys {
					if r.areas[a] {
						want[k] = true
					}
				}
			}
			if len(want) == 0 {
				continue // not woken
			}
			got := map[syncproto.Key]syncproto.Record{}
			for cp := uint64(0); cp < head; {
				ch, _ := servertest.Until[*syncproto.Changes](r.c)
				for _, rec := range ch.Records {
					if !r.areas[rec.Area] {
						t.Fatalf("receiver %d (%s) got %s of area %q, outside its scope", i, r.user, rec.Key(), rec.Area)
					}
					got[rec.Key()] = rec
				}
				cp = ch.Checkpoint.Seq
			}
			if len(got) != len(want) {
				t.Errorf("receiver %d (%s) got %d records, want %v", i, r.user, len(got), want)
			}
			for k, rec := range got {
				if !want[k] {
					t.Errorf("receiver %d (%s) got %s, want only %v", i, r.user, k, want)
				}
				var stored *syncproto.Record
				err := s.Store.View(t.Context(), func(tx server.Tx) error {
					var err error
					stored, _, err = tx.Record(k)
					return err
				})
				if err != nil || !reflect.DeepEqual(&rec, stored) {
					t.Errorf("receiver %d got %s = %+v, store holds %+v (%v)", i, k, rec, stored, err)
				}
			}
		}
	}
	// One commit in Zuilen: a case and a note. The five compressed Zuilen
	// sessions share one frame; the uncompressed one, the two two-area
	// sessions (one shares) and the lead build theirs.
	built0, shared0 := sharedFrames(t, s)
	ack := push(t, wc, w.newCase("cz1", "Zuilen"), w.newEntry("nz1", "cz0", "anouk", "visited"))
	if len(ack.Accepted) != 2 {
		t.Fatalf("ack = %+v", ack)
	}
	expect(ack.Seq, map[string][]syncproto.Key{"Zuilen": {{Collection: syncproto.Cases, ID: "cz1"}, {Collection: syncproto.Entries, ID: "nz1"}}})
	built, shared := sharedFrames(t, s)
	if built-built0 != 4 || shared-shared0 != 5 {
		t.Errorf("Zuilen commit: frames built %d, shared %d; want 4 and 5", built-built0, shared-shared0)
	}
	// One commit in Ondiep: it wakes the Ondiep, two-area and lead sessions.
	built0, shared0 = built, shared
	ack = push(t, cc, chantal.newCase("co1", "Ondiep"))
	if len(ack.Accepted) != 1 {
		t.Fatalf("ack = %+v", ack)
	}
	expect(ack.Seq, map[string][]syncproto.Key{"Ondiep": {{Collection: syncproto.Cases, ID: "co1"}}})
	built, shared = sharedFrames(t, s)
	if built-built0 != 3 || shared-shared0 != 2 {
		t.Errorf("Ondiep commit: frames built %d, shared %d; want 3 and 2", built-built0, shared-shared0)
	}
	// One commit in both areas wakes every session at the same head: the
	// Zuilen-only and Ondiep-only sessions must still get only their own.
	dirk := newDevice(t, s, "dirk")
	dc, _ := dirk.connect(t, s, nil)
	servertest.Until[*syncproto.CaughtUp](dc)
	built0, shared0 = sharedFrames(t, s)
	ack = push(t, dc, dirk.newCase("cz2", "Zuilen"), dirk.newCase("co2", "Ondiep"))
	if len(ack.Accepted) != 2 {
		t.Fatalf("ack = %+v", ack)
	}
	expect(ack.Seq, map[string][]syncproto.Key{"Zuilen": {{Collection: syncproto.Cases, ID: "cz2"}}, "Ondiep": {{Collection: syncproto.Cases, ID: "co2"}}})
	built, shared = sharedFrames(t, s)
	if built-built0 != 5 || shared-shared0 != 6 {
		t.Errorf("two-area commit: frames built %d, shared %d; want 5 and 6", built-built0, shared-shared0)
	}
}

// TestServer_PullMatchesStore: what a pull sends, from the stored JSON as
// it is, decodes to exactly the records the store holds, for records with
// conflicts, deletions, HTML-like text and a case that moved.
func TestServer_PullMatchesStore(t *testing.T) {
	s := setup(t)
	a, b := newDevice(t, s, "anouk"), newDevice(t, s, "bram")
	ca, _ := a.connect(t, s, nil)
	servertest.Until[*syncproto.CaughtUp](ca)
	cb, _ := b.connect(t, s, nil)
	servertest.Until[*syncproto.CaughtUp](cb)
	push(t, ca, a.newCase("c1", "Zuilen"), a.newCase("c2", "Zuilen"), a.newEntry("e1", "c1", "anouk", `<b>Mould</b> & \"damp\"\n\u2028 é`))
	recs := pullAll(t, s, newDevice(t, s, "lead"))
	c1 := recs[syncproto.Key{Collection: syncproto.Cases, ID: "c1"}]
	// Concurrent edits of one field (a conflict), then c2 moves away.
	push(t, ca, a.edit(&c1, map[string]json.RawMessage{"title": raw(`"Roof"`)}))
	push(t, cb, b.edit(&c1, map[string]json.RawMessage{"title": raw(`"Roof leak"`)}))
	c2 := recs[syncproto.Key{Collection: syncproto.Cases, ID: "c2"}]
	push(t, ca, a.edit(&c2, map[string]json.RawMessage{"area": raw(`"Ondiep"`)}))

	got := pullAll(t, s, newDevice(t, s, "lead"))
	if len(got) != 3 {
		t.Fatalf("lead pulled %d records, want 3", len(got))
	}
	for k, rec := range got {
		var stored *syncproto.Record
		err := s.Store.View(t.Context(), func(tx server.Tx) error {
			var err error
			stored, _, err = tx.Record(k)
			return err
		})
		if err != nil || !reflect.DeepEqual(&rec, stored) {
			t.Errorf("pulled %s = %+v, store holds %+v (%v)", k, rec, stored, err)
		}
	}
	if r := got[syncproto.Key{Collection: syncproto.Cases, ID: "c1"}]; len(r.Conflicts()) == 0 {
		t.Errorf("c1 has no conflict: %+v", r)
	}
	e1 := got[syncproto.Key{Collection: syncproto.Entries, ID: "e1"}]
	if text, _ := e1.String("text"); !strings.Contains(text, "<b>Mould</b> & \"damp\"") {
		t.Errorf("e1 text = %q", text)
	}
}

// goroutinesIn counts the goroutines whose stack holds fn.
func goroutinesIn(fn string) int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, fn) {
			n++
		}
	}
	return n
}

// eventually polls cond until it holds or 10 s pass: the streamer returns
// just after queueing its last frame, so a client cannot see the moment.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10 s", what)
		}
		runtime.Gosched()
	}
}

// TestServer_IdleLiveSessionHasNoStreamer: a live session that has caught
// up keeps no streamer goroutine; a commit in its scope starts one, which
// delivers the change and ends again; the session stays live throughout.
func TestServer_IdleLiveSessionHasNoStreamer(t *testing.T) {
	s := setup(t)
	w := newDevice(t, s, "anouk")
	wc, _ := w.connect(t, s, nil)
	servertest.Until[*syncproto.CaughtUp](wc)
	push(t, wc, w.newCase("c1", "Zuilen"))
	const n = 8
	var rcs []*servertest.Conn
	for range n {
		d := newDevice(t, s, "bram")
		c, _ := d.connect(t, s, &syncproto.Hello{Live: true})
		servertest.Until[*syncproto.CaughtUp](c)
		rcs = append(rcs, c)
	}
	streamers := func() int {
		return goroutinesIn("server.(*session).follow(") + goroutinesIn("server.(*session).stream(")
	}
	if got := goroutinesIn("server.(*session).writeLoop("); got < n {
		t.Fatalf("%d session writers, want at least %d", got, n)
	}
	for round := range 3 {
		eventually(t, "streamers of idle sessions end", func() bool { return streamers() == 0 })
		id := fmt.Sprintf("e%d", round)
		push(t, wc, w.newEntry(id, "c1", "anouk", "visited"))
		for i, c := range rcs {
			ch, _ := servertest.Until[*syncproto.Changes](c)
			if len(ch.Records) != 1 || ch.Records[0].ID != id {
				t.Fatalf("round %d: receiver %d got %+v, want entry %s", round, i, ch.Records, id)
			}
		}
	}
}
