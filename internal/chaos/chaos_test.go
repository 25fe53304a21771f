//go:build unix

package chaos_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"

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
	devs    []*device // the devices the schedule acts on
	gone    []*device // revoked: acted on until wiped, then only checked
	lead    *device
	api     *toxiproxy.ApiServer
	m       *model
	step    int
	downFor int // steps until the schedule restarts a killed casesyncd
	// revokeAt is the step at which the office revokes a device, drawn
	// from the seed; put off while casesyncd is down.
	revokeAt int
	stats    map[string]int
	start    time.Time
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
	h.revokeAt = steps/4 + h.rng.IntN(steps/2)
	for h.step = 1; h.step <= steps; h.step++ {
		h.tick()
		if h.step >= h.revokeAt && len(h.gone) == 0 && h.revoke() {
			h.stats["revoke"]++
		}
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
		seed, len(h.m.writes), h.stats, len(st.Records), chaosTook.Round(time.Millisecond), time.Since(h.start).Round(time.Millisecond))
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
	h.api = newToxiproxy()
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
			d := newDevice(t, name, p.user, passphrase, newLink(t, h.api, name, h.srv.addr))
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
	for _, d := range slices.Clone(h.devs) {
		switch {
		case d.running() || d.killed:
		case d.revoked != nil:
			h.runExited(d)
		default:
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
	h.finishRevoked()
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
