//go:build unix

package chaos_test

// The schedule's actions on the network, the processes and the accounts:
// concurrent edits, cut-offs, toxics, kills, area changes and moves.

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/casesync/casesync/syncproto"
)

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
	var synced result
	if syncer != nil {
		bg.Go(func() {
			r := syncer.cli(60*time.Second, "--json", "sync")
			synced = r
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
	if syncer != nil {
		h.noticeWipe(syncer, synced.Stderr)
	}
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
	h.noticeWipe(d, r.Stderr)
}
