package simtest

import (
	"flag"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"

	"github.com/valyala/fasthttp"
	"go.uber.org/goleak"
)

var (
	flagSeed    = flag.Uint64("simtest.seed", 1, "first seed of the simulation")
	flagSeeds   = flag.Int("simtest.seeds", 0, "how many seeds to run, from -simtest.seed (default 20 with -race, 50 without)")
	flagSteps   = flag.Int("simtest.steps", defaultSteps, "schedule length of each run")
	flagSkip    = flag.String("simtest.skip", "", "comma-separated steps to leave out, to shrink a failing schedule")
	flagKeep    = flag.String("simtest.keep", "", "comma-separated steps to run, leaving out all others (the opposite of -simtest.skip)")
	flagTrace   = flag.Bool("simtest.trace", false, "print every run's schedule, not only failing ones")
	flagStrict  = flag.Bool("simtest.strict", true, "fail on the known bugs too (all are fixed); false counts their symptoms instead")
	flagWorkers = flag.Int("simtest.workers", 0, "runs at once (default twice GOMAXPROCS, GOMAXPROCS with -race)")
)

// defaultSteps sizes a run so that 500 seeds take about three minutes on
// CI's two cores without the race detector.
const defaultSteps = 100

func TestMain(m *testing.M) {
	// fasthttp refreshes its Date header from a goroutine it starts on
	// first use; started inside a bubble it would outlive the bubble.
	var h fasthttp.ResponseHeader
	_ = h.Header()
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"),
	)
}

func seedCount() int {
	if *flagSeeds > 0 {
		return *flagSeeds
	}
	if raceEnabled {
		return 20
	}
	return 50
}

// skipSet returns the steps -simtest.skip or -simtest.keep leave out.
func skipSet(t *testing.T) map[int]bool {
	skip, err := parseSteps(*flagSkip)
	if err != nil {
		t.Fatalf("-simtest.skip: %v", err)
	}
	if *flagKeep != "" {
		keep, err := parseSteps(*flagKeep)
		if err != nil {
			t.Fatalf("-simtest.keep: %v", err)
		}
		skip = keepOnly(*flagSteps, keep)
	}
	return skip
}

// keepOnly returns the steps of 1..steps not in keep.
func keepOnly(steps int, keep map[int]bool) map[int]bool {
	skip := map[int]bool{}
	for n := 1; n <= steps; n++ {
		if !keep[n] {
			skip[n] = true
		}
	}
	return skip
}

func parseSteps(list string) (map[int]bool, error) {
	out := map[int]bool{}
	for _, f := range strings.Split(list, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("%q is not a step number", f)
		}
		out[n] = true
	}
	return out, nil
}

// runSeed runs one simulation in its own bubble.
// If st is not nil, it receives the run's stats (synctest.Test does not
// return from a failed run: it calls FailNow).
func runSeed(t *testing.T, cfg Config, st *Stats) {
	t.Helper()
	cfg.Trace = cfg.Trace || *flagTrace
	synctest.Test(t, func(t *testing.T) {
		out := Run(t, cfg)
		if st != nil {
			*st = out
		}
	})
}

// TestSimulation runs -simtest.seeds random schedules. A run spends most
// of its time waiting for fsync (every commit of the server and of the
// replicas is durable), so runs overlap more than GOMAXPROCS allows
// t.Parallel; with the race detector they are CPU-bound and do not.
func TestSimulation(t *testing.T) {
	n := seedCount()
	if testing.Short() && *flagSeeds == 0 {
		t.Skip("the simulation runs many seeds; -short skips it (set -simtest.seeds to run some)")
	}
	skip := skipSet(t)
	workers := *flagWorkers
	if workers <= 0 {
		workers = 2 * runtime.GOMAXPROCS(0)
		if raceEnabled {
			workers = runtime.GOMAXPROCS(0)
		}
	}
	seeds := make(chan uint64)
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		failed []uint64
		first  = map[uint64][]string{}
	)
	for range min(workers, n) {
		wg.Go(func() {
			for seed := range seeds {
				var st Stats
				ok := t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
					runSeed(t, Config{Seed: seed, Steps: *flagSteps, Skip: skip, Strict: *flagStrict}, &st)
				})
				if !ok {
					mu.Lock()
					failed = append(failed, seed)
					first[seed] = st.First
					mu.Unlock()
				}
			}
		})
	}
	for i := range n {
		seeds <- *flagSeed + uint64(i)
	}
	close(seeds)
	wg.Wait()
	if len(failed) > 0 {
		// Last in the output, where a truncated CI log still shows it.
		slices.Sort(failed)
		var b strings.Builder
		for _, seed := range failed {
			fmt.Fprintf(&b, "\nseed %d:", seed)
			for _, v := range first[seed] {
				fmt.Fprintf(&b, "\n\t%s", v)
			}
		}
		t.Logf("%d of %d seeds failed: %v; run one again with\n\t%s%s", len(failed), n, failed,
			Config{Seed: failed[0], Steps: *flagSteps, Skip: skip}.rerun(), b.String())
	}
}
