package e2e

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Proxy is a fault-injecting TCP proxy for tests: it listens on a random
// loopback port and forwards every connection to a target address. It can
// cut every open connection (at once or on a ticker), delay every chunk it
// forwards, and blackhole traffic (accept and read, forward nothing). Every
// goroutine it starts is its own, and Close waits for all of them.
type Proxy struct {
	ln     net.Listener
	target string

	mu        sync.Mutex
	conns     map[*proxyConn]struct{}
	delay     time.Duration
	blackhole bool
	closed    bool

	accepted atomic.Int64 // connections accepted
	cuts     atomic.Int64 // connections cut by Cut or the ticker

	stop chan struct{} // closed by Close
	wg   sync.WaitGroup
}

// proxyConn is one proxied connection. close ends it: it closes the client
// side, and serve closes the upstream side when done fires.
type proxyConn struct {
	down net.Conn
	once sync.Once
	done chan struct{}
}

func (pc *proxyConn) close() {
	pc.once.Do(func() {
		close(pc.done)
		pc.down.Close()
	})
}

// NewProxy starts a proxy to target (host:port).
func NewProxy(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, target: target, conns: make(map[*proxyConn]struct{}), stop: make(chan struct{})}
	p.wg.Add(1)
	go p.acceptLoop()
	return p, nil
}

// Addr is the proxy's listen address.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// URL is the proxy's base URL, to enroll a client through it.
func (p *Proxy) URL() string { return "http://" + p.Addr() }

// Accepted returns how many connections the proxy has accepted.
func (p *Proxy) Accepted() int { return int(p.accepted.Load()) }

// Cuts returns how many open connections were cut.
func (p *Proxy) Cuts() int { return int(p.cuts.Load()) }

// SetDelay delays every chunk forwarded, in both directions, by d.
func (p *Proxy) SetDelay(d time.Duration) {
	p.mu.Lock()
	p.delay = d
	p.mu.Unlock()
}

// SetBlackhole turns the black hole on or off. While it is on, open
// connections stay open but everything read from either side is dropped,
// and new connections are accepted but not connected upstream (they stay
// blackholed until cut). Turning it off does not repair a stream that lost
// bytes: cut the connections too.
func (p *Proxy) SetBlackhole(on bool) {
	p.mu.Lock()
	p.blackhole = on
	p.mu.Unlock()
}

func (p *Proxy) settings() (time.Duration, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.delay, p.blackhole
}

// Cut closes every open connection and returns how many it closed. The
// listener stays open: clients can reconnect.
func (p *Proxy) Cut() int {
	p.mu.Lock()
	conns := make([]*proxyConn, 0, len(p.conns))
	for pc := range p.conns {
		conns = append(conns, pc)
	}
	p.mu.Unlock()
	for _, pc := range conns {
		pc.close()
	}
	p.cuts.Add(int64(len(conns)))
	return len(conns)
}

// CutEvery cuts every open connection each interval until the returned
// stop is called (or the proxy is closed). stop waits for the ticker's
// goroutine.
func (p *Proxy) CutEvery(interval time.Duration) (stop func()) {
	quit := make(chan struct{})
	done := make(chan struct{})
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer close(done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-p.stop:
				return
			case <-t.C:
				p.Cut()
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() { close(quit) })
		<-done
	}
}

// Close stops listening, closes every connection and waits for every
// goroutine of the proxy.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	close(p.stop)
	p.mu.Unlock()
	err := p.ln.Close()
	p.Cut()
	p.wg.Wait()
	return err
}

func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		down, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		p.accepted.Add(1)
		pc := &proxyConn{down: down, done: make(chan struct{})}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			down.Close()
			return
		}
		p.conns[pc] = struct{}{}
		p.wg.Add(1)
		p.mu.Unlock()
		go p.serve(pc)
	}
}

func (p *Proxy) forget(pc *proxyConn) {
	p.mu.Lock()
	delete(p.conns, pc)
	p.mu.Unlock()
	pc.close()
}

// serve connects pc upstream (unless blackholed) and pumps both ways.
func (p *Proxy) serve(pc *proxyConn) {
	defer p.wg.Done()
	defer p.forget(pc)
	if _, bh := p.settings(); bh {
		// Accept, read and drop until cut: a connection into nowhere.
		_, _ = io.Copy(io.Discard, pc.down)
		return
	}
	up, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		return // upstream down: the client sees its connection closed
	}
	var pumps sync.WaitGroup
	pumps.Add(2)
	go func() { defer pumps.Done(); p.pump(pc, up, pc.down) }()
	go func() { defer pumps.Done(); p.pump(pc, pc.down, up) }()
	<-pc.done
	up.Close()
	pumps.Wait()
}

// pump copies src to dst chunk by chunk, applying delay and blackhole,
// until either side fails; then it closes the pair.
func (p *Proxy) pump(pc *proxyConn, dst, src net.Conn) {
	defer pc.close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			delay, bh := p.settings()
			if delay > 0 {
				t := time.NewTimer(delay)
				select {
				case <-t.C:
				case <-pc.done:
					t.Stop()
					return
				}
			}
			if !bh {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
		}
		if err != nil {
			return // EOF or a cut: end both directions
		}
	}
}
