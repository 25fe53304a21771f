// Command casesync-bench measures casesync on the shared caseload
// (shared/datasets/caseload-1k.jsonl.gz: 1,000 cases, 20,000 notes) with
// a real casesyncd process and real clients on loopback:
//
//	go run ./cmd/casesync-bench [--dataset PATH] [--runs 5] [--json] [--cpuprofile DIR]
//
// It reports, for each scenario (push, cold pull, delta, no-op sync,
// fan-out, local write, cold pull on a server with 10× the data), the
// median wall time, records/s, bytes on the wire each way, and the peak
// memory of the server and of the client, beside the machine's own limit
// for the same work (bbolt bulk load, zstd and JSON speed, loopback
// bandwidth) and the target. Everything runs in a temporary directory that
// is removed at the end, with every process it started.
//
// Why these choices, briefly: the server is the real binary, built from
// this checkout, measured from outside like an operator would; each
// scenario's client side runs in a worker process of its own (this binary,
// re-executed) so that its peak memory is its own; replicas use
// client.DefaultKDF, whose Argon2id unlock is paid once per Open and is
// reported apart from the sync it precedes.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/casesync/casesync/internal/caseload"
)

type options struct {
	dataset    string
	runs       int
	json       bool
	cpuprofile string
	keep       bool
	fanout     int
	rounds     int
	writes     int
	edits      int
	scale      int
	skip       map[string]bool
}

// bench is one benchmark run's state.
type bench struct {
	o    options
	log  *slog.Logger
	root string // the module root
	tmp  string
	bin  string // casesyncd
	self string // this binary, for workers

	ds      *caseload.Dataset
	fanArea string
	ids     map[string]string // dataset ID → replica ID
	tokens  map[string]string // device name → token
	snaps   map[string]string // device name → replica snapshot

	accountsDir string     // server data: users and devices only
	fullDir     string     // server data after a push: the whole dataset
	scaleDir    string     // the same with 10× the data in other areas
	full        *casesyncd // the server on fullDir, while it runs

	srvMu   sync.Mutex
	servers []*casesyncd

	res report
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == workerCmd {
		os.Exit(workerMain())
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "casesync-bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	var o options
	fs := flag.NewFlagSet("casesync-bench", flag.ContinueOnError)
	fs.StringVar(&o.dataset, "dataset", "", "the caseload (default: ../shared/datasets/"+caseload.DefaultFile+" beside the module root)")
	fs.IntVar(&o.runs, "runs", 5, "measured runs per scenario; the median is reported")
	fs.BoolVar(&o.json, "json", false, "print the results as JSON")
	fs.StringVar(&o.cpuprofile, "cpuprofile", "", "write each scenario's client CPU profile into this directory")
	fs.BoolVar(&o.keep, "keep", false, "keep the temporary directory (servers' data, replicas, logs)")
	fs.IntVar(&o.fanout, "fanout", 50, "fan-out: connected devices in the area")
	fs.IntVar(&o.rounds, "rounds", 20, "fan-out rounds and no-op syncs measured")
	fs.IntVar(&o.writes, "writes", 200, "local writes measured")
	fs.IntVar(&o.edits, "edits", 100, "delta: local and remote edits each")
	fs.IntVar(&o.scale, "scale", 10, "scale: the server holds this many times the data")
	skip := fs.String("skip", "", "comma-separated steps to leave out, for a quicker look: fanout, scale, limits (each is reported as not run)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	o.skip = map[string]bool{}
	for _, s := range strings.Split(*skip, ",") {
		switch s = strings.TrimSpace(s); s {
		case "":
		case "fanout", "scale", "limits":
			o.skip[s] = true
		default:
			return fmt.Errorf("--skip %q: only fanout, scale and limits can be left out (the others feed later steps)", s)
		}
	}
	if o.runs < 1 || o.fanout < 1 || o.scale < 1 {
		return errors.New("--runs, --fanout and --scale must be at least 1")
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	b := &bench{o: o, log: log, ids: map[string]string{}, tokens: map[string]string{}, snaps: map[string]string{}}
	defer b.cleanup()
	if err := b.init(ctx); err != nil {
		return err
	}
	if err := b.all(ctx); err != nil {
		return err
	}
	return b.print(os.Stdout)
}

// init finds the module and the dataset, makes the temporary directory
// and builds casesyncd.
func (b *bench) init(ctx context.Context) error {
	wd, _ := os.Getwd()
	root, err := caseload.ModuleRoot(wd)
	if err != nil {
		return err
	}
	b.root = root
	if b.o.dataset == "" {
		if b.o.dataset, err = caseload.Find(root); err != nil {
			return fmt.Errorf("%w (use --dataset PATH)", err)
		}
	}
	if b.self, err = os.Executable(); err != nil {
		return err
	}
	if b.tmp, err = os.MkdirTemp("", "casesync-bench-"); err != nil {
		return err
	}
	if b.o.cpuprofile != "" {
		if b.o.cpuprofile, err = filepath.Abs(b.o.cpuprofile); err != nil {
			return err
		}
		if err := os.MkdirAll(b.o.cpuprofile, 0o755); err != nil {
			return err
		}
	}
	t := time.Now()
	if b.ds, err = caseload.Load(b.o.dataset); err != nil {
		return err
	}
	b.fanArea = busiestArea(b.ds)
	b.log.Info("dataset loaded", "path", b.o.dataset, "cases", len(b.ds.Cases), "notes", len(b.ds.Notes),
		"json_bytes", b.ds.JSONBytes, "took", time.Since(t).Round(time.Millisecond))
	t = time.Now()
	if b.bin, err = buildServer(ctx, root, b.tmp); err != nil {
		return err
	}
	b.log.Info("casesyncd built", "took", time.Since(t).Round(time.Millisecond))
	return nil
}

// busiestArea is the area with the most cases: fan-out's area.
func busiestArea(d *caseload.Dataset) string {
	n := map[string]int{}
	best := ""
	for _, c := range d.Cases {
		n[c.Area]++
		if n[c.Area] > n[best] {
			best = c.Area
		}
	}
	return best
}

// all runs every step in order. The machine's limits go last so that its
// CPU-heavy loops do not warm or disturb anything measured before.
func (b *bench) all(ctx context.Context) error {
	steps := []struct {
		name string
		fn   func(context.Context) error
	}{
		{"accounts", b.accounts},
		{"populate", b.populate},
		{"push", b.push},
		{"scale-data", b.scaleData},
		{"pull", b.pulls},
		{"steady", b.steady},
		{"fanout", b.fanoutRun},
		{"scale", b.scalePull},
		{"limits", b.limits},
	}
	b.res.LoadAvgBefore = loadAvg()
	for _, s := range steps {
		if err := ctx.Err(); err != nil {
			return err
		}
		if b.o.skip[s.name] || (s.name == "scale-data" && b.o.skip["scale"]) {
			b.log.Info("step skipped", "name", s.name)
			continue
		}
		t := time.Now()
		b.log.Info("step", "name", s.name)
		if err := s.fn(ctx); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		b.log.Info("step done", "name", s.name, "took", time.Since(t).Round(time.Millisecond))
	}
	b.res.LoadAvgAfter = loadAvg()
	return nil
}

// cleanup stops every server still running and removes the temporary
// directory (unless --keep).
func (b *bench) cleanup() {
	b.srvMu.Lock()
	for _, s := range b.servers {
		s.stop()
	}
	b.srvMu.Unlock()
	if b.tmp == "" {
		return
	}
	if b.o.keep {
		b.log.Info("kept temporary directory", "dir", b.tmp)
		return
	}
	if err := os.RemoveAll(b.tmp); err != nil {
		b.log.Warn("remove temporary directory", "dir", b.tmp, "err", err)
	}
}

func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	return string(trimNL(b))
}

func trimNL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	return b
}
