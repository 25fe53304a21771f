package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/casesync/casesync/syncproto"
)

// Config configures a Server. Zero values take the defaults documented on
// each field.
type Config struct {
	// Store holds the server's data. Required.
	Store Store
	// Logger receives the server's logs; they never contain note text,
	// names or tokens. Default: slog.Default().
	Logger *slog.Logger
	// AdminTokenHash is the SHA-256 of the admin token (see HashToken). An
	// empty hash disables the admin API.
	AdminTokenHash []byte

	// MaxPayload is the largest decoded frame payload accepted. Default 4 MiB.
	MaxPayload int
	// MaxBatch is the largest number of changes in one push. Default 1000.
	MaxBatch int
	// Rate is the sustained changes per second one device may push, and
	// Burst how many it may push at once. Defaults 2000 and 10000.
	Rate, Burst int
	// MessageRate is the sustained frames per second a connection may send
	// before it is closed as a flood. Default 200 (burst 4×).
	MessageRate int
	// MaxConnsPerDevice bounds a device's concurrent connections. Default 4.
	MaxConnsPerDevice int
	// BatchRecords bounds the records in one changes message. Default 500.
	BatchRecords int
	// Decoders bounds how many sessions decode a message or prepare a
	// push at once. Default GOMAXPROCS-1, at least 1: the store's single
	// writer needs a core of its own, and 200 sessions decoding at once
	// left it waiting for one a fifth of its time (BENCHMARKS.md, load).
	Decoders int

	// HandshakeTimeout bounds the wait for hello. Default 10 s.
	HandshakeTimeout time.Duration
	// PingInterval is how often the server pings. Default 30 s.
	PingInterval time.Duration
	// ReadTimeout drops a peer silent for this long (pongs count).
	// Default 75 s.
	ReadTimeout time.Duration
	// WriteTimeout drops a peer that does not take a frame in this long,
	// so a stuck device cannot hold resources. Default 30 s.
	WriteTimeout time.Duration

	// Now reads the wall clock. Default time.Now.
	Now func() time.Time
}

func (c *Config) setDefaults() {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defDur := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	def(&c.MaxPayload, 4<<20)
	c.MaxPayload = min(c.MaxPayload, syncproto.MaxPayload)
	def(&c.MaxBatch, 1000)
	c.MaxBatch = min(c.MaxBatch, syncproto.MaxBatch)
	def(&c.Rate, 2000)
	def(&c.Burst, 10000)
	def(&c.MessageRate, 200)
	def(&c.MaxConnsPerDevice, 4)
	def(&c.BatchRecords, 500)
	def(&c.Decoders, max(1, runtime.GOMAXPROCS(0)-1))
	defDur(&c.HandshakeTimeout, 10*time.Second)
	defDur(&c.PingInterval, 30*time.Second)
	defDur(&c.ReadTimeout, 75*time.Second)
	defDur(&c.WriteTimeout, 30*time.Second)
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Server serves the sync protocol, health and metrics endpoints and the
// admin API. Create it with New, run it with Serve, stop it with Shutdown.
type Server struct {
	cfg     Config
	store   headStore // cfg.Store, knowing its latest commit's head
	log     *slog.Logger
	app     *fiber.App
	codec   *syncproto.Codec
	clock   *syncproto.Clock
	hub     *hub
	metrics *metrics
	cpu     slots // held while decoding a message or preparing a push

	bucketsMu sync.Mutex
	buckets   map[string]*bucket // push rate per device, shared by its sessions

	closing  atomic.Bool
	mu       sync.Mutex
	serving  bool
	sessions sync.WaitGroup // every session's handler goroutine
}

// New returns a server over cfg.Store. It does not listen yet.
func New(cfg Config) (*Server, error) {
	if cfg.Store == nil {
		return nil, errors.New("server: Config.Store is required")
	}
	cfg.setDefaults()
	codec, err := syncproto.NewCodec(cfg.MaxPayload)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:     cfg,
		store:   headStore{Store: cfg.Store, head: new(atomic.Uint64)},
		log:     cfg.Logger,
		codec:   codec,
		clock:   syncproto.NewClock(cfg.Now, 0),
		hub:     newHub(),
		metrics: newMetrics(),
		buckets: make(map[string]*bucket),
		cpu:     make(slots, cfg.Decoders),
	}
	if err := cfg.Store.View(context.Background(), func(tx Tx) error {
		h, err := tx.Head()
		s.store.head.Store(h)
		return err
	}); err != nil {
		return nil, fmt.Errorf("server: read the log head: %w", err)
	}
	s.app = s.routes()
	return s, nil
}

// Serve accepts connections on ln until Shutdown. It returns
// ErrServerClosed after Shutdown, or the listener's error.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.serving = true
	s.mu.Unlock()
	err := s.app.Listener(ln)
	if s.closing.Load() {
		return ErrServerClosed
	}
	if err != nil {
		return fmt.Errorf("server: serve: %w", err)
	}
	return nil
}

// Shutdown stops the server gracefully: it stops accepting connections,
// lets in-flight pushes commit and be acknowledged, closes every WebSocket
// with 1001 (going away), and waits for their goroutines, or for ctx. It
// does not close the store: its owner does, after Shutdown returns.
func (s *Server) Shutdown(ctx context.Context) error {
	if !s.closing.CompareAndSwap(false, true) {
		return nil
	}
	var errs []error
	// New upgrades are refused from here on (authDevice checks closing).
	// Fiber's shutdown does not end upgraded connections, and fasthttp
	// waits for them: close the sessions first, alongside the HTTP stop.
	s.hub.closeAll(syncproto.CloseGoingAway, "server shutting down")
	s.mu.Lock()
	serving := s.serving
	s.mu.Unlock()
	httpDone := make(chan error, 1)
	if serving {
		go func() { httpDone <- s.app.ShutdownWithContext(ctx) }()
	} else {
		httpDone <- nil
	}
	done := make(chan struct{})
	go func() { s.sessions.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		s.hub.abortAll()
		<-done
		errs = append(errs, fmt.Errorf("server: sessions still open at deadline: %w", ctx.Err()))
	}
	if err := <-httpDone; err != nil {
		errs = append(errs, fmt.Errorf("server: stop http: %w", err))
	}
	s.codec.Close()
	return errors.Join(errs...)
}

// pushBucket returns the device's push-rate bucket: one per device, so
// reconnecting or opening more sessions does not refill or multiply it.
func (s *Server) pushBucket(device string) *bucket {
	s.bucketsMu.Lock()
	defer s.bucketsMu.Unlock()
	b, ok := s.buckets[device]
	if !ok {
		b = newBucket(float64(s.cfg.Rate), float64(s.cfg.Burst), s.cfg.Now)
		s.buckets[device] = b
	}
	return b
}

// Ready reports whether the server accepts sessions: not shutting down and
// its store answers.
func (s *Server) Ready(ctx context.Context) error {
	if s.closing.Load() {
		return ErrServerClosed
	}
	return s.store.View(ctx, func(tx Tx) error { _, err := tx.Head(); return err })
}
