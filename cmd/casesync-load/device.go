package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/casesync/casesync/syncproto"
)

// A simulated device speaks the raw protocol (PROTOCOL.md §2–§5) over a
// real WebSocket, as servertest.Conn does for tests, but cheaply enough that
// ten thousand of them fit beside the server on two cores without skewing
// what is measured:
//
//   - one goroutine per connection, the reader; writes come from the
//     scenario's goroutine (one writer per connection, as gorilla requires)
//     and pongs from gorilla's control path, which may run concurrently;
//   - a 1 KiB read buffer per connection and write buffers from a shared
//     pool, so an idle connection holds no write buffer at all;
//   - a handful of zstd codecs shared by every connection (their EncodeAll
//     and DecodeAll are safe for concurrent use) instead of one each.

// wsDialer is shared by every device. Its write buffers come from a pool:
// only connections in the middle of a write hold one.
var wsDialer = &websocket.Dialer{
	HandshakeTimeout:  30 * time.Second,
	ReadBufferSize:    1 << 10,
	WriteBufferSize:   16 << 10,
	WriteBufferPool:   &sync.Pool{},
	EnableCompression: false, // zstd in the frame instead: PROTOCOL.md §2.2
	NetDialContext:    (&net.Dialer{Timeout: 30 * time.Second}).DialContext,
}

// codecPool spreads devices over a few codecs: one codec's encoder runs one
// EncodeAll at a time, so a single codec would serialise every pusher.
type codecPool struct{ codecs []*syncproto.Codec }

func newCodecPool(n int) (*codecPool, error) {
	p := &codecPool{}
	for range n {
		c, err := syncproto.NewCodec(0)
		if err != nil {
			p.close()
			return nil, err
		}
		p.codecs = append(p.codecs, c)
	}
	return p, nil
}

func (p *codecPool) get(i int) *syncproto.Codec { return p.codecs[i%len(p.codecs)] }

func (p *codecPool) close() {
	for _, c := range p.codecs {
		c.Close()
	}
}

// device is an enrolled device: its ID, its token and its user.
type device struct {
	ID    string
	Token string
	User  string
}

// conn is one device's live session.
type conn struct {
	dev      device
	ws       *websocket.Conn
	codec    *syncproto.Codec
	compress bool
	welcome  *syncproto.Welcome
	clock    *syncproto.Clock

	pings   atomic.Int64 // server pings answered
	closing atomic.Bool  // we are closing: a read error now is not a drop
	done    chan struct{}
	// Set by the reader before it closes done.
	readErr   error
	closeCode int
	// pool, if set, decodes the frames the reader reads (startPooled).
	pool *decodePool
	// errMu guards serverErr: with a pool, a decoder sets it.
	errMu     sync.Mutex
	serverErr *syncproto.Error
}

// handler receives each message the reader decodes, with the time its
// frame was read (taken before decoding, so decoding on this side does not
// count as server latency).
type handler func(m syncproto.Message, at time.Time)

// connect opens a session for d: upgrade, hello, welcome, then every
// backlog message up to caught_up. It returns once the device is caught up;
// the caller then calls start to keep reading.
func connect(ctx context.Context, syncURL string, d device, codec *syncproto.Codec, live bool) (*conn, error) {
	h := http.Header{}
	h.Set("Authorization", "Bearer "+d.Token)
	ws, resp, err := wsDialer.DialContext(ctx, syncURL, h)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("upgrade refused: %s", resp.Status)
		}
		return nil, err
	}
	c := &conn{dev: d, ws: ws, codec: codec, clock: syncproto.NewClock(nil, 0), done: make(chan struct{})}
	fail := func(err error) (*conn, error) {
		_ = ws.Close()
		return nil, err
	}
	hello := &syncproto.Hello{
		Version: syncproto.Version, Device: d.ID, Checkpoint: syncproto.Checkpoint{},
		Compression: []string{syncproto.CompressionZstd}, Time: time.Now().UnixMilli(),
		Live: live, Agent: "casesync-load",
	}
	if err := c.send(hello); err != nil {
		return fail(fmt.Errorf("send hello: %w", err))
	}
	deadline := time.Now().Add(60 * time.Second)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	_ = ws.SetReadDeadline(deadline)
	for {
		m, err := c.next()
		if err != nil {
			return fail(fmt.Errorf("handshake: %w", err))
		}
		switch m := m.(type) {
		case *syncproto.Welcome:
			c.welcome = m
			c.compress = m.Compression == syncproto.CompressionZstd
			c.clock.SetOffset(time.Until(time.UnixMilli(m.Time)))
		case *syncproto.Error:
			return fail(fmt.Errorf("handshake: server error: %w", m))
		case *syncproto.CaughtUp:
			if c.welcome == nil {
				return fail(errors.New("handshake: caught_up before welcome"))
			}
			_ = ws.SetReadDeadline(time.Time{})
			ws.SetPingHandler(c.pong)
			return c, nil
		}
	}
}

// pong answers a server ping, as gorilla's default handler does, and
// counts it: the idle scenario reports that keepalive was exercised.
func (c *conn) pong(data string) error {
	c.pings.Add(1)
	err := c.ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(10*time.Second))
	var ne net.Error
	if errors.Is(err, websocket.ErrCloseSent) || (errors.As(err, &ne) && ne.Timeout()) {
		return nil
	}
	return err
}

// next reads and decodes one message (used during the handshake only).
func (c *conn) next() (syncproto.Message, error) {
	typ, data, err := c.ws.ReadMessage()
	if err != nil {
		return nil, err
	}
	if typ != websocket.BinaryMessage {
		return nil, errors.New("server sent a text message")
	}
	return c.codec.Decode(data, c.compress)
}

// start runs the reader goroutine until the connection ends. h may be nil:
// messages are then decoded (a server error is still recorded) and dropped.
func (c *conn) start(h handler) {
	go func() {
		defer close(c.done)
		for {
			typ, data, err := c.ws.ReadMessage()
			at := time.Now()
			if err != nil {
				c.readErr = err
				var ce *websocket.CloseError
				if errors.As(err, &ce) {
					c.closeCode = ce.Code
				}
				return
			}
			if typ != websocket.BinaryMessage {
				continue
			}
			if c.pool != nil {
				c.pool.jobs <- frameJob{c: c, data: data, at: at, h: h}
				continue
			}
			if err := c.deliver(data, at, h); err != nil {
				c.readErr = err
				return
			}
		}
	}()
}

// deliver decodes one frame and hands its message to h.
func (c *conn) deliver(data []byte, at time.Time, h handler) error {
	m, err := c.codec.Decode(data, c.compress)
	if err != nil {
		return err
	}
	if e, ok := m.(*syncproto.Error); ok {
		c.errMu.Lock()
		c.serverErr = e
		c.errMu.Unlock()
	}
	if h != nil {
		h(m, at)
	}
	return nil
}

// decodePool decodes the frames of many connections on a few goroutines.
// The fan-out's receivers use it: each reader only reads and timestamps
// its frame, so that, with a thousand simulated devices on the server's two
// cores, one device's decoding does not delay another device's read, as
// it would not on separate laptops. Every frame is still decoded and
// counted; only when is decoupled from the read.
type decodePool struct {
	jobs chan frameJob
	wg   sync.WaitGroup
	errs atomic.Int64 // frames that did not decode
}

type frameJob struct {
	c    *conn
	data []byte
	at   time.Time
	h    handler
}

func newDecodePool(workers int) *decodePool {
	p := &decodePool{jobs: make(chan frameJob, 4096)}
	for range workers {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			for j := range p.jobs {
				if err := j.c.deliver(j.data, j.at, j.h); err != nil {
					p.errs.Add(1)
				}
			}
		}()
	}
	return p
}

// close waits for the frames queued so far to be decoded. Every reader
// using the pool must have stopped.
func (p *decodePool) close() {
	close(p.jobs)
	p.wg.Wait()
}

// send encodes and writes one message. Only one goroutine may send on a
// connection at a time.
func (c *conn) send(m syncproto.Message) error {
	f, err := c.codec.Encode(m, c.compress)
	if err != nil {
		return err
	}
	_ = c.ws.SetWriteDeadline(time.Now().Add(30 * time.Second))
	return c.ws.WriteMessage(websocket.BinaryMessage, f)
}

// dropped reports whether the server ended the session before we did.
func (c *conn) dropped() bool {
	select {
	case <-c.done:
		return !c.closing.Load()
	default:
		return false
	}
}

// dropReason describes why a dropped session ended.
func (c *conn) dropReason() string {
	c.errMu.Lock()
	se := c.serverErr
	c.errMu.Unlock()
	switch {
	case se != nil:
		return fmt.Sprintf("error %s/%s", se.Code, se.Reason)
	case c.closeCode != 0:
		return fmt.Sprintf("close %d", c.closeCode)
	case c.readErr != nil:
		s := c.readErr.Error()
		if strings.Contains(s, "reset by peer") || strings.Contains(s, "EOF") {
			return "connection lost"
		}
		return "read error"
	}
	return "unknown"
}

// close ends the session with 1000 and waits briefly for the reader.
func (c *conn) close() {
	c.closing.Store(true)
	_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(5*time.Second))
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
	}
	_ = c.ws.Close()
}

// closeAll closes many connections with bounded parallelism.
func closeAll(conns []*conn) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for _, c := range conns {
		if c == nil {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			c.close()
		}()
	}
	wg.Wait()
}

// jsonString returns s as a canonical JSON string value.
func jsonString(s string) json.RawMessage {
	b, err := syncproto.Marshal(s)
	if err != nil {
		panic("bug: marshal a string: " + err.Error())
	}
	return b
}

// newCase returns the change that creates a case in area.
func newCase(seq uint64, at syncproto.Stamp, id, area, owner string) syncproto.Change {
	return syncproto.Change{Seq: seq, Collection: syncproto.Cases, ID: id, Stamp: at, Fields: map[string]syncproto.Write{
		syncproto.FieldTitle:  {Data: jsonString("Load test case " + id)},
		syncproto.FieldTenant: {Data: jsonString("T. Enant")},
		syncproto.FieldArea:   {Data: jsonString(area)},
		syncproto.FieldStatus: {Data: jsonString(syncproto.StatusOpen)},
		syncproto.FieldOwner:  {Data: jsonString(owner)},
	}}
}

// newNote returns the change that creates a journal note on caseID.
func newNote(seq uint64, at syncproto.Stamp, id, caseID, author, text string) syncproto.Change {
	return syncproto.Change{Seq: seq, Collection: syncproto.Entries, ID: id, Stamp: at, Fields: map[string]syncproto.Write{
		syncproto.FieldCaseID:     {Data: jsonString(caseID)},
		syncproto.FieldKind:       {Data: jsonString(syncproto.KindVisit)},
		syncproto.FieldAuthor:     {Data: jsonString(author)},
		syncproto.FieldOccurredAt: {Data: jsonString(at.Time().Format(time.RFC3339))},
		syncproto.FieldText:       {Data: jsonString(text)},
	}}
}

// noteWords make note text that compresses like prose, not like a
// repeated byte: zstd on repeated text would flatter the bandwidth.
var noteWords = strings.Fields(`bezoek huurder woning schimmel slaapkamer keuken lekkage buren overlast
	afspraak gebeld corporatie onderhoud klacht gesprek dochter zoon moeder vader zorgen huur achterstand
	schuldhulp verwijzing wijkteam GGD huisarts opvolgen volgende week brief verstuurd geen gehoor
	visited tenant mould bedroom leak neighbours noise appointment called maintenance complaint rent
	arrears referral follow-up next week letter sent no answer stairwell heating broken window damp`)

// noteText returns about n bytes of random words.
func noteText(r *rand.Rand, n int) string {
	var b strings.Builder
	b.Grow(n + 16)
	for b.Len() < n {
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(noteWords[r.IntN(len(noteWords))])
	}
	return b.String()
}
