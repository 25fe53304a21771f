package server

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/gofiber/contrib/websocket"
	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/adaptor"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/casesync/casesync/syncproto"
)

// maxHeader is the largest upgrade request header accepted: tokens and
// proxies' headers fit with room to spare.
const maxHeader = 16 << 10

// Locals keys: only string keys cross into the WebSocket handler.
const (
	localDevice = "casesync.device"
	localUser   = "casesync.user"
)

func (s *Server) routes() *fiber.App {
	app := fiber.New(fiber.Config{
		AppName:               "casesyncd",
		DisableStartupMessage: true,
		ReadBufferSize:        maxHeader + 4<<10,
		BodyLimit:             1 << 20,
		ReadTimeout:           30 * time.Second,
		WriteTimeout:          30 * time.Second,
		IdleTimeout:           120 * time.Second,
		ErrorHandler:          s.errorHandler,
		// An upgraded connection would otherwise keep its request buffers
		// for life: 20 KiB per idle device (BENCHMARKS.md, load).
		ReduceMemoryUsage: true,
	})
	app.Use(s.recoverer)
	app.Get("/healthz", func(c *fiber.Ctx) error { return c.SendString("ok\n") })
	app.Get("/readyz", func(c *fiber.Ctx) error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := s.Ready(ctx); err != nil {
			return c.Status(http.StatusServiceUnavailable).SendString("not ready\n")
		}
		return c.SendString("ready\n")
	})
	app.Get("/metrics", adaptor.HTTPHandler(promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{})))
	app.Get("/v1/sync", s.authDevice, websocket.New(s.handleSession, websocket.Config{
		HandshakeTimeout: 10 * time.Second,
		// Small read buffers and pooled write buffers: most devices are
		// idle most of the day, and frames larger than a buffer still work.
		ReadBufferSize:    4 << 10,
		WriteBufferSize:   16 << 10,
		WriteBufferPool:   &sync.Pool{},
		EnableCompression: false, // zstd in the frame instead: see PROTOCOL.md §2
		RecoverHandler:    s.recoverSession,
	}))
	app.Get("/v1/device", s.authToken, s.whoami)
	s.adminRoutes(app.Group("/v1/admin", s.authAdmin))
	return app
}

// errorHandler writes every HTTP error as a syncproto error object.
func (s *Server) errorHandler(c *fiber.Ctx, err error) error {
	var fe *fiber.Error
	if errors.As(err, &fe) {
		code := syncproto.CodeProtocol
		if fe.Code >= 500 {
			code = syncproto.CodeInternal
		}
		return c.Status(fe.Code).JSON(&syncproto.Error{Code: code, Message: fe.Message})
	}
	var pe *syncproto.Error
	if !errors.As(err, &pe) {
		s.log.Error("request failed", "path", c.Path(), "err", err)
	}
	return c.Status(statusOf(err)).JSON(syncproto.ToWire(err))
}

// recoverer turns a panic in an HTTP handler into a generic 500: panic
// text never reaches the client.
func (s *Server) recoverer(c *fiber.Ctx) (err error) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("panic in handler", "path", c.Path(), "panic", p)
			err = errors.New("panic")
		}
	}()
	return c.Next()
}

func (s *Server) recoverSession(c *websocket.Conn) {
	if p := recover(); p != nil {
		s.log.Error("panic in session", "panic", p)
		_ = c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(syncproto.CloseInternal, "internal"), time.Now().Add(time.Second))
	}
}

// authDevice authenticates the upgrade request's bearer token.
func (s *Server) authDevice(c *fiber.Ctx) error {
	if s.closing.Load() {
		return c.Status(http.StatusServiceUnavailable).JSON(errShutdown)
	}
	if !websocket.IsWebSocketUpgrade(c) {
		return c.Status(http.StatusUpgradeRequired).JSON(&syncproto.Error{Code: syncproto.CodeProtocol, Reason: "upgrade", Message: "this endpoint speaks the casesync protocol over WebSocket"})
	}
	return s.authToken(c)
}

// Identity is what GET /v1/device tells an enrolling client about its token.
type Identity struct {
	Device string          `json:"device"`
	User   string          `json:"user"`
	Role   string          `json:"role"`
	Scope  syncproto.Scope `json:"scope"`
}

// whoami answers GET /v1/device: the device and user a token belongs to,
// so that a client enrolled with a token alone learns its device ID.
func (s *Server) whoami(c *fiber.Ctx) error {
	dev, _ := c.Locals(localDevice).(Device)
	user, _ := c.Locals(localUser).(User)
	id := Identity{Device: dev.ID, User: user.Name, Role: user.Role}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.store.View(ctx, func(tx Tx) error {
		var err error
		id.Scope, err = s.scopeOf(tx, user)
		return err
	})
	if err != nil {
		return err
	}
	return c.JSON(id)
}

// authToken authenticates a device's bearer token.
func (s *Server) authToken(c *fiber.Ctx) error {
	tok, ok := bearer(c.Get(fiber.HeaderAuthorization))
	if !ok {
		return c.Status(http.StatusUnauthorized).JSON(errNoToken)
	}
	var dev Device
	var user User
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.store.View(ctx, func(tx Tx) error {
		var err error
		if dev, err = tx.DeviceByToken(HashToken(tok)); err != nil {
			return err
		}
		user, err = tx.User(dev.User)
		return err
	})
	switch {
	case errors.Is(err, ErrNotFound):
		return c.Status(http.StatusUnauthorized).JSON(errBadToken)
	case err != nil:
		return err
	case !dev.Revoked.IsZero():
		return c.Status(http.StatusUnauthorized).JSON(errRevoked)
	}
	c.Locals(localDevice, dev)
	c.Locals(localUser, user)
	return c.Next()
}

// handleSession serves one WebSocket for its whole life.
func (s *Server) handleSession(c *websocket.Conn) {
	s.sessions.Add(1)
	defer s.sessions.Done()
	dev, _ := c.Locals(localDevice).(Device)
	user, _ := c.Locals(localUser).(User)
	ss := s.newSession(c, dev, user)
	if !s.hub.add(ss, s.cfg.MaxConnsPerDevice) {
		e := errTooManyConns
		if s.closing.Load() {
			e = errShutdown
		}
		if f, err := s.codec.Encode(e, false); err == nil {
			_ = c.WriteMessage(websocket.BinaryMessage, f)
		}
		_ = c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(e.Code.CloseCode(), string(e.Code)), time.Now().Add(time.Second))
		return
	}
	defer s.hub.remove(ss)
	s.metrics.connected.Inc()
	defer s.metrics.connected.Dec()
	ss.run()
	ss.endMu.Lock()
	reason := "normal"
	if ss.endErr != nil {
		reason = string(ss.endErr.Code)
	}
	ss.endMu.Unlock()
	s.metrics.dropped.WithLabelValues(reason).Inc()
	ss.log.Info("session ended", "reason", reason, "bytes_in", ss.bytesIn)
}
