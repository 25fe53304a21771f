package simtest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing/synctest"
	"time"

	"github.com/casesync/casesync/client"
	"github.com/casesync/casesync/syncproto"
)

// The schedule: each step draws one action from its own random stream.
// Targets (which case, which entry) are chosen from the simulation's own
// creation order, filtered by what the device holds, never from the order
// of randomly generated IDs.

type action struct {
	weight int
	name   string
	do     func(s *Sim, r *rand.Rand)
}

var actions = []action{
	{30, "write", (*Sim).actWrite},
	{22, "sync", (*Sim).actSync},
	{5, "conflict", (*Sim).actConflict},
	{5, "resolve", (*Sim).actResolve},
	{6, "partition", (*Sim).actPartition},
	{5, "clock", (*Sim).actClock},
	{3, "scope", (*Sim).actScope},
	{3, "move", (*Sim).actMove},
	{2, "server crash", (*Sim).actServerCrash},
	{3, "client restart", (*Sim).actClientRestart},
	{4, "live", (*Sim).actLive},
	{2, "live fault", (*Sim).actLiveFault},
	{1, "enroll", (*Sim).actEnroll},
}

var totalWeight = func() int {
	n := 0
	for _, a := range actions {
		n += a.weight
	}
	return n
}()

func (s *Sim) doStep(r *rand.Rand) {
	if s.srv == nil {
		if s.downFor--; s.downFor <= 0 {
			s.startServer()
			s.logf("server restarts from its store")
		}
	}
	x := r.IntN(totalWeight)
	for _, a := range actions {
		if x < a.weight {
			a.do(s, r)
			return
		}
		x -= a.weight
	}
}

func pick[T any](r *rand.Rand, xs []T) T { return xs[r.IntN(len(xs))] }

func (s *Sim) ctx() context.Context { return context.Background() }

// holdsCases returns the cases d shows, in creation order.
func (s *Sim) holdsCases(d *device) []*client.View {
	var out []*client.View
	for _, id := range s.m.cases {
		if v, err := d.c.Get(s.ctx(), caseKey(id)); err == nil {
			out = append(out, v)
		}
	}
	return out
}

// holdsEntries returns the entries d shows that its user wrote, in
// creation order, deleted ones included.
func (s *Sim) holdsEntries(d *device) []*client.View {
	var out []*client.View
	for _, e := range s.m.entries {
		if e.author != d.user.name {
			continue
		}
		if v, err := d.c.Get(s.ctx(), entryKey(e.id)); err == nil {
			out = append(out, v)
		}
	}
	return out
}

// writable areas: where d believes it may create a case.
func (s *Sim) writableAreas(d *device) []string {
	st, err := d.c.Status(s.ctx())
	if err != nil {
		s.violate("%s: status: %v", d.name, err)
		return nil
	}
	if d.user.role == syncproto.RoleLead {
		return Areas
	}
	return st.Areas
}

// actWrite makes one local write on a random device.
func (s *Sim) actWrite(r *rand.Rand) {
	d := pick(r, s.devs)
	switch x := r.IntN(100); {
	case x < 20:
		s.createCase(d, r)
	case x < 45:
		cases := s.holdsCases(d)
		if len(cases) == 0 {
			s.createCase(d, r)
			return
		}
		c := pick(r, cases)
		f, v := randomCaseField(r, s.step, d)
		s.setCase(d, c.ID, map[string]any{f: v})
	case x < 75:
		cases := s.holdsCases(d)
		if len(cases) == 0 {
			s.createCase(d, r)
			return
		}
		s.addEntry(d, pick(r, cases).ID, r)
	default:
		es := s.holdsEntries(d)
		if len(es) == 0 {
			return
		}
		e := pick(r, es)
		switch y := r.IntN(10); {
		case e.Deleted || (y == 0 && hasConflictOn(e, syncproto.FieldDeleted)):
			s.editEntry(d, e.ID, map[string]any{syncproto.FieldDeleted: false}, "restore entry")
		case y < 3:
			s.editEntry(d, e.ID, map[string]any{syncproto.FieldDeleted: true}, "delete entry")
		default:
			s.editEntry(d, e.ID, map[string]any{syncproto.FieldText: fmt.Sprintf("text rewritten at step %d on %s", s.step, d.name)}, "edit entry")
		}
	}
}

func hasConflictOn(v *client.View, field string) bool {
	return slices.ContainsFunc(v.Conflicts, func(c syncproto.Conflict) bool { return c.Field == field })
}

// caseFields are the fields writes and conflicts pick from.
var caseFields = []string{syncproto.FieldStatus, syncproto.FieldSummary, syncproto.FieldNextAction, syncproto.FieldTags, syncproto.FieldTitle}

// randomCaseField returns a field of a case and a fresh value for it.
func randomCaseField(r *rand.Rand, step int, d *device) (string, any) {
	f := pick(r, caseFields)
	return f, caseValue(r, f, step, d, nil)
}

// caseValue returns a value for field f other than not.
func caseValue(r *rand.Rand, f string, step int, d *device, not any) any {
	for {
		var v any
		switch f {
		case syncproto.FieldStatus:
			v = pick(r, syncproto.Statuses)
		case syncproto.FieldSummary:
			v = fmt.Sprintf("summary from %s at step %d", d.name, step)
		case syncproto.FieldNextAction:
			v = fmt.Sprintf("2026-%02d-%02d", 1+r.IntN(12), 1+r.IntN(28))
		case syncproto.FieldTags:
			v = []string{pick(r, []string{"damp", "noise", "debt", "rehousing"})}
		default:
			v = fmt.Sprintf("title from %s at step %d", d.name, step)
		}
		if not == nil || string(canonical(v)) != string(canonical(not)) {
			return v
		}
	}
}

func (s *Sim) createCase(d *device, r *rand.Rand) {
	areas := s.writableAreas(d)
	area := pick(r, Areas)
	if len(areas) > 0 && r.IntN(10) > 0 {
		area = pick(r, areas) // mostly in scope; now and then a refusal
	}
	vals := map[string]any{
		syncproto.FieldArea:   area,
		syncproto.FieldTitle:  fmt.Sprintf("case of step %d by %s", s.step, d.name),
		syncproto.FieldTenant: fmt.Sprintf("tenant %d", r.IntN(1000)),
		syncproto.FieldStatus: syncproto.StatusOpen,
		syncproto.FieldOwner:  d.user.name,
	}
	id, err := d.c.CreateCase(s.ctx(), vals)
	if s.track(d, caseKey(id), vals, "create case "+id+" in "+area, err) {
		s.m.cases = append(s.m.cases, id)
	}
}

func (s *Sim) setCase(d *device, id string, vals map[string]any) bool {
	what := "set case " + id
	for f := range vals {
		what += " " + f
	}
	if a, ok := vals[syncproto.FieldArea]; ok {
		what = fmt.Sprintf("move case %s to %v", id, a)
	}
	return s.track(d, caseKey(id), vals, what, d.c.SetCase(s.ctx(), id, vals))
}

func (s *Sim) addEntry(d *device, caseID string, r *rand.Rand) {
	vals := map[string]any{
		syncproto.FieldKind:       pick(r, []string{syncproto.KindNote, syncproto.KindVisit, syncproto.KindCall}),
		syncproto.FieldText:       fmt.Sprintf("note of step %d by %s", s.step, d.name),
		syncproto.FieldOccurredAt: time.Now().UTC().Format(time.RFC3339),
	}
	id, err := d.c.AddEntry(s.ctx(), caseID, vals)
	vals[syncproto.FieldCaseID] = caseID
	vals[syncproto.FieldAuthor] = d.user.name
	if s.track(d, entryKey(id), vals, "add entry "+id+" to case "+caseID, err) {
		s.m.entries = append(s.m.entries, entryRef{id: id, caseID: caseID, author: d.user.name})
	}
}

func (s *Sim) editEntry(d *device, id string, vals map[string]any, what string) bool {
	what += " " + id
	return s.track(d, entryKey(id), vals, what, d.c.EditEntry(s.ctx(), id, vals))
}

// actMove moves a case the device holds to another area: a tenant is
// rehoused.
func (s *Sim) actMove(r *rand.Rand) {
	d := pick(r, s.devs)
	cases := s.holdsCases(d)
	if len(cases) == 0 {
		return
	}
	c := pick(r, cases)
	var to []string
	for _, a := range Areas {
		if a != c.Area {
			to = append(to, a)
		}
	}
	if s.setCase(d, c.ID, map[string]any{syncproto.FieldArea: pick(r, to)}) {
		s.stats.Moves++
	}
}

// actConflict has two devices that both hold a case (or, for two devices
// of one user, an entry) write the same field while neither has seen the
// other's write. A live device is partitioned first, so its write cannot
// reach the other before the other writes.
func (s *Sim) actConflict(r *rand.Rand) {
	if len(s.devs) < 2 {
		return
	}
	i := r.IntN(len(s.devs))
	j := (i + 1 + r.IntN(len(s.devs)-1)) % len(s.devs)
	a, b := s.devs[i], s.devs[j]
	for _, d := range []*device{a, b} {
		if d.run != nil && !s.net.Offline(d.name) {
			s.net.SetOffline(d.name, true)
			s.stats.Partitions++
			s.logf("%s: offline (live, before a conflicting write)", d.name)
		}
	}
	synctest.Wait()
	if a.user == b.user && r.IntN(2) == 0 {
		ea := s.holdsEntries(a)
		eb := map[string]bool{}
		for _, v := range s.holdsEntries(b) {
			eb[v.ID] = true
		}
		var common []*client.View
		for _, v := range ea {
			if eb[v.ID] && !v.Deleted {
				common = append(common, v)
			}
		}
		if len(common) > 0 {
			e := pick(r, common)
			s.stats.Conflicts++
			s.logf("conflict: %s and %s both write entry %s", a.name, b.name, e.ID)
			text := map[string]any{syncproto.FieldText: fmt.Sprintf("text by %s at step %d", a.name, s.step)}
			s.editEntry(a, e.ID, text, "edit entry (conflict)")
			if r.IntN(2) == 0 {
				s.editEntry(b, e.ID, map[string]any{syncproto.FieldDeleted: true}, "delete entry (conflict)")
			} else {
				s.editEntry(b, e.ID, map[string]any{syncproto.FieldText: fmt.Sprintf("text by %s at step %d", b.name, s.step)}, "edit entry (conflict)")
			}
			return
		}
	}
	ca := s.holdsCases(a)
	cb := map[string]bool{}
	for _, v := range s.holdsCases(b) {
		cb[v.ID] = true
	}
	var common []*client.View
	for _, v := range ca {
		if cb[v.ID] {
			common = append(common, v)
		}
	}
	if len(common) == 0 {
		return
	}
	c := pick(r, common)
	s.stats.Conflicts++
	s.logf("conflict: %s and %s both write case %s", a.name, b.name, c.ID)
	if r.IntN(8) == 0 {
		// Both move the case: a conflict on its area.
		s.setCase(a, c.ID, map[string]any{syncproto.FieldArea: pick(r, Areas)})
		s.setCase(b, c.ID, map[string]any{syncproto.FieldArea: pick(r, Areas)})
		return
	}
	f, v := randomCaseField(r, s.step, a)
	s.setCase(a, c.ID, map[string]any{f: v})
	s.setCase(b, c.ID, map[string]any{f: caseValue(r, f, s.step, b, v)})
}

// actResolve settles the first open conflict (in creation order) a device
// shows: keeping one of the values, or writing a new one.
func (s *Sim) actResolve(r *rand.Rand) {
	d := pick(r, s.devs)
	cs, err := d.c.Conflicts(s.ctx())
	if err != nil {
		s.violate("%s: conflicts: %v", d.name, err)
		return
	}
	byKey := map[syncproto.Key]client.RecordConflict{}
	for _, c := range cs {
		byKey[c.Key] = c
	}
	for _, k := range s.m.keys() {
		rc, ok := byKey[k]
		if !ok {
			continue
		}
		c := rc.Conflicts[0]
		var keep string
		var value any
		if r.IntN(3) > 0 || c.Field == syncproto.FieldDeleted || c.Field == syncproto.FieldArea {
			v := pick(r, c.Values)
			keep, value = client.ValueID(v), v.Data
		} else if k.Collection == syncproto.Entries {
			value = fmt.Sprintf("resolved by %s at step %d", d.name, s.step)
		} else {
			value = caseValue(r, c.Field, s.step, d, nil)
		}
		if keep != "" {
			err = d.c.Resolve(s.ctx(), k.ID, c.Field, keep, nil)
		} else {
			err = d.c.Resolve(s.ctx(), k.ID, c.Field, "", value)
		}
		if s.track(d, k, map[string]any{c.Field: value}, fmt.Sprintf("resolve %s (keep %q)", c.Field, keep), err) {
			s.stats.Resolves++
		}
		return
	}
}

// actClock lets simulated time pass, from a second to three hours.
func (s *Sim) actClock(r *rand.Rand) {
	d := time.Duration(r.Int64N(int64(time.Second) << r.IntN(14)))
	s.stats.ClockJumps++
	s.logf("clock: %v pass", d.Round(time.Millisecond))
	time.Sleep(d) // the bubble's clock: live sessions ping, Run retries
}

// actScope changes a caseworker's areas through the admin API.
func (s *Sim) actScope(r *rand.Rand) {
	if s.srv == nil {
		return
	}
	u := pick(r, s.users[:2])
	areas := randomAreas(r, r.IntN(6) == 0)
	if err := s.setAreas(u, areas); err != nil {
		s.violate("admin: set areas of %s: %v", u.name, err)
		return
	}
	s.stats.ScopeChanges++
	s.logf("admin: %s's areas are now %v", u.name, areas)
}

// actEnroll enrolls a new laptop mid-run (up to six): its first sync pulls
// its user's whole scope from the start of the log.
func (s *Sim) actEnroll(r *rand.Rand) {
	if s.srv == nil || len(s.devs) >= 6 {
		return
	}
	d := s.newDevice(pick(r, s.users), randomSkew(r), pick(r, []int{1, 2, 3, 500}))
	s.logf("%s: enrolled as %s of %s, clock skew %v, push batch %d", d.name, d.id, d.user.name, d.skew, d.pushBatch)
}
