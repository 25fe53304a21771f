// Package simtest is a deterministic simulation of a casesync deployment:
// one server with its real bbolt store and two to six caseworkers' devices
// with their real encrypted replicas, in one process, on a simulated
// network and a simulated clock. A seed drives a random schedule of local
// writes, syncs, partitions, cut connections, server and client crashes,
// scope changes, case moves, conflicting edits and resolutions; afterwards
// the network heals, every device syncs until nothing moves, and the
// invariants of the README are checked against the server's store (see
// oracle.go).
//
// Run must be called inside a testing/synctest bubble: the network is made
// of in-memory pipes and the clock is the bubble's, so simulated hours pass
// at once, and synctest.Wait tells the simulation when every goroutine of
// the server and the clients is idle, which is when a held connection has
// received all it ever will and may be cut. The schedule is a function of
// the seed; what the goroutines do between two idle points is up to the Go
// scheduler, so a run is reproducible in its faults and its writes, though
// not always in the interleaving of one sync with the server's streamer.
//
// Running it:
//
//	go test ./internal/simtest                               # 50 seeds (20 with -race)
//	go test ./internal/simtest -simtest.seeds 500            # what CI runs, without -race
//	go test ./internal/simtest -run 'TestSimulation$' -simtest.seed 197 -simtest.seeds 1 -v
//	go test ./internal/simtest -run TestShrink -simtest.seed 197 -simtest.shrink lacks -timeout 0 -v
//
// -simtest.steps sets the schedule length, -simtest.skip leaves steps out,
// -simtest.trace prints every schedule, -v one summary line per run, and
// -simtest.strict fails on the known bugs (known.go) instead of counting
// them; TestShrink reduces a failing seed to the steps it needs.
package simtest

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/casesync/casesync/server"
	"github.com/casesync/casesync/server/boltstore"
)

// Config selects one run.
type Config struct {
	// Seed drives everything random: the deployment and every step.
	Seed uint64
	// Steps is the length of the schedule.
	Steps int
	// Skip leaves steps out. Each step draws from its own random stream
	// (seed, step), so leaving one out does not reshuffle the others: a
	// failing schedule can be shrunk step by step.
	Skip map[int]bool
	// Trace logs the schedule even if the run passes.
	Trace bool
	// Strict fails on the known bugs too, instead of counting them
	// (known.go).
	Strict bool
}

// Stats counts what a run did, for the one-line summary.
type Stats struct {
	Devices, Steps                    int
	Writes, Refused                   int // local writes accepted, refused locally
	Syncs, SyncsFailed, Gated         int
	Cuts, HeldCuts, Partitions        int
	ServerCrashes, ClientRestarts     int
	MidSyncCrashes                    int
	ScopeChanges, Moves               int
	Conflicts, Resolves, Rejected     int
	LiveWindows, LiveCuts, Blackholes int
	ClockJumps, LostAcks              int
	SimulatedTime                     time.Duration
	// Known counts the symptoms of known bugs tolerated, by bug.
	Known map[knownBug]int
	// First holds the first violations, for a summary of many runs.
	First []string
}

func (st Stats) String() string {
	return fmt.Sprintf("devices=%d steps=%d writes=%d refused=%d syncs=%d failed=%d gated=%d cuts=%d (held %d) partitions=%d server-crashes=%d client-restarts=%d (mid-sync %d) scope-changes=%d moves=%d conflict-pairs=%d resolves=%d rejected=%d live=%d live-cuts=%d blackholes=%d clock-jumps=%d lost-acks=%d simulated=%v known-bugs=%v",
		st.Devices, st.Steps, st.Writes, st.Refused, st.Syncs, st.SyncsFailed, st.Gated, st.Cuts, st.HeldCuts, st.Partitions,
		st.ServerCrashes, st.ClientRestarts, st.MidSyncCrashes, st.ScopeChanges, st.Moves, st.Conflicts, st.Resolves,
		st.Rejected, st.LiveWindows, st.LiveCuts, st.Blackholes, st.ClockJumps, st.LostAcks, st.SimulatedTime.Round(time.Second), st.Known)
}

// Sim is one run of the simulation.
type Sim struct {
	t    testing.TB
	cfg  Config
	net  *network
	http *http.Client

	srvDir    string
	srv       *server.Server // nil while the server is down
	store     *boltstore.Store
	serveDone chan error
	downFor   int // steps until a crashed server restarts

	users []*user
	devs  []*device
	m     *model

	step       int
	trace      []string
	violations int
	hint       knownBug // the known bug the next violation shows (strict mode)
	stats      Stats
	start      time.Time
}

// watchHook, if set (by a debugging flag of the tests), runs after each
// step.
var watchHook func(*Sim)

// maxViolations bounds the report of one run: the first few explain it.
const maxViolations = 25

// Run runs one simulation and checks its invariants, reporting violations
// through t. It must be called inside a synctest bubble. If the run fails,
// or cfg.Trace is set, it logs the schedule as it ran and how to run it
// again.
func Run(t testing.TB, cfg Config) (st Stats) {
	s := newSim(t, cfg)
	defer s.teardown()
	defer func() {
		s.stats.Steps = cfg.Steps - len(cfg.Skip)
		s.stats.Devices = len(s.devs)
		s.stats.SimulatedTime = time.Since(s.start)
		st = s.stats
		t.Logf("seed %d: %s", cfg.Seed, st)
		if t.Failed() || cfg.Trace {
			t.Logf("seed %d; run it again with\n\t%s\nschedule:\n%s", cfg.Seed, cfg.rerun(), strings.Join(s.trace, "\n"))
		}
	}()
	s.setup(rand.New(rand.NewPCG(cfg.Seed, ^uint64(0))))
	for i := 1; i <= cfg.Steps && s.violations < maxViolations; i++ {
		if cfg.Skip[i] {
			continue
		}
		s.step = i
		s.doStep(rand.New(rand.NewPCG(cfg.Seed, uint64(i))))
		s.settle()
		if watchHook != nil {
			watchHook(s)
		}
	}
	s.step = cfg.Steps + 1
	// Heal and check even after a violation: the final state tells a
	// transient symptom from a lasting one.
	if s.violations < maxViolations {
		s.heal()
		s.checkFinal()
	}
	return s.stats
}

// rerun is the command that runs this configuration again.
func (cfg Config) rerun() string {
	cmd := fmt.Sprintf("go test -count=1 -run 'TestSimulation$' ./internal/simtest -simtest.seed %d -simtest.seeds 1 -simtest.steps %d", cfg.Seed, cfg.Steps)
	var skip, keep []string
	for n := 1; n <= cfg.Steps; n++ {
		if cfg.Skip[n] {
			skip = append(skip, strconv.Itoa(n))
		} else {
			keep = append(keep, strconv.Itoa(n))
		}
	}
	switch {
	case len(skip) == 0:
	case len(keep) < len(skip):
		cmd += " -simtest.keep " + strings.Join(keep, ",")
	default:
		cmd += " -simtest.skip " + strings.Join(skip, ",")
	}
	return cmd
}

// logf records an event of the schedule.
func (s *Sim) logf(format string, args ...any) {
	s.trace = append(s.trace, fmt.Sprintf("step %3d: ", s.step)+fmt.Sprintf(format, args...))
}

// violate reports a broken invariant.
func (s *Sim) violate(format string, args ...any) {
	s.t.Helper()
	s.violations++
	msg := fmt.Sprintf(format, args...)
	if s.hint != "" {
		msg += fmt.Sprintf(" [known bug %s]", s.hint)
		s.hint = ""
	}
	s.logf("VIOLATION: %s", msg)
	if s.violations <= maxViolations {
		s.t.Errorf("seed %d, step %d: %s", s.cfg.Seed, s.step, msg)
	}
	if len(s.stats.First) < 2 {
		s.stats.First = append(s.stats.First, fmt.Sprintf("step %d: %s", s.step, msg))
	}
}

// settle waits until every goroutine in the bubble is idle, then cuts the
// links whose gate has engaged: their held side has been waiting for bytes
// that will never come.
func (s *Sim) settle() {
	synctest.Wait()
	if n := s.net.CutHeld(); n > 0 {
		s.stats.HeldCuts += n
		s.stats.Cuts += n
		s.logf("cut %d held link(s)", n)
		synctest.Wait()
	}
}

// newSim returns a simulation with no server running yet.
func newSim(t testing.TB, cfg Config) *Sim {
	s := &Sim{
		t:      t,
		cfg:    cfg,
		net:    newNetwork(),
		srvDir: t.TempDir(),
		m:      newModel(),
		start:  time.Now(),
	}
	s.http = &http.Client{Transport: &http.Transport{DialContext: s.net.AdminDial, DisableKeepAlives: true}}
	return s
}

// newUser creates a user on the server.
func (s *Sim) newUser(name, role string, areas ...string) *user {
	u := &user{name: name, role: role, areas: areas}
	s.addUser(u)
	s.users = append(s.users, u)
	return u
}

// newDevice enrolls a new device of u.
func (s *Sim) newDevice(u *user, skew time.Duration, pushBatch int) *device {
	i := len(s.devs)
	d := &device{idx: i, name: fmt.Sprintf("d%d", i), user: u, dir: s.t.TempDir(), skew: skew, pushBatch: pushBatch}
	s.enroll(d)
	s.devs = append(s.devs, d)
	return d
}

// setup creates the users, starts the server and enrolls the devices.
func (s *Sim) setup(r *rand.Rand) {
	s.startServer()
	s.newUser("anouk", "caseworker", randomAreas(r, false)...)
	s.newUser("bram", "caseworker", randomAreas(r, false)...)
	s.newUser("lotte", "lead")
	n := 2 + r.IntN(5)
	for i := range n {
		u := s.users[i%len(s.users)]
		if i >= len(s.users) {
			u = s.users[r.IntN(len(s.users))]
		}
		s.newDevice(u, randomSkew(r), pick(r, []int{1, 2, 3, 500}))
	}
	var b strings.Builder
	for _, u := range s.users {
		fmt.Fprintf(&b, " %s(%s %v)", u.name, u.role, u.areas)
	}
	s.logf("setup: users%s", b.String())
	for _, d := range s.devs {
		s.logf("setup: %s = %s of %s, clock skew %v, push batch %d", d.name, d.id, d.user.name, d.skew, d.pushBatch)
	}
}

// randomAreas returns a random subset of Areas, non-empty unless
// allowEmpty, in Areas' order.
func randomAreas(r *rand.Rand, allowEmpty bool) []string {
	for {
		var out []string
		for _, a := range Areas {
			if r.IntN(2) == 0 {
				out = append(out, a)
			}
		}
		if len(out) > 0 || allowEmpty {
			return out
		}
	}
}

// randomSkew returns a laptop clock error up to ±3 h; a third of the
// laptops are right.
func randomSkew(r *rand.Rand) time.Duration {
	if r.IntN(3) == 0 {
		return 0
	}
	return time.Duration(r.Int64N(int64(6*time.Hour))) - 3*time.Hour
}

// heal ends every fault: the server is up, every device online and not
// live, and every device syncs until a whole round moves nothing.
func (s *Sim) heal() {
	s.logf("heal: server up, every device online, syncing until quiescent")
	if s.srv == nil {
		s.startServer()
	}
	for _, d := range s.devs {
		s.stopRun(d)
		s.net.SetOffline(d.name, false)
		s.net.Disarm(d.name)
	}
	s.settle()
	const maxRounds = 8
	for round := 1; ; round++ {
		moved := 0
		for _, d := range s.devs {
			res, err := d.c.Sync(s.ctx(), nil)
			if err != nil {
				s.violate("%s: sync after healing: %v", d.name, err)
				return
			}
			s.checkHeld(d)
			moved += res.Pushed + res.Rejected + res.Pulled + res.Evicted + res.Deferred
		}
		s.logf("heal: round %d moved %d", round, moved)
		if moved == 0 {
			return
		}
		if round == maxRounds {
			s.violate("not quiescent after %d sync rounds of every device", maxRounds)
			return
		}
	}
}

// teardown stops everything the run started, so the bubble ends with no
// goroutine left.
func (s *Sim) teardown() {
	for _, d := range s.devs {
		s.closeDevice(d)
	}
	s.crashServer()
	s.http.CloseIdleConnections()
	// fasthttp's worker pools check their stop channel every 10 s: let the
	// simulated clock run past that so their goroutines end in the bubble.
	time.Sleep(time.Minute)
}
