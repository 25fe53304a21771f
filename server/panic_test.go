package server_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/casesync/casesync/server"
	"github.com/casesync/casesync/server/servertest"
	"github.com/casesync/casesync/syncproto"
)

// panicStore panics in View while armed, as a bug in a handler would.
type panicStore struct {
	server.Store
	armed *atomic.Bool
}

func (p panicStore) View(ctx context.Context, fn func(server.Tx) error) error {
	if p.armed.Load() {
		panic("secret internal detail 0xdeadbeef")
	}
	return p.Store.View(ctx, fn)
}

func TestServer_PanicNeverReachesClient(t *testing.T) {
	armed := new(atomic.Bool)
	s := servertest.NewServer(t, &servertest.Options{WrapStore: func(st server.Store) server.Store { return panicStore{st, armed} }})
	s.AddUser("anouk", "caseworker", "Zuilen")
	s.AddUser("bram", "caseworker", "Zuilen")
	a, b := newDevice(t, s, "anouk"), newDevice(t, s, "bram")
	cb, _ := b.connect(t, s, &syncproto.Hello{Live: true})
	servertest.Until[*syncproto.CaughtUp](cb)

	c, _, err := servertest.Dial(t, s.WS, a.token)
	if err != nil {
		t.Fatal(err)
	}
	armed.Store(true) // the handshake's View panics
	c.Send(&syncproto.Hello{Version: syncproto.Version, Device: a.id})
	errs, code := c.ExpectClose()
	armed.Store(false)
	if code != syncproto.CloseInternal || len(errs) != 1 || errs[0].Code != syncproto.CodeInternal {
		t.Fatalf("panic: errors %v close %d, want one internal error and 4500", errs, code)
	}
	if strings.Contains(errs[0].Message, "deadbeef") || strings.Contains(errs[0].Message, "secret") {
		t.Fatalf("panic text reached the client: %q", errs[0].Message)
	}
	// Everyone else is still served.
	if ack := push(t, cb, b.newCase("c1", "Zuilen")); len(ack.Accepted) != 1 {
		t.Fatalf("after a panic elsewhere, ack = %+v", ack)
	}
}
