package e2e

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/casesync/casesync/client"
	"github.com/casesync/casesync/server/servertest"
	"github.com/casesync/casesync/syncproto"
)

// scopeFixture: the lead has a case with two entries in each of Zuilen
// and Ondiep.
type scopeFixture struct {
	s            *servertest.Server
	lead         *client.Client
	zCase, oCase string
	zIDs, oIDs   []string // case and entries
}

func newScopeFixture(t *testing.T) *scopeFixture {
	t.Helper()
	s := servertest.NewServer(t, nil)
	s.AddUser("anouk", "caseworker", "Ondiep", "Zuilen")
	s.AddUser("lotte", "lead")
	f := &scopeFixture{s: s, lead: openClient(t, s, "lotte")}
	f.zCase = mustCreateCase(t, f.lead, map[string]any{"area": "Zuilen", "title": "Zuilen case"})
	f.oCase = mustCreateCase(t, f.lead, map[string]any{"area": "Ondiep", "title": "Ondiep case"})
	f.zIDs = []string{f.zCase, mustAddEntry(t, f.lead, f.zCase, "Z one"), mustAddEntry(t, f.lead, f.zCase, "Z two")}
	f.oIDs = []string{f.oCase, mustAddEntry(t, f.lead, f.oCase, "O one"), mustAddEntry(t, f.lead, f.oCase, "O two")}
	mustSync(t, f.lead)
	return f
}

func holdsAll(c *client.Client, ids []string) (bool, error) {
	for _, id := range ids {
		if _, err := c.Find(context.Background(), id); err != nil {
			return false, err
		}
	}
	return true, nil
}

func holdsNone(c *client.Client, ids []string) (bool, error) {
	for _, id := range ids {
		if _, err := c.Find(context.Background(), id); !errors.Is(err, client.ErrNotFound) {
			return false, err
		}
	}
	return true, nil
}

// Scope shrink while running: the admin takes Ondiep from Anouk while her
// laptop is connected in Run mode. Ondiep's records are purged from the
// device; Zuilen's stay; the session keeps running and later writes still
// sync.
func TestScopeShrinkWhileRunning(t *testing.T) {
	ctx := context.Background()
	f := newScopeFixture(t)
	a := openClient(t, f.s, "anouk")
	stop := runClient(t, a)
	waitFor(t, a, 10*time.Second, "both areas on the device", func() (bool, error) {
		return holdsAll(a, append(slices.Clone(f.zIDs), f.oIDs...))
	})

	f.s.SetAreas("anouk", "Zuilen")
	waitFor(t, a, 10*time.Second, "Ondiep purged", func() (bool, error) { return holdsNone(a, f.oIDs) })
	if ok, err := holdsAll(a, f.zIDs); !ok {
		t.Errorf("Zuilen records lost with Ondiep: %v", err)
	}
	st := status(t, a)
	if !slices.Equal(st.Areas, []string{"Zuilen"}) {
		t.Errorf("areas after the change: %v", st.Areas)
	}
	if slices.Contains(st.Checkpoint.Areas, "Ondiep") {
		t.Errorf("checkpoint still lists Ondiep: %+v", st.Checkpoint)
	}
	if cs, _ := a.Cases(ctx, client.Filter{}); len(cs) != 1 || cs[0].ID != f.zCase {
		t.Errorf("cases after the change: %d", len(cs))
	}
	// A write to the lost area is refused locally now.
	if _, err := a.AddEntry(ctx, f.oCase, map[string]any{"kind": "note", "text": "x"}); err == nil {
		t.Errorf("write to a purged case accepted locally")
	}

	// The session is still alive: a later note reaches the lead.
	note := mustAddEntry(t, a, f.zCase, "Z three, after the scope change")
	waitFor(t, a, 10*time.Second, "note pushed", func() (bool, error) { return status(t, a).Pending == 0, nil })
	mustSync(t, f.lead)
	mustGet(t, f.lead, entryKey(note))

	// Giving Ondiep back brings its records again, from the beginning.
	f.s.SetAreas("anouk", "Ondiep", "Zuilen")
	waitFor(t, a, 10*time.Second, "Ondiep back", func() (bool, error) { return holdsAll(a, f.oIDs) })
	if err := stop(); err != nil {
		t.Errorf("Run: %v", err)
	}
}

// Scope shrink with pending changes: Anouk's laptop, in Run mode, writes
// to an Ondiep case while its connection is a black hole, so the changes
// stay in the outbox; meanwhile the admin takes Ondiep from her. When the
// network comes back the changes are pushed and, refused for scope, kept
// in Rejected with the reason: never silently dropped. Ondiep's records
// are purged.
func TestScopeShrinkPendingChanges(t *testing.T) {
	ctx := context.Background()
	f := newScopeFixture(t)
	p := newProxy(t, f.s.Addr)
	a := openDevice(t, f.s, "anouk", p.URL(), nil)
	stop := runClient(t, a.Client)
	waitFor(t, a.Client, 10*time.Second, "both areas on the device", func() (bool, error) {
		return holdsAll(a.Client, append(slices.Clone(f.zIDs), f.oIDs...))
	})

	p.SetBlackhole(true)
	note := mustAddEntry(t, a.Client, f.oCase, "O three, written in the black hole")
	if err := a.SetCase(ctx, f.oCase, map[string]any{"next_action": "2026-12-01"}); err != nil {
		t.Fatal(err)
	}
	zNote := mustAddEntry(t, a.Client, f.zCase, "Z three, written in the black hole")
	if st := status(t, a.Client); st.Pending != 3 {
		t.Fatalf("pending = %d, want 3 (the black hole should hold them)", st.Pending)
	}
	f.s.SetAreas("anouk", "Zuilen")
	p.SetBlackhole(false)
	p.Cut()

	waitFor(t, a.Client, 15*time.Second, "outbox settled and Ondiep purged", func() (bool, error) {
		if st := status(t, a.Client); st.Pending != 0 {
			return false, nil
		}
		return holdsNone(a.Client, f.oIDs)
	})

	// Each Ondiep change is either on the server or in Rejected with code
	// scope; the Zuilen note was pushed.
	rej, err := a.Rejected(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rejected := map[syncproto.Key]syncproto.Error{}
	for _, r := range rej {
		rejected[r.Change.Key()] = r.Error
	}
	mustSync(t, f.lead)
	noteOnServer := false
	if _, ok := serverRecord(t, f.s, entryKey(note)); ok {
		noteOnServer = true
	}
	if e, ok := rejected[entryKey(note)]; ok {
		if e.Code != syncproto.CodeScope || noteOnServer {
			t.Errorf("note rejected with %s (on server: %v), want scope", e.Code, noteOnServer)
		}
	} else if !noteOnServer {
		t.Errorf("the Ondiep note is neither on the server nor in Rejected: silently dropped")
	}
	oc, _ := serverRecord(t, f.s, caseKey(f.oCase))
	editOnServer := oc != nil && oc.Fields["next_action"].Values != nil
	if e, ok := rejected[caseKey(f.oCase)]; ok {
		if e.Code != syncproto.CodeScope || editOnServer {
			t.Errorf("case edit rejected with %s (on server: %v), want scope", e.Code, editOnServer)
		}
	} else if !editOnServer {
		t.Errorf("the Ondiep case edit is neither on the server nor in Rejected: silently dropped")
	}
	if _, ok := rejected[entryKey(zNote)]; ok {
		t.Errorf("the Zuilen note was rejected")
	}
	if _, ok := serverRecord(t, f.s, entryKey(zNote)); !ok {
		t.Errorf("the Zuilen note did not reach the server")
	}
	if st := status(t, a.Client); st.Rejected != len(rej) {
		t.Errorf("Status.Rejected = %d, Rejected() has %d", st.Rejected, len(rej))
	}
	t.Logf("rejected: %d; note on server: %v; edit on server: %v", len(rej), noteOnServer, editOnServer)
	// Ondiep is gone from the device, Zuilen kept.
	if ok, err := holdsAll(a.Client, append(slices.Clone(f.zIDs), zNote)); !ok {
		t.Errorf("Zuilen records missing: %v", err)
	}
	mustNotFind(t, a.Client, note, "rejected Ondiep note")
	if err := stop(); err != nil {
		t.Errorf("Run: %v", err)
	}
}
