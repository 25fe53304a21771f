package main

// Meters: bytes on the wire (through client.Options.NetDial, the only
// network hook the client has), peak resident memory from /proc, and
// percentiles.

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// wire counts the bytes of every connection it dials, both directions.
// The counts include HTTP upgrade and WebSocket framing: what a caseworker's
// data plan would pay.
type wire struct {
	addr    string // the server's address; the client's URL may name another port
	in, out atomic.Int64
}

// dial is a client.Options.NetDial that counts. It dials w.addr whatever
// address the client asks for, so a replica enrolled against one server
// process can sync with a restarted one on another port.
func (w *wire) dial(ctx context.Context, network, _ string) (net.Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, network, w.addr)
	if err != nil {
		return nil, err
	}
	return &countConn{Conn: c, w: w}, nil
}

// dialWatched is dial that also hands the connection to watch, so a
// fan-out receiver can timestamp the first bytes of a change.
func (w *wire) dialWatched(watch *atomic.Pointer[countConn]) func(context.Context, string, string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := w.dial(ctx, network, addr)
		if err == nil {
			watch.Store(c.(*countConn))
		}
		return c, err
	}
}

func newWire(addr string) *wire         { return &wire{addr: addr} }
func (w *wire) reset()                  { w.in.Store(0); w.out.Store(0) }
func (w *wire) counts() (in, out int64) { return w.in.Load(), w.out.Load() }

// arm makes the connection note when its next bytes arrive.
func (c *countConn) arm() { c.first.Store(0); c.armed.Store(true) }

// firstRead is when bytes first arrived after arm (UnixNano), or 0.
func (c *countConn) firstRead() int64 { return c.first.Load() }

// countConn counts bytes and, when armed, records when the next bytes
// arrive (UnixNano).
type countConn struct {
	net.Conn
	w     *wire
	armed atomic.Bool
	first atomic.Int64
}

func (c *countConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.w.in.Add(int64(n))
		if c.armed.CompareAndSwap(true, false) {
			c.first.Store(time.Now().UnixNano())
		}
	}
	return n, err
}

func (c *countConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.w.out.Add(int64(n))
	return n, err
}

// peakRSS returns VmHWM of process pid (0 for this process) in bytes: the
// most resident memory it has had since it started or since resetPeak.
func peakRSS(pid int) int64 { return procStatus(pid)["VmHWM"] }

// procStatus returns the memory figures (kB lines) of /proc/<pid>/status
// in bytes: VmHWM, VmRSS, RssAnon (heap), RssFile (mapped files: a
// replica's bbolt file counts here once its pages are read), ….
func procStatus(pid int) map[string]int64 {
	p := "/proc/self/status"
	if pid > 0 {
		p = fmt.Sprintf("/proc/%d/status", pid)
	}
	out := map[string]int64{}
	f, err := os.Open(p)
	if err != nil {
		return out
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || !strings.HasSuffix(v, " kB") {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(v, " kB")), 10, 64)
		if err == nil {
			out[k] = kb << 10
		}
	}
	return out
}

// resetPeak restarts VmHWM from the current RSS (Linux ≥ 4.0: writing 5 to
// clear_refs), so one scenario's peak is not an earlier one's. For this
// process it first returns freed heap to the OS, so that the Argon2id
// unlock's 64 MiB, paid once per Open and reported separately, does not
// count against the sync that follows.
func resetPeak(pid int) {
	p := "/proc/self/clear_refs"
	if pid > 0 {
		p = fmt.Sprintf("/proc/%d/clear_refs", pid)
	} else {
		runtime.GC()
		debug.FreeOSMemory()
	}
	_ = os.WriteFile(p, []byte("5"), 0)
}

// pct returns the p-th percentile (0–100) of xs by nearest rank.
func pct(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(float64(len(s))*p/100+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}

func median(xs []float64) float64 { return pct(xs, 50) }

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// cpuTime returns the user plus system CPU time of process pid (0 for
// this process) from /proc/<pid>/stat, in ms: with other work on the
// machine, CPU time says what a scenario costs better than wall time.
func cpuTime(pid int) float64 {
	p := "/proc/self/stat"
	if pid > 0 {
		p = fmt.Sprintf("/proc/%d/stat", pid)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')') // the command name may hold spaces
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) * 1000 / clockTicks
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times: 100 on every
// Linux architecture Go supports.
const clockTicks = 100
