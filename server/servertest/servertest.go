// Package servertest runs a real casesync server on a random loopback port
// for tests, with a bbolt store in a temporary directory, and speaks the
// protocol to it over real WebSockets — the net/http/httptest of casesync.
package servertest

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/casesync/casesync/server"
	"github.com/casesync/casesync/server/boltstore"
)

// Server is a running test server.
type Server struct {
	// URL is the server's base URL, http://127.0.0.1:PORT.
	URL string
	// WS is the sync endpoint, ws://127.0.0.1:PORT/v1/sync.
	WS string
	// Addr is the listen address.
	Addr string
	// AdminToken authenticates the admin API.
	AdminToken string
	// Dir holds the store file.
	Dir string

	Srv   *server.Server
	Store *boltstore.Store
	wrap  func(server.Store) server.Store
	mu    sync.Mutex // serialises Stop and Restart
	tb    testing.TB
	cfg   server.Config
	done  chan error
}

// Options adjust the test server.
type Options struct {
	// Config is the server configuration; Store, Logger and AdminTokenHash
	// are filled in.
	Config server.Config
	// Dir reuses a data directory (for restart tests); default tb.TempDir().
	Dir string
	// Addr to listen on; default 127.0.0.1:0.
	Addr string
	// WrapStore, if set, wraps the store the server uses, to inject faults.
	WrapStore func(server.Store) server.Store
}

// NewServer starts a server and stops it when the test ends.
func NewServer(tb testing.TB, opts *Options) *Server {
	tb.Helper()
	if opts == nil {
		opts = &Options{}
	}
	dir := opts.Dir
	if dir == "" {
		dir = tb.TempDir()
	}
	s := &Server{tb: tb, Dir: dir, AdminToken: "cs_admin_test_token", cfg: opts.Config, wrap: opts.WrapStore}
	addr := opts.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	s.start(addr)
	tb.Cleanup(func() { s.Stop() })
	return s
}

func (s *Server) start(addr string) {
	s.tb.Helper()
	st, err := boltstore.Open(filepath.Join(s.Dir, "casesync.db"), &boltstore.Options{Timeout: time.Second})
	if err != nil {
		s.tb.Fatalf("open store: %v", err)
	}
	cfg := s.cfg
	cfg.Store = st
	if s.wrap != nil {
		cfg.Store = s.wrap(st)
	}
	cfg.AdminTokenHash = server.HashToken(s.AdminToken)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	srv, err := server.New(cfg)
	if err != nil {
		st.Close()
		s.tb.Fatalf("new server: %v", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		st.Close()
		s.tb.Fatalf("listen: %v", err)
	}
	s.Srv, s.Store = srv, st
	s.Addr = ln.Addr().String()
	s.URL = "http://" + s.Addr
	s.WS = "ws://" + s.Addr + "/v1/sync"
	s.done = make(chan error, 1)
	go func() { s.done <- srv.Serve(ln) }()
	s.waitReady()
}

func (s *Server) waitReady() {
	s.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/readyz", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-ctx.Done():
			s.tb.Fatalf("server at %s not ready: %v", s.URL, err)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// Stop shuts the server down gracefully and closes its store. It is
// idempotent.
func (s *Server) Stop() {
	s.tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.Srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Srv.Shutdown(ctx); err != nil {
		s.tb.Errorf("shutdown: %v", err)
	}
	if err := <-s.done; err != nil && !errors.Is(err, server.ErrServerClosed) {
		s.tb.Errorf("serve: %v", err)
	}
	if err := s.Store.Close(); err != nil {
		s.tb.Errorf("close store: %v", err)
	}
	s.Srv = nil
}

// Restart stops the server and starts it again on the same address and
// data directory.
func (s *Server) Restart() {
	s.tb.Helper()
	s.Stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.start(s.Addr)
}

// AddUser creates a user through the admin API.
func (s *Server) AddUser(name, role string, areas ...string) {
	s.tb.Helper()
	if areas == nil {
		areas = []string{}
	}
	s.Admin(http.MethodPost, "/v1/admin/users", map[string]any{"name": name, "role": role, "areas": areas}, nil)
}

// SetAreas replaces a user's areas through the admin API.
func (s *Server) SetAreas(name string, areas ...string) {
	s.tb.Helper()
	if areas == nil {
		areas = []string{}
	}
	s.Admin(http.MethodPut, "/v1/admin/users/"+name+"/areas", map[string]any{"areas": areas}, nil)
}

// Enroll enrolls a device for user and returns its ID and token.
func (s *Server) Enroll(user string) (device, token string) {
	s.tb.Helper()
	var out server.Enrollment
	s.Admin(http.MethodPost, "/v1/admin/devices", map[string]any{"user": user, "label": "test"}, &out)
	return out.Device.ID, out.Token
}

// Revoke revokes a device through the admin API.
func (s *Server) Revoke(device string) {
	s.tb.Helper()
	s.Admin(http.MethodPost, "/v1/admin/devices/"+device+"/revoke", nil, nil)
}

// Admin calls the admin API and fails the test on an error status.
func (s *Server) Admin(method, path string, body, out any) {
	s.tb.Helper()
	if status, msg := s.AdminStatus(method, path, body, out); status >= 300 {
		s.tb.Fatalf("%s %s: %d %s", method, path, status, msg)
	}
}

// AdminStatus calls the admin API and returns the status and raw answer.
func (s *Server) AdminStatus(method, path string, body, out any) (int, string) {
	s.tb.Helper()
	return doJSON(s.tb, method, s.URL+path, s.AdminToken, body, out)
}
