package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The server is measured from outside, as an operator would see it: its
// resident memory and CPU time from /proc, and its own Prometheus metrics.
// Nothing here needs the server's cooperation beyond GET /metrics.

// rssBytes returns the resident set size (VmRSS) of process pid.
func rssBytes(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parse VmRSS %q: %w", v, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat.
// It is 100 on every Linux architecture Go supports.
const clockTicks = 100

// cpuTime returns the user plus system CPU time process pid has used.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may contain spaces: fields count from
	// the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("unexpected /proc stat format")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, errors.New("unexpected /proc stat format")
	}
	// After ')': state(3) ... utime is field 14, stime field 15 of the line.
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// machineCPU returns the CPU time every core of the machine has spent busy
// (not idle, not waiting for I/O) since boot, and the number of cores. The
// load test shares the machine with whatever else runs there: the busy
// time not accounted for by the server and the load generator is reported,
// so that a figure taken on a busy machine says so.
func machineCPU() (busy time.Duration, cores int, err error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, err
	}
	var total int64
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], "cpu") {
			continue
		}
		if f[0] != "cpu" {
			cores++
			continue
		}
		// cpu user nice system idle iowait irq softirq steal ...
		for i, v := range f[1:] {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return 0, 0, fmt.Errorf("parse /proc/stat: %w", err)
			}
			if i < 8 && i != 3 && i != 4 { // skip idle and iowait; guest time is inside user
				total += n
			}
		}
	}
	return time.Duration(total) * time.Second / clockTicks, cores, nil
}

// cpuWindow measures who used the machine's CPU over a scenario's window.
type cpuWindow struct {
	pid                   int
	t0                    time.Time
	server0, self0, busy0 time.Duration
}

// cpuUse is the CPU used during a window, in cores (1.0 = one core busy).
type cpuUse struct {
	Seconds    float64 `json:"seconds"`
	Cores      int     `json:"machine_cores"`
	Server     float64 `json:"server_cores"`
	LoadGen    float64 `json:"load_generator_cores"`
	Other      float64 `json:"other_processes_cores"`
	ServerSecs float64 `json:"server_cpu_seconds"`
	LoadSecs   float64 `json:"load_generator_cpu_seconds"`
}

func startCPU(pid int) *cpuWindow {
	w := &cpuWindow{pid: pid, t0: time.Now()}
	w.server0, _ = cpuTime(pid)
	w.self0, _ = cpuTime(selfPID)
	w.busy0, _, _ = machineCPU()
	return w
}

func (w *cpuWindow) stop() cpuUse {
	el := time.Since(w.t0)
	server, _ := cpuTime(w.pid)
	self, _ := cpuTime(selfPID)
	busy, cores, _ := machineCPU()
	u := cpuUse{Seconds: el.Seconds(), Cores: cores, ServerSecs: (server - w.server0).Seconds(), LoadSecs: (self - w.self0).Seconds()}
	if el > 0 {
		u.Server = u.ServerSecs / el.Seconds()
		u.LoadGen = u.LoadSecs / el.Seconds()
		u.Other = max(0, (busy-w.busy0).Seconds()/el.Seconds()-u.Server-u.LoadGen)
	}
	return u
}

func (u cpuUse) String() string {
	return fmt.Sprintf("server %.2f cores, load generator %.2f, other processes %.2f (of %d) over %.1f s", u.Server, u.LoadGen, u.Other, u.Cores, u.Seconds)
}

// findServerPID finds the process listening on the server URL's TCP port,
// by matching the listening socket's inode in /proc/net/tcp{,6} against the
// file descriptors of every process. It needs permission to read other
// processes' fd tables (same user or root); --server-pid avoids it.
func findServerPID(serverURL string) (int, error) {
	u, err := url.Parse(serverURL)
	if err != nil {
		return 0, err
	}
	port, err := strconv.Atoi(u.Port())
	if err != nil {
		return 0, fmt.Errorf("server URL %q has no port; pass --server-pid", serverURL)
	}
	inodes := map[string]bool{}
	for _, name := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		if err := listeningInodes(name, port, inodes); err != nil && !errors.Is(err, os.ErrNotExist) {
			return 0, err
		}
	}
	if len(inodes) == 0 {
		return 0, fmt.Errorf("no process listens on port %d", port)
	}
	fds, _ := filepath.Glob("/proc/[0-9]*/fd/*")
	for _, fd := range fds {
		link, err := os.Readlink(fd)
		if err != nil || !strings.HasPrefix(link, "socket:[") {
			continue
		}
		if inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] {
			pid, err := strconv.Atoi(strings.Split(fd, "/")[2])
			if err == nil && pid != os.Getpid() {
				return pid, nil
			}
		}
	}
	return 0, fmt.Errorf("cannot see which process listens on port %d; pass --server-pid", port)
}

// listeningInodes adds the inodes of sockets listening on port, from one
// of /proc/net/tcp or tcp6, to into.
func listeningInodes(name string, port int, into map[string]bool) error {
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	want := fmt.Sprintf(":%04X", port)
	for sc.Scan() {
		// sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
		f := strings.Fields(sc.Text())
		if len(f) < 10 || f[3] != "0A" { // 0A: TCP_LISTEN
			continue
		}
		if strings.HasSuffix(f[1], want) {
			into[f[9]] = true
		}
	}
	return sc.Err()
}

// serverSample is one reading of the server process.
type serverSample struct {
	RSS        int64         `json:"rss_bytes"`
	CPU        time.Duration `json:"-"`
	Goroutines float64       `json:"goroutines"`
	HeapInuse  float64       `json:"heap_inuse_bytes"`
	StackInuse float64       `json:"stack_inuse_bytes"`
	Connected  float64       `json:"connected_devices"`
}

// sampleServer reads the server's RSS and CPU time from /proc and a few
// gauges from its /metrics endpoint (best effort: a missing metric is 0).
func sampleServer(ctx context.Context, pid int, serverURL string) (serverSample, error) {
	var s serverSample
	var err error
	if s.RSS, err = rssBytes(pid); err != nil {
		return s, fmt.Errorf("read server RSS: %w", err)
	}
	if s.CPU, err = cpuTime(pid); err != nil {
		return s, fmt.Errorf("read server CPU time: %w", err)
	}
	m, err := scrapeMetrics(ctx, serverURL, "go_goroutines", "go_memstats_heap_inuse_bytes", "go_memstats_stack_inuse_bytes", "casesync_connected_devices")
	if err != nil {
		return s, err
	}
	s.Goroutines, s.HeapInuse, s.StackInuse, s.Connected = m["go_goroutines"], m["go_memstats_heap_inuse_bytes"], m["go_memstats_stack_inuse_bytes"], m["casesync_connected_devices"]
	return s, nil
}

// scrapeMetrics returns the values of unlabelled metrics from /metrics.
func scrapeMetrics(ctx context.Context, serverURL string, names ...string) (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, serverURL+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape metrics: %w", err)
	}
	defer resp.Body.Close()
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 16<<20))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok || !want[name] {
			continue
		}
		if v, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
			out[name] = v
		}
	}
	return out, sc.Err()
}

// scrapeCounters returns the values of one labelled counter family, keyed
// by the value of label, e.g. casesync_changes_total by result.
func scrapeCounters(ctx context.Context, serverURL, family, label string) (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, serverURL+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape metrics: %w", err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	prefix := family + "{" + label + "=\""
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 16<<20))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), prefix)
		if !ok {
			continue
		}
		key, rest, ok := strings.Cut(rest, "\"")
		if !ok {
			continue
		}
		_, val, ok := strings.Cut(rest, " ")
		if v, err := strconv.ParseFloat(strings.TrimSpace(val), 64); ok && err == nil {
			out[key] = v
		}
	}
	return out, sc.Err()
}
