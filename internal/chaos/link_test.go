//go:build unix

package chaos_test

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"
)

// newToxiproxy returns an in-process toxiproxy API server: only its
// logger and metrics container are used, it never listens itself.
func newToxiproxy() *toxiproxy.ApiServer {
	return toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
}

// link is one device's network: a toxiproxy proxy on a fixed loopback
// port in front of casesyncd, with the toxics the schedule switched on.
//
// toxiproxy v2.12.0 can deadlock removing a toxic from, or adding one to,
// a proxy with live connections: it interrupts each connection's pipeline
// stage by a channel send, and a stage stuck sending to a stage downstream
// of it that a reset_peer toxic or a dead peer already closed never
// receives it, while the toxic collection's lock is held (Shopify/toxiproxy
// issue #558, fix proposed in pull request #760; this test hit it within
// 150 steps). So a link changes its toxics by replacing its proxy: it
// stops the old one, which closes its connections without interrupting
// any stage, and starts a new one on the same port with the new toxics
// added before it accepts anything. To the device that is its network
// changing under it: every change of faults also cuts its connections.
// The one toxic added to live connections is the blackhole (timeout),
// because a connection going silent without closing is the fault the
// replacement cannot produce; it is the last stage, never stuck itself,
// and every add is bounded by a watchdog that fails the test instead of
// hanging it.
type link struct {
	t        *testing.T
	api      *toxiproxy.ApiServer
	name     string
	upstream string
	listen   string // fixed after the first start
	p        *toxiproxy.Proxy
	on       map[string]toxic // by name
	replaced int
}

// newLink starts a proxy from a free loopback port to upstream. It is
// stopped when the test ends.
func newLink(t *testing.T, api *toxiproxy.ApiServer, name, upstream string) *link {
	t.Helper()
	l := &link{t: t, api: api, name: name, upstream: upstream, listen: "127.0.0.1:0", on: map[string]toxic{}}
	l.replace()
	t.Cleanup(func() { l.p.Stop() })
	return l
}

// url is the base URL devices enroll with: the proxy's.
func (l *link) url() string { return "http://" + l.listen }

// toxic is one kind of fault a link can carry.
type toxic struct {
	kind   string // toxiproxy type
	stream string // "upstream" (device → server) or "downstream"
	attrs  map[string]int
}

func (x toxic) name() string { return x.kind + "_" + x.stream }

func (x toxic) String() string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(x.attrs)) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, x.attrs[k]))
	}
	return fmt.Sprintf("%s %s(%s)", x.stream, x.kind, strings.Join(parts, ","))
}

func (x toxic) json() string {
	b, err := json.Marshal(map[string]any{"name": x.name(), "type": x.kind, "stream": x.stream, "toxicity": 1.0, "attributes": x.attrs})
	if err != nil {
		panic(fmt.Sprintf("bug: %v", err))
	}
	return string(b)
}

// replace stops the current proxy, if any, and starts a new one on the
// same address with the toxics in l.on.
func (l *link) replace() {
	l.t.Helper()
	if l.p != nil {
		l.guard("stop", func() error { l.p.Stop(); return nil })
		l.replaced++
	}
	p := toxiproxy.NewProxy(l.api, l.name, l.listen, l.upstream)
	for _, name := range slices.Sorted(maps.Keys(l.on)) {
		if _, err := p.Toxics.AddToxicJson(strings.NewReader(l.on[name].json())); err != nil {
			l.t.Fatalf("toxiproxy %s: add %s: %v", l.name, l.on[name], err)
		}
	}
	if err := p.Start(); err != nil {
		l.t.Fatalf("toxiproxy %s on %s: %v", l.name, l.listen, err)
	}
	l.p, l.listen = p, p.Listen
}

// set switches x on (replacing a toxic of the same kind and stream),
// cutting the link's connections.
func (l *link) set(x toxic) {
	l.on[x.name()] = x
	l.replace()
}

// unset switches a toxic off, cutting the link's connections.
func (l *link) unset(name string) {
	delete(l.on, name)
	l.replace()
}

// clear switches every toxic off, cutting the link's connections.
func (l *link) clear() {
	clear(l.on)
	l.replace()
}

var blackholes = []toxic{
	{kind: "timeout", stream: "upstream", attrs: map[string]int{"timeout": 0}},
	{kind: "timeout", stream: "downstream", attrs: map[string]int{"timeout": 0}},
}

// blackhole makes the link drop everything in both directions, on the
// connections open now too: they stay open and go silent.
func (l *link) blackhole() {
	l.t.Helper()
	for _, x := range blackholes {
		if _, ok := l.on[x.name()]; ok {
			continue
		}
		l.guard("add "+x.String(), func() error {
			_, err := l.p.Toxics.AddToxicJson(strings.NewReader(x.json()))
			return err
		})
		l.on[x.name()] = x
	}
}

// unblackhole ends the blackhole, cutting the link's connections.
func (l *link) unblackhole() {
	for _, x := range blackholes {
		delete(l.on, x.name())
	}
	l.replace()
}

// blackholed reports whether the link drops traffic.
func (l *link) blackholed() bool {
	_, up := l.on[blackholes[0].name()]
	_, down := l.on[blackholes[1].name()]
	return up || down
}

// guard runs a toxiproxy operation and fails the test if it fails or has
// not returned after 10 s, rather than let the test hang on it.
func (l *link) guard(what string, op func() error) {
	l.t.Helper()
	done := make(chan error, 1)
	go func() { done <- op() }()
	select {
	case err := <-done:
		if err != nil {
			l.t.Fatalf("toxiproxy %s: %s: %v", l.name, what, err)
		}
	case <-time.After(10 * time.Second):
		l.t.Fatalf("toxiproxy %s: %s still blocked after 10 s", l.name, what)
	}
}

// describe lists the toxics on, for the log.
func (l *link) describe() string {
	if len(l.on) == 0 {
		return "clean"
	}
	var out []string
	for _, x := range l.on {
		out = append(out, x.String())
	}
	return strings.Join(slices.Sorted(slices.Values(out)), "; ")
}
