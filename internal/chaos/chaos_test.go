//go:build unix

package chaos_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/casesync/casesync/client"
	"github.com/casesync/casesync/syncproto"
)

// areas are the neighbourhoods of the test's world.
var areas = []string{"Zuilen", "Ondiep", "Lombok", "Overvecht"}

// people: three caseworkers and the team lead; anouk has two devices.
var people = []struct {
	user, role string
	areas      []string
	devices    int
}{
	{"anouk", syncproto.RoleCaseworker, []string{"Zuilen", "Ondiep"}, 2},
	{"bram", syncproto.RoleCaseworker, []string{"Zuilen"}, 1},
	{"chantal", syncproto.RoleCaseworker, []string{"Ondiep", "Lombok"}, 1},
	{"lotte", syncproto.RoleLead, nil, 1},
}

// harness is one chaos run: the server, the devices, the schedule's
// random stream and the model of what was written.
type harness struct {
	t       *testing.T
	rng     *rand.Rand
	srv     *daemon
	devs    []*device
	lead    *device
	m       *model
	step    int
	downFor int // steps until the schedule restarts a killed casesyncd
	stats   map[string]int
	start   time.Time
}

func (h *harness) logf(format string, args ...any) {
	h.t.Helper()
	h.t.Logf("%6.2fs step %3d: %s", time.Since(h.start).Seconds(), h.step, fmt.Sprintf(format, args...))
}

// TestChaos runs the seeded fault schedule against real processes and
// checks the invariants once everything is healed and quiescent.
func TestChaos(t *testing.T) {
	seed := *seedFlag
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	steps := *stepsFlag
	if steps == 0 {
		steps = 150
		if testing.Short() {
			steps = 50
		}
	}
	t.Logf("chaos seed %d, %d steps (reproduce: go test -race -count=1 ./internal/chaos -run TestChaos -chaos.seed=%d -chaos.steps=%d)", seed, steps, seed, steps)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("FAILED with chaos seed %d, %d steps: go test -race -count=1 ./internal/chaos -run TestChaos -v -chaos.seed=%d -chaos.steps=%d", seed, steps, seed, steps)
		}
	})
	h := &harness{t: t, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), m: newModel(), stats: map[string]int{}, start: time.Now()}
	h.setup()
	for h.step = 1; h.step <= steps; h.step++ {
		h.tick()
		h.act()
		if t.Failed() {
			t.FailNow()
		}
		// A jittered pause between steps, drawn from the seed: part of
		// the fault schedule (how long a fault lasts, how much the
		// background runs get done meanwhile), not a wait for a result.
		time.Sleep(time.Duration(h.rng.IntN(150)) * time.Millisecond)
	}
	chaosTook := time.Since(h.start)
	h.step = steps + 1
	views := h.heal()
	h.srv.stop()
	st, err := h.readStore()
	if err != nil {
		t.Fatal(err)
	}
	violations := h.check(st, views)
	t.Logf("seed %d: %d writes done (%v), %d records on the server; chaos %s, total %s",
		seed, len(h.m.writes), h.stats, len(st.records), chaosTook.Round(time.Millisecond), time.Since(h.start).Round(time.Millisecond))
	for _, v := range violations {
		t.Errorf("invariant violated: %s", v)
	}
}

// setup starts casesyncd, adds the people, and enrolls each device
// through a toxiproxy link of its own, then starts its 'casesync run'.
func (h *harness) setup() {
	t := h.t
	h.srv = newDaemon(t)
	h.srv.start()
	api := newToxiproxy()
	for _, p := range people {
		args := []string{"user", "add", p.user, "--role", p.role}
		if p.role == syncproto.RoleCaseworker {
			args = append(args, "--areas", strings.Join(p.areas, ","))
			h.m.areas[p.user] = slices.Clone(p.areas)
		}
		h.srv.mustAdmin(args...)
		for i := range p.devices {
			name := fmt.Sprintf("%s/%d", p.user, i+1)
			passphrase := ""
			if p.role == syncproto.RoleLead {
				// The lead's laptop unlocks with a passphrase, the
				// others with key files.
				passphrase = "Oudegracht 200, tweede verdieping"
			}
			d := newDevice(t, name, p.user, passphrase, newLink(t, api, name, h.srv.addr))
			d.enroll(h.srv.enroll(p.user, name))
			d.startRun()
			h.devs = append(h.devs, d)
			if p.role == syncproto.RoleLead {
				h.lead = d
			}
		}
	}
	h.logf("casesyncd at %s; devices %s", h.srv.addr, strings.Join(h.names(h.devs), ", "))
}

func (h *harness) names(ds []*device) []string {
	var out []string
	for _, d := range ds {
		out = append(out, fmt.Sprintf("%s=%s via %s", d.name, d.id, d.link.listen))
	}
	return out
}

// tick restarts what the schedule killed once its time is up, and ends
// cut-offs.
func (h *harness) tick() {
	if !h.srv.up() && !h.srv.killed {
		h.t.Errorf("casesyncd exited by itself: %v\n%s", h.srv.p.Err(), tail(h.srv.p.Output(), 30))
		return
	}
	for _, d := range h.devs {
		if !d.running() && !d.killed {
			h.t.Errorf("%s: 'casesync run' exited by itself: %v\n%s", d.name, d.run.Err(), tail(d.run.Output(), 30))
			return
		}
	}
	if !h.srv.up() {
		if h.downFor--; h.downFor <= 0 {
			h.srv.start()
			h.logf("casesyncd restarted on its data directory (start %d)", h.srv.starts)
		}
	}
	for _, d := range h.devs {
		if d.cutFor > 0 {
			if d.cutFor--; d.cutFor == 0 {
				d.link.unblackhole()
				h.logf("%s: back online; link: %s", d.name, d.link.describe())
			}
		}
		if !d.running() {
			if d.downFor--; d.downFor <= 0 {
				d.startRun()
				h.logf("%s: 'casesync run' restarted", d.name)
			}
		}
	}
}

type action struct {
	weight int
	name   string
	do     func(h *harness)
}

var actions = []action{
	{22, "note", (*harness).actNote},
	{7, "case", (*harness).actCase},
	{12, "set", (*harness).actSet},
	{3, "note edit", (*harness).actNoteEdit},
	{5, "conflict", (*harness).actConflict},
	{14, "toxic", (*harness).actToxic},
	{4, "cut off", (*harness).actCutOff},
	{5, "kill run", (*harness).actKillRun},
	{4, "kill server", (*harness).actKillServer},
	{3, "areas", (*harness).actAreas},
	{4, "move", (*harness).actMove},
	{3, "sync", (*harness).actSync},
}

func (h *harness) act() {
	total := 0
	for _, a := range actions {
		total += a.weight
	}
	x := h.rng.IntN(total)
	for _, a := range actions {
		if x < a.weight {
			h.stats[a.name]++
			a.do(h)
			return
		}
		x -= a.weight
	}
}

func pick[T any](r *rand.Rand, xs []T) T { return xs[r.IntN(len(xs))] }

// scopeOf is the areas the test believes d's user sees now.
func (h *harness) scopeOf(d *device) []string {
	if d == h.lead || d.user == h.lead.user {
		return areas
	}
	h.m.mu.Lock()
	defer h.m.mu.Unlock()
	return slices.Clone(h.m.areas[d.user])
}

// casesFor returns the cases the test believes d may write to. Half the
// time it offers only those the device itself created or has written
// to, which it surely holds unless they left its scope, so that fewer
// writes are refused for a case the device has not received yet.
func (h *harness) casesFor(d *device) []*caseRef {
	scope := h.scopeOf(d)
	h.m.mu.Lock()
	defer h.m.mu.Unlock()
	var out, own []*caseRef
	for _, c := range h.m.cases {
		if slices.Contains(scope, c.area) {
			out = append(out, c)
			if c.writers[d] {
				own = append(own, c)
			}
		}
	}
	if len(own) > 0 && h.rng.IntN(2) == 0 {
		return own
	}
	return out
}

// writeCmd runs one write command on d and records it in the model if it
// reports done. key returns the record written, from the command's output
// for a create. It returns the write, or nil if the command refused it.
// Writes of one device never run concurrently: the model numbers them.
func (h *harness) writeCmd(d *device, what string, vals map[string]any, key func(result) (syncproto.Key, error), args ...string) *write {
	h.t.Helper()
	n := h.m.begin()
	r := d.cli(60*time.Second, args...)
	done, problem := outcome(r)
	if problem != "" {
		h.t.Errorf("%s: %s %s: %v", d.name, what, problem, r)
		return nil
	}
	if !done {
		h.count("refused")
		h.logf("%s: %s refused: %s", d.name, what, strings.TrimSpace(r.Stderr))
		return nil
	}
	k, err := key(r)
	if err != nil {
		h.t.Errorf("%s: %s: %v: %v", d.name, what, err, r)
		return nil
	}
	w := h.m.done(n, h.step, d, k, vals, what)
	h.logf("%s: %s done: change %d, %s (%s)", d.name, what, w.seq, k, r.Took.Round(time.Millisecond))
	return w
}

// count adds one to a statistic; writes of the conflict action run
// concurrently.
func (h *harness) count(what string) {
	h.m.mu.Lock()
	h.stats[what]++
	h.m.mu.Unlock()
}

// printedID decodes the {"id": ...} a create command prints with --json.
func printedID(coll syncproto.Collection) func(result) (syncproto.Key, error) {
	return func(r result) (syncproto.Key, error) {
		var out struct{ ID string }
		if err := json.Unmarshal([]byte(r.Stdout), &out); err != nil || !syncproto.ValidID(out.ID) {
			return syncproto.Key{}, fmt.Errorf("printed no valid ID (%v)", err)
		}
		return syncproto.Key{Collection: coll, ID: out.ID}, nil
	}
}

func fixed(k syncproto.Key) func(result) (syncproto.Key, error) {
	return func(result) (syncproto.Key, error) { return k, nil }
}

var kinds = []string{syncproto.KindVisit, syncproto.KindCall, syncproto.KindOfficeHours, syncproto.KindLetter, syncproto.KindNote}

// addNote adds a note on c from d.
func (h *harness) addNote(d *device, c *caseRef) bool {
	kind := pick(h.rng, kinds)
	text := fmt.Sprintf("%s note by %s at step %d: %s", kind, d.name, h.step, pick(h.rng, []string{
		"Visited; mould behind the wardrobe.", "Called the landlord's maintenance desk.",
		"Neighbours complain about noise at night.", "Rehousing application sent.",
	}))
	w := h.writeCmd(d, "note add on "+c.id, map[string]any{syncproto.FieldKind: kind, syncproto.FieldText: text, syncproto.FieldCaseID: c.id},
		printedID(syncproto.Entries), "--json", "note", "add", c.id, "--kind", kind, "--text", text)
	if w != nil {
		h.m.mu.Lock()
		h.m.entries = append(h.m.entries, &entryRef{id: w.key.ID, caseID: c.id, user: d.user})
		c.writers[d] = true
		h.m.mu.Unlock()
	}
	return w != nil
}

// addCase creates a case from d in one of the areas it believes it sees.
func (h *harness) addCase(d *device) {
	scope := h.scopeOf(d)
	if len(scope) == 0 {
		return
	}
	area := pick(h.rng, scope)
	title := fmt.Sprintf("Case %d of %s", h.step, d.name)
	tenant := pick(h.rng, []string{"H. Jansen", "P. de Wit", "W. Oosterhuis-Brandsma", "M. el Amrani", "J. Bakker"})
	w := h.writeCmd(d, "case add in "+area, map[string]any{syncproto.FieldArea: area, syncproto.FieldTitle: title, syncproto.FieldTenant: tenant},
		printedID(syncproto.Cases), "--json", "case", "add", "--area", area, "--title", title, "--tenant", tenant)
	if w != nil {
		h.m.mu.Lock()
		h.m.cases = append(h.m.cases, &caseRef{id: w.key.ID, area: area, writers: map[*device]bool{d: true}})
		h.m.mu.Unlock()
	}
}

func (h *harness) actNote() {
	d := pick(h.rng, h.devs)
	cs := h.casesFor(d)
	if len(cs) == 0 {
		h.addCase(d)
		return
	}
	h.addNote(d, pick(h.rng, cs))
}

func (h *harness) actCase() { h.addCase(pick(h.rng, h.devs)) }

// fieldWrite draws a field of a case and a value for it.
func (h *harness) fieldWrite(d *device) (string, string) {
	switch h.rng.IntN(3) {
	case 0:
		return syncproto.FieldStatus, pick(h.rng, []string{syncproto.StatusOpen, syncproto.StatusWaiting, syncproto.StatusClosed})
	case 1:
		return syncproto.FieldSummary, fmt.Sprintf("summary by %s at step %d", d.name, h.step)
	default:
		return syncproto.FieldNextAction, fmt.Sprintf("2027-%02d-%02d", 1+h.rng.IntN(12), 1+h.rng.IntN(28))
	}
}

// setField runs 'casesync case set ID field=value' on d.
func (h *harness) setField(d *device, c *caseRef, field, value string) bool {
	return h.writeCmd(d, fmt.Sprintf("case set %s %s", c.id, field), map[string]any{field: value},
		fixed(caseKey(c.id)), "case", "set", c.id, field+"="+value) != nil
}

func (h *harness) actSet() {
	d := pick(h.rng, h.devs)
	cs := h.casesFor(d)
	if len(cs) == 0 {
		h.addCase(d)
		return
	}
	f, v := h.fieldWrite(d)
	h.setField(d, pick(h.rng, cs), f, v)
}

// actNoteEdit edits or deletes a note its author wrote.
func (h *harness) actNoteEdit() {
	d := pick(h.rng, h.devs)
	h.m.mu.Lock()
	var mine []*entryRef
	for _, e := range h.m.entries {
		if e.user == d.user {
			mine = append(mine, e)
		}
	}
	h.m.mu.Unlock()
	if len(mine) == 0 {
		h.actNote()
		return
	}
	e := pick(h.rng, mine)
	if h.rng.IntN(4) == 0 {
		h.writeCmd(d, "note delete "+e.id, map[string]any{syncproto.FieldDeleted: true}, fixed(entryKey(e.id)), "note", "delete", e.id)
		return
	}
	text := fmt.Sprintf("edited by %s at step %d", d.name, h.step)
	h.writeCmd(d, "note set "+e.id, map[string]any{syncproto.FieldText: text}, fixed(entryKey(e.id)), "note", "set", e.id, "text="+text)
}

// actConflict makes two devices write one field of a case at the same
// moment, in parallel processes; half the time one of them is cut off
// first, so that neither can have seen the other's write.
func (h *harness) actConflict() {
	c := h.pickCase()
	if c == nil {
		return
	}
	var writers []*device
	for _, d := range h.devs {
		if slices.Contains(h.scopeOf(d), c.area) {
			writers = append(writers, d)
		}
	}
	if len(writers) < 2 {
		return
	}
	h.rng.Shuffle(len(writers), func(i, j int) { writers[i], writers[j] = writers[j], writers[i] })
	a, b := writers[0], writers[1]
	if h.rng.IntN(2) == 0 {
		h.cutOff(a, 2+h.rng.IntN(4))
	}
	field, _ := h.fieldWrite(a)
	vals := map[*device]string{}
	for _, d := range []*device{a, b} {
		_, v := h.fieldWrite(d)
		for field == syncproto.FieldStatus && v == vals[a] {
			_, v = h.fieldWrite(d)
		}
		vals[d] = v
	}
	// Keep the drawn field for both writers.
	if field == syncproto.FieldSummary {
		vals[a], vals[b] = fmt.Sprintf("summary by %s at step %d", a.name, h.step), fmt.Sprintf("summary by %s at step %d", b.name, h.step)
	} else if field == syncproto.FieldStatus {
		vals[a], vals[b] = syncproto.StatusWaiting, syncproto.StatusClosed
	} else {
		vals[a], vals[b] = fmt.Sprintf("2027-01-%02d", 1+h.rng.IntN(14)), fmt.Sprintf("2027-02-%02d", 1+h.rng.IntN(14))
	}
	h.logf("conflict on %s %s: %s and %s", c.id, field, a.name, b.name)
	var wg sync.WaitGroup
	for _, d := range []*device{a, b} {
		wg.Go(func() { h.setField(d, c, field, vals[d]) })
	}
	wg.Wait()
}

// pickCase returns a random case, or nil before there is any.
func (h *harness) pickCase() *caseRef {
	h.m.mu.Lock()
	defer h.m.mu.Unlock()
	if len(h.m.cases) == 0 {
		return nil
	}
	return pick(h.rng, h.m.cases)
}

// cutOff blackholes d's link in both directions for steps steps: its open
// connection stays open but nothing crosses it any more.
func (h *harness) cutOff(d *device, steps int) {
	d.link.blackhole()
	d.cutFor = max(d.cutFor, steps)
	h.logf("%s: cut off (blackhole) for %d steps", d.name, steps)
}

// actCutOff cuts a device off and writes on it at once.
func (h *harness) actCutOff() {
	d := pick(h.rng, h.devs)
	h.cutOff(d, 3+h.rng.IntN(6))
	for range 1 + h.rng.IntN(3) {
		cs := h.casesFor(d)
		switch {
		case len(cs) == 0 || h.rng.IntN(5) == 0:
			h.addCase(d)
		case h.rng.IntN(2) == 0:
			h.addNote(d, pick(h.rng, cs))
		default:
			f, v := h.fieldWrite(d)
			h.setField(d, pick(h.rng, cs), f, v)
		}
	}
}

// randomToxic draws a fault other than the blackhole.
func (h *harness) randomToxic() toxic {
	stream := pick(h.rng, []string{"upstream", "downstream"})
	switch h.rng.IntN(4) {
	case 0:
		return toxic{kind: "latency", stream: stream, attrs: map[string]int{"latency": 20 + h.rng.IntN(280), "jitter": h.rng.IntN(100)}}
	case 1:
		return toxic{kind: "bandwidth", stream: stream, attrs: map[string]int{"rate": 4 + h.rng.IntN(60)}} // KB/s
	case 2:
		return toxic{kind: "reset_peer", stream: stream, attrs: map[string]int{"timeout": h.rng.IntN(800)}} // ms after data flows
	default:
		size := 16 + h.rng.IntN(240)
		return toxic{kind: "slicer", stream: stream, attrs: map[string]int{"average_size": size, "size_variation": size / 2, "delay": h.rng.IntN(2000)}} // µs
	}
}

// actToxic switches a fault on a device's link on or off.
func (h *harness) actToxic() {
	d := pick(h.rng, h.devs)
	x := h.randomToxic()
	if _, on := d.link.on[x.name()]; on && h.rng.IntN(3) > 0 {
		d.link.unset(x.name())
		h.logf("%s: %s off; link: %s", d.name, x.name(), d.link.describe())
		return
	}
	d.link.set(x)
	h.logf("%s: %s on; link: %s", d.name, x, d.link.describe())
}

// actKillRun SIGKILLs a device's 'casesync run' and writes on it while it
// is down, half the time.
func (h *harness) actKillRun() {
	var up []*device
	for _, d := range h.devs {
		if d.running() {
			up = append(up, d)
		}
	}
	if len(up) == 0 {
		return
	}
	d := pick(h.rng, up)
	d.kill9()
	d.downFor = 1 + h.rng.IntN(5)
	h.logf("%s: 'casesync run' SIGKILLed, down for %d steps", d.name, d.downFor)
	if cs := h.casesFor(d); len(cs) > 0 && h.rng.IntN(2) == 0 {
		h.addNote(d, pick(h.rng, cs))
	}
}

// actKillServer SIGKILLs casesyncd right after a burst of writes: while
// the devices' runs are pushing them, or, half the time, while a one-shot
// 'casesync sync' of a device whose run it stopped first is pushing.
func (h *harness) actKillServer() {
	if !h.srv.up() {
		return
	}
	var syncer *device
	if h.rng.IntN(2) == 0 {
		if d := pick(h.rng, h.devs); !d.link.blackholed() && len(h.casesFor(d)) > 0 {
			syncer = d
			if d.running() {
				d.kill9()
				d.downFor = 1 + h.rng.IntN(3)
				h.logf("%s: 'casesync run' SIGKILLed for a one-shot sync, down for %d steps", d.name, d.downFor)
			}
			for range 2 + h.rng.IntN(3) {
				h.addNote(d, pick(h.rng, h.casesFor(d)))
			}
		}
	}
	for range 1 + h.rng.IntN(3) {
		d := pick(h.rng, h.devs)
		if cs := h.casesFor(d); len(cs) > 0 && d != syncer {
			h.addNote(d, pick(h.rng, cs))
		}
	}
	var bg sync.WaitGroup
	if syncer != nil {
		bg.Go(func() {
			r := syncer.cli(60*time.Second, "--json", "sync")
			if _, problem := outcome(r); problem != "" {
				h.t.Errorf("%s: sync while the server is killed: %s: %v", syncer.name, problem, r)
			}
			h.logf("%s: one-shot sync during the server's kill: exit %d in %s: %s", syncer.name, r.Code, r.Took.Round(time.Millisecond), strings.TrimSpace(r.Stdout+r.Stderr))
		})
	}
	// Part of the fault schedule: how far the pushes get before the kill.
	time.Sleep(time.Duration(h.rng.IntN(300)) * time.Millisecond)
	h.srv.kill9()
	h.downFor = 1 + h.rng.IntN(4)
	h.logf("casesyncd SIGKILLed, down for %d steps", h.downFor)
	bg.Wait()
}

// actAreas gives a caseworker other areas through the admin CLI.
func (h *harness) actAreas() {
	if !h.srv.up() {
		return
	}
	var workers []string
	for _, p := range people {
		if p.role == syncproto.RoleCaseworker {
			workers = append(workers, p.user)
		}
	}
	u := pick(h.rng, workers)
	perm := h.rng.Perm(len(areas))
	var next []string
	for _, i := range perm[:1+h.rng.IntN(3)] {
		next = append(next, areas[i])
	}
	r := h.srv.admin("user", "set-areas", u, "--areas", strings.Join(next, ","))
	if r.Code != 0 {
		h.t.Errorf("casesyncd %v", r)
		return
	}
	h.m.mu.Lock()
	h.m.areas[u] = next
	h.m.mu.Unlock()
	h.logf("%s's areas set to %v", u, next)
}

// actMove moves a case to another area: from the lead's device, or from a
// caseworker's between two of her areas.
func (h *harness) actMove() {
	c := h.pickCase()
	if c == nil {
		return
	}
	d := h.lead
	to := pick(h.rng, areas)
	if h.rng.IntN(3) == 0 {
		for _, x := range h.devs {
			if s := h.scopeOf(x); x != h.lead && len(s) > 1 && slices.Contains(s, c.area) {
				d = x
				to = pick(h.rng, s)
				break
			}
		}
	}
	if to == c.area {
		return
	}
	if h.writeCmd(d, fmt.Sprintf("move %s %s→%s", c.id, c.area, to), map[string]any{syncproto.FieldArea: to},
		fixed(caseKey(c.id)), "case", "set", c.id, "area="+to) != nil {
		h.m.mu.Lock()
		c.area = to
		h.m.mu.Unlock()
	}
}

// actSync runs a one-shot 'casesync sync' on a device whose run is down.
func (h *harness) actSync() {
	var ds []*device
	for _, d := range h.devs {
		if !d.running() && !d.link.blackholed() {
			ds = append(ds, d)
		}
	}
	if len(ds) == 0 {
		return
	}
	d := pick(h.rng, ds)
	r := d.cli(60*time.Second, "--json", "sync")
	if _, problem := outcome(r); problem != "" {
		h.t.Errorf("%s: sync %s: %v", d.name, problem, r)
		return
	}
	h.logf("%s: one-shot sync: exit %d in %s: %s", d.name, r.Code, r.Took.Round(time.Millisecond), strings.TrimSpace(r.Stdout+r.Stderr))
}

// heal clears every fault, restarts what is down, stops every run and
// syncs every device with 'casesync sync' until a whole round moves
// nothing. It returns what each device's CLI shows then.
func (h *harness) heal() map[*device]cliView {
	t := h.t
	for _, d := range h.devs {
		d.link.clear()
		d.cutFor = 0
	}
	if !h.srv.up() {
		h.srv.start()
	}
	for _, d := range h.devs {
		if !d.running() {
			d.startRun()
		}
	}
	for _, d := range h.devs {
		d.stopRun()
	}
	h.logf("healed: faults cleared, casesyncd up, runs stopped; syncing until quiescent")
	const maxRounds = 12
	quiet := false
	for round := 1; round <= maxRounds && !quiet; round++ {
		quiet = true
		var line []string
		for _, d := range h.devs {
			r := d.cli(60*time.Second, "--json", "sync")
			if r.Code != 0 {
				t.Errorf("%s: final sync round %d: %v", d.name, round, r)
				quiet = false
				continue
			}
			var res client.SyncResult
			if err := json.Unmarshal([]byte(r.Stdout), &res); err != nil {
				t.Fatalf("%s: decode %v: %v", d.name, r, err)
			}
			if res.Pushed+res.Pulled+res.Evicted+res.Rejected+res.Deferred > 0 {
				quiet = false
			}
			line = append(line, fmt.Sprintf("%s %+v", d.name, res))
		}
		h.logf("final sync round %d: %s", round, strings.Join(line, "; "))
	}
	if !quiet {
		t.Errorf("devices not quiescent after %d rounds of 'casesync sync'", maxRounds)
	}
	views := map[*device]cliView{}
	for _, d := range h.devs {
		var cv cliView
		d.mustJSON(&cv.status, "status")
		d.mustJSON(&cv.rejected, "rejected")
		d.mustJSON(&cv.cases, "cases")
		views[d] = cv
		for _, r := range cv.rejected {
			h.logf("%s: rejected change %d (%s): %s: %s", d.name, r.Change.Seq, r.Change.Key(), r.Error.Code, r.Error.Message)
		}
	}
	return views
}
