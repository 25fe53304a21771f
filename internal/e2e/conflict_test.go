package e2e

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/casesync/casesync/client"
	"github.com/casesync/casesync/server/servertest"
	"github.com/casesync/casesync/syncproto"
)

type named struct {
	name string
	c    *client.Client
}

// sameEverywhere asserts that every device shows record k identically and
// returns that view.
func sameEverywhere(t *testing.T, k syncproto.Key, devs ...named) *client.View {
	t.Helper()
	first := mustGet(t, devs[0].c, k)
	want := summary(t, first)
	for _, d := range devs[1:] {
		if got := summary(t, mustGet(t, d.c, k)); got != want {
			t.Errorf("%s shows %s\n%s shows %s", d.name, got, devs[0].name, want)
		}
	}
	return first
}

// wantStatusConflict asserts that each device lists exactly one conflicted
// record, k, with a conflict on status between exactly values.
func wantStatusConflict(t *testing.T, k syncproto.Key, values []string, devs ...named) {
	t.Helper()
	slices.Sort(values)
	for _, d := range devs {
		cs, err := d.c.Conflicts(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if len(cs) != 1 || cs[0].Key != k {
			t.Errorf("%s: conflicts = %+v; want one, on %s", d.name, cs, k)
			continue
		}
		if len(cs[0].Conflicts) != 1 || cs[0].Conflicts[0].Field != syncproto.FieldStatus {
			t.Errorf("%s: conflicts of %s = %+v; want one, on status", d.name, k, cs[0].Conflicts)
			continue
		}
		var got []string
		for _, v := range cs[0].Conflicts[0].Values {
			got = append(got, string(v.Data))
		}
		slices.Sort(got)
		if !slices.Equal(got, values) {
			t.Errorf("%s: status conflict values %v, want %v", d.name, got, values)
		}
		if st := status(t, d.c); st.Conflicts != 1 {
			t.Errorf("%s: Status.Conflicts = %d, want 1", d.name, st.Conflicts)
		}
	}
}

func wantNoConflicts(t *testing.T, devs ...named) {
	t.Helper()
	for _, d := range devs {
		cs, err := d.c.Conflicts(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if len(cs) != 0 {
			t.Errorf("%s: conflicts = %+v; want none", d.name, cs)
		}
		if st := status(t, d.c); st.Conflicts != 0 {
			t.Errorf("%s: Status.Conflicts = %d, want 0", d.name, st.Conflicts)
		}
	}
}

// valueID returns the ValueID of the value data in field's conflict.
func valueID(t *testing.T, v *client.View, field, data string) string {
	t.Helper()
	for _, c := range v.Conflicts {
		if c.Field != field {
			continue
		}
		for _, val := range c.Values {
			if string(val.Data) == data {
				return client.ValueID(val)
			}
		}
	}
	t.Fatalf("%s has no conflicting value %s on %s: %+v", v.ID, data, field, v.Conflicts)
	return ""
}

// Scenario 4: A and B (same area) both edit a case offline: each sets a
// different status and a different other field. After syncing, every
// device shows the same record, the other fields merged, and the status
// conflict with both values, until one resolves it.
func TestConcurrentEdit(t *testing.T) {
	ctx := context.Background()
	s := servertest.NewServer(t, nil)
	s.AddUser("anouk", "caseworker", "Zuilen")
	s.AddUser("bram", "caseworker", "Zuilen")
	s.AddUser("lotte", "lead")
	a, b, l := openClient(t, s, "anouk"), openClient(t, s, "bram"), openClient(t, s, "lotte")
	all := []named{{"A", a}, {"B", b}, {"lead", l}}
	syncAll := func(order ...*client.Client) {
		t.Helper()
		for _, c := range order {
			mustSync(t, c)
		}
	}

	id := mustCreateCase(t, a, map[string]any{"area": "Zuilen", "title": "Damp in the hallway", "tenant": "J. de Vries"})
	k := caseKey(id)
	syncAll(a, b, l)

	t.Run("keep one value", func(t *testing.T) {
		// Offline: different statuses, different other fields.
		if err := a.SetCase(ctx, id, map[string]any{"status": "waiting", "tenant": "J. de Vries-Bakker"}); err != nil {
			t.Fatal(err)
		}
		if err := b.SetCase(ctx, id, map[string]any{"status": "closed", "summary": "Landlord repaired the gutter"}); err != nil {
			t.Fatal(err)
		}
		syncAll(a, b, a, l)

		v := sameEverywhere(t, k, all...)
		if v.String("tenant") != "J. de Vries-Bakker" || v.String("summary") != "Landlord repaired the gutter" || v.String("title") != "Damp in the hallway" {
			t.Errorf("different-field edits not merged: %+v", v.Fields)
		}
		if w := v.String("status"); w != "waiting" && w != "closed" {
			t.Errorf("status winner %q is neither concurrent value", w)
		}
		wantStatusConflict(t, k, []string{`"waiting"`, `"closed"`}, all...)

		// B resolves, keeping A's value. Until B's resolution syncs, the
		// others still see the conflict.
		keep := valueID(t, mustGet(t, b, k), "status", `"waiting"`)
		if err := b.Resolve(ctx, id, "status", keep, nil); err != nil {
			t.Fatal(err)
		}
		wantNoConflicts(t, named{"B", b})
		syncAll(a, l)
		wantStatusConflict(t, k, []string{`"waiting"`, `"closed"`}, named{"A", a}, named{"lead", l})

		syncAll(b, a, l)
		wantNoConflicts(t, all...)
		v = sameEverywhere(t, k, all...)
		if v.String("status") != "waiting" || v.String("tenant") != "J. de Vries-Bakker" || v.String("summary") != "Landlord repaired the gutter" {
			t.Errorf("after resolution: %+v", v.Fields)
		}
		// Resolving a settled field is refused.
		if err := a.Resolve(ctx, id, "status", keep, nil); !errors.Is(err, client.ErrNoConflict) {
			t.Errorf("resolve a settled field: %v, want ErrNoConflict", err)
		}
	})

	t.Run("new value", func(t *testing.T) {
		if err := a.SetCase(ctx, id, map[string]any{"status": "open"}); err != nil {
			t.Fatal(err)
		}
		if err := b.SetCase(ctx, id, map[string]any{"status": "closed"}); err != nil {
			t.Fatal(err)
		}
		syncAll(a, b, a, l)
		sameEverywhere(t, k, all...)
		wantStatusConflict(t, k, []string{`"open"`, `"closed"`}, all...)

		// The lead settles it with a third value.
		if err := l.Resolve(ctx, id, "status", "", "waiting"); err != nil {
			t.Fatal(err)
		}
		syncAll(l, a, b)
		wantNoConflicts(t, all...)
		if v := sameEverywhere(t, k, all...); v.String("status") != "waiting" {
			t.Errorf("status after resolving with a new value: %q, want waiting", v.String("status"))
		}
		for _, d := range all {
			if st := status(t, d.c); st.Pending != 0 || st.Rejected != 0 {
				t.Errorf("%s: %+v", d.name, st)
			}
		}
	})
}

// Edit versus delete: Anouk deletes her note on one laptop while she
// extends it on her second laptop. After both sync the note stays visible
// with a conflict on _deleted (edited: text) on every device, until she
// resolves it.
func TestEditVersusDelete(t *testing.T) {
	ctx := context.Background()
	s := servertest.NewServer(t, nil)
	s.AddUser("anouk", "caseworker", "Zuilen")
	s.AddUser("lotte", "lead")
	a1, a2, l := openClient(t, s, "anouk"), openClient(t, s, "anouk"), openClient(t, s, "lotte")
	all := []named{{"laptop-1", a1}, {"laptop-2", a2}, {"lead", l}}

	caseID := mustCreateCase(t, a1, map[string]any{"area": "Zuilen", "title": "Referral to GP"})
	entryID := mustAddEntry(t, a1, caseID, "Called the GP.")
	other := mustAddEntry(t, a1, caseID, "Visited; tenant not home.")
	k := entryKey(entryID)
	for _, c := range []*client.Client{a1, a2, l} {
		mustSync(t, c)
	}

	if err := a1.DeleteEntry(ctx, entryID); err != nil {
		t.Fatal(err)
	}
	if err := a2.EditEntry(ctx, entryID, map[string]any{"text": "Called the GP; a referral follows."}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client.Client{a1, a2, a1, l} {
		mustSync(t, c)
	}

	v := sameEverywhere(t, k, all...)
	if v.Deleted {
		t.Errorf("an entry deleted concurrently with an edit is deleted: %+v", v)
	}
	if v.String("text") != "Called the GP; a referral follows." {
		t.Errorf("text = %q, want the edit", v.String("text"))
	}
	for _, d := range all {
		dv := mustGet(t, d.c, k)
		var found bool
		for _, c := range dv.Conflicts {
			if c.Field == syncproto.FieldDeleted {
				found = true
				if !slices.Equal(c.Edited, []string{"text"}) {
					t.Errorf("%s: _deleted conflict edited = %v, want [text]", d.name, c.Edited)
				}
			}
		}
		if !found {
			t.Errorf("%s: no conflict on _deleted: %+v", d.name, dv.Conflicts)
		}
		entries, err := d.c.Entries(ctx, caseID)
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) != 2 {
			t.Errorf("%s: journal has %d entries, want 2 (the conflicted one stays visible)", d.name, len(entries))
		}
		cs, _ := d.c.Conflicts(ctx)
		if len(cs) != 1 || cs[0].Key != k {
			t.Errorf("%s: Conflicts() = %+v, want the entry", d.name, cs)
		}
	}

	// Anouk confirms the deletion on laptop 2; now it covers the edit.
	if err := a2.Resolve(ctx, entryID, syncproto.FieldDeleted, "", true); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client.Client{a2, a1, l} {
		mustSync(t, c)
	}
	wantNoConflicts(t, all...)
	v = sameEverywhere(t, k, all...)
	if !v.Deleted {
		t.Errorf("after resolving with delete the entry is not deleted: %+v", v)
	}
	for _, d := range all {
		entries, err := d.c.Entries(ctx, caseID)
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) != 1 || entries[0].ID != other {
			t.Errorf("%s: journal after deletion = %d entries, want only %s", d.name, len(entries), other)
		}
	}
	if r, ok := serverRecord(t, s, k); !ok || !r.Deleted() {
		t.Errorf("server: entry %s deleted = %v (found %v)", entryID, ok && r.Deleted(), ok)
	}
}
