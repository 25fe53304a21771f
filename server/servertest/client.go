package servertest

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/casesync/casesync/syncproto"
)

// Conn is a raw protocol connection for tests: it sends and receives
// syncproto messages over a real WebSocket, with no client logic.
type Conn struct {
	WS       *websocket.Conn
	Codec    *syncproto.Codec
	Compress bool
	tb       testing.TB
}

// Dial opens a WebSocket to the sync endpoint with a bearer token. It
// returns the HTTP response on a failed upgrade.
func Dial(tb testing.TB, url, token string) (*Conn, *http.Response, error) {
	tb.Helper()
	h := http.Header{}
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	ws, resp, err := d.Dial(url, h)
	if err != nil {
		return nil, resp, err
	}
	codec, err := syncproto.NewCodec(0)
	if err != nil {
		tb.Fatal(err)
	}
	c := &Conn{WS: ws, Codec: codec, tb: tb}
	tb.Cleanup(func() { c.Close() })
	return c, resp, nil
}

// Handshake dials, sends hello and returns the welcome; it fails the test
// on any error.
func Handshake(tb testing.TB, url, device, token string, hello *syncproto.Hello) (*Conn, *syncproto.Welcome) {
	tb.Helper()
	c, _, err := Dial(tb, url, token)
	if err != nil {
		tb.Fatalf("dial: %v", err)
	}
	if hello == nil {
		hello = &syncproto.Hello{}
	}
	hello.Version = syncproto.Version
	hello.Device = device
	hello.Time = time.Now().UnixMilli()
	if hello.Compression == nil {
		hello.Compression = []string{syncproto.CompressionZstd}
	}
	c.Send(hello)
	m := c.Recv()
	w, ok := m.(*syncproto.Welcome)
	if !ok {
		tb.Fatalf("handshake: got %T %+v, want welcome", m, m)
	}
	c.Compress = w.Compression == syncproto.CompressionZstd
	return c, w
}

// Send encodes and sends a message.
func (c *Conn) Send(m syncproto.Message) {
	c.tb.Helper()
	f, err := c.Codec.Encode(m, c.Compress)
	if err != nil {
		c.tb.Fatalf("encode %T: %v", m, err)
	}
	c.SendRaw(websocket.BinaryMessage, f)
}

// SendRaw sends a raw WebSocket message.
func (c *Conn) SendRaw(typ int, data []byte) {
	c.tb.Helper()
	_ = c.WS.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if err := c.WS.WriteMessage(typ, data); err != nil {
		c.tb.Fatalf("send: %v", err)
	}
}

// Next reads the next message, or returns the read error (a
// *websocket.CloseError when the server closed the session).
func (c *Conn) Next(timeout time.Duration) (syncproto.Message, error) {
	_ = c.WS.SetReadDeadline(time.Now().Add(timeout))
	typ, data, err := c.WS.ReadMessage()
	if err != nil {
		return nil, err
	}
	if typ != websocket.BinaryMessage {
		return nil, errors.New("servertest: server sent a text message")
	}
	return c.Codec.Decode(data, true)
}

// Recv reads the next message and fails the test on error.
func (c *Conn) Recv() syncproto.Message {
	c.tb.Helper()
	m, err := c.Next(10 * time.Second)
	if err != nil {
		c.tb.Fatalf("recv: %v", err)
	}
	return m
}

// Until reads messages until one of type T arrives and returns it together
// with every message read before it.
func Until[T syncproto.Message](c *Conn) (T, []syncproto.Message) {
	c.tb.Helper()
	var before []syncproto.Message
	for {
		m := c.Recv()
		if t, ok := m.(T); ok {
			return t, before
		}
		before = append(before, m)
	}
}

// ExpectClose reads until the server closes the session, returning the
// error messages received and the close code.
func (c *Conn) ExpectClose() ([]*syncproto.Error, int) {
	c.tb.Helper()
	var errs []*syncproto.Error
	for {
		m, err := c.Next(10 * time.Second)
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				return errs, ce.Code
			}
			c.tb.Fatalf("expected a close, got %v", err)
		}
		if e, ok := m.(*syncproto.Error); ok {
			errs = append(errs, e)
		}
	}
}

// Close closes the connection with 1000.
func (c *Conn) Close() {
	if c.WS == nil {
		return
	}
	_ = c.WS.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	_ = c.WS.Close()
	c.Codec.Close()
	c.WS = nil
}

func doJSON(tb testing.TB, method, url, token string, body, out any) (int, string) {
	tb.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			tb.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		tb.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(data, out); err != nil {
			tb.Fatalf("%s %s: decode %q: %v", method, url, data, err)
		}
	}
	return resp.StatusCode, string(data)
}
