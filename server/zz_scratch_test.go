package server_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/casesync/casesync/server/servertest"
	"github.com/casesync/casesync/syncproto"
)

func TestScratchLongMessages(t *testing.T) {
	s := setup(t)
	a := newDevice(t, s, "anouk")
	c, _ := a.connect(t, s, nil)
	ch := a.newCase(strings.Repeat("a", 5000), "Zuilen")
	c.Send(&syncproto.Push{Changes: []syncproto.Change{ch}})
	for {
		_, data, err := c.WS.ReadMessage()
		if err != nil {
			t.Logf("read: %v", err)
			break
		}
		m, err := c.Codec.Decode(data, true)
		t.Logf("frame %d bytes type %d: decode err %v (%T)", len(data), data[0], err, m)
		if data[0] == 5 {
			break
		}
	}
	// hello with long device
	c2, _, _ := servertest.Dial(t, s.WS, a.token)
	f := fmt.Sprintf(`{"version":1,"device":"%s","checkpoint":{"seq":0},"time":0}`, strings.Repeat("d", 10000))
	fr := append([]byte{1, 0, 0, 0, 0, 0}, f...)
	fr[4], fr[5] = byte(len(f)>>8), byte(len(f))
	c2.SendRaw(websocket.BinaryMessage, fr)
	_, data, err := c2.WS.ReadMessage()
	if err == nil {
		_, derr := c2.Codec.Decode(data, true)
		t.Logf("hello error frame %d bytes: decode %v", len(data), derr)
	}
	// json type error in map key
	c3, _ := a.connect(t, s, nil)
	p := fmt.Sprintf(`{"changes":[{"seq":1,"coll":"cases","id":"x","at":"0000000000000001","fields":{"%s":{"val":1,"seen":{"x":"nan"}}}}]}`, strings.Repeat("k", 8000))
	fr = append([]byte{4, 0, 0, 0, 0, 0}, p...)
	fr[4], fr[5] = byte(len(p)>>8), byte(len(p))
	c3.SendRaw(websocket.BinaryMessage, fr)
	for {
		_, data, err := c3.WS.ReadMessage()
		if err != nil {
			t.Logf("read: %v", err)
			break
		}
		m, derr := c3.Codec.Decode(data, true)
		t.Logf("frame %d bytes type %d: decode %v %T", len(data), data[0], derr, m)
	}
}

func TestScratchForgedSeen(t *testing.T) {
	s := setup(t)
	a, b := newDevice(t, s, "anouk"), newDevice(t, s, "bram")
	ca, _ := a.connect(t, s, nil)
	cr := a.newCase("case1", "Zuilen")
	push(t, ca, cr)
	cur := cr.State(a.id)
	forged := a.edit(cur, map[string]json.RawMessage{"title": raw(`"Mine"`)})
	w := forged.Fields["title"]
	w.Seen = syncproto.Versions{a.id: cur.Fields["title"].Seen[a.id], b.id: 1 << 40}
	forged.Fields["title"] = w
	t.Logf("forged ack %+v", push(t, ca, forged))
	cb, _ := b.connect(t, s, nil)
	recs := pullAll(t, s, b)
	r := recs[syncproto.Key{Collection: syncproto.Cases, ID: "case1"}]
	ack := push(t, cb, b.edit(&r, map[string]json.RawMessage{"title": raw(`"Bram's title"`)}))
	t.Logf("bram ack %+v", ack)
	recs = pullAll(t, s, newDevice(t, s, "lead"))
	got := recs[syncproto.Key{Collection: syncproto.Cases, ID: "case1"}]
	b2, _ := json.Marshal(got.Fields["title"])
	t.Logf("title after bram's accepted edit: %s", b2)
}

func TestScratchHTTP(t *testing.T) {
	s := setup(t)
	resp, err := http.Get(s.WS[len("ws"):] )
	_ = resp
	_ = err
	r2, err := http.Get(s.URL + "/v1/sync")
	if err == nil {
		t.Logf("plain GET /v1/sync: %d", r2.StatusCode)
		r2.Body.Close()
	}
	for _, n := range []int{17 << 10, 20 << 10, 32 << 10, 1 << 20} {
		h := http.Header{}
		h.Set("Authorization", "Bearer cs_"+strings.Repeat("x", n))
		_, resp, err := websocket.DefaultDialer.Dial(s.WS, h)
		if resp != nil {
			t.Logf("header %d: status %d err %v", n, resp.StatusCode, err)
			resp.Body.Close()
		} else {
			t.Logf("header %d: err %v", n, err)
		}
	}
}
