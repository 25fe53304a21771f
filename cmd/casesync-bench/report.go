package main

// Results: per-scenario figures gathered from workers, the table of
// figure, target and machine limit, as Markdown or JSON.

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
)

// scenario gathers one scenario's runs.
type scenario struct {
	Name      string    `json:"name"`
	What      string    `json:"what"`
	RunsMS    []float64 `json:"runs_ms"` // per run: its wall time, or its median sample
	Samples   []float64 `json:"-"`       // every sample, for percentiles
	Wire      []float64 `json:"-"`       // fan-out: to the first bytes on the socket
	Records   []int     `json:"records"`
	BytesIn   []int64   `json:"bytes_in"`  // server → client(s), per run (or per round)
	BytesOut  []int64   `json:"bytes_out"` // client(s) → server
	OpenMS    []float64 `json:"open_ms"`   // each client.Open: the Argon2id unlock
	Missed    int       `json:"missed,omitempty"`
	TailMS    []float64 `json:"tail_ms,omitempty"` // each sync's closing work (workerResult.TailMS)
	PreRSS    int64     `json:"pre_tail_peak_rss,omitempty"`
	ClientCPU []float64 `json:"client_cpu_ms"` // per run, the measured part
	ServerCPU []float64 `json:"server_cpu_ms"` // per run, the worker's whole life
	AnonRSS   int64     `json:"anon_rss,omitempty"`
	FileRSS   int64     `json:"file_rss,omitempty"`
	ServerRSS int64     `json:"server_peak_rss"` // the most over the runs
	ClientRSS int64     `json:"client_peak_rss"` // the measured part's, the most over the runs
	OpenRSS   int64     `json:"open_peak_rss"`   // the worker's peak while opening (Argon2id)

	WallMS  float64 `json:"wall_ms"` // median of RunsMS
	P50MS   float64 `json:"p50_ms,omitempty"`
	P99MS   float64 `json:"p99_ms,omitempty"`
	WireP50 float64 `json:"wire_p50_ms,omitempty"`
	WireP99 float64 `json:"wire_p99_ms,omitempty"`
	RecPerS float64 `json:"records_per_s,omitempty"`
}

func (r *report) scenario(name, what string) *scenario {
	s := &scenario{Name: name, What: what}
	r.Scenarios = append(r.Scenarios, s)
	return s
}

func (r *report) find(name string) *scenario {
	for _, s := range r.Scenarios {
		if s.Name == name {
			return s
		}
	}
	return nil
}

func (s *scenario) common(res *workerResult, srss int64) {
	s.OpenMS = append(s.OpenMS, res.OpenMS...)
	s.ServerRSS = max(s.ServerRSS, srss)
	s.ClientRSS = max(s.ClientRSS, res.PeakRSS)
	s.OpenRSS = max(s.OpenRSS, res.OpenPeakRSS)
	s.TailMS = append(s.TailMS, res.TailMS...)
	s.PreRSS = max(s.PreRSS, res.PrePeakRSS)
	s.AnonRSS = max(s.AnonRSS, res.AnonRSS)
	s.FileRSS = max(s.FileRSS, res.FileRSS)
}

// add records a run that is one measured operation.
func (s *scenario) add(res *workerResult, srss int64, records int) {
	s.common(res, srss)
	s.ClientCPU = append(s.ClientCPU, res.CPUMS)
	s.ServerCPU = append(s.ServerCPU, res.ServerCPUMS)
	s.RunsMS = append(s.RunsMS, res.WallMS[0])
	s.Records = append(s.Records, records)
	s.BytesIn = append(s.BytesIn, res.BytesIn)
	s.BytesOut = append(s.BytesOut, res.BytesOut)
}

// addSamples records a run of many samples; its bytes and CPU times are
// divided among per operations.
func (s *scenario) addSamples(res *workerResult, srss int64, per int) {
	s.common(res, srss)
	s.RunsMS = append(s.RunsMS, median(res.WallMS))
	s.Samples = append(s.Samples, res.WallMS...)
	s.Wire = append(s.Wire, res.WireMS...)
	s.Missed += res.Missed
	per = max(1, per)
	s.ClientCPU = append(s.ClientCPU, res.CPUMS/float64(per))
	s.ServerCPU = append(s.ServerCPU, res.ServerCPUMS/float64(per))
	s.BytesIn = append(s.BytesIn, res.BytesIn/int64(per))
	s.BytesOut = append(s.BytesOut, res.BytesOut/int64(per))
}

func (s *scenario) summarize() {
	s.WallMS = median(s.RunsMS)
	if len(s.Samples) > 0 {
		s.P50MS, s.P99MS = pct(s.Samples, 50), pct(s.Samples, 99)
	}
	if len(s.Wire) > 0 {
		s.WireP50, s.WireP99 = pct(s.Wire, 50), pct(s.Wire, 99)
	}
	if len(s.Records) > 0 && s.WallMS > 0 {
		s.RecPerS = float64(medianInt(s.Records)) / (s.WallMS / 1e3)
	}
}

func (s *scenario) bytes() (in, out int64) { return medianI64(s.BytesIn), medianI64(s.BytesOut) }

// report is everything the bench prints.
type report struct {
	Dataset       string      `json:"dataset"`
	JSONBytes     int64       `json:"json_bytes"`
	Runs          int         `json:"runs"`
	LoadAvgBefore string      `json:"loadavg_before"`
	LoadAvgAfter  string      `json:"loadavg_after"`
	Table         []row       `json:"table"`
	Scenarios     []*scenario `json:"scenarios"`
	Limits        limits      `json:"limits"`
}

// row is one line of the summary: a figure, its target and the machine's
// limit for the same work.
type row struct {
	Figure   string  `json:"figure"`
	Value    float64 `json:"value"`
	Unit     string  `json:"unit"`
	Measured string  `json:"measured"`
	Target   string  `json:"target"`
	Limit    string  `json:"limit"`
	Met      *bool   `json:"met,omitempty"`
}

func yes(b bool) *bool { return &b }

func (b *bench) table() []row {
	r, l := &b.res, &b.res.Limits
	mib := func(n int64) string { return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20)) }
	pctOf := func(n int64) float64 { return 100 * float64(n) / float64(r.JSONBytes) }
	var rows []row
	wall := func(name, label string, target float64, limit float64, limitNote string) {
		s := r.find(name)
		if s == nil {
			return
		}
		m := fmt.Sprintf("%.1f ms", s.WallMS)
		if s.RecPerS > 0 {
			m += fmt.Sprintf(" (%.0f rec/s)", s.RecPerS)
		}
		rows = append(rows, row{Figure: label, Value: s.WallMS, Unit: "ms", Measured: m,
			Target: fmt.Sprintf("≤ %g ms", target), Limit: fmt.Sprintf("%.1f ms %s", limit, limitNote), Met: yes(s.WallMS <= target)})
	}
	wire := func(name, label string) {
		s := r.find(name)
		if s == nil {
			return
		}
		in, out := s.bytes()
		rows = append(rows, row{Figure: label, Value: pctOf(in + out), Unit: "% of JSON",
			Measured: fmt.Sprintf("%.1f%% (in %.2f MB, out %.2f MB)", pctOf(in+out), float64(in)/1e6, float64(out)/1e6),
			Target:   "≤ 25%", Limit: fmt.Sprintf("%.1f%% (zstd of the JSON, 500-record frames)", pctOf(l.ZstdBytes)), Met: yes(pctOf(in+out) <= 25)})
	}
	recs := len(b.ds.Cases) + len(b.ds.Notes)
	wall("push", fmt.Sprintf("push, %d records", recs), 500, l.bulk(recs), "(serial: zstd enc+loopback+zstd dec+JSON dec+bbolt load)")
	wire("push", "push: bytes on the wire")
	wall("cold pull", "cold pull (lead), "+fmt.Sprint(recs)+" records", 350, l.bulk(recs), "(same stages)")
	wire("cold pull", "cold pull: bytes on the wire")
	if s := r.find("cold pull"); s != nil {
		rows = append(rows, row{Figure: "client peak RSS during the cold pull", Value: float64(s.ClientRSS) / (1 << 20), Unit: "MiB",
			Measured: mib(s.ClientRSS) + fmt.Sprintf(" (%s before the round's closing scan: heap ≤ %s, mapped replica ≤ %s; Open before it: %s, Argon2id)",
				mib(s.PreRSS), mib(s.AnonRSS), mib(s.FileRSS), mib(s.OpenRSS)),
			Target: "≤ 100 MiB", Limit: "— (the work needs one ~1 MiB message at a time; Argon2id's 64 MiB is Open's only)", Met: yes(s.ClientRSS <= 100<<20)})
		rows = append(rows, row{Figure: "client.Open, DefaultKDF (paid once per Open)", Value: median(s.OpenMS), Unit: "ms",
			Measured: fmt.Sprintf("%.0f ms", median(s.OpenMS)), Target: "—", Limit: "Argon2id t=3, 64 MiB, 4 lanes"})
	}
	delta := 2 * float64(b.o.edits)
	wall("delta", fmt.Sprintf("delta, %d local + %d remote edits", b.o.edits, b.o.edits), 20,
		l.bulk(int(delta))+2*l.FsyncP50MS+l.ConnectMS+3*l.RTTMS, "(those stages + 2 fsyncs + connect + 3 RTT)")
	wall("no-op sync", "no-op sync", 5, l.ConnectMS+2*l.RTTMS, "(connect + 2 RTT)")
	if s := r.find("local write"); s != nil {
		rows = append(rows, row{Figure: "local write (AddEntry, fsync) p50", Value: s.P50MS, Unit: "ms", Measured: fmt.Sprintf("%.2f ms", s.P50MS),
			Target: "≤ 0.5 ms", Limit: fmt.Sprintf("%.2f ms (one small fsync'd bbolt tx)", l.FsyncP50MS), Met: yes(s.P50MS <= 0.5)})
		rows = append(rows, row{Figure: "local write p99", Value: s.P99MS, Unit: "ms", Measured: fmt.Sprintf("%.2f ms", s.P99MS),
			Target: "—", Limit: fmt.Sprintf("%.2f ms", l.FsyncP99MS)})
	}
	if s := r.find("fan-out"); s != nil {
		lim := l.RTTMS + 2*l.FsyncP50MS
		rows = append(rows, row{Figure: fmt.Sprintf("fan-out to %d replicas p50", b.o.fanout), Value: s.P50MS, Unit: "ms",
			Measured: fmt.Sprintf("%.1f ms (first bytes %.1f ms)", s.P50MS, s.WireP50), Target: "—", Limit: fmt.Sprintf("%.2f ms (RTT + 2 fsyncs)", lim)})
		rows = append(rows, row{Figure: fmt.Sprintf("fan-out to %d replicas p99", b.o.fanout), Value: s.P99MS, Unit: "ms",
			Measured: fmt.Sprintf("%.1f ms (first bytes %.1f ms, missed %d)", s.P99MS, s.WireP99, s.Missed), Target: "≤ 20 ms",
			Limit: fmt.Sprintf("%.2f ms", l.RTTMS+2*l.FsyncP99MS), Met: yes(s.P99MS <= 20 && s.Missed == 0)})
	}
	one, big := r.find("cold pull 1x (caseworker)"), r.find(fmt.Sprintf("cold pull %dx (caseworker)", b.o.scale))
	if one != nil && big != nil && one.WallMS > 0 {
		ratio := big.WallMS / one.WallMS
		rows = append(rows, row{Figure: fmt.Sprintf("scale: caseworker's cold pull, %d× data / 1×", b.o.scale), Value: ratio, Unit: "×",
			Measured: fmt.Sprintf("%.2f× (%.0f ms vs %.0f ms)", ratio, big.WallMS, one.WallMS), Target: "≤ 1.20×", Limit: "1.00× (O(scope))", Met: yes(ratio <= 1.2)})
	}
	return rows
}

// print writes the report, as JSON with --json.
func (b *bench) print(w io.Writer) error {
	r := &b.res
	r.Dataset, r.JSONBytes, r.Runs = b.o.dataset, b.ds.JSONBytes, b.o.runs
	for _, s := range r.Scenarios {
		s.summarize()
	}
	r.Table = b.table()
	if b.o.json {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	l := &r.Limits
	fmt.Fprintf(w, "\n## casesync-bench: %s (%d bytes of JSON), median of %d runs\n\n", r.Dataset, r.JSONBytes, r.Runs)
	fmt.Fprintf(w, "Machine: %s, %d cores, Linux %s, %s. Load average before: %s; after: %s.\n\n", l.CPU, l.Cores, l.Kernel, l.GoVersion, r.LoadAvgBefore, r.LoadAvgAfter)
	fmt.Fprintln(w, "| figure | measured | target | met | machine limit |")
	fmt.Fprintln(w, "|---|---|---|---|---|")
	for _, x := range r.Table {
		met := ""
		if x.Met != nil {
			met = map[bool]string{true: "yes", false: "**no**"}[*x.Met]
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", x.Figure, x.Measured, x.Target, met, x.Limit)
	}
	fmt.Fprintln(w, "\n| scenario | runs (ms) | median | records/s | wire in / out | server peak RSS | client peak RSS (before the closing work) | closing work, median | CPU client / server | Open (KDF) |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|")
	for _, s := range r.Scenarios {
		runs := make([]string, len(s.RunsMS))
		for i, v := range s.RunsMS {
			runs[i] = fmt.Sprintf("%.1f", v)
		}
		in, out := s.bytes()
		med := fmt.Sprintf("%.1f ms", s.WallMS)
		if len(s.Samples) > 0 {
			med = fmt.Sprintf("p50 %.2f / p99 %.2f ms", s.P50MS, s.P99MS)
		}
		tail := "—"
		if len(s.TailMS) > 0 {
			tail = fmt.Sprintf("%.1f ms", median(s.TailMS))
		}
		fmt.Fprintf(w, "| %s: %s | %s | %s | %.0f | %s / %s | %.0f MiB | %.0f MiB (%.0f MiB) | %s | %s / %s ms | %.0f ms |\n", s.Name, s.What, strings.Join(runs, ", "), med,
			s.RecPerS, human(in), human(out), float64(s.ServerRSS)/(1<<20), float64(s.ClientRSS)/(1<<20), float64(s.PreRSS)/(1<<20), tail,
			cpuMS(median(s.ClientCPU)), cpuMS(median(s.ServerCPU)), median(s.OpenMS))
	}
	fmt.Fprintf(w, "\nLimits: bbolt bulk load %.0f ms (%d records, 1,000 per fsync'd tx); one small fsync'd tx p50 %.2f / p99 %.2f ms; "+
		"zstd encode %.0f ms, decode %.0f ms (%.1f MB → %.2f MB); JSON decode %.0f ms (%.0f MB/s); loopback %.0f MB/s, RTT %.3f ms, connect %.3f ms.\n",
		l.BoltLoadMS, l.Records, l.FsyncP50MS, l.FsyncP99MS, l.ZstdEncMS, l.ZstdDecMS, float64(l.JSONBytes)/1e6, float64(l.ZstdBytes)/1e6,
		l.JSONDecMS, float64(l.JSONBytes)/1e6/(l.JSONDecMS/1e3), l.LoopMBps, l.RTTMS, l.ConnectMS)
	return nil
}

// cpuMS formats a CPU time; per-operation times are often below 1 ms.
func cpuMS(v float64) string {
	if v < 10 {
		return fmt.Sprintf("%.2f", v)
	}
	return fmt.Sprintf("%.0f", v)
}

func human(n int64) string {
	switch {
	case n >= 1e6:
		return fmt.Sprintf("%.2f MB", float64(n)/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.1f kB", float64(n)/1e3)
	}
	return fmt.Sprintf("%d B", n)
}

func medianInt(xs []int) int {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[(len(s)-1)/2]
}

func medianI64(xs []int64) int64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[(len(s)-1)/2]
}
