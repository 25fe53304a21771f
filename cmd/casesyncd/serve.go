package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/casesync/casesync/server"
	"github.com/casesync/casesync/server/boltstore"
)

// serveConfig is casesyncd serve's configuration.
type serveConfig struct {
	addr, data       string
	tlsCert, tlsKey  string
	logLevel         string
	shutdownDeadline time.Duration
	gcPercent        int
	memoryLimit      string
	cpuProfile       string
	tuning           tuning
}

func serveFlags(stderr io.Writer) (*flag.FlagSet, *serveConfig) {
	c := &serveConfig{}
	fs := flag.NewFlagSet("casesyncd serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.addr, "addr", envOr("CASESYNC_ADDR", "127.0.0.1:8420"), "listen address (env CASESYNC_ADDR)")
	fs.StringVar(&c.data, "data", envOr("CASESYNC_DATA", "./casesync-data"), "data directory (env CASESYNC_DATA)")
	fs.StringVar(&c.tlsCert, "tls-cert", envOr("CASESYNC_TLS_CERT", ""), "TLS certificate file; serve wss:// (env CASESYNC_TLS_CERT)")
	fs.StringVar(&c.tlsKey, "tls-key", envOr("CASESYNC_TLS_KEY", ""), "TLS key file (env CASESYNC_TLS_KEY)")
	fs.StringVar(&c.logLevel, "log-level", envOr("CASESYNC_LOG_LEVEL", "info"), "debug, info, warn or error (env CASESYNC_LOG_LEVEL)")
	fs.DurationVar(&c.shutdownDeadline, "shutdown-timeout", 30*time.Second, "how long a graceful shutdown may take")
	fs.IntVar(&c.gcPercent, "gc-percent", gcPercentDefault(), "garbage collector target percentage, -1 for off (default 400 unless GOGC is set)")
	fs.StringVar(&c.memoryLimit, "memory-limit", memoryLimitDefault(), "soft memory limit of the Go runtime, e.g. 384MiB, or off (default unless GOMEMLIMIT is set)")
	fs.StringVar(&c.cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run to this file (for BENCHMARKS.md; the store's writer is labelled role=writer)")
	c.tuning.register(fs)
	return fs, c
}

func serve(ctx context.Context, args []string, stderr io.Writer) error {
	fs, c := serveFlags(stderr)
	if pos, err := parse(fs, args); err != nil {
		return err
	} else if len(pos) > 0 {
		return fmt.Errorf("serve takes no arguments, got %q", pos)
	}
	if err := c.tuning.fromEnv(fs); err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	if (c.tlsCert == "") != (c.tlsKey == "") {
		return errors.New("--tls-cert and --tls-key go together")
	}
	if err := applyGC(c.gcPercent, c.memoryLimit); err != nil {
		return err
	}
	if c.cpuProfile != "" {
		stop, err := startCPUProfile(c.cpuProfile)
		if err != nil {
			return err
		}
		defer stop()
	}

	// Take the address first: a second casesyncd on a busy port must not
	// create a data directory or token on its way to failing.
	ln, err := net.Listen("tcp", c.addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w (is another casesyncd running? use --addr)", c.addr, err)
	}
	defer ln.Close()
	if err := os.MkdirAll(c.data, 0o700); err != nil {
		return fmt.Errorf("create data directory: %w", err)
	}
	storeOpts := &boltstore.Options{Timeout: time.Second, Logger: log}
	cfg := server.Config{Logger: log}
	c.tuning.apply(&cfg, storeOpts)
	store, err := boltstore.Open(filepath.Join(c.data, "casesync.db"), storeOpts)
	if err != nil {
		return err
	}
	defer store.Close()
	adminHash, err := adminToken(c.data, log)
	if err != nil {
		return err
	}
	cfg.Store, cfg.AdminTokenHash = store, adminHash
	srv, err := server.New(cfg)
	if err != nil {
		return err
	}
	scheme := "http"
	if c.tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(c.tlsCert, c.tlsKey)
		if err != nil {
			ln.Close()
			return fmt.Errorf("load TLS certificate: %w", err)
		}
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
		scheme = "https"
	}
	if tcp, ok := ln.Addr().(*net.TCPAddr); ok && c.tlsCert == "" && !tcp.IP.IsLoopback() {
		log.Warn("serving without TLS on a non-loopback address: tokens and case notes would cross the network in clear; use --tls-cert and --tls-key (or a TLS-terminating proxy on this host)")
	}
	log.Info("casesyncd listening", "url", scheme+"://"+ln.Addr().String(), "data", c.data)

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	// A second signal stops the process at once.
	signal.Reset(os.Interrupt, syscall.SIGTERM)
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), c.shutdownDeadline)
	defer cancel()
	err = srv.Shutdown(sctx)
	if serr := <-errc; serr != nil && !errors.Is(serr, server.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	if cerr := store.Close(); cerr != nil {
		err = errors.Join(err, fmt.Errorf("close store: %w", cerr))
	}
	if err == nil {
		log.Info("stopped cleanly")
	}
	return err
}

// adminToken returns the hash of the admin token in <data>/admin.token,
// creating the file (mode 0600) with a new token on first start. The token
// itself is never logged.
func adminToken(dir string, log *slog.Logger) ([]byte, error) {
	path := filepath.Join(dir, "admin.token")
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		tok := server.NewToken()
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, fmt.Errorf("create admin token: %w", err)
		}
		if _, err := f.WriteString(tok + "\n"); err != nil {
			f.Close()
			return nil, fmt.Errorf("write admin token: %w", err)
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return nil, fmt.Errorf("write admin token: %w", err)
		}
		if err := f.Close(); err != nil {
			return nil, fmt.Errorf("write admin token: %w", err)
		}
		log.Info("created admin token; casesyncd admin reads it from this file", "path", path)
		return server.HashToken(tok), nil
	}
	if err != nil {
		return nil, fmt.Errorf("read admin token: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return nil, fmt.Errorf("admin token file %s is empty; delete it to make a new token", path)
	}
	log.Info("admin token", "path", path)
	return server.HashToken(tok), nil
}

// startCPUProfile profiles the process into path until the returned
// function is called.
func startCPUProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}
