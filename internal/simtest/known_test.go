package simtest

import (
	"flag"
	"fmt"
	"testing"

	"github.com/casesync/casesync/syncproto"
)

// Regression tests of the bugs the simulation found (known.go). They assert
// the correct behaviour; all are fixed, so they run by default
// (-simtest.known=false skips them, for a bug found and not yet fixed).

var flagKnown = flag.Bool("simtest.known", true, "run the regression tests of the bugs the simulation found (all fixed; false skips them)")

func skipKnown(t *testing.T, bug knownBug, what string) {
	t.Helper()
	if !*flagKnown {
		t.Skipf("known bug %s (%s), not fixed yet; run with -simtest.known", bug, what)
	}
}

// TestKnownGoneCaseComesBack: during a live session a caseworker hands a
// case over to another area; later in the same session the lead moves it
// back to her area. Her laptop never gets it back.
//
// The cause, fixed in commit 1138a2c: client staleForUs (commit 8cff2c9) dropped, for
// the rest of the session, every incoming state of a case the device
// moved out of its scope, even one that is current and in its scope
// again; the checkpoint then passes it. The same happens when her areas
// grow during the session (TestKnownGoneCaseScopeGain). Only states read
// before the move committed are stale, and those are the ones whose area
// field has not seen the move's dot: remembering the dot (case → change
// seq) and forgetting the case once a state arrives whose area field's
// seen covers it would keep the fix and lose no later state (the case's
// re-filing precedes its entries' in the log, so they follow it in).
func TestKnownGoneCaseComesBack(t *testing.T) {
	skipKnown(t, knownGoneCase, "a case handed over and back in one session is lost")
	scenario(t, func(t *testing.T, s *Sim) {
		anouk := s.newUser("anouk", "caseworker", "Zuilen")
		lotte := s.newUser("lotte", "lead")
		a := s.newDevice(anouk, 0, 500)
		l := s.newDevice(lotte, 0, 500)
		c := s.scriptCase(a, "Zuilen")
		e := s.scriptEntry(a, c)
		s.scriptSync(a)
		s.scriptSync(l)
		s.startRun(a)
		s.scriptMove(a, c, "Ondiep") // pushed at once by the live session
		s.settle()
		s.scriptSync(l)
		s.scriptMove(l, c, "Zuilen")
		s.scriptSync(l) // the live session streams the case back
		s.settle()
		s.stopRun(a)
		s.scriptSync(a)
		for _, k := range []syncproto.Key{caseKey(c), entryKey(e)} {
			if !s.holds(a, k) {
				t.Errorf("the lead moved the case back to Zuilen; anouk's laptop lacks %s", k)
			}
		}
	})
}

// TestKnownGoneCaseScopeGain: a caseworker hands a case over to Ondiep
// during a live session; the admin then gives her Ondiep. The session
// streams Ondiep from the start, and the laptop drops that case.
func TestKnownGoneCaseScopeGain(t *testing.T) {
	skipKnown(t, knownGoneCase, "a case handed over, then its area gained, in one session is lost")
	scenario(t, func(t *testing.T, s *Sim) {
		anouk := s.newUser("anouk", "caseworker", "Zuilen")
		a := s.newDevice(anouk, 0, 500)
		c := s.scriptCase(a, "Zuilen")
		e := s.scriptEntry(a, c)
		s.scriptSync(a)
		s.startRun(a)
		s.scriptMove(a, c, "Ondiep")
		s.settle()
		s.step++
		if err := s.setAreas(anouk, []string{"Ondiep", "Zuilen"}); err != nil {
			t.Fatal(err)
		}
		s.settle()
		s.stopRun(a)
		s.scriptSync(a)
		for _, k := range []syncproto.Key{caseKey(c), entryKey(e)} {
			if !s.holds(a, k) {
				t.Errorf("anouk gained Ondiep; her laptop lacks %s", k)
			}
		}
	})
}

// knownSeeds are seeds, shrunk, that show the known bugs.
var knownSeeds = []struct {
	bug   knownBug
	seed  uint64
	steps int
	keep  []int
}{
	// anouk (Ondiep) creates a case and moves it to Zuilen while offline;
	// her live session pushes both; the admin gives her Zuilen; the
	// session streams Zuilen from the start and drops the case.
	{knownGoneCase, 157, 90, []int{8, 11, 15, 48, 58, 71, 74, 77, 88, 90}},
	// Offline, bram hands a case over to Lombok, outside his scope; the
	// lead, concurrently and later, moves it back to Ondiep. The server
	// moves it out and back and sends its notes again, but a later write
	// has filed the case after them: they reach bram's laptop in one
	// message ahead of the case's newer state, and the laptop, still
	// remembering its hand-over, drops them as stale. Not shrunk: the 94
	// steps failed in 5 of 5 runs before the fix, the shrunk 15 in 3 of 5
	// (the interleaving within a step is the scheduler's).
	{knownLostHandOver, 750, 94, nil},
	// Offline, anouk (who has lost Zuilen for Ondiep) writes a summary
	// and two notes about a Zuilen case that bram moves to Ondiep; at
	// the heal her push's ack comes before the scope update, and her
	// laptop drops the case's states and her notes as stale. Not shrunk:
	// it failed in CI (a slower machine) and in none of 200 runs here;
	// internal/e2e TestAckBeforeScopeUpdate forces the order.
	{knownAckFirst, 1463, 100, nil},
}

func TestKnownSeeds(t *testing.T) {
	for _, r := range knownSeeds {
		t.Run(fmt.Sprintf("%s/seed=%d", r.bug, r.seed), func(t *testing.T) {
			skipKnown(t, r.bug, "found by seed")
			runShrunk(t, r.seed, r.steps, r.keep)
		})
	}
}
