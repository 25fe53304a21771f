// Command casesync-load puts a running casesyncd under load over loopback
// and reports the figures of issue 5: server memory per idle device,
// fan-out latency to many live devices, and push throughput.
//
//	casesync-load --server http://127.0.0.1:8420 --token-file DATA/admin.token \
//	    [--scenario idle|fanout|push|all] [--devices N] [--duration 20s] [--json]
//
// It talks to casesyncd as a real deployment would: users and devices are
// created through the admin HTTP API, and every device speaks the raw sync
// protocol over its own WebSocket, zstd negotiated. The server's memory and
// CPU time are read from /proc (the process listening on the URL's port, or
// --server-pid), so run it on the server's machine.
//
// Ten thousand connections need as many file descriptors: raise the limit
// in the shell (`ulimit -n 65536`, or as far as the hard limit allows) —
// run.sh in this directory does, and starts and stops a server of its own.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"
)

// config is the command line.
type config struct {
	server       string
	tokenFile    string
	scenario     string
	devices      int
	duration     time.Duration
	hold         time.Duration
	changes      int
	interval     time.Duration
	batch        int
	noteBytes    int
	pushLive     bool
	pid          int
	parallel     int
	timeout      time.Duration
	json         bool
	jsonFile     string
	cpuProfile   string
	inlineDecode bool
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "casesync-load:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string, stderr io.Writer) (*config, error) {
	c := &config{}
	fs := flag.NewFlagSet("casesync-load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.server, "server", "http://127.0.0.1:8420", "casesyncd base URL (loopback)")
	fs.StringVar(&c.tokenFile, "token-file", "./casesync-data/admin.token", "the server's admin token file")
	fs.StringVar(&c.scenario, "scenario", "all", "idle, fanout, push or all (in that order)")
	fs.IntVar(&c.devices, "devices", 0, "devices per scenario (default: idle 10000, fanout 1000 receivers, push 200)")
	fs.DurationVar(&c.duration, "duration", 20*time.Second, "push: how long the devices push")
	fs.DurationVar(&c.hold, "hold", 90*time.Second, "idle: how long to hold the connections; over the server's 75 s read timeout, so a device that failed keepalive would be dropped")
	fs.IntVar(&c.changes, "changes", 200, "fanout: notes pushed")
	fs.DurationVar(&c.interval, "interval", 100*time.Millisecond, "fanout: time between notes")
	fs.IntVar(&c.batch, "batch", 50, "push: notes per push")
	fs.IntVar(&c.noteBytes, "note-bytes", 600, "bytes of text per note")
	fs.BoolVar(&c.pushLive, "push-live", false, "push: devices also stay live (each in its own area, so each receives its own changes back)")
	fs.IntVar(&c.pid, "server-pid", 0, "the server's process ID (default: the process listening on --server's port)")
	fs.IntVar(&c.parallel, "connect-parallel", 32, "connections opened at once")
	fs.DurationVar(&c.timeout, "timeout", 20*time.Minute, "give up after this long")
	fs.BoolVar(&c.json, "json", false, "print the results as JSON")
	fs.StringVar(&c.jsonFile, "json-file", "", "also write the results as JSON to this file")
	fs.BoolVar(&c.inlineDecode, "inline-decode", false, "fanout: each receiver decodes its frame before reading the next, instead of handing it to two decoding workers (the method before 2026-12-03)")
	fs.StringVar(&c.cpuProfile, "cpuprofile", "", "write a CPU profile of the load generator to this file")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	switch c.scenario {
	case "idle", "fanout", "push", "all":
	default:
		return nil, fmt.Errorf("--scenario %q: want idle, fanout, push or all", c.scenario)
	}
	c.server = strings.TrimRight(c.server, "/")
	return c, nil
}

// env is what every scenario needs.
type env struct {
	cfg     *config
	log     *slog.Logger
	admin   *admin
	syncURL string
	pid     int
	codecs  *codecPool
	run     string // distinguishes this run's users and areas from earlier runs'
}

// report is the command's output.
type report struct {
	Server  string          `json:"server"`
	PID     int             `json:"server_pid"`
	Started time.Time       `json:"started"`
	Idle    *idleResult     `json:"idle,omitempty"`
	Fanout  *fanoutResult   `json:"fanout,omitempty"`
	Push    *pushResult     `json:"push,omitempty"`
	Errors  []string        `json:"errors,omitempty"`
	Goals   map[string]bool `json:"goals_met"`
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	tok, err := os.ReadFile(cfg.tokenFile)
	if err != nil {
		return fmt.Errorf("read admin token: %w", err)
	}
	pid := cfg.pid
	if pid == 0 {
		if pid, err = findServerPID(cfg.server); err != nil {
			return err
		}
	}
	if cfg.cpuProfile != "" {
		f, err := os.Create(cfg.cpuProfile)
		if err != nil {
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	codecs, err := newCodecPool(4)
	if err != nil {
		return err
	}
	defer codecs.close()
	e := &env{
		cfg: cfg, log: log, admin: newAdmin(cfg.server, strings.TrimSpace(string(tok))),
		syncURL: "ws" + strings.TrimPrefix(cfg.server, "http") + "/v1/sync",
		pid:     pid, codecs: codecs, run: fmt.Sprintf("%x", time.Now().Unix()%0xfffff),
	}
	log.Info("load test", "server", cfg.server, "server_pid", pid, "scenario", cfg.scenario, "run", e.run)
	rep := &report{Server: cfg.server, PID: pid, Started: time.Now().UTC(), Goals: map[string]bool{}}
	want := func(s string) bool { return cfg.scenario == s || cfg.scenario == "all" }
	fail := func(name string, err error) {
		log.Error("scenario failed", "scenario", name, "err", err)
		rep.Errors = append(rep.Errors, name+": "+err.Error())
	}
	if want("idle") && ctx.Err() == nil {
		if rep.Idle, err = runIdle(ctx, e); err != nil {
			fail("idle", err)
		} else {
			if rep.Idle.Devices >= 10000 { // the goal is stated for 10,000 devices
				rep.Goals["idle_rss_under_400MiB"] = rep.Idle.RSSAfter < 400<<20
			}
			rep.Goals["idle_none_dropped"] = rep.Idle.Dropped == 0
		}
	}
	if want("fanout") && ctx.Err() == nil {
		if rep.Fanout, err = runFanout(ctx, e); err != nil {
			fail("fanout", err)
		} else {
			if rep.Fanout.Receivers >= 1000 {
				rep.Goals["fanout_p99_under_50ms"] = rep.Fanout.Latency.P99 < 50
			}
			rep.Goals["fanout_none_dropped_or_missed"] = rep.Fanout.Dropped == 0 && rep.Fanout.Missed == 0
		}
	}
	if want("push") && ctx.Err() == nil {
		if rep.Push, err = runPush(ctx, e); err != nil {
			fail("push", err)
		} else {
			if rep.Push.Devices >= 200 {
				rep.Goals["push_20000_per_s"] = rep.Push.AcceptedPerSec >= 20000
			}
			rep.Goals["push_none_dropped"] = rep.Push.Dropped == 0
		}
	}
	js, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if cfg.jsonFile != "" {
		if err := os.WriteFile(cfg.jsonFile, append(js, '\n'), 0o644); err != nil {
			return err
		}
	}
	if cfg.json {
		fmt.Fprintf(stdout, "%s\n", js)
	} else {
		printReport(stdout, rep)
	}
	if len(rep.Errors) > 0 {
		return errors.New(strings.Join(rep.Errors, "; "))
	}
	return ctx.Err()
}

func printReport(w io.Writer, r *report) {
	yes := func(goal string) string {
		met, ok := r.Goals[goal]
		switch {
		case !ok:
			return "n/a at this size"
		case met:
			return "met"
		}
		return "MISSED"
	}
	fmt.Fprintf(w, "casesync-load against %s (pid %d)\n", r.Server, r.PID)
	if x := r.Idle; x != nil {
		fmt.Fprintf(w, "\nidle: %d devices connected in %.1f s, held %s\n", x.Devices, x.ConnectSeconds, x.Hold)
		fmt.Fprintf(w, "  server RSS %.1f MiB before, %.1f MiB connected, %.1f MiB after the hold: %.1f KiB per idle device\n",
			mib(x.RSSBefore), mib(x.RSSConnected), mib(x.RSSAfter), x.RSSPerDeviceKiB)
		fmt.Fprintf(w, "  server goroutines %.0f → %.0f, heap spans in use %.1f → %.1f MiB, goroutine stacks %.1f MiB\n", x.GoroutinesBefore, x.GoroutinesAfter, x.HeapBefore/(1<<20), x.HeapAfter/(1<<20), x.StackAfter/(1<<20))
		fmt.Fprintf(w, "  CPU during the hold: %s\n", x.HoldCPU)
		fmt.Fprintf(w, "  pings answered %d (%.2f per device); dropped %d %v; connect failures %d\n", x.Pings, float64(x.Pings)/float64(max(1, x.Devices)), x.Dropped, x.DropReasons, x.ConnectFailures)
		fmt.Fprintf(w, "  goal RSS < 400 MiB with 10,000 idle devices: %s; none dropped: %s\n", yes("idle_rss_under_400MiB"), yes("idle_none_dropped"))
	}
	if x := r.Fanout; x != nil {
		fmt.Fprintf(w, "\nfanout: %d notes to %d live devices, one every %s\n", x.Changes, x.Receivers, x.Interval)
		fmt.Fprintf(w, "  latency push sent → change read: %s\n", x.Latency)
		fmt.Fprintf(w, "  last device reached per note: %s\n", x.LastDevice)
		fmt.Fprintf(w, "  pusher ack: %s\n", x.Ack)
		fmt.Fprintf(w, "  delivered %d of %d, missed %d, duplicates %d, undecodable %d, dropped %d %v (decoding: %s)\n", x.Delivered, x.Expected, x.Missed, x.Duplicates, x.DecodeErrors, x.Dropped, x.DropReasons, map[bool]string{true: "inline", false: "2 workers"}[x.InlineDecode])
		fmt.Fprintf(w, "  CPU: %s\n", x.CPU)
		fmt.Fprintf(w, "  goal p99 < 50 ms: %s; none dropped or missed: %s\n", yes("fanout_p99_under_50ms"), yes("fanout_none_dropped_or_missed"))
	}
	if x := r.Push; x != nil {
		fmt.Fprintf(w, "\npush: %d devices, batches of %d notes, for %s (live %v)\n", x.Devices, x.Batch, x.Duration, x.Live)
		fmt.Fprintf(w, "  accepted %d changes in %.1f s: %.0f changes/s\n", x.Accepted, x.Seconds, x.AcceptedPerSec)
		fmt.Fprintf(w, "  ack latency: %s\n", x.Ack)
		fmt.Fprintf(w, "  rejected %v; dropped %d %v\n", x.Rejected, x.Dropped, x.DropReasons)
		fmt.Fprintf(w, "  server: rate limit %d changes/s per device; %v\n", x.ServerRate, x.ServerCounters)
		fmt.Fprintf(w, "  CPU: %s; server %.1f µs per accepted change\n", x.CPU, x.ServerCPUPerChangeMicros)
		fmt.Fprintf(w, "  goal ≥ 20,000 changes/s: %s; none dropped: %s\n", yes("push_20000_per_s"), yes("push_none_dropped"))
	}
	for _, e := range r.Errors {
		fmt.Fprintf(w, "\nerror: %s\n", e)
	}
}

// selfPID is the load generator's own process, measured to show how much
// of the machine it took from the server.
var selfPID = os.Getpid()
