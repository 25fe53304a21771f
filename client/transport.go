package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/casesync/casesync/syncproto"
)

// conn is one WebSocket session with the server. The session goroutine
// owns every write except control frames (which gorilla allows from any
// goroutine); a reader goroutine delivers decoded messages on msgs.
type conn struct {
	ws       *websocket.Conn
	codec    *syncproto.Codec
	compress atomic.Bool // zstd negotiated; set by the reader on welcome
	// msgs holds at most two decoded messages ahead of the session: enough
	// for decoding to overlap applying, while a cold pull's memory stays a
	// few MiB of decoded changes, not eight batches of them.
	msgs chan inbound
	done chan struct{} // closed when the reader returns
}

// inbound is a message from the server, or the error that ended reading.
type inbound struct {
	msg syncproto.Message
	err error
}

// ErrUnreachable is returned by Sync when the server cannot be reached;
// local data is untouched.
var ErrUnreachable = errors.New("client: server unreachable")

// syncURL turns the enrolled base URL into the WebSocket endpoint.
func syncURL(base string) (string, error) {
	u, err := url.Parse(base)
	if err != nil {
		return "", err
	}
	switch u.Scheme {
	case "http":
		u.Scheme = "ws"
	case "https":
		u.Scheme = "wss"
	}
	u.Path = strings.TrimRight(u.Path, "/") + "/v1/sync"
	return u.String(), nil
}

// dial opens the WebSocket. An HTTP refusal with a protocol error body
// returns that *syncproto.Error.
func (c *Client) dial(ctx context.Context, m Meta) (*websocket.Conn, error) {
	u, err := syncURL(m.Server)
	if err != nil {
		return nil, fmt.Errorf("client: server URL %q: %w", m.Server, err)
	}
	d := websocket.Dialer{
		HandshakeTimeout:  c.opts.DialTimeout,
		EnableCompression: false, // zstd in the frame: PROTOCOL.md §2
		ReadBufferSize:    64 << 10,
		WriteBufferSize:   64 << 10,
		Proxy:             http.ProxyFromEnvironment,
		NetDialContext:    c.opts.NetDial,
	}
	h := http.Header{}
	h.Set("Authorization", "Bearer "+m.Token)
	dctx, cancel := context.WithTimeout(ctx, c.opts.DialTimeout)
	defer cancel()
	ws, resp, err := d.DialContext(dctx, u, h)
	if err != nil {
		if resp != nil {
			defer resp.Body.Close()
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			var e syncproto.Error
			if json.Unmarshal(body, &e) == nil && e.Code != "" {
				return nil, &e
			}
			return nil, fmt.Errorf("%w: %s answered %s", ErrUnreachable, m.Server, resp.Status)
		}
		return nil, fmt.Errorf("%w: %s: %v", ErrUnreachable, m.Server, err)
	}
	ws.SetReadLimit(int64(c.codec.MaxFrame()))
	return ws, nil
}

func newConn(ws *websocket.Conn, codec *syncproto.Codec) *conn {
	return &conn{ws: ws, codec: codec, msgs: make(chan inbound, 2), done: make(chan struct{})}
}

// readLoop decodes frames until the connection fails; the last item on
// msgs is the error. quit stops it from blocking on a full msgs.
func (cn *conn) readLoop(timeout time.Duration, quit <-chan struct{}) {
	defer close(cn.done)
	extend := func() { _ = cn.ws.SetReadDeadline(time.Now().Add(timeout)) }
	extend()
	cn.ws.SetPingHandler(func(data string) error {
		extend()
		return cn.ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(5*time.Second))
	})
	cn.ws.SetPongHandler(func(string) error { extend(); return nil })
	for {
		typ, frame, err := cn.ws.ReadMessage()
		var in inbound
		switch {
		case err != nil:
			in.err = err
		case typ != websocket.BinaryMessage:
			in.err = syncproto.Errorf(syncproto.ErrMalformed, "server sent a text message")
		default:
			extend()
			in.msg, in.err = cn.codec.Decode(frame, cn.compress.Load())
			if w, ok := in.msg.(*syncproto.Welcome); ok {
				// Frames after the welcome may be compressed: decide before
				// reading the next one.
				cn.compress.Store(w.Compression == syncproto.CompressionZstd)
			}
		}
		select {
		case cn.msgs <- in:
		case <-quit:
			return
		}
		if in.err != nil {
			return
		}
	}
}

func (cn *conn) send(m syncproto.Message) error {
	frame, err := cn.codec.Encode(m, cn.compress.Load())
	if err != nil {
		return err
	}
	_ = cn.ws.SetWriteDeadline(time.Now().Add(30 * time.Second))
	return cn.ws.WriteMessage(websocket.BinaryMessage, frame)
}

// close ends the session with code and closes the socket.
func (cn *conn) close(code int) {
	_ = cn.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, ""), time.Now().Add(time.Second))
	_ = cn.ws.Close()
}

// closeError converts a WebSocket close into the protocol error it stands
// for, if any.
func closeError(err error) error {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		if code, ok := syncproto.CodeForClose(ce.Code); ok {
			return &syncproto.Error{Code: code, Message: "server closed the session: " + ce.Text}
		}
		if ce.Code == websocket.CloseGoingAway || ce.Code == websocket.CloseTryAgainLater {
			return fmt.Errorf("%w: server is going away", ErrUnreachable)
		}
	}
	return fmt.Errorf("%w: %v", ErrUnreachable, err)
}
