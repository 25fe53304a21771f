package e2e

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/casesync/casesync/client"
	"github.com/casesync/casesync/server/servertest"
	"github.com/casesync/casesync/syncproto"
)

// Live: two caseworkers of Zuilen run connected; a note added on one
// appears on the other without a sync call. A caseworker of Ondiep,
// connected too, never receives it.
func TestLive(t *testing.T) {
	ctx := context.Background()
	s := servertest.NewServer(t, nil)
	s.AddUser("anouk", "caseworker", "Zuilen")
	s.AddUser("bram", "caseworker", "Zuilen")
	s.AddUser("chantal", "caseworker", "Ondiep")
	s.AddUser("lotte", "lead")
	a, b, c, l := openClient(t, s, "anouk"), openClient(t, s, "bram"), openClient(t, s, "chantal"), openClient(t, s, "lotte")

	zCase := mustCreateCase(t, l, map[string]any{"area": "Zuilen", "title": "Zuilen case"})
	oCase := mustCreateCase(t, l, map[string]any{"area": "Ondiep", "title": "Ondiep case"})
	mustSync(t, l)

	// Chantal records every key she is ever told about.
	cEvents, cancelC := c.Subscribe()
	defer cancelC()
	stops := []func() error{runClient(t, a), runClient(t, b), runClient(t, c)}
	for _, d := range []*client.Client{a, b} {
		waitFor(t, d, 10*time.Second, "the Zuilen case", func() (bool, error) {
			_, err := d.Get(ctx, caseKey(zCase))
			return err == nil, err
		})
	}
	waitFor(t, c, 10*time.Second, "the Ondiep case", func() (bool, error) {
		_, err := c.Get(ctx, caseKey(oCase))
		return err == nil, err
	})

	// Bram waits for the note through his subscription.
	bEvents, cancelB := b.Subscribe()
	defer cancelB()
	note := mustAddEntry(t, a, zCase, "Visit: the boiler was repaired.")
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for arrived := false; !arrived; {
		select {
		case ev, ok := <-bEvents:
			if !ok {
				t.Fatal("Bram's subscription closed")
			}
			if !ev.Remote {
				continue
			}
			if v, err := b.Get(ctx, entryKey(note)); err == nil {
				if v.String(syncproto.FieldText) != "Visit: the boiler was repaired." {
					t.Fatalf("Bram's copy: %v", v.Fields)
				}
				arrived = true
			}
		case <-deadline.C:
			t.Fatalf("the note never reached Bram's running client")
		}
	}
	if st := status(t, b); !st.Connected {
		t.Errorf("Bram's status while running: %+v", st)
	}

	// A barrier for Chantal: an Ondiep change committed after the note.
	// The server streams the log in order, so once she has it she would
	// have had the note too, were it hers to see.
	barrier := mustAddEntry(t, l, oCase, "Barrier after the Zuilen note.")
	mustSync(t, l)
	waitFor(t, c, 10*time.Second, "the Ondiep barrier", func() (bool, error) {
		_, err := c.Get(ctx, entryKey(barrier))
		return err == nil, err
	})
	mustNotFind(t, c, note, "Chantal (Ondiep): Zuilen note")
	mustNotFind(t, c, zCase, "Chantal (Ondiep): Zuilen case")
	for drained := false; !drained; {
		select {
		case ev := <-cEvents:
			for _, k := range ev.Keys {
				if k.ID == note || k.ID == zCase {
					t.Errorf("Chantal was told about %s", k)
				}
			}
		default:
			drained = true
		}
	}
	for _, stop := range stops {
		if err := stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	}
}

// Restart: the server restarts while two laptops run. Run reconnects by
// itself, and notes written afterwards still arrive, live.
func TestServerRestartDuringRun(t *testing.T) {
	ctx := context.Background()
	s := servertest.NewServer(t, nil)
	s.AddUser("anouk", "caseworker", "Zuilen")
	s.AddUser("bram", "caseworker", "Zuilen")
	a, b := openClient(t, s, "anouk"), openClient(t, s, "bram")
	caseID := mustCreateCase(t, a, map[string]any{"area": "Zuilen", "title": "Restart"})
	stopA, stopB := runClient(t, a), runClient(t, b)

	first := mustAddEntry(t, a, caseID, "Before the restart.")
	waitFor(t, b, 10*time.Second, "the first note on Bram's laptop", func() (bool, error) {
		_, err := b.Get(ctx, entryKey(first))
		return err == nil, err
	})
	seqBefore := status(t, b).Checkpoint.Seq

	s.Restart()

	second := mustAddEntry(t, a, caseID, "After the restart.")
	waitFor(t, b, 15*time.Second, "the second note on Bram's laptop", func() (bool, error) {
		_, err := b.Get(ctx, entryKey(second))
		return err == nil, err
	})
	waitFor(t, a, 10*time.Second, "Anouk connected with an empty outbox", func() (bool, error) {
		st := status(t, a)
		return st.Connected && st.Pending == 0, nil
	})
	if r, ok := serverRecord(t, s, entryKey(second)); !ok || r.Area != "Zuilen" {
		t.Errorf("server after restart: second note found=%v", ok)
	}
	if st := status(t, b); st.Checkpoint.Seq <= seqBefore || !st.Connected {
		t.Errorf("Bram after restart: %+v (checkpoint before %d)", st, seqBefore)
	}
	for _, c := range []*client.Client{a, b} {
		if es, err := c.Entries(ctx, caseID); err != nil || len(es) != 2 {
			t.Errorf("journal: %d entries (%v), want 2", len(es), err)
		}
	}

	// Restarts while notes are being written and pushed: in-flight pushes
	// commit and are acknowledged, or are resent; each note lands once.
	const n = 60
	written := make(chan error, 1)
	go func() {
		for i := range n {
			if _, err := a.AddEntry(ctx, caseID, map[string]any{"kind": "note", "text": fmt.Sprintf("during restarts %02d", i)}); err != nil {
				written <- err
				return
			}
		}
		written <- nil
	}()
	s.Restart()
	s.Restart()
	if err := <-written; err != nil {
		t.Fatal(err)
	}
	waitFor(t, a, 15*time.Second, "Anouk's outbox empty after the restarts", func() (bool, error) {
		return status(t, a).Pending == 0, nil
	})
	count := map[string]int{}
	for _, r := range serverEntries(t, s, caseID) {
		x, _ := r.String(syncproto.FieldText)
		count[x]++
	}
	for i := range n {
		if x := fmt.Sprintf("during restarts %02d", i); count[x] != 1 {
			t.Errorf("server holds %q %d times, want once", x, count[x])
		}
	}
	waitFor(t, b, 15*time.Second, "every note on Bram's laptop", func() (bool, error) {
		es, err := b.Entries(ctx, caseID)
		return len(es) == n+2, err
	})
	if rej, _ := a.Rejected(ctx); len(rej) != 0 {
		t.Errorf("rejected: %+v", rej)
	}
	for _, stop := range []func() error{stopA, stopB} {
		if err := stop(); err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v", err)
		}
	}
}

// A move, live: X (Zuilen) and Y (Ondiep) run connected while the lead
// moves a case from Zuilen to Ondiep. Y receives the case and its journal
// without syncing, X's laptop drops them; a running lead sees a case in a
// brand-new area appear.
func TestLiveMove(t *testing.T) {
	ctx := context.Background()
	s := servertest.NewServer(t, nil)
	s.AddUser("xenia", "caseworker", "Zuilen")
	s.AddUser("yusuf", "caseworker", "Ondiep")
	s.AddUser("lotte", "lead")
	s.AddUser("lars", "lead")
	x, y, l, l2 := openClient(t, s, "xenia"), openClient(t, s, "yusuf"), openClient(t, s, "lotte"), openClient(t, s, "lars")
	caseID := mustCreateCase(t, x, map[string]any{"area": "Zuilen", "title": "Moving soon"})
	ids := []string{caseID, mustAddEntry(t, x, caseID, "one"), mustAddEntry(t, x, caseID, "two")}
	mustSync(t, x)
	mustSync(t, l)
	stops := []func() error{runClient(t, x), runClient(t, y), runClient(t, l2)}
	waitFor(t, l2, 10*time.Second, "the second lead caught up", func() (bool, error) { return holdsAll(l2, ids) })
	waitFor(t, y, 10*time.Second, "Yusuf connected", func() (bool, error) { return status(t, y).Connected, nil })

	if err := l.SetCase(ctx, caseID, map[string]any{"area": "Ondiep"}); err != nil {
		t.Fatal(err)
	}
	mustSync(t, l)
	waitFor(t, y, 10*time.Second, "the moved case on Yusuf's laptop", func() (bool, error) { return holdsAll(y, ids) })
	waitFor(t, x, 10*time.Second, "the moved case gone from Xenia's laptop", func() (bool, error) { return holdsNone(x, ids) })
	for _, id := range ids {
		if v := mustGet(t, y, caseKeyOrEntry(id, caseID)); v.Area != "Ondiep" {
			t.Errorf("Yusuf's %s: area %q", id, v.Area)
		}
	}
	waitFor(t, l2, 10*time.Second, "the move on the running lead", func() (bool, error) {
		v, err := l2.Get(ctx, caseKey(caseID))
		return err == nil && v.Area == "Ondiep", err
	})

	// A case in an area nobody had used yet reaches the running lead.
	fresh := mustCreateCase(t, l, map[string]any{"area": "Lombok", "title": "First case in Lombok"})
	mustSync(t, l)
	waitFor(t, l2, 10*time.Second, "the Lombok case on the running lead", func() (bool, error) {
		_, err := l2.Get(ctx, caseKey(fresh))
		return err == nil, err
	})
	mustNotFind(t, x, fresh, "Xenia: Lombok case")
	mustNotFind(t, y, fresh, "Yusuf: Lombok case")
	for _, stop := range stops {
		if err := stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	}
}

func caseKeyOrEntry(id, caseID string) syncproto.Key {
	if id == caseID {
		return caseKey(id)
	}
	return entryKey(id)
}
