package server

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gofiber/contrib/websocket"

	"github.com/casesync/casesync/syncproto"
)

// session is one device's WebSocket connection. Goroutines serve it: the
// handler goroutine reads frames and applies pushes (Fiber requires it to
// block for the connection's life), a writer owns every write to the socket
// (two writers would corrupt it), and a streamer sends the backlog and then,
// in a live session, changes as they commit. A live session's streamer runs
// only while there is something to send: an idle device costs two parked
// goroutines, not three (BENCHMARKS.md, load). The reader owns the
// session's end: it stops the streamer, lets the writer drain queued
// acknowledgements and send the close frame, and waits for both.
//
// Lock order: hub.mu, then a session's streamMu or mu; streamMu and mu are
// never held together.
type session struct {
	srv    *Server
	conn   *websocket.Conn
	log    *slog.Logger
	device Device
	user   User

	// scope is the user's current scope; hub.wake reads it concurrently.
	mu    sync.Mutex
	scope syncproto.Scope

	compress bool // zstd negotiated
	live     bool
	welcomed bool // handshake done (reader only)

	out        chan []byte   // frames for the writer
	replies    chan []byte   // welcome and acks, sent before queued changes (reader only)
	stop       chan struct{} // closed when the session must end
	stopOnce   sync.Once
	writerDone chan struct{} // closed when the writer has returned
	drain      chan struct{} // closed by the reader: writer may finish
	stopping   atomic.Bool
	endMu      sync.Mutex
	endCode    int
	endText    string
	endErr     *syncproto.Error // sent before the close frame, if set

	// streamMu guards the streamer's hand-over: whether one runs, and what
	// it has to do. At most one streamer runs at a time; the goroutine
	// that finds nothing left to do clears running and returns, and the
	// next wake-up starts another (under streamMu, so its writes to the
	// streamer's state below happen before the next one reads them).
	streamMu     sync.Mutex
	running      bool // a streamer runs or will (the first is run's)
	streamOver   bool // no streamer may start: the session ends, or is not live
	pendingWake  bool // the log grew in the session's scope
	pendingScope bool // the user's scope changed
	streamers    sync.WaitGroup

	// The streamer's state, owned by whichever streamer runs.
	sentCP syncproto.Checkpoint // the last checkpoint sent
	cursor map[string]uint64    // per area, how far changes were sent

	pushes *bucket // changes per second
	// rateHold: pushes before this time are held back (reader only).
	rateHold time.Time
	frames   *bucket // frames per second
	bytesIn  int64
}

const outQueue = 64

func (srv *Server) newSession(c *websocket.Conn, d Device, u User) *session {
	now := srv.cfg.Now
	return &session{
		srv: srv, conn: c, device: d, user: u,
		log:        srv.log.With("device", d.ID),
		out:        make(chan []byte, outQueue),
		replies:    make(chan []byte, 1),
		running:    true, // run starts the first streamer after the handshake
		stop:       make(chan struct{}),
		writerDone: make(chan struct{}),
		drain:      make(chan struct{}),
		pushes:     srv.pushBucket(d.ID),
		frames:     newBucket(float64(srv.cfg.MessageRate), float64(4*srv.cfg.MessageRate), now),
	}
}

// sees reports whether the session's scope covers any of areas.
func (ss *session) sees(areas map[string]struct{}) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.scope.All {
		return len(areas) > 0
	}
	for _, a := range ss.scope.Areas {
		if _, ok := areas[a]; ok {
			return true
		}
	}
	return false
}

func (ss *session) currentScope() syncproto.Scope {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.scope
}

func (ss *session) setScope(sc syncproto.Scope) {
	ss.mu.Lock()
	ss.scope = sc
	ss.mu.Unlock()
}

// wake tells the session the log grew in its scope. It never blocks.
func (ss *session) wake() { ss.notify(&ss.pendingWake) }

// scopeChanged tells the session its user's scope changed. It never blocks.
func (ss *session) scopeChanged() { ss.notify(&ss.pendingScope) }

// notify sets a pending flag and starts a streamer if none runs.
func (ss *session) notify(flag *bool) {
	ss.streamMu.Lock()
	defer ss.streamMu.Unlock()
	if ss.streamOver {
		return
	}
	*flag = true
	if !ss.running {
		ss.running = true
		ss.streamers.Add(1)
		go func() { defer ss.streamers.Done(); ss.follow() }() // owned by the session: run waits for streamers
	}
}

// stopStreaming lets no further streamer start.
func (ss *session) stopStreaming() {
	ss.streamMu.Lock()
	ss.streamOver = true
	ss.streamMu.Unlock()
}

// close ends the session with a close frame after in-flight work finishes.
func (ss *session) close(code int, text string) { ss.end(code, text, nil) }

// fail ends the session with an error message and the error's close code.
func (ss *session) fail(err *syncproto.Error) { ss.end(err.Code.CloseCode(), string(err.Code), err) }

func (ss *session) end(code int, text string, err *syncproto.Error) {
	ss.endMu.Lock()
	if ss.endCode == 0 {
		ss.endCode, ss.endText, ss.endErr = code, text, err
	}
	ss.endMu.Unlock()
	ss.stopping.Store(true)
	ss.stopStreaming()
	ss.stopOnce.Do(func() { close(ss.stop) })
	// Unblock the reader; it finishes what it is doing and tears down.
	_ = ss.conn.SetReadDeadline(time.Now())
}

// abort drops the connection at once.
func (ss *session) abort() {
	ss.end(syncproto.CloseGoingAway, "aborted", nil)
	_ = ss.conn.NetConn().Close()
}

// sendAck queues an ack as a reply: the writer sends it before any changes
// already queued (PROTOCOL.md §5.1: an ack may come between any messages),
// so that a push's ack does not wait for a backlog streaming meanwhile.
func (ss *session) sendAck(a *syncproto.Ack) bool {
	frame, ok := ss.encode(a)
	return ok && ss.reply(frame)
}

// encode encodes m for this session and counts its bytes; a failure ends
// the session with a generic internal error.
func (ss *session) encode(m syncproto.Message) ([]byte, bool) {
	frame, err := ss.srv.codec.Encode(m, ss.compress)
	if err != nil {
		ss.log.Error("encode message", "type", m.Type().String(), "err", err)
		ss.fail(syncproto.ToWire(errors.New("encode failed")))
		return nil, false
	}
	ss.srv.metrics.bytes.WithLabelValues("out").Add(float64(len(frame)))
	return frame, true
}

// reply queues a frame for the writer ahead of queued changes. Only the
// reader replies, welcome first, so replies keep their order, and nothing
// the streamer queues (it starts after the welcome) can overtake the
// welcome: the writer always takes a waiting reply first.
func (ss *session) reply(frame []byte) bool {
	select {
	case ss.replies <- frame:
		return true
	case <-ss.writerDone:
		return false
	}
}

// send queues a streamed frame for the writer. It gives up if the writer
// is gone or the session is stopping.
func (ss *session) send(frame []byte) bool {
	select {
	case ss.out <- frame:
		return true
	case <-ss.stop:
		return false
	case <-ss.writerDone:
		return false
	}
}

// sendMsg queues m as a streamed frame.
func (ss *session) sendMsg(m syncproto.Message) bool {
	frame, ok := ss.encode(m)
	return ok && ss.send(frame)
}

// writeLoop owns every write to the socket.
func (ss *session) writeLoop() {
	defer close(ss.writerDone)
	ping := time.NewTicker(ss.srv.cfg.PingInterval)
	defer ping.Stop()
	write := func(frame []byte) error {
		_ = ss.conn.SetWriteDeadline(time.Now().Add(ss.srv.cfg.WriteTimeout))
		return ss.conn.WriteMessage(websocket.BinaryMessage, frame)
	}
	fail := func() {
		ss.end(syncproto.CloseGoingAway, "write failed", nil)
		_ = ss.conn.NetConn().Close()
	}
	for {
		select {
		case f := <-ss.replies: // first: a reply overtakes queued changes
			if write(f) != nil {
				fail()
				return
			}
			continue
		default:
		}
		select {
		case f := <-ss.replies:
			if write(f) != nil {
				fail()
				return
			}
		case f := <-ss.out:
			// A reply queued before f (the welcome before the first
			// changes, which the streamer only starts after queueing it)
			// may have arrived while this select waited: it goes first.
			select {
			case r := <-ss.replies:
				if write(r) != nil {
					fail()
					return
				}
			default:
			}
			if write(f) != nil {
				fail()
				return
			}
		case <-ping.C:
			if err := ss.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(ss.srv.cfg.WriteTimeout)); err != nil {
				ss.end(syncproto.CloseGoingAway, "ping failed", nil)
				_ = ss.conn.NetConn().Close()
				return
			}
		case <-ss.drain:
			for {
				select {
				case f := <-ss.replies:
					if write(f) != nil {
						_ = ss.conn.NetConn().Close()
						return
					}
					continue
				default:
				}
				select {
				case f := <-ss.replies:
					if write(f) != nil {
						_ = ss.conn.NetConn().Close()
						return
					}
					continue
				case f := <-ss.out:
					if write(f) != nil {
						_ = ss.conn.NetConn().Close()
						return
					}
					continue
				default:
				}
				break
			}
			ss.endMu.Lock()
			code, text, e := ss.endCode, ss.endText, ss.endErr
			ss.endMu.Unlock()
			if code == 0 {
				code, text = syncproto.CloseNormal, ""
			}
			if e != nil {
				if f, err := ss.srv.codec.Encode(e, false); err == nil {
					_ = write(f)
				}
			}
			_ = ss.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, text), time.Now().Add(time.Second))
			_ = ss.conn.NetConn().Close()
			return
		}
	}
}

// run serves the session until it ends. It is the handler goroutine.
func (ss *session) run() {
	go ss.writeLoop() // owned by run: it returns after drain, and run waits for writerDone
	defer func() {
		ss.end(syncproto.CloseNormal, "", nil) // no streamer starts from here on
		ss.streamers.Wait()                    // a running one stops on ss.stop
		// Leave the hub before the close frame goes out: a client that
		// reconnects on seeing it must not find its old session counted.
		ss.srv.hub.remove(ss)
		close(ss.drain)
		<-ss.writerDone
		if ss.welcomed {
			// Off the handshake's path: an fsync there would delay every sync.
			ss.touchLastSeen()
		}
	}()
	// A panic in a handler must never reach the client as text: log it and
	// end the session with a generic internal error.
	defer func() {
		if p := recover(); p != nil {
			ss.log.Error("panic in session", "panic", p)
			ss.fail(syncproto.ToWire(errors.New("panic")))
		}
	}()

	hello, err := ss.readHello()
	if err != nil {
		ss.fail(syncproto.ToWire(err))
		return
	}
	if err := ss.welcome(hello); err != nil {
		ss.fail(syncproto.ToWire(err))
		return
	}
	ss.welcomed = true
	ss.streamers.Add(1)
	go func() { defer ss.streamers.Done(); ss.stream(hello.Checkpoint) }()
	ss.readLoop()
}

// readFrame reads one binary message with the read deadline armed.
func (ss *session) readFrame(timeout time.Duration) ([]byte, error) {
	_ = ss.conn.SetReadDeadline(time.Now().Add(timeout))
	if ss.stopping.Load() {
		return nil, errStopping
	}
	typ, frame, err := ss.conn.ReadMessage()
	if err != nil {
		if errors.Is(err, websocket.ErrReadLimit) {
			return nil, syncproto.Errorf(syncproto.ErrFrameTooLarge, "frame exceeds %d bytes", ss.srv.codec.MaxFrame())
		}
		return nil, err
	}
	ss.bytesIn += int64(len(frame))
	ss.srv.metrics.bytes.WithLabelValues("in").Add(float64(len(frame)))
	if typ != websocket.BinaryMessage {
		return nil, syncproto.Errorf(syncproto.ErrMalformed, "text WebSocket messages are not part of the protocol; send binary frames")
	}
	if !ss.frames.take(1) {
		return nil, &syncproto.Error{Code: syncproto.CodeRate, Reason: "flood", Message: "too many messages; slow down", RetryAfterMS: 1000}
	}
	return frame, nil
}

var errStopping = errors.New("session stopping")

// readHello waits for the first frame, which must be hello.
func (ss *session) readHello() (*syncproto.Hello, error) {
	ss.conn.SetReadLimit(int64(syncproto.HeaderLen + syncproto.MaxHelloPayload))
	frame, err := ss.readFrame(ss.srv.cfg.HandshakeTimeout)
	if err != nil {
		return nil, ss.peerErr(err)
	}
	h, err := syncproto.ParseHeader(frame)
	if err != nil {
		return nil, err
	}
	if h.Type != syncproto.TypeHello {
		return nil, syncproto.Errorf(syncproto.ErrUnexpected, "the first message must be hello, not %s", h.Type)
	}
	m, err := ss.srv.codec.Decode(frame, false)
	if err != nil {
		return nil, err
	}
	hello := m.(*syncproto.Hello)
	if err := syncproto.Negotiate(hello.Version); err != nil {
		return nil, err
	}
	if hello.Device != ss.device.ID {
		return nil, &syncproto.Error{Code: syncproto.CodeAuth, Reason: "device_mismatch", Message: "hello names another device than the token's; use this device's own token"}
	}
	return hello, nil
}

// peerErr turns a read error into what to tell the peer, if anything.
func (ss *session) peerErr(err error) error {
	var pe *syncproto.Error
	if errors.As(err, &pe) {
		return pe
	}
	return &syncproto.Error{Code: syncproto.CodeProtocol, Reason: "timeout", Message: "no hello in time; send hello first"}
}

func (ss *session) welcome(hello *syncproto.Hello) error {
	for _, c := range hello.Compression {
		if c == syncproto.CompressionZstd {
			ss.compress = true
		}
	}
	ss.live = hello.Live
	var scope syncproto.Scope
	var head uint64
	err := ss.srv.store.View(context.Background(), func(tx Tx) error {
		// Read the device and user again: the session is registered with
		// the hub now, so a revocation or scope change from here on reaches
		// it, but one made since the upgrade's check would be missed.
		d, err := tx.Device(ss.device.ID)
		if err != nil {
			return err
		}
		if !d.Revoked.IsZero() {
			return errRevoked
		}
		if ss.user, err = tx.User(d.User); err != nil {
			return err
		}
		if scope, err = ss.srv.scopeOf(tx, ss.user); err != nil {
			return err
		}
		head, err = tx.Head()
		return err
	})
	if err != nil {
		if !errors.Is(err, errRevoked) {
			ss.log.Error("welcome: read scope", "err", err)
		}
		return err
	}
	ss.setScope(scope)
	w := &syncproto.Welcome{
		Version:  hello.Version, // Negotiate accepted it
		ServerID: ss.srv.store.Meta().ServerID,
		Epoch:    ss.srv.store.Meta().Epoch,
		User:     ss.user.Name,
		Role:     ss.user.Role,
		Scope:    scope,
		Limits: syncproto.Limits{
			MaxPayload: ss.srv.cfg.MaxPayload, MaxBatch: ss.srv.cfg.MaxBatch,
			MaxRecord: syncproto.MaxRecord, MaxText: syncproto.MaxText, Rate: ss.srv.cfg.Rate,
		},
		Time: ss.srv.cfg.Now().UnixMilli(),
		Seq:  head,
	}
	if ss.compress {
		w.Compression = syncproto.CompressionZstd
	}
	// Welcome is never compressed: the client learns only from it that it may be.
	frame, err := ss.srv.codec.Encode(w, false)
	if err != nil {
		return err
	}
	if !ss.reply(frame) {
		return errStopping
	}
	ss.conn.SetReadLimit(int64(ss.srv.codec.MaxFrame()))
	ss.log.Info("session started", "user_role", ss.user.Role, "live", ss.live, "checkpoint_seq", hello.Checkpoint.Seq)
	return nil
}

// readLoop reads frames until the session ends.
func (ss *session) readLoop() {
	ss.conn.SetPongHandler(func(string) error {
		if !ss.stopping.Load() {
			_ = ss.conn.SetReadDeadline(time.Now().Add(ss.srv.cfg.ReadTimeout))
		}
		return nil
	})
	for {
		frame, err := ss.readFrame(ss.srv.cfg.ReadTimeout)
		if err != nil {
			var pe *syncproto.Error
			var ne net.Error
			switch {
			case errors.As(err, &pe):
				ss.fail(pe)
			case errors.As(err, &ne) && ne.Timeout() && !ss.stopping.Load():
				// A silent peer (no frames, no pongs): drop it.
				ss.end(syncproto.CloseGoingAway, "read timeout", nil)
			}
			return
		}
		m, err := ss.decode(frame)
		if err != nil {
			ss.fail(syncproto.ToWire(err))
			return
		}
		switch m := m.(type) {
		case *syncproto.Push:
			ack, err := ss.srv.push(ss, m)
			if err != nil {
				ss.log.Error("push failed", "err", err)
				ss.fail(syncproto.ToWire(err))
				return
			}
			if !ss.sendAck(ack) {
				return
			}
		case *syncproto.Unknown:
			// A newer client's message: skip it.
		case *syncproto.Error:
			ss.log.Info("client reported an error", "code", string(m.Code), "reason", m.Reason)
		default:
			ss.fail(syncproto.Errorf(syncproto.ErrUnexpected, "a client may not send %s after hello", m.Type()))
			return
		}
	}
}

// decode decodes a frame after the handshake, holding a CPU slot.
func (ss *session) decode(frame []byte) (syncproto.Message, error) {
	ss.srv.cpu.take()
	defer ss.srv.cpu.give()
	return ss.srv.codec.Decode(frame, ss.compress)
}

// touchLastSeen records when the device was last connected, for the admin's
// device list. It is bookkeeping: a failure is logged, not fatal.
func (ss *session) touchLastSeen() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := ss.srv.store.Update(ctx, func(tx Tx) error {
		d, err := tx.Device(ss.device.ID)
		if err != nil {
			return err
		}
		d.LastSeen = ss.srv.cfg.Now().UTC()
		return tx.PutDevice(d)
	})
	if err != nil {
		ss.log.Warn("record last seen", "err", err)
	}
}
