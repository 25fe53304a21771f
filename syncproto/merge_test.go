package syncproto_test

// Scenario tests of the per-field merge rules (record.go; design notes
// "Clocks and merge"). Each test runs devices that hold a local replica of
// one record, make Edits/Deletes on it, and exchange change states
// (Change.State) or whole replica states, then checks what every replica
// shows. property_test.go checks the same rules on random schedules.

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/casesync/casesync/syncproto"
)

// mergeBase is the true time the scenarios start at.
var mergeBase = time.Date(2025, 3, 4, 9, 0, 0, 0, time.UTC)

// mergeAt returns the stamp of mergeBase plus min minutes (logical 0).
func mergeAt(min int) syncproto.Stamp {
	return syncproto.MakeStamp(mergeBase.Add(time.Duration(min) * time.Minute))
}

// mergeStr returns s as a canonical JSON string value.
func mergeStr(s string) json.RawMessage { return json.RawMessage(strconv.Quote(s)) }

var (
	mergeCaseKey  = syncproto.Key{Collection: syncproto.Cases, ID: "case-1"}
	mergeEntryKey = syncproto.Key{Collection: syncproto.Entries, ID: "entry-1"}
)

// mergeDev is a device with a local replica of one record.
type mergeDev struct {
	id  string
	seq uint64
	rec *syncproto.Record
}

func newMergeDev(id string, key syncproto.Key) *mergeDev {
	return &mergeDev{id: id, rec: &syncproto.Record{Collection: key.Collection, ID: key.ID}}
}

// edit makes an Edit of d's replica at stamp at, applies it locally (a
// device always holds its own writes) and returns the change's state as it
// travels to other replicas.
func (d *mergeDev) edit(at syncproto.Stamp, vals map[string]json.RawMessage) *syncproto.Record {
	d.seq++
	var cur *syncproto.Record
	if len(d.rec.Fields) > 0 {
		cur = d.rec
	}
	ch := syncproto.Edit(cur, d.rec.Collection, d.rec.ID, d.seq, at, vals)
	return d.apply(ch)
}

// set edits one string field.
func (d *mergeDev) set(at syncproto.Stamp, field, val string) *syncproto.Record {
	return d.edit(at, map[string]json.RawMessage{field: mergeStr(val)})
}

// del deletes the entry as d sees it.
func (d *mergeDev) del(at syncproto.Stamp) *syncproto.Record {
	d.seq++
	return d.apply(syncproto.Delete(d.rec, d.seq, at))
}

// undel writes _deleted=false as d sees it.
func (d *mergeDev) undel(at syncproto.Stamp) *syncproto.Record {
	return d.edit(at, map[string]json.RawMessage{syncproto.FieldDeleted: json.RawMessage("false")})
}

func (d *mergeDev) apply(ch syncproto.Change) *syncproto.Record {
	st := ch.State(d.id)
	d.rec.Join(st.Clone())
	return st
}

// recv joins states (change states or whole replicas) into d's replica.
func (d *mergeDev) recv(states ...*syncproto.Record) {
	for _, s := range states {
		d.rec.Join(s.Clone())
	}
}

// state returns a copy of d's whole replica, as sent in a sync.
func (d *mergeDev) state() *syncproto.Record { return d.rec.Clone() }

// mergeReplica returns a fresh replica that received states in order.
func mergeReplica(key syncproto.Key, states ...*syncproto.Record) *syncproto.Record {
	r := &syncproto.Record{Collection: key.Collection, ID: key.ID}
	for _, s := range states {
		r.Join(s.Clone())
	}
	return r
}

func mergeJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := syncproto.Marshal(v)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	return string(b)
}

// mergeSame fails unless all replicas encode identically and agree on
// Conflicts and Deleted.
func mergeSame(t *testing.T, recs ...*syncproto.Record) {
	t.Helper()
	want := mergeJSON(t, recs[0])
	for i, r := range recs[1:] {
		if got := mergeJSON(t, r); got != want {
			t.Fatalf("replica %d differs from replica 0:\n got %s\nwant %s", i+1, got, want)
		}
		if got, want := mergeJSON(t, r.Conflicts()), mergeJSON(t, recs[0].Conflicts()); got != want {
			t.Fatalf("replica %d conflicts %s, replica 0 %s", i+1, got, want)
		}
		if r.Deleted() != recs[0].Deleted() {
			t.Fatalf("replica %d Deleted()=%v, replica 0 %v", i+1, r.Deleted(), recs[0].Deleted())
		}
	}
}

// mergeLive returns the field's live values' data, winner first.
func mergeLive(r *syncproto.Record, field string) []string {
	var out []string
	for _, v := range r.Fields[field].Values {
		out = append(out, string(v.Data))
	}
	return out
}

// mergeWant fails unless field holds exactly the given string values,
// winner first.
func mergeWant(t *testing.T, r *syncproto.Record, field string, want ...string) {
	t.Helper()
	var w []string
	for _, s := range want {
		w = append(w, string(mergeStr(s)))
	}
	if got := mergeLive(r, field); !slices.Equal(got, w) {
		t.Fatalf("%s: live values %v, want %v (record %s)", field, got, w, mergeJSON(t, r))
	}
}

func mergeNoConflicts(t *testing.T, recs ...*syncproto.Record) {
	t.Helper()
	for i, r := range recs {
		if c := r.Conflicts(); len(c) != 0 {
			t.Fatalf("replica %d: unexpected conflicts %s", i, mergeJSON(t, c))
		}
	}
}

// mergeNewCase returns devices ids that all hold the same new case, created
// by the first at minute 0 with title "t0".
func mergeNewCase(ids ...string) []*mergeDev {
	devs := make([]*mergeDev, len(ids))
	for i, id := range ids {
		devs[i] = newMergeDev(id, mergeCaseKey)
	}
	create := devs[0].edit(mergeAt(0), map[string]json.RawMessage{
		syncproto.FieldTitle:  mergeStr("t0"),
		syncproto.FieldStatus: mergeStr(syncproto.StatusOpen),
		syncproto.FieldArea:   mergeStr("Zuilen"),
	})
	for _, d := range devs[1:] {
		d.recv(create)
	}
	return devs
}

// mergeNewEntry returns devices that all hold the same new entry.
func mergeNewEntry(ids ...string) []*mergeDev {
	devs := make([]*mergeDev, len(ids))
	for i, id := range ids {
		devs[i] = newMergeDev(id, mergeEntryKey)
	}
	create := devs[0].edit(mergeAt(0), map[string]json.RawMessage{
		syncproto.FieldCaseID:     mergeStr("case-1"),
		syncproto.FieldKind:       mergeStr(syncproto.KindVisit),
		syncproto.FieldAuthor:     mergeStr("ana"),
		syncproto.FieldOccurredAt: mergeStr("2025-03-04"),
		syncproto.FieldText:       mergeStr("t0"),
	})
	for _, d := range devs[1:] {
		d.recv(create)
	}
	return devs
}

func TestMergeSequentialEditsNoConflict(t *testing.T) {
	// B edits after seeing A's value: whatever the stamps and device IDs,
	// B's write replaces A's. Causality, not time, decides.
	for _, tc := range []struct {
		name       string
		aID, bID   string
		aAt, bAt   int
		thenAAt    int
		thenAValue string
	}{
		{name: "later stamp", aID: "A", bID: "B", aAt: 1, bAt: 2, thenAAt: 3},
		{name: "earlier stamp (B's clock behind)", aID: "A", bID: "B", aAt: 10, bAt: 2, thenAAt: 3},
		{name: "equal stamp, smaller device", aID: "B", bID: "A", aAt: 5, bAt: 5, thenAAt: 5},
		{name: "equal stamp, greater device", aID: "A", bID: "B", aAt: 5, bAt: 5, thenAAt: 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			devs := mergeNewCase(tc.aID, tc.bID)
			a, b := devs[0], devs[1]
			ea := a.set(mergeAt(tc.aAt), syncproto.FieldTitle, "by-a")
			b.recv(ea)
			eb := b.set(mergeAt(tc.bAt), syncproto.FieldTitle, "by-b")
			a.recv(eb)
			late := mergeReplica(mergeCaseKey, eb, ea) // old write arrives after
			for _, r := range []*syncproto.Record{a.rec, b.rec, late} {
				mergeWant(t, r, syncproto.FieldTitle, "by-b")
			}
			mergeNoConflicts(t, a.rec, b.rec, late)
			mergeSame(t, a.rec, b.rec)
			// A's next write, after seeing B's, replaces it in turn.
			ea2 := a.set(mergeAt(tc.thenAAt), syncproto.FieldTitle, "by-a-again")
			b.recv(ea2)
			late.Join(ea2)
			for _, r := range []*syncproto.Record{a.rec, b.rec, late} {
				mergeWant(t, r, syncproto.FieldTitle, "by-a-again")
			}
			mergeNoConflicts(t, a.rec, b.rec)
			mergeSame(t, a.rec, b.rec)
		})
	}
}

func TestMergeConcurrentEditsConflictSameWinner(t *testing.T) {
	for _, tc := range []struct {
		name     string
		aID, bID string
		aAt, bAt int
		winner   string // "a" or "b"
	}{
		{name: "higher stamp wins (a)", aID: "A", bID: "B", aAt: 7, bAt: 6, winner: "a"},
		{name: "higher stamp wins (b)", aID: "B", bID: "A", aAt: 6, bAt: 7, winner: "b"},
		{name: "equal stamps: greater device", aID: "A", bID: "B", aAt: 6, bAt: 6, winner: "b"},
		{name: "equal stamps: device IDs compare as strings", aID: "dev-9", bID: "dev-10", aAt: 6, bAt: 6, winner: "a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			devs := mergeNewCase(tc.aID, tc.bID)
			a, b := devs[0], devs[1]
			ea := a.set(mergeAt(tc.aAt), syncproto.FieldTitle, "a")
			eb := b.set(mergeAt(tc.bAt), syncproto.FieldTitle, "b")
			a.recv(eb)
			b.recv(ea)
			base := mergeReplica(mergeCaseKey, devs[0].rec) // holds everything
			c1 := mergeReplica(mergeCaseKey, ea, eb)
			c2 := mergeReplica(mergeCaseKey, eb, ea, eb, ea) // reversed, duplicated
			recs := []*syncproto.Record{a.rec, b.rec, c1, c2, base}
			mergeSame(t, a.rec, b.rec)
			want := []string{"a", "b"}
			if tc.winner == "b" {
				want = []string{"b", "a"}
			}
			for _, r := range recs {
				mergeWant(t, r, syncproto.FieldTitle, want...)
				if got, _ := r.String(syncproto.FieldTitle); got != tc.winner {
					t.Fatalf("winner %q, want %q", got, tc.winner)
				}
				cs := r.Conflicts()
				if len(cs) != 1 || cs[0].Field != syncproto.FieldTitle || len(cs[0].Values) != 2 || cs[0].Edited != nil {
					t.Fatalf("conflicts %s, want one on title with both values", mergeJSON(t, cs))
				}
				if r.Deleted() {
					t.Fatal("a case is never deleted")
				}
			}
			// Change states (c1, c2) hold only the title, so compare them
			// with each other only.
			mergeSame(t, c1, c2)
		})
	}
}

func TestMergeWinnerRanking(t *testing.T) {
	// The winner order is total: stamp, then device ID, then sequence. The
	// last rule only decides between two writes of one device, which valid
	// states never hold at once; it is checked on a crafted field.
	val := func(dev string, seq uint64, at int) syncproto.Value {
		return syncproto.Value{Device: dev, Seq: seq, Stamp: mergeAt(at), Data: mergeStr(fmt.Sprintf("%s%d", dev, seq))}
	}
	for _, tc := range []struct {
		name      string
		win, lose syncproto.Value
	}{
		{name: "higher stamp", win: val("A", 1, 2), lose: val("B", 9, 1)},
		{name: "stamp beats device and seq", win: val("A", 1, 2), lose: val("Z", 99, 1)},
		{name: "equal stamp: greater device", win: val("B", 1, 1), lose: val("A", 9, 1)},
		{name: "equal stamp and device: greater seq", win: val("A", 2, 1), lose: val("A", 1, 1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seen := syncproto.Versions{}.Join(syncproto.Versions{tc.win.Device: tc.win.Seq}).Join(syncproto.Versions{tc.lose.Device: tc.lose.Seq})
			for _, order := range [][]syncproto.Value{{tc.win, tc.lose}, {tc.lose, tc.win}} {
				f := syncproto.Field{Values: order, Seen: seen}
				for _, got := range []syncproto.Field{syncproto.JoinField(f, syncproto.Field{}), syncproto.JoinField(syncproto.Field{}, f), syncproto.JoinField(f, f)} {
					if len(got.Values) != 2 || got.Values[0].Dot() != tc.win.Dot() {
						t.Fatalf("order %v: got %+v, want %v first", order, got.Values, tc.win.Dot())
					}
					if w, _ := got.Winner(); w.Dot() != tc.win.Dot() {
						t.Fatalf("Winner %v, want %v", w.Dot(), tc.win.Dot())
					}
				}
			}
			if tc.win.Device != tc.lose.Device {
				// Two devices' concurrent writes, joined as change states.
				sw := syncproto.Field{Values: []syncproto.Value{tc.win}, Seen: syncproto.Versions{tc.win.Device: tc.win.Seq}}
				sl := syncproto.Field{Values: []syncproto.Value{tc.lose}, Seen: syncproto.Versions{tc.lose.Device: tc.lose.Seq}}
				for _, got := range []syncproto.Field{syncproto.JoinField(sw, sl), syncproto.JoinField(sl, sw)} {
					if len(got.Values) != 2 || got.Values[0].Dot() != tc.win.Dot() || !got.Conflicted() {
						t.Fatalf("got %+v, want conflict with %v first", got.Values, tc.win.Dot())
					}
				}
			}
		})
	}
}

func TestMergeConcurrentDifferentFieldsNoConflict(t *testing.T) {
	devs := mergeNewCase("A", "B")
	a, b := devs[0], devs[1]
	ea := a.set(mergeAt(5), syncproto.FieldTitle, "new title")
	eb := b.edit(mergeAt(4), map[string]json.RawMessage{
		syncproto.FieldStatus: mergeStr(syncproto.StatusWaiting),
		syncproto.FieldTags:   json.RawMessage(`["rent"]`),
	})
	a.recv(eb)
	b.recv(ea)
	c := mergeReplica(mergeCaseKey, eb, ea)
	c.Join(a.state())
	mergeSame(t, a.rec, b.rec, c)
	mergeNoConflicts(t, a.rec)
	mergeWant(t, a.rec, syncproto.FieldTitle, "new title")
	mergeWant(t, a.rec, syncproto.FieldStatus, syncproto.StatusWaiting)
	if got := mergeLive(a.rec, syncproto.FieldTags); !slices.Equal(got, []string{`["rent"]`}) {
		t.Fatalf("tags %v", got)
	}
}

func TestMergeConcurrentSameValueNoConflict(t *testing.T) {
	devs := mergeNewCase("A", "B", "C")
	a, b, c := devs[0], devs[1], devs[2]
	ea := a.set(mergeAt(5), syncproto.FieldStatus, syncproto.StatusClosed)
	eb := b.set(mergeAt(6), syncproto.FieldStatus, syncproto.StatusClosed)
	a.recv(eb)
	b.recv(ea)
	mergeSame(t, a.rec, b.rec)
	mergeNoConflicts(t, a.rec, b.rec)
	// Both writes stay live (neither saw the other); they agree, so the
	// field is not conflicted.
	mergeWant(t, a.rec, syncproto.FieldStatus, syncproto.StatusClosed, syncproto.StatusClosed)
	if a.rec.Fields[syncproto.FieldStatus].Values[0].Device != "B" {
		t.Fatalf("winner %+v, want B's (later stamp)", a.rec.Fields[syncproto.FieldStatus].Values[0])
	}
	// A third concurrent, different value makes it a conflict of three.
	ec := c.set(mergeAt(4), syncproto.FieldStatus, syncproto.StatusWaiting)
	a.recv(ec)
	c.recv(ea, eb)
	b.recv(ec)
	mergeSame(t, a.rec, b.rec, c.rec)
	if cs := a.rec.Conflicts(); len(cs) != 1 || len(cs[0].Values) != 3 {
		t.Fatalf("conflicts %s, want one with three values", mergeJSON(t, cs))
	}
}

func TestMergeResolveConflict(t *testing.T) {
	for _, resolver := range []int{0, 1, 2} {
		for _, choice := range []string{"a", "b", "r"} {
			t.Run(fmt.Sprintf("resolver=%d/choice=%s", resolver, choice), func(t *testing.T) {
				devs := mergeNewCase("A", "B", "C")
				a, b := devs[0], devs[1]
				ea := a.set(mergeAt(5), syncproto.FieldTitle, "a")
				eb := b.set(mergeAt(6), syncproto.FieldTitle, "b")
				for _, d := range devs {
					d.recv(ea, eb)
				}
				mergeSame(t, a.rec, b.rec, devs[2].rec)
				if len(a.rec.Conflicts()) != 1 {
					t.Fatalf("no conflict before resolving: %s", mergeJSON(t, a.rec))
				}
				// The resolver keeps one value or writes a new one: an
				// ordinary Edit, at an early stamp to show it needs none.
				r := devs[resolver]
				er := r.set(mergeAt(1), syncproto.FieldTitle, choice)
				w := er.Fields[syncproto.FieldTitle]
				if !w.Seen.Covers(ea.Fields[syncproto.FieldTitle].Values[0].Dot()) || !w.Seen.Covers(eb.Fields[syncproto.FieldTitle].Values[0].Dot()) {
					t.Fatalf("resolution's context %v does not cover both values", w.Seen)
				}
				// It syncs as an ordinary change state.
				for _, d := range devs {
					d.recv(er)
				}
				// A replica that gets the resolution before the conflicting
				// edits ignores them when they arrive late.
				late := mergeReplica(mergeCaseKey, er, eb, ea, er)
				late.Join(a.state())
				recs := []*syncproto.Record{a.rec, b.rec, devs[2].rec, late}
				mergeSame(t, recs...)
				mergeNoConflicts(t, recs...)
				mergeWant(t, a.rec, syncproto.FieldTitle, choice)
			})
		}
	}
}

func TestMergeThreeWayConcurrent(t *testing.T) {
	devs := mergeNewCase("A", "B", "C", "D")
	a, b, c, d := devs[0], devs[1], devs[2], devs[3]
	ea := a.set(mergeAt(5), syncproto.FieldTitle, "a")
	eb := b.set(mergeAt(7), syncproto.FieldTitle, "b")
	ec := c.set(mergeAt(6), syncproto.FieldTitle, "c")
	edits := []*syncproto.Record{ea, eb, ec}
	perms := [][]int{{0, 1, 2}, {0, 2, 1}, {1, 0, 2}, {1, 2, 0}, {2, 0, 1}, {2, 1, 0}}
	var recs []*syncproto.Record
	for _, p := range perms {
		r := mergeReplica(mergeCaseKey, d.rec)
		for _, i := range p {
			r.Join(edits[i].Clone())
		}
		recs = append(recs, r)
	}
	mergeSame(t, recs...)
	mergeWant(t, recs[0], syncproto.FieldTitle, "b", "c", "a")
	if cs := recs[0].Conflicts(); len(cs) != 1 || len(cs[0].Values) != 3 {
		t.Fatalf("conflicts %s, want one of three values", mergeJSON(t, cs))
	}

	// D resolves having seen only A's and B's values: C's remains in
	// conflict with the resolution, since D never saw it.
	d.recv(ea, eb)
	ed := d.set(mergeAt(8), syncproto.FieldTitle, "d")
	for _, r := range recs {
		r.Join(ed.Clone())
	}
	mergeSame(t, recs...)
	mergeWant(t, recs[0], syncproto.FieldTitle, "d", "c")

	// A, having everything, resolves for good.
	a.recv(eb, ec, ed)
	ea2 := a.set(mergeAt(2), syncproto.FieldTitle, "final")
	for _, r := range recs {
		r.Join(ea2.Clone())
	}
	b.recv(ea2, ec, ed, ea)
	c.recv(ea2, ed)
	d.recv(ec, ea2)
	recs = append(recs, a.rec, b.rec, c.rec, d.rec)
	mergeSame(t, recs...)
	mergeNoConflicts(t, recs...)
	mergeWant(t, recs[0], syncproto.FieldTitle, "final")
}

// mergeWantDeleteConflict fails unless r's only conflict is a deletion
// concurrent with edits of the named fields.
func mergeWantDeleteConflict(t *testing.T, r *syncproto.Record, edited ...string) {
	t.Helper()
	cs := r.Conflicts()
	if len(cs) != 1 || cs[0].Field != syncproto.FieldDeleted || !slices.Equal(cs[0].Edited, edited) {
		t.Fatalf("conflicts %s, want one on %s with edited %v", mergeJSON(t, cs), syncproto.FieldDeleted, edited)
	}
	if r.Deleted() {
		t.Fatal("an entry whose deletion conflicts with an edit must stay visible")
	}
}

func mergeWantDeleted(t *testing.T, want bool, recs ...*syncproto.Record) {
	t.Helper()
	for i, r := range recs {
		if r.Deleted() != want {
			t.Fatalf("replica %d: Deleted()=%v, want %v: %s", i, r.Deleted(), want, mergeJSON(t, r))
		}
	}
}

func TestMergeEditVersusDelete(t *testing.T) {
	t.Run("delete after seeing the edit", func(t *testing.T) {
		devs := mergeNewEntry("A", "B")
		a, b := devs[0], devs[1]
		eb := b.set(mergeAt(5), syncproto.FieldText, "edited")
		a.recv(eb)
		da := a.del(mergeAt(3))
		b.recv(da)
		late := mergeReplica(mergeEntryKey, da, eb) // edit arrives after the delete
		mergeSame(t, a.rec, b.rec)
		mergeWantDeleted(t, true, a.rec, b.rec, late)
		mergeNoConflicts(t, a.rec, b.rec, late)
	})

	// conflicted returns A and B after A deleted without seeing B's
	// concurrent edit of text, and both synced.
	conflicted := func(t *testing.T) (a, b *mergeDev, da, eb *syncproto.Record) {
		devs := mergeNewEntry("A", "B")
		a, b = devs[0], devs[1]
		da = a.del(mergeAt(6))
		eb = b.set(mergeAt(5), syncproto.FieldText, "edited")
		a.recv(eb)
		b.recv(da)
		return a, b, da, eb
	}

	t.Run("delete concurrent with an unseen edit", func(t *testing.T) {
		a, b, da, eb := conflicted(t)
		other := mergeReplica(mergeEntryKey, b.state())
		late := mergeReplica(mergeEntryKey, a.state())
		late.Join(eb)
		late.Join(da)
		recs := []*syncproto.Record{a.rec, b.rec, other, late}
		mergeSame(t, recs...)
		for _, r := range recs {
			mergeWantDeleteConflict(t, r, syncproto.FieldText)
			mergeWant(t, r, syncproto.FieldText, "edited")
		}
	})

	t.Run("edits of several fields unseen by the deleter", func(t *testing.T) {
		devs := mergeNewEntry("A", "B", "C")
		a, b, c := devs[0], devs[1], devs[2]
		da := a.del(mergeAt(6))
		eb := b.set(mergeAt(5), syncproto.FieldText, "edited")
		ec := c.set(mergeAt(5), syncproto.FieldFollowUp, "2025-04-01")
		r := mergeReplica(mergeEntryKey, a.rec, ec, eb, da)
		mergeWantDeleteConflict(t, r, syncproto.FieldFollowUp, syncproto.FieldText)
	})

	t.Run("re-delete after seeing the edit", func(t *testing.T) {
		a, b, da, eb := conflicted(t)
		da2 := a.del(mergeAt(7))
		b.recv(da2)
		late := mergeReplica(mergeEntryKey, da2, eb, da) // old writes arrive last
		recs := []*syncproto.Record{a.rec, b.rec, late}
		mergeWantDeleted(t, true, recs...)
		mergeNoConflicts(t, recs...)
		if got := len(a.rec.Fields[syncproto.FieldDeleted].Values); got != 1 {
			t.Fatalf("_deleted holds %d values, want the re-delete only", got)
		}
		mergeSame(t, a.rec, b.rec)
	})

	t.Run("keep after the conflict (undelete)", func(t *testing.T) {
		a, b, da, eb := conflicted(t)
		ub := b.undel(mergeAt(1))
		a.recv(ub)
		late := mergeReplica(mergeEntryKey, ub, da, eb)
		recs := []*syncproto.Record{a.rec, b.rec}
		mergeSame(t, recs...)
		recs = append(recs, late)
		mergeWantDeleted(t, false, recs...)
		mergeNoConflicts(t, recs...)
		mergeWant(t, late, syncproto.FieldText, "edited")
	})

	// deleted returns A, B and C after A deleted the entry and all synced.
	deleted := func(t *testing.T) ([]*mergeDev, *syncproto.Record) {
		devs := mergeNewEntry("A", "B", "C")
		da := devs[0].del(mergeAt(5))
		devs[1].recv(da)
		devs[2].recv(da)
		mergeWantDeleted(t, true, devs[0].rec, devs[1].rec, devs[2].rec)
		return devs, da
	}

	t.Run("undelete covering the delete", func(t *testing.T) {
		devs, da := deleted(t)
		ub := devs[1].undel(mergeAt(2))
		devs[0].recv(ub)
		devs[2].recv(ub, da)
		recs := []*syncproto.Record{devs[0].rec, devs[1].rec, devs[2].rec}
		mergeSame(t, recs...)
		mergeWantDeleted(t, false, recs...)
		mergeNoConflicts(t, recs...)
	})

	t.Run("concurrent delete and undelete", func(t *testing.T) {
		devs, _ := deleted(t)
		ub := devs[1].undel(mergeAt(7))
		dc := devs[2].del(mergeAt(6))
		devs[0].recv(ub, dc)
		devs[1].recv(dc)
		devs[2].recv(ub)
		recs := []*syncproto.Record{devs[0].rec, devs[1].rec, devs[2].rec}
		mergeSame(t, recs...)
		mergeWantDeleted(t, false, recs...)
		for _, r := range recs {
			cs := r.Conflicts()
			if len(cs) != 1 || cs[0].Field != syncproto.FieldDeleted || cs[0].Edited != nil || len(cs[0].Values) != 2 {
				t.Fatalf("conflicts %s, want an ordinary conflict on _deleted", mergeJSON(t, cs))
			}
		}
		// Deleting again, having seen both, settles it.
		da := devs[0].del(mergeAt(8))
		devs[1].recv(da)
		devs[2].recv(da)
		mergeSame(t, recs...)
		mergeWantDeleted(t, true, recs...)
		mergeNoConflicts(t, recs...)
	})

	t.Run("concurrent deletes that together saw every edit", func(t *testing.T) {
		// A deletes having seen B's text edit but not C's follow-up; D
		// deletes having seen C's follow-up but not B's text. Together the
		// deletions covered every edit: deleted, no conflict.
		devs := mergeNewEntry("A", "B", "C", "D")
		a, b, c, d := devs[0], devs[1], devs[2], devs[3]
		eb := b.set(mergeAt(2), syncproto.FieldText, "edited")
		ec := c.set(mergeAt(2), syncproto.FieldFollowUp, "2025-04-01")
		a.recv(eb)
		d.recv(ec)
		da := a.del(mergeAt(3))
		dd := d.del(mergeAt(3))
		r1 := mergeReplica(mergeEntryKey, da, dd, eb, ec, a.rec)
		r2 := mergeReplica(mergeEntryKey, ec, eb, d.rec, dd, da)
		mergeSame(t, r1, r2)
		mergeWantDeleted(t, true, r1, r2)
		mergeNoConflicts(t, r1, r2)
		// Without D's deletion, C's edit was unseen: a conflict.
		r3 := mergeReplica(mergeEntryKey, a.rec, ec)
		mergeWantDeleteConflict(t, r3, syncproto.FieldFollowUp)
	})
}

func TestMergeRestampedDotConverges(t *testing.T) {
	// F's clock is 3 h fast. The server re-stamps F's write (Clock.Bound),
	// so the same dot exists with two stamps: F's own copy and the
	// server's. Every replica converges to the lower, server's, stamp, in
	// any order, and the winner against G's concurrent write follows it.
	now := mergeBase
	server := syncproto.NewClock(func() time.Time { return now }, 0)
	fClock := syncproto.NewClock(func() time.Time { return now.Add(3 * time.Hour) }, 0)
	gClock := syncproto.NewClock(func() time.Time { return now }, 0)

	devs := mergeNewCase("F", "G")
	f, g := devs[0], devs[1]
	f.seq = 10 // F's numbering continues from other records' writes
	now = now.Add(time.Minute)
	hi := f.set(fClock.Now(), syncproto.FieldTitle, "f")
	fDot := hi.Fields[syncproto.FieldTitle].Values[0]
	lowStamp, restamped := server.Bound(fDot.Stamp)
	if !restamped || lowStamp >= fDot.Stamp {
		t.Fatalf("Bound(%v) = %v, %v; want a lower server stamp", fDot.Stamp, lowStamp, restamped)
	}
	lo := hi.Clone()
	fl := lo.Fields[syncproto.FieldTitle]
	fl.Values[0].Stamp = lowStamp
	lo.Fields[syncproto.FieldTitle] = fl

	now = now.Add(time.Minute)
	eg := g.set(gClock.Now(), syncproto.FieldTitle, "g") // after the server's stamp, before F's
	if s := eg.Fields[syncproto.FieldTitle].Values[0].Stamp; s <= lowStamp || s >= fDot.Stamp {
		t.Fatalf("G's stamp %v is not between %v and %v", s, lowStamp, fDot.Stamp)
	}

	states := []*syncproto.Record{hi, lo, eg}
	perms := [][]int{{0, 1, 2}, {0, 2, 1}, {1, 0, 2}, {1, 2, 0}, {2, 0, 1}, {2, 1, 0}, {1, 0, 1, 2, 0}}
	recs := []*syncproto.Record{}
	for _, p := range perms {
		r := mergeReplica(mergeCaseKey, g.state())
		for _, i := range p {
			r.Join(states[i].Clone())
		}
		recs = append(recs, r)
	}
	f.recv(eg, lo) // F learns the server's stamp from the echo
	g.recv(hi, lo)
	recs = append(recs, f.rec, g.rec)
	mergeSame(t, recs...)
	for i, r := range recs {
		vals := r.Fields[syncproto.FieldTitle].Values
		if len(vals) != 2 || string(vals[0].Data) != `"g"` || vals[1].Stamp != lowStamp {
			t.Fatalf("replica %d: title %+v, want G's value first and F's at the server's stamp %v", i, vals, lowStamp)
		}
	}

	// JoinField of the two copies alone keeps the lower stamp either way.
	for _, got := range []syncproto.Field{
		syncproto.JoinField(hi.Fields[syncproto.FieldTitle], lo.Fields[syncproto.FieldTitle]),
		syncproto.JoinField(lo.Fields[syncproto.FieldTitle], hi.Fields[syncproto.FieldTitle]),
	} {
		if len(got.Values) != 1 || got.Values[0].Stamp != lowStamp {
			t.Fatalf("same dot, two stamps: got %+v, want one value at %v", got.Values, lowStamp)
		}
	}
}

func TestMergeFastClockNeverFreezesOthersOut(t *testing.T) {
	for _, viaServer := range []bool{false, true} {
		t.Run(fmt.Sprintf("server re-stamps=%v", viaServer), func(t *testing.T) {
			now := mergeBase
			server := syncproto.NewClock(func() time.Time { return now }, 0)
			aClock := syncproto.NewClock(func() time.Time { return now }, 0)
			bClock := syncproto.NewClock(func() time.Time { return now.Add(-2 * time.Second) }, 0)
			fClock := syncproto.NewClock(func() time.Time { return now.Add(3 * time.Hour) }, 0)

			// send models the path from writer to the others: with
			// viaServer the server bounds the stamp (Clock.Bound), the
			// writer joins the echo, and the others get the server's copy.
			send := func(from *mergeDev, st *syncproto.Record) *syncproto.Record {
				if !viaServer {
					return st
				}
				out := st.Clone()
				for name, f := range out.Fields {
					for i := range f.Values {
						f.Values[i].Stamp, _ = server.Bound(f.Values[i].Stamp)
					}
					out.Fields[name] = f
				}
				from.recv(out)
				return out
			}
			devs := mergeNewCase("A", "F", "B")
			a, f, b := devs[0], devs[1], devs[2]

			now = now.Add(time.Minute)
			ea := send(a, a.set(aClock.Now(), syncproto.FieldTitle, "a"))
			f.recv(ea)
			fClock.Observe(ea.Fields[syncproto.FieldTitle].Values[0].Stamp)

			// F writes after seeing A's value, 3 h in A's future.
			now = now.Add(time.Minute)
			fOwn := f.set(fClock.Now(), syncproto.FieldTitle, "f")
			ef := send(f, fOwn)
			fStamp := ef.Fields[syncproto.FieldTitle].Values[0].Stamp
			if !viaServer && aClock.Observe(fStamp) {
				t.Fatal("A's clock accepted a stamp 3 h ahead")
			}
			a.recv(ef)
			mergeWant(t, a.rec, syncproto.FieldTitle, "f")
			mergeWant(t, f.rec, syncproto.FieldTitle, "f")

			// B writes having seen neither F's value nor A's next one.
			now = now.Add(time.Minute)
			eb := send(b, b.set(bClock.Now(), syncproto.FieldTitle, "b"))

			// A, having seen F's value (not B's), writes later in true time
			// but at a stamp far below F's: A's write replaces F's.
			now = now.Add(time.Minute)
			ea2 := send(a, a.set(aClock.Now(), syncproto.FieldTitle, "a2"))
			if s := ea2.Fields[syncproto.FieldTitle].Values[0].Stamp; !viaServer && s >= fStamp {
				t.Fatalf("A's stamp %v is not below F's %v", s, fStamp)
			}
			f.recv(ea2)
			mergeWant(t, f.rec, syncproto.FieldTitle, "a2")
			mergeNoConflicts(t, a.rec, f.rec)

			// B's concurrent write joins in as a conflict with A's, on
			// every replica, whichever order things arrive in.
			a.recv(eb)
			f.recv(eb)
			b.recv(ea2, ef, ea)
			late := mergeReplica(mergeCaseKey, eb, ea2, ef, fOwn, ea)
			mergeSame(t, a.rec, f.rec, b.rec)
			mergeWant(t, late, syncproto.FieldTitle, mergeLive2(a.rec)...)
			if cs := a.rec.Conflicts(); len(cs) != 1 || len(cs[0].Values) != 2 {
				t.Fatalf("conflicts %s, want a2 and b", mergeJSON(t, cs))
			}

			// F, with its offset corrected but its clock still past every
			// stamp it issued, resolves after seeing both. Its write
			// replaces both even if its stamp is re-stamped down.
			f.recv(eb)
			fClock.SetOffset(-3 * time.Hour)
			now = now.Add(time.Minute)
			ef2 := send(f, f.set(fClock.Now(), syncproto.FieldTitle, "resolved"))
			a.recv(ef2)
			b.recv(ef2)
			mergeSame(t, a.rec, f.rec, b.rec)
			mergeNoConflicts(t, a.rec, f.rec, b.rec)
			mergeWant(t, a.rec, syncproto.FieldTitle, "resolved")

			// And B, seeing F's resolution, edits again at its slow clock's
			// stamp: B's write wins, F's clock cannot freeze B out.
			now = now.Add(time.Minute)
			eb2 := send(b, b.set(bClock.Now(), syncproto.FieldTitle, "b2"))
			a.recv(eb2)
			f.recv(eb2)
			mergeSame(t, a.rec, f.rec, b.rec)
			mergeNoConflicts(t, a.rec)
			mergeWant(t, a.rec, syncproto.FieldTitle, "b2")
		})
	}
}

// mergeLive2 returns the title's live values as plain strings.
func mergeLive2(r *syncproto.Record) []string {
	var out []string
	for _, raw := range mergeLive(r, syncproto.FieldTitle) {
		s, _ := strconv.Unquote(raw)
		out = append(out, s)
	}
	return out
}

func TestMergeLateOldWriteIgnored(t *testing.T) {
	devs := mergeNewCase("A", "B", "C")
	a, b, c := devs[0], devs[1], devs[2]
	e1 := a.set(mergeAt(1), syncproto.FieldTitle, "1")
	e2 := a.set(mergeAt(2), syncproto.FieldTitle, "2")

	// B gets A's second write first; the first, superseded by A itself,
	// arrives late and is ignored.
	b.recv(e2, e1)
	mergeWant(t, b.rec, syncproto.FieldTitle, "2")

	// C saw only A's first write and replaced it; A's first write arriving
	// again, and at a replica that already has C's, changes nothing. A's
	// second write is concurrent with C's: a conflict, without the "1".
	c.recv(e1)
	ec := c.set(mergeAt(3), syncproto.FieldTitle, "c")
	r := mergeReplica(mergeCaseKey, ec, e1, e1)
	mergeWant(t, r, syncproto.FieldTitle, "c")
	c.recv(e1)
	mergeWant(t, c.rec, syncproto.FieldTitle, "c")
	for _, d := range devs {
		d.recv(ec, e2, e1)
	}
	mergeSame(t, a.rec, b.rec, c.rec)
	mergeWant(t, a.rec, syncproto.FieldTitle, "c", "2")
}

func TestMergeDeleteCoversNeedCausalDelivery(t *testing.T) {
	// A deletion's covers is the deleter's whole-record context: one
	// version vector over all fields. It describes exactly what the deleter
	// saw only if the deleter never holds a device's later write without
	// that device's earlier writes to the record, i.e. if delivery is
	// causal. The server's is: it serves whole record states joined from
	// the changes it accepted in each device's order.
	t.Run("causal delivery", func(t *testing.T) {
		devs := mergeNewEntry("A", "B", "C")
		a, b, c := devs[0], devs[1], devs[2]
		eb1 := b.set(mergeAt(1), syncproto.FieldText, "edited")
		eb2 := b.set(mergeAt(2), syncproto.FieldFollowUp, "2025-04-01")
		c.recv(b.state()) // C gets B's changes together, as the server sends them
		dc := c.del(mergeAt(3))
		r := mergeReplica(mergeEntryKey, a.rec, dc, eb2, eb1)
		mergeWantDeleted(t, true, r)
		mergeNoConflicts(t, r)
	})
	t.Run("non-causal delivery (known limitation)", func(t *testing.T) {
		// C receives B's second change without its first, deletes, and
		// its covers {A:1, B:2} also covers B's text edit B:1, which C
		// never saw. The entry converges to deleted on every replica,
		// although no deleting device saw the edit; per-field covers
		// would make this a conflict. This pins today's behaviour: if it
		// changes, the rule was changed on purpose and this test with it.
		devs := mergeNewEntry("A", "B", "C")
		a, b, c := devs[0], devs[1], devs[2]
		eb1 := b.set(mergeAt(1), syncproto.FieldText, "edited")
		eb2 := b.set(mergeAt(2), syncproto.FieldFollowUp, "2025-04-01")
		c.recv(eb2)
		dc := c.del(mergeAt(3))
		a.recv(eb1, dc, eb2)
		b.recv(dc)
		c.recv(eb1)
		mergeSame(t, a.rec, b.rec, c.rec)
		mergeWant(t, a.rec, syncproto.FieldText, "edited")
		if !a.rec.Deleted() {
			t.Fatalf("Deleted() is false: deletion covers now tell a non-causally delivered edit apart; update this test and property_test.go's checkDeleted: %s", mergeJSON(t, a.rec))
		}
	})
}
