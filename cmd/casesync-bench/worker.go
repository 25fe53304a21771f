package main

// The client side of each scenario runs in a worker: this same binary,
// re-executed with the hidden command "__worker", reading a workerSpec on
// stdin and writing a workerResult on stdout. A process of its own is the
// only way to read a client's peak memory in isolation (VmHWM is per
// process), and it keeps one scenario's heap, page cache of replicas and
// goroutines out of the next one's figures.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"time"

	"github.com/casesync/casesync/client"
	"github.com/casesync/casesync/syncproto"
)

// workerCmd is the hidden command that runs a worker.
const workerCmd = "__worker"

// devSpec is one replica a worker opens.
type devSpec struct {
	Dir   string `json:"dir"`
	Token string `json:"token,omitempty"` // enroll with it after opening, if set
}

// editSpec is one local write: a case's or an entry's fields.
type editSpec struct {
	Case   bool           `json:"case"` // a case (SetCase) or an entry (EditEntry)
	ID     string         `json:"id"`
	Fields map[string]any `json:"fields"`
}

// noteSpec is a new entry to capture.
type noteSpec struct {
	CaseID string         `json:"case_id"`
	Fields map[string]any `json:"fields"`
}

// workerSpec says what a worker does.
type workerSpec struct {
	Scenario   string     `json:"scenario"`
	Addr       string     `json:"addr"` // the server, host:port
	URL        string     `json:"url"`  // the server's base URL, for Enroll
	Passphrase string     `json:"passphrase"`
	Devices    []devSpec  `json:"devices"`
	Edits      []editSpec `json:"edits,omitempty"`
	Notes      []noteSpec `json:"notes,omitempty"`
	Rounds     int        `json:"rounds,omitempty"`
	CaseID     string     `json:"case_id,omitempty"` // fan-out: the case the writer changes
	CPUProfile string     `json:"cpuprofile,omitempty"`
	ServerPID  int        `json:"server_pid,omitempty"` // to read the server's CPU time over the measured part
}

// workerResult is what a worker measured.
type workerResult struct {
	OpenMS      []float64 `json:"open_ms"`       // each client.Open: the Argon2id unlock (DefaultKDF)
	OpenPeakRSS int64     `json:"open_peak_rss"` // VmHWM after opening, before the reset
	WallMS      []float64 `json:"wall_ms"`       // the measured operation(s)
	WireMS      []float64 `json:"wire_ms,omitempty"`
	Pushed      int       `json:"pushed"`
	Pulled      int       `json:"pulled"`
	Rejected    int       `json:"rejected"`
	Missed      int       `json:"missed,omitempty"`
	// TailMS is, for each measured sync, the time from its last progress
	// report (the last message handled: caught_up or the last ack) to
	// Sync's return: the round's closing work (recordOutcome's fsync, the
	// conflict count over the whole replica, the close). PrePeakRSS is
	// the peak at that last report, before the closing work.
	TailMS     []float64 `json:"tail_ms,omitempty"`
	PrePeakRSS int64     `json:"pre_tail_peak_rss,omitempty"`
	// AnonRSS and FileRSS are the most anonymous (Go heap and runtime) and
	// file-backed (the replica's mmapped bbolt pages) resident memory seen
	// at any progress report: what the peak is made of.
	AnonRSS     int64   `json:"anon_rss,omitempty"`
	FileRSS     int64   `json:"file_rss,omitempty"`
	BytesIn     int64   `json:"bytes_in"`
	BytesOut    int64   `json:"bytes_out"`
	PeakRSS     int64   `json:"peak_rss"`      // VmHWM of the measured part
	CPUMS       float64 `json:"cpu_ms"`        // this process's CPU time in the measured part
	ServerCPUMS float64 `json:"server_cpu_ms"` // the server's, over the measured part
}

// workerMain runs a worker and returns the process's exit code.
func workerMain() int {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	var spec workerSpec
	if err := json.NewDecoder(os.Stdin).Decode(&spec); err != nil {
		log.Error("worker: read spec", "err", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	w := &worker{spec: spec, wire: newWire(spec.Addr), log: log.With("scenario", spec.Scenario)}
	defer w.closeAll()
	res, err := w.run(ctx)
	if err != nil {
		w.log.Error("worker failed", "err", err)
		return 1
	}
	res.BytesIn, res.BytesOut = w.wire.counts()
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		return 1
	}
	return 0
}

type worker struct {
	spec    workerSpec
	wire    *wire
	log     *slog.Logger
	clients []*client.Client
	res     workerResult
	mu      sync.Mutex // guards res.TailMS and PrePeakRSS for concurrent syncs
}

// sync runs one measured Sync of c, noting its tail (see TailMS).
func (w *worker) sync(ctx context.Context, c *client.Client) (client.SyncResult, error) {
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	r, err := c.Sync(ctx, &client.SyncOptions{Progress: func(client.Progress) {
		last.Store(time.Now().UnixNano())
		st := procStatus(0)
		w.mu.Lock()
		w.res.PrePeakRSS = max(w.res.PrePeakRSS, st["VmHWM"])
		w.res.AnonRSS = max(w.res.AnonRSS, st["RssAnon"])
		w.res.FileRSS = max(w.res.FileRSS, st["RssFile"])
		w.mu.Unlock()
	}})
	end := time.Now().UnixNano()
	w.mu.Lock()
	w.res.TailMS = append(w.res.TailMS, ms(time.Duration(end-last.Load())))
	w.mu.Unlock()
	return r, err
}

func (w *worker) closeAll() {
	for _, c := range w.clients {
		c.Close()
	}
}

// open opens (and, with a token, enrolls) the replicas in specs. dial, if
// set, replaces the counting dialer for device i.
func (w *worker) open(ctx context.Context, specs []devSpec, dial func(i int) func(context.Context, string, string) (netConn, error)) ([]*client.Client, error) {
	var out []*client.Client
	for i, d := range specs {
		o := &client.Options{Passphrase: w.spec.Passphrase, NetDial: w.wire.dial, KDF: client.DefaultKDF}
		if dial != nil {
			o.NetDial = dial(i)
		}
		t := time.Now()
		c, err := client.Open(d.Dir, o)
		if err != nil {
			return nil, fmt.Errorf("open %s: %w", d.Dir, err)
		}
		w.res.OpenMS = append(w.res.OpenMS, ms(time.Since(t)))
		w.clients = append(w.clients, c)
		out = append(out, c)
		if d.Token != "" {
			if err := c.Enroll(ctx, w.spec.URL, d.Token); err != nil {
				return nil, fmt.Errorf("enroll %s: %w", d.Dir, err)
			}
		}
	}
	w.res.OpenPeakRSS = peakRSS(0)
	return out, nil
}

// measure starts the measured part: a fresh peak, zero counters and, if
// asked, a CPU profile. The returned function ends it.
func (w *worker) measure() (stop func()) {
	resetPeak(0)
	w.wire.reset()
	cpu, scpu := cpuTime(0), cpuTime(w.spec.ServerPID)
	var f *os.File
	if w.spec.CPUProfile != "" {
		var err error
		if f, err = os.Create(w.spec.CPUProfile); err == nil {
			if err := pprof.StartCPUProfile(f); err != nil {
				f.Close()
				f = nil
			}
		}
	}
	return func() {
		if f != nil {
			pprof.StopCPUProfile()
			f.Close()
		}
		w.res.PeakRSS = peakRSS(0)
		w.res.CPUMS = cpuTime(0) - cpu
		if w.spec.ServerPID > 0 {
			w.res.ServerCPUMS = cpuTime(w.spec.ServerPID) - scpu
		}
	}
}

func (w *worker) run(ctx context.Context) (*workerResult, error) {
	var err error
	switch w.spec.Scenario {
	case "push":
		err = w.push(ctx)
	case "pull":
		err = w.pull(ctx)
	case "edit":
		err = w.edit(ctx)
	case "delta":
		err = w.delta(ctx)
	case "noop":
		err = w.noop(ctx)
	case "write":
		err = w.write(ctx)
	case "fanout":
		err = w.fanout(ctx)
	default:
		err = fmt.Errorf("unknown scenario %q", w.spec.Scenario)
	}
	return &w.res, err
}

func (w *worker) add(r client.SyncResult) {
	w.res.Pushed += r.Pushed
	w.res.Pulled += r.Pulled
	w.res.Rejected += r.Rejected + r.Deferred
}

// push: the first replica pushes its outbox (the cases), then the others
// (the notes, one replica per author) push theirs at once, as a team
// importing its caseload would. Notes need their cases on the server first.
func (w *worker) push(ctx context.Context) error {
	cs, err := w.open(ctx, w.spec.Devices, nil)
	if err != nil {
		return err
	}
	stop := w.measure()
	t := time.Now()
	r, err := w.sync(ctx, cs[0])
	if err != nil {
		return fmt.Errorf("push cases: %w", err)
	}
	w.add(r)
	cases := time.Since(t)
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for _, c := range cs[1:] {
		wg.Go(func() {
			r, err := w.sync(ctx, c)
			mu.Lock()
			defer mu.Unlock()
			errs = append(errs, err)
			w.add(r)
		})
	}
	wg.Wait()
	total := time.Since(t)
	w.res.WallMS = []float64{ms(total), ms(cases), ms(total - cases)}
	stop()
	return errors.Join(errs...)
}

// pull: a fresh replica enrolls and pulls its whole scope.
func (w *worker) pull(ctx context.Context) error {
	cs, err := w.open(ctx, w.spec.Devices, nil)
	if err != nil {
		return err
	}
	stop := w.measure()
	t := time.Now()
	r, err := w.sync(ctx, cs[0])
	w.res.WallMS = []float64{ms(time.Since(t))}
	stop()
	w.add(r)
	return err
}

// apply makes the spec's edits locally (each one fsync'd).
func (w *worker) apply(ctx context.Context, c *client.Client) error {
	for _, e := range w.spec.Edits {
		var err error
		if e.Case {
			err = c.SetCase(ctx, e.ID, e.Fields)
		} else {
			err = c.EditEntry(ctx, e.ID, e.Fields)
		}
		if err != nil {
			return fmt.Errorf("edit %s: %w", e.ID, err)
		}
	}
	return nil
}

// edit: another device's edits reach the server (the remote side of delta).
func (w *worker) edit(ctx context.Context) error {
	cs, err := w.open(ctx, w.spec.Devices, nil)
	if err != nil {
		return err
	}
	if err := w.apply(ctx, cs[0]); err != nil {
		return err
	}
	r, err := cs[0].Sync(ctx, nil)
	w.add(r)
	return err
}

// delta: local edits are made (not measured), then one sync round pushes
// them and pulls the remote ones.
func (w *worker) delta(ctx context.Context) error {
	cs, err := w.open(ctx, w.spec.Devices, nil)
	if err != nil {
		return err
	}
	if err := w.apply(ctx, cs[0]); err != nil {
		return err
	}
	stop := w.measure()
	t := time.Now()
	r, err := w.sync(ctx, cs[0])
	w.res.WallMS = []float64{ms(time.Since(t))}
	stop()
	w.add(r)
	return err
}

// noop: rounds of syncing with nothing to do, after one to settle.
func (w *worker) noop(ctx context.Context) error {
	cs, err := w.open(ctx, w.spec.Devices, nil)
	if err != nil {
		return err
	}
	if _, err := cs[0].Sync(ctx, nil); err != nil {
		return err
	}
	stop := w.measure()
	for range max(1, w.spec.Rounds) {
		t := time.Now()
		r, err := w.sync(ctx, cs[0])
		w.res.WallMS = append(w.res.WallMS, ms(time.Since(t)))
		if err != nil {
			return err
		}
		w.add(r)
	}
	stop()
	return nil
}

// write: notes captured on the device, each durable (fsync'd) when
// AddEntry returns, offline.
func (w *worker) write(ctx context.Context) error {
	cs, err := w.open(ctx, w.spec.Devices, nil)
	if err != nil {
		return err
	}
	stop := w.measure()
	for _, n := range w.spec.Notes {
		t := time.Now()
		if _, err := cs[0].AddEntry(ctx, n.CaseID, n.Fields); err != nil {
			return fmt.Errorf("add entry: %w", err)
		}
		w.res.WallMS = append(w.res.WallMS, ms(time.Since(t)))
	}
	stop()
	return nil
}

// hasKey reports whether ev is a remote change of k.
func hasKey(ev client.Event, k syncproto.Key) bool {
	if !ev.Remote {
		return false
	}
	for _, x := range ev.Keys {
		if x == k {
			return true
		}
	}
	return false
}
