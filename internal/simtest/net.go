package simtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/valyala/fasthttp/fasthttputil"
)

// The simulated network. Every connection is a pair of fasthttp in-memory
// pipe ends: they block on channels and timers, which testing/synctest
// understands, so a bubble can tell when the whole system is idle and
// simulated hours pass in microseconds. Real TCP sockets would block in
// the kernel, where synctest cannot see them.
//
// Each connection is a link between one device (or the admin) and the
// server. A link can be cut, which drops everything in flight in both
// directions, as a Wi-Fi drop or a crash does; a graceful close, by
// contrast, lets the peer read what was sent before it, as a TCP FIN does.
// A gate holds one side's reads at a chosen point (after so many bytes, or
// once the device has written so many times), so that the simulation can
// cut a connection exactly between a push's commit and its ack, or in the
// middle of a pull, and do so reproducibly: the position is counted in the
// protocol's own bytes, not in wall time.

// errCut is what either end of a cut link sees.
var errCut = &net.OpError{Op: "read", Net: "sim", Err: errors.New("connection reset (simulated cut)")}

// errOffline is what a device's dial sees while it is partitioned.
var errOffline = &net.OpError{Op: "dial", Net: "sim", Err: errors.New("network is unreachable (simulated partition)")}

// errRefused is what a dial sees while the server is down.
var errRefused = &net.OpError{Op: "dial", Net: "sim", Err: errors.New("connection refused (server down)")}

// side names an end of a link.
type side int

const (
	deviceSide side = iota
	serverSide
)

func (s side) String() string {
	if s == deviceSide {
		return "device"
	}
	return "server"
}

// gate is a fault armed on a device's next connection: one side's reads
// stop at a point and the link stays silent until the simulation cuts it.
type gate struct {
	// Side is the end whose reads are held.
	Side side
	// AfterBytes holds Side's reads once it has read this many bytes
	// (HTTP upgrade included); 0 disables the byte budget.
	AfterBytes int64
	// AfterWrites holds Side's reads once the device has written this many
	// times (upgrade request, hello, then one write per frame; counted as
	// each write starts). On the device's side, what the server sends in
	// answer, such as the ack of a push it just committed, is never
	// delivered; on the server's side, that write and every later one are
	// lost, such as a push. 0 disables it.
	AfterWrites int
}

func (g gate) String() string {
	switch {
	case g.AfterWrites > 0:
		return fmt.Sprintf("hold %s reads from device write #%d", g.Side, g.AfterWrites)
	default:
		return fmt.Sprintf("hold %s reads after %d bytes", g.Side, g.AfterBytes)
	}
}

// network routes the devices' dials to the current server listener.
type network struct {
	mu      sync.Mutex
	ln      *listener // nil while the server is down
	offline map[string]bool
	links   map[*link]struct{}
	armed   map[string]gate // gate for a device's next dial

	// Counters for the run summary.
	dials, refused, cuts, held int
}

// newNetwork returns a network with no server.
func newNetwork() *network {
	return &network{offline: map[string]bool{}, links: map[*link]struct{}{}, armed: map[string]gate{}}
}

// Listen replaces the server's listener with a new in-memory one.
func (n *network) Listen() net.Listener {
	ln := &listener{conns: make(chan net.Conn, 64), done: make(chan struct{})}
	n.mu.Lock()
	n.ln = ln
	n.mu.Unlock()
	return ln
}

// ServerDown makes dials fail until the next Listen.
func (n *network) ServerDown() {
	n.mu.Lock()
	n.ln = nil
	n.mu.Unlock()
}

// SetOffline partitions a device (cutting its open links) or heals it.
func (n *network) SetOffline(dev string, off bool) {
	n.mu.Lock()
	n.offline[dev] = off
	n.mu.Unlock()
	if off {
		n.Cut(dev)
	}
}

// Offline reports whether a device is partitioned.
func (n *network) Offline(dev string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.offline[dev]
}

// Arm sets a gate on the device's next connection.
func (n *network) Arm(dev string, g gate) {
	n.mu.Lock()
	n.armed[dev] = g
	n.mu.Unlock()
}

// Disarm removes a gate that no dial consumed.
func (n *network) Disarm(dev string) {
	n.mu.Lock()
	delete(n.armed, dev)
	n.mu.Unlock()
}

// Cut cuts every open link of dev ("" for every link), dropping what is in
// flight, and returns how many it cut.
func (n *network) Cut(dev string) int {
	n.mu.Lock()
	var ls []*link
	for l := range n.links {
		if dev == "" || l.dev == dev {
			ls = append(ls, l)
		}
	}
	n.mu.Unlock()
	cut := 0
	for _, l := range ls {
		if l.cutNow() {
			cut++
		}
	}
	n.mu.Lock()
	n.cuts += cut
	n.mu.Unlock()
	return cut
}

// Blackhole silences every open link of dev without closing it and
// returns how many it silenced.
func (n *network) Blackhole(dev string) int {
	n.mu.Lock()
	var ls []*link
	for l := range n.links {
		if l.dev == dev {
			ls = append(ls, l)
		}
	}
	n.mu.Unlock()
	for _, l := range ls {
		l.blackhole()
	}
	return len(ls)
}

// Held reports whether a link of dev has a held side.
func (n *network) Held(dev string) bool {
	n.mu.Lock()
	var ls []*link
	for l := range n.links {
		if l.dev == dev {
			ls = append(ls, l)
		}
	}
	n.mu.Unlock()
	for _, l := range ls {
		if l.engaged() {
			return true
		}
	}
	return false
}

// CutHeld cuts every link whose gate has engaged: the simulation calls it
// once the system is idle, so the held side has waited for all it will
// ever get. It returns how many it cut.
func (n *network) CutHeld() int {
	n.mu.Lock()
	var ls []*link
	for l := range n.links {
		if l.engaged() {
			ls = append(ls, l)
		}
	}
	n.mu.Unlock()
	cut := 0
	for _, l := range ls {
		if l.cutNow() {
			cut++
		}
	}
	n.mu.Lock()
	n.cuts += cut
	n.held += cut
	n.mu.Unlock()
	return cut
}

// Dialer returns the NetDial function of device dev.
func (n *network) Dialer(dev string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) { return n.dial(dev) }
}

// AdminDial is the HTTP transport's dial for the admin API and
// enrollment: the office network, never partitioned.
func (n *network) AdminDial(ctx context.Context, network, addr string) (net.Conn, error) {
	return n.dial("")
}

func (n *network) dial(dev string) (net.Conn, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.dials++
	if dev != "" && n.offline[dev] {
		n.refused++
		return nil, errOffline
	}
	if n.ln == nil {
		n.refused++
		return nil, errRefused
	}
	pc := fasthttputil.NewPipeConns()
	l := &link{net: n, dev: dev, pc: pc, cut: make(chan struct{}), limit: [2]int64{-1, -1}}
	if g, ok := n.armed[dev]; ok && dev != "" {
		delete(n.armed, dev)
		l.arm(g)
	}
	l.ends[deviceSide] = &end{Conn: pc.Conn1(), l: l, side: deviceSide, closedCh: make(chan struct{})}
	l.ends[serverSide] = &end{Conn: pc.Conn2(), l: l, side: serverSide, closedCh: make(chan struct{})}
	if !n.ln.offer(l.ends[serverSide]) {
		n.refused++
		return nil, errRefused
	}
	n.links[l] = struct{}{}
	return l.ends[deviceSide], nil
}

func (n *network) forget(l *link) {
	n.mu.Lock()
	delete(n.links, l)
	n.mu.Unlock()
}

// listener is the server's end of the network: Accept returns the server
// ends of dialed links.
type listener struct {
	mu     sync.Mutex
	conns  chan net.Conn
	done   chan struct{}
	closed bool
}

func (ln *listener) offer(c net.Conn) bool {
	ln.mu.Lock()
	defer ln.mu.Unlock()
	if ln.closed {
		return false
	}
	select {
	case ln.conns <- c:
		return true
	default:
		return false // backlog full: refused
	}
}

func (ln *listener) Accept() (net.Conn, error) {
	select {
	case c := <-ln.conns:
		return c, nil
	case <-ln.done:
		return nil, net.ErrClosed
	}
}

// Close stops accepting; links dialed but never accepted are closed, as a
// kernel resets connections left in a closed socket's backlog.
func (ln *listener) Close() error {
	ln.mu.Lock()
	defer ln.mu.Unlock()
	if ln.closed {
		return net.ErrClosed
	}
	ln.closed = true
	close(ln.done)
	for {
		select {
		case c := <-ln.conns:
			c.(*end).l.cutNow()
		default:
			return nil
		}
	}
}

func (ln *listener) Addr() net.Addr { return simAddr("casesync.sim:80") }

type simAddr string

func (a simAddr) Network() string { return "sim" }
func (a simAddr) String() string  { return string(a) }

// link is one connection.
type link struct {
	net  *network
	dev  string // "" for the admin's HTTP connections
	pc   *fasthttputil.PipeConns
	ends [2]*end

	cut     chan struct{} // closed when the link is cut
	cutOnce sync.Once

	mu          sync.Mutex
	limit       [2]int64 // hold a side's reads once it has read this much; -1: never
	afterWrites [2]int   // hold a side's reads once the device has written this often; 0: never
	held        [2]bool  // a side's reads are held
	read        [2]int64 // bytes delivered to each side
	writes      int      // device writes
	closed      [2]bool
}

func (l *link) arm(g gate) {
	if g.AfterBytes > 0 {
		l.limit[g.Side] = g.AfterBytes
	}
	if g.AfterWrites > 0 {
		l.afterWrites[g.Side] = g.AfterWrites
	}
}

// blackhole holds both sides' reads from now on: the link stays open and
// carries nothing, until a keepalive deadline or a cut ends it.
func (l *link) blackhole() {
	l.mu.Lock()
	l.limit = l.read
	l.mu.Unlock()
}

func (l *link) isCut() bool {
	select {
	case <-l.cut:
		return true
	default:
		return false
	}
}

// cutNow cuts the link and reports whether this call did it.
func (l *link) cutNow() bool {
	did := false
	l.cutOnce.Do(func() {
		did = true
		close(l.cut)
		_ = l.pc.Close()
		l.net.forget(l)
	})
	return did
}

func (l *link) engaged() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return (l.held[deviceSide] || l.held[serverSide]) && !l.isCut()
}

// budget returns how many bytes s may still read (-1: no limit, 0: hold).
// Callers hold mu.
func (l *link) budget(s side) int64 {
	if l.held[s] {
		return 0
	}
	if l.afterWrites[s] > 0 && l.writes >= l.afterWrites[s] {
		return 0
	}
	if l.limit[s] >= 0 {
		return max(0, l.limit[s]-l.read[s])
	}
	return -1
}

// end is one side's net.Conn.
type end struct {
	net.Conn
	l    *link
	side side

	dmu          sync.Mutex
	readDeadline time.Time
	closeOnce    sync.Once
	closedCh     chan struct{} // closed by Close: a held read returns
}

func (e *end) SetDeadline(t time.Time) error {
	e.setReadDeadline(t)
	return e.Conn.SetDeadline(t)
}

func (e *end) SetReadDeadline(t time.Time) error {
	e.setReadDeadline(t)
	return e.Conn.SetReadDeadline(t)
}

func (e *end) setReadDeadline(t time.Time) {
	e.dmu.Lock()
	e.readDeadline = t
	e.dmu.Unlock()
}

func (e *end) Read(p []byte) (int, error) {
	l := e.l
	if l.isCut() {
		return 0, errCut
	}
	l.mu.Lock()
	b := l.budget(e.side)
	l.mu.Unlock()
	if b == 0 {
		return 0, e.hold()
	}
	if b > 0 && int64(len(p)) > b {
		p = p[:b]
	}
	n, err := e.Conn.Read(p)
	if l.isCut() {
		return 0, errCut // whatever was in flight is lost
	}
	// The gate may have closed while the read waited: after the device's
	// gating write (so these bytes answer it), or by a black hole. What
	// is past the budget was in flight and is lost.
	l.mu.Lock()
	b = l.budget(e.side)
	if b >= 0 && int64(n) > b {
		n = int(b)
	}
	l.read[e.side] += int64(n)
	l.mu.Unlock()
	if n == 0 && b == 0 {
		return 0, e.hold()
	}
	return n, err
}

// hold blocks a read until the link is cut or the read deadline passes:
// the peer has gone silent, as behind a dead Wi-Fi access point.
func (e *end) hold() error {
	l := e.l
	l.mu.Lock()
	l.held[e.side] = true
	l.mu.Unlock()
	e.dmu.Lock()
	dl := e.readDeadline
	e.dmu.Unlock()
	var timeout <-chan time.Time
	if !dl.IsZero() {
		t := time.NewTimer(time.Until(dl))
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-l.cut:
		return errCut
	case <-e.closedCh:
		return net.ErrClosed
	case <-timeout:
		return os.ErrDeadlineExceeded
	}
}

func (e *end) Write(p []byte) (int, error) {
	if e.l.isCut() {
		return 0, errCut
	}
	if e.side == deviceSide {
		// Counted before the bytes leave, so that no answer to this write
		// can be read before the gate knows of it.
		e.l.mu.Lock()
		e.l.writes++
		e.l.mu.Unlock()
	}
	n, err := e.Conn.Write(p)
	if e.l.isCut() {
		return 0, errCut
	}
	return n, err
}

// Close closes this end gracefully: the peer still reads what was sent.
// The link is forgotten once both ends are closed.
func (e *end) Close() error {
	l := e.l
	e.closeOnce.Do(func() { close(e.closedCh) })
	l.mu.Lock()
	l.closed[e.side] = true
	both := l.closed[deviceSide] && l.closed[serverSide]
	l.mu.Unlock()
	err := e.Conn.Close()
	if both {
		l.net.forget(l)
	}
	return err
}
