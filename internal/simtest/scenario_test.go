package simtest

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/casesync/casesync/client"
	"github.com/casesync/casesync/syncproto"
)

// Scripted runs: a hand-written schedule on the simulation's deployment,
// for regression tests of what random schedules found.

// scenario runs fn on a fresh deployment with the server up, then heals
// and checks every invariant strictly, as a seed's run does. fn gets the
// bubble's t.
func scenario(t *testing.T, fn func(t *testing.T, s *Sim)) {
	synctest.Test(t, func(t *testing.T) {
		s := newSim(t, Config{Strict: true})
		defer s.teardown()
		defer func() {
			if t.Failed() {
				t.Logf("schedule:\n%s", joinLines(s.trace))
			}
		}()
		s.startServer()
		fn(t, s)
		if !t.Failed() {
			s.heal()
			s.checkFinal()
		}
	})
}

func joinLines(lines []string) string {
	out := ""
	for _, l := range lines {
		out += l + "\n"
	}
	return out
}

// script helpers: each is one step of the schedule, tracked by the oracle.

func (s *Sim) scriptCase(d *device, area string) string {
	s.step++
	vals := map[string]any{"area": area, "title": "scripted case", "status": "open", "owner": d.user.name}
	id, err := d.c.CreateCase(context.Background(), vals)
	if !s.track(d, caseKey(id), vals, "create case "+id+" in "+area, err) {
		s.t.Fatalf("%s: create case: %v", d.name, err)
	}
	s.m.cases = append(s.m.cases, id)
	return id
}

func (s *Sim) scriptEntry(d *device, caseID string) string {
	s.step++
	vals := map[string]any{"kind": "note", "text": "scripted note", "occurred_at": time.Now().UTC().Format(time.RFC3339)}
	id, err := d.c.AddEntry(context.Background(), caseID, vals)
	vals["case_id"], vals["author"] = caseID, d.user.name
	if !s.track(d, entryKey(id), vals, "add entry "+id, err) {
		s.t.Fatalf("%s: add entry: %v", d.name, err)
	}
	s.m.entries = append(s.m.entries, entryRef{id: id, caseID: caseID, author: d.user.name})
	return id
}

func (s *Sim) scriptMove(d *device, caseID, area string) {
	s.step++
	if !s.setCase(d, caseID, map[string]any{"area": area}) {
		s.t.Fatalf("%s: move %s to %s refused", d.name, caseID, area)
	}
}

func (s *Sim) scriptSync(d *device) {
	s.step++
	if !s.sync(d, nil, nil) {
		s.t.Fatalf("%s: sync failed", d.name)
	}
}

func (s *Sim) holds(d *device, k syncproto.Key) bool {
	_, err := d.c.Get(context.Background(), k)
	if err != nil && !errors.Is(err, client.ErrNotFound) {
		s.t.Fatalf("%s: get %s: %v", d.name, k, err)
	}
	return err == nil
}
