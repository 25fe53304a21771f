package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/casesync/casesync/client"
	"github.com/casesync/casesync/server"
	"github.com/casesync/casesync/server/servertest"
	"github.com/casesync/casesync/syncproto"
)

// A rate-limited push: the client pipelines pushes, the server defers one
// for rate and accepts a later, smaller one. PROTOCOL.md §5.5: deferred
// changes are resent first, in order. An edit of a note created in the
// deferred push must not overtake the note and be refused: after syncing,
// every change is on the server, the edit included, and nothing is in
// Rejected.
func TestRateLimitedPushKeepsOrder(t *testing.T) {
	ctx := context.Background()
	s := servertest.NewServer(t, &servertest.Options{Config: server.Config{Rate: 20, Burst: 30}})
	s.AddUser("anouk", "caseworker", "Zuilen")
	a := openDevice(t, s, "anouk", s.URL, func(o *client.Options) { o.PushBatch = 20 }).Client

	// seq 1: the case; 2..40: notes; 41..45: edits of the first notes of
	// the second push (seq 21..25).
	caseID := mustCreateCase(t, a, map[string]any{"area": "Zuilen", "title": "Busy week"})
	var notes []string
	for i := range 39 {
		notes = append(notes, mustAddEntry(t, a, caseID, fmt.Sprintf("note %02d", i)))
	}
	edited := notes[19:24]
	for i, id := range edited {
		if err := a.EditEntry(ctx, id, map[string]any{"text": fmt.Sprintf("note %02d, corrected", 19+i)}); err != nil {
			t.Fatal(err)
		}
	}
	if st := status(t, a); st.Pending != 45 {
		t.Fatalf("pending = %d, want 45", st.Pending)
	}

	// The budget is the device's, not the session's (reconnecting does not
	// refill it), so the outbox drains at the server's rate: sync again
	// once the budget has refilled, as a user's next sync would.
	var total client.SyncResult
	deadline := time.Now().Add(30 * time.Second)
	for status(t, a).Pending > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("outbox not empty after 30 s of syncing: %+v", status(t, a))
		}
		res := mustSync(t, a)
		total.Pushed += res.Pushed
		total.Rejected += res.Rejected
		total.Deferred += res.Deferred
		if res.Deferred > 0 {
			time.Sleep(250 * time.Millisecond) // the rate budget refills with time; this is the wait, not synchronisation
		}
	}
	t.Logf("pushed %d, rejected %d, deferred %d", total.Pushed, total.Rejected, total.Deferred)
	if total.Deferred == 0 {
		t.Fatalf("precondition: the server never deferred a push for rate")
	}
	rej, err := a.Rejected(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rej {
		t.Errorf("change %d (%s) rejected: %v", r.Change.Seq, r.Change.Key(), &r.Error)
	}
	for i, id := range edited {
		rec, ok := serverRecord(t, s, entryKey(id))
		if !ok {
			t.Errorf("note %s not on the server", id)
			continue
		}
		if got, _ := rec.String(syncproto.FieldText); got != fmt.Sprintf("note %02d, corrected", 19+i) {
			t.Errorf("server's note %d: %q, want the correction", 19+i, got)
		}
	}
	if n := len(serverEntries(t, s, caseID)); n != len(notes) {
		t.Errorf("server has %d notes, want %d", n, len(notes))
	}
}
