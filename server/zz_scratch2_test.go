package server_test

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/casesync/casesync/server"
	"github.com/casesync/casesync/server/servertest"
	"github.com/casesync/casesync/syncproto"
)

type revokeStore struct {
	server.Store
	hook *atomic.Pointer[func()]
}

func (r revokeStore) View(ctx context.Context, fn func(server.Tx) error) error {
	err := r.Store.View(ctx, fn)
	if h := r.hook.Swap(nil); h != nil {
		(*h)()
	}
	return err
}

func TestScratchRevokeRace(t *testing.T) {
	hook := new(atomic.Pointer[func()])
	s := servertest.NewServer(t, &servertest.Options{WrapStore: func(st server.Store) server.Store { return revokeStore{st, hook} }})
	s.AddUser("anouk", "caseworker", "Zuilen")
	a := newDevice(t, s, "anouk")
	f := func() { s.Revoke(a.id) }
	hook.Store(&f)
	c, w := a.connect(t, s, &syncproto.Hello{Live: true})
	t.Logf("welcome after revoke: %+v", w.User)
	_, before := servertest.Until[*syncproto.CaughtUp](c)
	t.Logf("caught up, %d msgs", len(before))
	ack := push(t, c, a.newCase("c1", "Zuilen"))
	t.Logf("revoked device push ack %+v", ack)
}

func TestScratchRatePerSession(t *testing.T) {
	s := servertest.NewServer(t, &servertest.Options{Config: server.Config{Rate: 1, Burst: 2}})
	s.AddUser("anouk", "caseworker", "Zuilen")
	a := newDevice(t, s, "anouk")
	for i := 0; i < 3; i++ {
		c, _ := a.connect(t, s, nil)
		ack := push(t, c, a.newCase("c"+string(rune('a'+2*i)), "Zuilen"), a.newCase("c"+string(rune('b'+2*i)), "Zuilen"))
		ack2 := push(t, c, a.newCase("x"+string(rune('a'+i)), "Zuilen"))
		t.Logf("session %d: %+v then %+v", i, ack, ack2)
		c.Close()
	}
}

func TestScratchScopeRace(t *testing.T) {
	hook := new(atomic.Pointer[func()])
	s := servertest.NewServer(t, &servertest.Options{WrapStore: func(st server.Store) server.Store { return revokeStore{st, hook} }})
	s.AddUser("anouk", "caseworker", "Zuilen", "Ondiep")
	s.AddUser("chantal", "caseworker", "Ondiep")
	a, ch := newDevice(t, s, "anouk"), newDevice(t, s, "chantal")
	cc, _ := ch.connect(t, s, nil)
	push(t, cc, ch.newCase("o1", "Ondiep"))
	cc.Close()
	f := func() { s.SetAreas("anouk", "Zuilen") }
	hook.Store(&f)
	c, w := a.connect(t, s, &syncproto.Hello{Live: true})
	t.Logf("welcome scope after losing Ondiep: %+v", w.Scope)
	_, before := servertest.Until[*syncproto.CaughtUp](c)
	for _, m := range before {
		if x, ok := m.(*syncproto.Changes); ok {
			for _, r := range x.Records {
				t.Logf("received %s in %s", r.ID, r.Area)
			}
		}
	}
	ack := push(t, c, a.newCase("o2", "Ondiep"))
	t.Logf("push to lost area ack %+v", ack)
}
