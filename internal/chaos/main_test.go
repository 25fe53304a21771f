//go:build unix

package chaos_test

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"sync"
	"testing"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/casesync/casesync/internal/testbin"
)

var (
	seedFlag  = flag.Uint64("chaos.seed", 0, "seed of the fault schedule (0: derived from the time, and logged)")
	stepsFlag = flag.Int("chaos.steps", 0, "steps in the fault schedule (0: 150, or 50 with -short)")
)

// The binaries TestMain built: casesyncd and casesync.
var serverBin, clientBin string

// TestMain builds casesyncd and casesync once, WITHOUT -race even when the
// test binary has it: the test keeps six processes running on two cores,
// and a raced child is 5-26 times slower (GO-STACK.md), which would turn
// the chaos schedule's timing into mostly waiting. cmd/casesync and
// cmd/casesyncd run their own binaries with -race.
func TestMain(m *testing.M) {
	flag.Parse()
	// toxiproxy's toxics log through zerolog's global logger (trace
	// lines on stderr each time a toxic is interrupted): silence it.
	zerolog.SetGlobalLevel(zerolog.Disabled)
	dir, err := os.MkdirTemp("", "casesync-chaos-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos tests:", err)
		os.Exit(1)
	}
	var wg sync.WaitGroup
	var serverErr, clientErr error
	wg.Go(func() { serverBin, serverErr = testbin.Build(dir, "github.com/casesync/casesync/cmd/casesyncd") })
	wg.Go(func() { clientBin, clientErr = testbin.Build(dir, "github.com/casesync/casesync/cmd/casesync") })
	wg.Wait()
	if err := errors.Join(serverErr, clientErr); err != nil {
		fmt.Fprintln(os.Stderr, "chaos tests:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	// toxiproxy v2.12.0 leaks part of a connection's pipeline when a
	// reset_peer toxic closes it: the stage upstream of the closed one
	// blocks for good sending to a channel nobody reads any more
	// (toxics/latency.go:44, noop.go:16, bandwidth.go, slicer.go), and the
	// link's reader blocks behind it in stream.(*ChanWriter).Write, so it
	// never sees its connection close. Those goroutines, and only those,
	// are ignored; every goroutine of the test and of casesync must end.
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("github.com/Shopify/toxiproxy/v2/toxics.(*LatencyToxic).Pipe"),
		goleak.IgnoreTopFunction("github.com/Shopify/toxiproxy/v2/toxics.(*NoopToxic).Pipe"),
		goleak.IgnoreTopFunction("github.com/Shopify/toxiproxy/v2/toxics.(*BandwidthToxic).Pipe"),
		goleak.IgnoreTopFunction("github.com/Shopify/toxiproxy/v2/toxics.(*SlicerToxic).Pipe"),
		goleak.IgnoreTopFunction("github.com/Shopify/toxiproxy/v2/stream.(*ChanWriter).Write"),
		goleak.Cleanup(func(code int) {
			os.RemoveAll(dir)
			os.Exit(code)
		}))
}
