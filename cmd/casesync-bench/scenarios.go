package main

// The scenarios, orchestrated from the parent: which server runs on which
// snapshot, which replicas a worker opens, and how results are gathered.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/casesync/casesync/syncproto"
)

// runWorker runs spec in a worker process against s and returns what it
// measured, with the server's peak memory over the worker's life.
func (b *bench) runWorker(ctx context.Context, s *casesyncd, spec workerSpec, profile string) (*workerResult, int64, error) {
	spec.Addr, spec.URL, spec.Passphrase, spec.ServerPID = s.addr, s.url, passphrase, s.pid()
	if b.o.cpuprofile != "" && profile != "" {
		spec.CPUProfile = filepath.Join(b.o.cpuprofile, profile+".pprof")
	}
	in, err := json.Marshal(spec)
	if err != nil {
		return nil, 0, err
	}
	cmd := exec.CommandContext(ctx, b.self, workerCmd)
	cmd.Stdin = bytes.NewReader(in)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, os.Stderr
	cmd.SysProcAttr = childAttr()
	resetPeak(s.pid())
	if err := cmd.Run(); err != nil {
		return nil, 0, fmt.Errorf("worker %s: %w", spec.Scenario, err)
	}
	srss := peakRSS(s.pid())
	var r workerResult
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		return nil, 0, fmt.Errorf("worker %s: result: %w", spec.Scenario, err)
	}
	return &r, srss, nil
}

// fresh returns a new, empty directory for a replica.
func (b *bench) fresh(name string) string {
	return filepath.Join(b.tmp, "run", fmt.Sprintf("%s-%d", name, time.Now().UnixNano()))
}

// push: the dataset from the replicas that hold it to an empty server,
// runs times, each on a fresh copy of the accounts-only server. The last
// run's server data becomes the full server of the later scenarios.
func (b *bench) push(ctx context.Context) error {
	sc := b.res.scenario("push", "all records from per-author replicas to an empty server")
	devs := []string{devLeadImport}
	for _, w := range b.ds.Workers() {
		devs = append(devs, importDev(w))
	}
	for r := range b.o.runs {
		data := filepath.Join(b.tmp, "srv", fmt.Sprintf("push-%d", r))
		if err := copyDir(b.accountsDir, data); err != nil {
			return err
		}
		s, err := b.start(ctx, data)
		if err != nil {
			return err
		}
		spec := workerSpec{Scenario: "push"}
		for _, d := range devs {
			dir := b.fresh(d)
			if err := copyDir(b.snaps[d], dir); err != nil {
				return err
			}
			spec.Devices = append(spec.Devices, devSpec{Dir: dir})
		}
		res, srss, err := b.runWorker(ctx, s, spec, fmt.Sprintf("push-%d", r))
		if serr := b.stopServer(s); err == nil {
			err = serr
		}
		if err != nil {
			return err
		}
		want := len(b.ds.Cases) + len(b.ds.Notes)
		if res.Pushed != want || res.Rejected != 0 {
			return fmt.Errorf("push run %d: pushed %d of %d, rejected %d", r, res.Pushed, want, res.Rejected)
		}
		sc.add(res, srss, res.Pushed)
		b.log.Info("push", "run", r, "ms", res.WallMS[0], "cases_ms", res.WallMS[1], "notes_ms", res.WallMS[2],
			"pulled_too", res.Pulled, "in", res.BytesIn, "out", res.BytesOut, "cpu_client_ms", res.CPUMS, "cpu_server_ms", res.ServerCPUMS)
		for _, d := range spec.Devices {
			os.RemoveAll(d.Dir)
		}
		if r < b.o.runs-1 {
			os.RemoveAll(data)
		} else {
			b.fullDir = data
		}
	}
	return nil
}

// pullRuns measures runs cold pulls of a fresh replica of device dev.
func (b *bench) pullRuns(ctx context.Context, s *casesyncd, sc *scenario, dev, profile string) error {
	for r := range b.o.runs {
		dir := b.fresh(dev)
		spec := workerSpec{Scenario: "pull", Devices: []devSpec{{Dir: dir, Token: b.tokens[dev]}}}
		res, srss, err := b.runWorker(ctx, s, spec, fmt.Sprintf("%s-%d", profile, r))
		if err != nil {
			return err
		}
		os.RemoveAll(dir)
		sc.add(res, srss, res.Pulled)
		b.log.Info(sc.Name, "run", r, "ms", res.WallMS[0], "pulled", res.Pulled, "in", res.BytesIn, "client_rss", res.PeakRSS)
	}
	return nil
}

// pulls starts the full server (it stays up for steady and fanout) and
// measures the lead's cold pull and the caseworker's that scale compares.
func (b *bench) pulls(ctx context.Context) error {
	s, err := b.start(ctx, b.fullDir)
	if err != nil {
		return err
	}
	b.full = s
	if err := b.pullRuns(ctx, s, b.res.scenario("cold pull", "a fresh replica of the lead pulls everything"), devLeadPull, "pull-lead"); err != nil {
		return err
	}
	return b.pullRuns(ctx, s, b.res.scenario("cold pull 1x (caseworker)", "the caseworker scale uses, on the 1× server"), devPuller, "pull-1x")
}

// steady: two workers' laptops with their whole scope, then delta, no-op
// sync and local writes on the first.
func (b *bench) steady(ctx context.Context) error {
	s := b.full
	ws := b.ds.Workers()
	a, bw := ws[0], ws[1]
	dirA, dirB := b.fresh(laptopDev(a)), b.fresh(laptopDev(bw))
	for _, d := range []devSpec{{Dir: dirA, Token: b.tokens[laptopDev(a)]}, {Dir: dirB, Token: b.tokens[laptopDev(bw)]}} {
		if _, _, err := b.runWorker(ctx, s, workerSpec{Scenario: "pull", Devices: []devSpec{d}}, ""); err != nil {
			return err
		}
	}
	delta := b.res.scenario("delta", fmt.Sprintf("%d local and %d remote edits, one sync round", b.o.edits, b.o.edits))
	for r := range b.o.runs {
		if _, _, err := b.runWorker(ctx, s, workerSpec{Scenario: "edit", Devices: []devSpec{{Dir: dirB}}, Edits: b.edits(bw, r)}, ""); err != nil {
			return err
		}
		res, srss, err := b.runWorker(ctx, s, workerSpec{Scenario: "delta", Devices: []devSpec{{Dir: dirA}}, Edits: b.edits(a, r)}, fmt.Sprintf("delta-%d", r))
		if err != nil {
			return err
		}
		if res.Pushed != b.o.edits || res.Pulled < b.o.edits {
			return fmt.Errorf("delta run %d: pushed %d, pulled %d, want %d each", r, res.Pushed, res.Pulled, b.o.edits)
		}
		delta.add(res, srss, res.Pushed+res.Pulled)
		b.log.Info("delta", "run", r, "ms", res.WallMS[0], "in", res.BytesIn, "out", res.BytesOut)
	}

	// One worker: each round is a run. A round costs what the replica's
	// size makes it cost, so rounds, not workers, are what to repeat.
	noop := b.res.scenario("no-op sync", "nothing changed, one round")
	res, srss, err := b.runWorker(ctx, s, workerSpec{Scenario: "noop", Devices: []devSpec{{Dir: dirA}}, Rounds: b.o.runs}, "noop")
	if err != nil {
		return err
	}
	noop.addSamples(res, srss, len(res.WallMS))
	noop.RunsMS = res.WallMS
	b.log.Info("no-op", "median_ms", median(res.WallMS), "tail_ms", median(res.TailMS))

	write := b.res.scenario("local write", "AddEntry, durable (fsync) on the device")
	for r := range b.o.runs {
		res, srss, err := b.runWorker(ctx, s, workerSpec{Scenario: "write", Devices: []devSpec{{Dir: dirA}}, Notes: b.notes(a, r)}, fmt.Sprintf("write-%d", r))
		if err != nil {
			return err
		}
		write.addSamples(res, srss, len(res.WallMS))
		b.log.Info("local write", "run", r, "p50_ms", pct(res.WallMS, 50), "p99_ms", pct(res.WallMS, 99))
	}
	return nil
}

// edits returns run r's edits by worker w: half on her notes' text, half
// on her cases' status and next action.
func (b *bench) edits(w string, r int) []editSpec {
	var notes, cases []int
	for i, n := range b.ds.Notes {
		if n.Author == w {
			notes = append(notes, i)
		}
	}
	for i, c := range b.ds.Cases {
		if c.Owner == w {
			cases = append(cases, i)
		}
	}
	half := b.o.edits / 2
	var out []editSpec
	for i := range half {
		n := &b.ds.Notes[notes[(r*half+i)%len(notes)]]
		out = append(out, editSpec{ID: b.ids[n.ID], Fields: map[string]any{
			syncproto.FieldText: fmt.Sprintf("%s Aanvulling %d: telefonisch nagebeld.", n.Text, r)}})
	}
	for i := range b.o.edits - half {
		c := &b.ds.Cases[cases[(r*half+i)%len(cases)]]
		out = append(out, editSpec{Case: true, ID: b.ids[c.ID], Fields: map[string]any{
			syncproto.FieldStatus:     syncproto.Statuses[(r+i)%2],
			syncproto.FieldNextAction: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).AddDate(0, 0, r*7+i).Format(time.DateOnly)}})
	}
	return out
}

// notes returns run r's new notes by worker w on her cases, with the
// dataset's texts.
func (b *bench) notes(w string, r int) []noteSpec {
	var cases []string
	for _, c := range b.ds.Cases {
		if c.Owner == w {
			cases = append(cases, b.ids[c.ID])
		}
	}
	out := make([]noteSpec, 0, b.o.writes)
	for i := range b.o.writes {
		src := &b.ds.Notes[(r*b.o.writes+i)*7%len(b.ds.Notes)]
		out = append(out, noteSpec{CaseID: cases[i%len(cases)], Fields: map[string]any{
			syncproto.FieldKind: syncproto.KindVisit, syncproto.FieldText: src.Text,
			syncproto.FieldOccurredAt: "2026-03-02", "duration_min": src.DurationMin}})
	}
	return out
}

// fanoutRun: one change to many connected replicas of one area.
func (b *bench) fanoutRun(ctx context.Context) error {
	defer func() { b.stopServer(b.full) }()
	var caseID string
	for _, c := range b.ds.Cases {
		if c.Area == b.fanArea {
			caseID = b.ids[c.ID]
			break
		}
	}
	sc := b.res.scenario("fan-out", fmt.Sprintf("one change to %d live replicas in %s", b.o.fanout, b.fanArea))
	names := []string{devFanWriter}
	for i := range b.o.fanout {
		names = append(names, fanDev(i))
	}
	// One worker: fifty replicas take a minute to unlock and fill, and each
	// of its rounds is a run (one change reaching every replica).
	spec := workerSpec{Scenario: "fanout", CaseID: caseID, Rounds: max(b.o.rounds, b.o.runs)}
	for _, n := range names {
		spec.Devices = append(spec.Devices, devSpec{Dir: b.fresh(n), Token: b.tokens[n]})
	}
	res, srss, err := b.runWorker(ctx, b.full, spec, "fanout")
	if err != nil {
		return err
	}
	for _, d := range spec.Devices {
		os.RemoveAll(d.Dir)
	}
	sc.addSamples(res, srss, spec.Rounds)
	b.log.Info("fan-out", "p50_ms", pct(res.WallMS, 50), "p99_ms", pct(res.WallMS, 99),
		"wire_p99_ms", pct(res.WireMS, 99), "missed", res.Missed)
	return nil
}

// scalePull: the caseworker's cold pull when the server holds scale× the
// data, the rest in other areas.
func (b *bench) scalePull(ctx context.Context) error {
	if b.o.scale < 2 {
		return nil
	}
	s, err := b.start(ctx, b.scaleDir)
	if err != nil {
		return err
	}
	defer b.stopServer(s)
	name := fmt.Sprintf("cold pull %dx (caseworker)", b.o.scale)
	return b.pullRuns(ctx, s, b.res.scenario(name, fmt.Sprintf("the same caseworker, the server holding %d× the data", b.o.scale)), devPuller, fmt.Sprintf("pull-%dx", b.o.scale))
}
