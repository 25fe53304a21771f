//go:build unix

package chaos_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"time"

	"github.com/casesync/casesync/client"
)

// Revocation: once per run, at a step the seed draws, the office revokes a
// caseworker's device through the admin CLI (a laptop left on the tram)
// and enrolls a replacement for her. The revoked device is not told: it
// goes on writing offline until a connection is refused, whenever its link
// and the schedule let one through; then the replica is wiped and the
// process says how many changes went with it. What must hold:
//
//   - the server accepts no write that started after the revocation;
//   - every write the server lacks, begun before the revocation or after,
//     is among the changes the wipe reported: none vanishes unreported;
//   - the wiped replica holds nothing, and every later command shows the
//     notice the wipe left, with the same counts;
//   - a process tells of a wipe only on a revoked device;
//   - the replacement, one of h.devs from then on, meets every invariant
//     the others do: it pulls its user's whole scope from scratch.

// wipedRe matches what casesync prints when revocation wiped the replica
// (client.RevokedError.Counts).
var wipedRe = regexp.MustCompile(`its local data was wiped(?: on [^(]*)? \((\d+) unsynced changes lost(?:, (\d+) rejected changes discarded)?\)`)

// revocation is what the test knows of the revoked device.
type revocation struct {
	after    int  // model.started when the revoke returned: writes numbered above it began after
	wiped    bool // a casesync process reported the wipe
	lost     int  // unsynced changes the wipe reported
	rejected int  // rejected changes it reported discarded
}

// revoke revokes a caseworker's device and enrolls a replacement. It
// reports false if it could not run now (casesyncd is down), so the
// schedule tries again at the next step.
func (h *harness) revoke() bool {
	if !h.srv.up() {
		return false
	}
	var cands []*device
	for _, d := range h.devs {
		if d != h.lead {
			cands = append(cands, d)
		}
	}
	d := pick(h.rng, cands)
	if r := h.srv.admin("device", "revoke", d.id); r.Code != 0 {
		h.t.Errorf("casesyncd admin device revoke %s: %v", d.id, r)
		return true
	}
	h.m.mu.Lock()
	d.revoked = &revocation{after: h.m.started}
	h.m.mu.Unlock()
	n := 1
	for _, o := range append(slices.Clone(h.devs), h.gone...) {
		if o.user == d.user {
			n++
		}
	}
	h.gone = append(h.gone, d)
	name := fmt.Sprintf("%s/%d", d.user, n)
	nd := newDevice(h.t, name, d.user, "", newLink(h.t, h.api, name, h.srv.addr))
	nd.enroll(h.srv.enroll(d.user, name))
	nd.startRun()
	h.devs = append(h.devs, nd)
	h.logf("%s revoked by the office (writes after #%d must never be accepted); replacement %s=%s enrolled via %s",
		d.name, d.revoked.after, nd.name, nd.id, nd.link.listen)
	return true
}

// noticeWipe reads what a casesync process on d printed: if it tells of a
// wipe, d must have been revoked, and it leaves the schedule's devices.
func (h *harness) noticeWipe(d *device, out string) {
	h.t.Helper()
	m := wipedRe.FindStringSubmatch(out)
	if m == nil {
		return
	}
	if d.revoked == nil {
		h.t.Errorf("%s: a casesync process wiped the replica, but the office never revoked this device:\n%s", d.name, tail(out, 20))
		return
	}
	if d.revoked.wiped {
		return
	}
	d.revoked.wiped = true
	d.revoked.lost, _ = strconv.Atoi(m[1])
	if m[2] != "" {
		d.revoked.rejected, _ = strconv.Atoi(m[2])
	}
	h.devs = slices.DeleteFunc(h.devs, func(x *device) bool { return x == d })
	h.logf("%s: replica wiped after revocation: %d unsynced and %d rejected changes went with it", d.name, d.revoked.lost, d.revoked.rejected)
}

// runExited handles a revoked device's 'casesync run' that exited: wiped,
// or (the wipe found the replica in use by a command) to be run again.
func (h *harness) runExited(d *device) {
	h.noticeWipe(d, d.run.Output())
	if !d.revoked.wiped {
		h.logf("%s: revoked; 'casesync run' exited without a wipe (%v), runs again:\n%s", d.name, d.run.Err(), tail(d.run.Output(), 5))
		d.killed, d.downFor = true, 1
	}
}

// finishRevoked makes the revoked device learn of it, if it has not yet:
// its link is healed by now, so its next connection is refused.
func (h *harness) finishRevoked() {
	for _, d := range h.gone {
		if d.revoked.wiped {
			continue
		}
		if d.running() {
			select {
			case <-d.run.Done():
			case <-time.After(60 * time.Second):
				h.t.Errorf("%s: revoked, link healed, yet 'casesync run' still runs after 60 s:\n%s", d.name, tail(d.run.Output(), 20))
				d.run.Kill()
				<-d.run.Done()
			}
			h.noticeWipe(d, d.run.Output())
		}
		for try := 0; try < 3 && !d.revoked.wiped; try++ {
			r := d.cli(60*time.Second, "sync")
			if _, problem := outcome(r); problem != "" {
				h.t.Errorf("%s: sync after revocation %s: %v", d.name, problem, r)
			}
			h.noticeWipe(d, r.Stderr)
		}
		if !d.revoked.wiped {
			h.t.Errorf("%s: revoked, yet no casesync process reported wiping its replica", d.name)
		}
	}
}

// checkRevoked checks the revoked device: its replica and its writes.
func (h *harness) checkRevoked(d *device, st *serverState, violate func(string, ...any)) {
	rv := d.revoked
	if _, err := os.Stat(filepath.Join(d.dir, client.StoreFile)); !errors.Is(err, fs.ErrNotExist) {
		violate("%s: the replica file is still there after the wipe (%v)", d.name, err)
	}
	c, err := client.Open(d.dir, d.options())
	if err != nil {
		violate("%s: open the wiped replica's directory: %v", d.name, err)
	} else {
		defer c.Close()
		// The notice the wipe left says what it said when it happened.
		var re *client.RevokedError
		if s, err := c.Status(context.Background()); !errors.As(err, &re) || re.Lost != rv.lost || re.Rejected != rv.rejected {
			violate("%s: status after the wipe: %+v, %v; want the revocation notice with %d lost, %d rejected", d.name, s, err, rv.lost, rv.rejected)
		}
		for _, k := range h.m.keys() {
			if v, err := c.Get(context.Background(), k); !errors.Is(err, client.ErrRevoked) {
				violate("%s: the wiped replica gives %s: %v, %v; want ErrRevoked", d.name, k, v, err)
			}
		}
	}
	all, before, after := 0, 0, 0 // its writes; those the server did not accept
	for _, w := range h.m.writes {
		if w.dev != d {
			continue
		}
		all++
		if st.accepted[dot{d.id, w.seq}] {
			if w.n > rv.after {
				violate("write %s: the server accepted it, yet it started after the device was revoked", w)
			}
			continue
		}
		if w.n > rv.after {
			after++
		} else {
			before++
		}
	}
	// Every write the server lacks was still in the replica when it was
	// wiped, and so counted: a write command either committed before the
	// wipe took the replica's lock, or found the replica zeroed or gone and
	// failed. The count may also hold writes the server accepted whose ack
	// the device never got.
	if reported := rv.lost + rv.rejected; reported < before+after || reported > all {
		violate("%s: the wipe reported %d unsynced and %d rejected changes; the server lacks %d of its %d writes (%d begun after the revocation)",
			d.name, rv.lost, rv.rejected, before+after, all, after)
	}
	h.logf("%s: revoked; the server lacks %d of its writes before the revocation and %d after; the wipe reported %d lost, %d rejected", d.name, before, after, rv.lost, rv.rejected)
}
