package e2e

import (
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync"
	"sync/atomic"

	"github.com/gorilla/websocket"

	"github.com/casesync/casesync/syncproto"
)

// Verdict is what a relay script decides for one server message.
type Verdict int

const (
	// Pass forwards the message.
	Pass Verdict = iota
	// Hold keeps the message back, in order with others held, until a
	// message is passed with Release.
	Hold
	// Release forwards the message, then everything held.
	Release
	// Cut ends the session without forwarding the message: a connection
	// lost between the server's commit and its ack reaching the device.
	Cut
)

// Script decides, message by message, what a relay does with what the
// server sends in one session. It is called from one goroutine.
type Script func(m syncproto.Message) Verdict

// Session is how a relay treats one sync session.
type Session struct {
	// Server decides on each server message; nil passes them all.
	Server Script
	// PushAfterBacklog holds the device's frames after its hello until the
	// server has sent caught_up: the server reads the backlog before any
	// push of the session commits, and the acks come after it.
	PushAfterBacklog bool
}

// Relay is a WebSocket relay that sees the protocol's messages. It
// terminates a device's sync connection, opens its own to the server, and
// passes the device's frames on unchanged and the server's through a
// script, which may hold, reorder or cut them. The server's streamer and
// its push handler send independently, so which of a backlog message and
// an ack reaches the device first is up to the scheduler; a script makes
// one such order happen every time. Every other request (enrollment) is
// proxied as it is.
type Relay struct {
	srv      *httptest.Server
	target   *url.URL
	codec    *syncproto.Codec
	session  func(n int) Session
	sessions atomic.Int64
	wg       sync.WaitGroup

	mu        sync.Mutex
	delivered map[int][]string // per session, the types of the server's messages forwarded
}

// NewRelay starts a relay to the server at target (its base URL). session
// returns how to treat the n-th sync session (from 1); nil passes all.
func NewRelay(target string, session func(n int) Session) (*Relay, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, err
	}
	codec, err := syncproto.NewCodec(0)
	if err != nil {
		return nil, err
	}
	r := &Relay{target: u, codec: codec, session: session}
	mux := http.NewServeMux()
	mux.Handle("/", httputil.NewSingleHostReverseProxy(u))
	mux.HandleFunc("/v1/sync", r.sync)
	r.srv = httptest.NewServer(mux)
	return r, nil
}

// URL is the relay's base URL, to enroll devices through.
func (r *Relay) URL() string { return r.srv.URL }

// Sessions is the number of sync sessions relayed so far.
func (r *Relay) Sessions() int { return int(r.sessions.Load()) }

// Delivered returns the types of the server's messages the relay
// forwarded to the device in session n, in the order it forwarded them.
func (r *Relay) Delivered(n int) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.delivered[n]...)
}

func (r *Relay) deliver(n int, typ string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.delivered == nil {
		r.delivered = map[int][]string{}
	}
	r.delivered[n] = append(r.delivered[n], typ)
}

// Close stops the relay and waits for its sessions to end.
func (r *Relay) Close() {
	r.srv.CloseClientConnections()
	r.srv.Close()
	r.wg.Wait()
}

func (r *Relay) sync(w http.ResponseWriter, req *http.Request) {
	r.wg.Add(1)
	defer r.wg.Done()
	n := int(r.sessions.Add(1))
	up := *r.target
	if up.Scheme == "https" {
		up.Scheme = "wss"
	} else {
		up.Scheme = "ws"
	}
	up.Path = "/v1/sync"
	h := http.Header{}
	h.Set("Authorization", req.Header.Get("Authorization"))
	server, resp, err := websocket.DefaultDialer.DialContext(req.Context(), up.String(), h)
	if err != nil {
		status := http.StatusBadGateway
		if resp != nil {
			status = resp.StatusCode
			resp.Body.Close()
		}
		http.Error(w, "relay: "+err.Error(), status)
		return
	}
	defer server.Close()
	device, err := (&websocket.Upgrader{}).Upgrade(w, req, nil)
	if err != nil {
		return
	}
	defer device.Close()
	server.SetReadLimit(int64(r.codec.MaxFrame()))
	device.SetReadLimit(int64(r.codec.MaxFrame()))

	var sess Session
	if r.session != nil {
		sess = r.session(n)
	}
	script := sess.Server

	// Device to server: unchanged, the frames after the hello held until
	// caught_up if asked.
	caughtUp := make(chan struct{}) // closed when the server's caught_up is read
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer server.Close()
		for i := 0; ; i++ {
			typ, frame, err := device.ReadMessage()
			if err != nil {
				return
			}
			if sess.PushAfterBacklog && i > 0 {
				<-caughtUp // or closed at the session's end
			}
			if server.WriteMessage(typ, frame) != nil {
				return
			}
		}
	}()
	defer func() { <-done }()
	defer device.Close()
	var once sync.Once
	defer once.Do(func() { close(caughtUp) })

	// Server to device: through the script.
	compressed := false
	var held []heldFrame
	for {
		typ, frame, err := server.ReadMessage()
		if err != nil {
			if ce, ok := err.(*websocket.CloseError); ok {
				_ = device.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(ce.Code, ce.Text))
			}
			return
		}
		v, name := Pass, "undecodable"
		if m, err := r.codec.Decode(frame, compressed); err == nil {
			switch m := m.(type) {
			case *syncproto.Welcome:
				compressed = m.Compression == syncproto.CompressionZstd
			case *syncproto.CaughtUp:
				once.Do(func() { close(caughtUp) })
			}
			if script != nil {
				v = script(m)
			}
			name = m.Type().String()
		}
		out := []heldFrame{{frame, name}}
		switch v {
		case Hold:
			held = append(held, out[0])
			continue
		case Release:
			out = append(out, held...)
			held = nil
		case Cut:
			return
		}
		for _, f := range out {
			if device.WriteMessage(typ, f.frame) != nil {
				return
			}
			r.deliver(n, f.name)
		}
	}
}

// heldFrame is a server frame the script held back, and its type.
type heldFrame struct {
	frame []byte
	name  string
}
