package main

// The server under test is a real casesyncd process, built from this
// checkout, on a free loopback port with its own data directory: what an
// office would run, measured from outside (/proc) the way an operator sees
// it. Users and devices are made through its admin HTTP API.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// buildServer compiles ./cmd/casesyncd of the module at root into dir.
func buildServer(ctx context.Context, root, dir string) (string, error) {
	bin := filepath.Join(dir, "casesyncd")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/casesyncd")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/casesyncd: %w\n%s", err, out)
	}
	return bin, nil
}

// casesyncd is a running server process.
type casesyncd struct {
	cmd   *exec.Cmd
	addr  string // host:port
	url   string // http://host:port
	data  string
	token string // admin token
	logf  string
	done  chan struct{} // closed when the process has exited
	err   error         // its exit status, once done
	http  *http.Client
}

// freeAddr returns a loopback address nobody listens on right now.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := ln.Addr().String()
	return addr, ln.Close()
}

// startServer runs bin on data (created if missing) and waits until it
// answers /healthz. Its log (warnings and errors only: info-level logs
// of every session would cost the server time we are measuring) goes to
// data/../<base>.log.
func startServer(ctx context.Context, bin, data string) (*casesyncd, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	logf := data + ".log"
	lf, err := os.OpenFile(logf, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "serve", "--addr", addr, "--data", data, "--log-level", "warn")
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start casesyncd: %w", err)
	}
	s := &casesyncd{cmd: cmd, addr: addr, url: "http://" + addr, data: data, logf: logf,
		done: make(chan struct{}), http: &http.Client{Timeout: 30 * time.Second}}
	go func() { s.err = cmd.Wait(); lf.Close(); close(s.done) }()
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := s.http.Get(s.url + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case <-s.done:
			return nil, fmt.Errorf("casesyncd exited at start (%v): %s", s.err, s.tail())
		case <-ctx.Done():
			s.stop()
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, fmt.Errorf("casesyncd did not answer /healthz within 15 s: %s", s.tail())
		}
	}
	tok, err := os.ReadFile(filepath.Join(data, "admin.token"))
	if err != nil {
		s.stop()
		return nil, err
	}
	s.token = strings.TrimSpace(string(tok))
	return s, nil
}

func (s *casesyncd) pid() int { return s.cmd.Process.Pid }

// stop shuts the server down gracefully (SIGTERM: pushes commit, the
// store closes cleanly, so its data directory can be copied), killing it
// if that takes over 30 s. It is idempotent.
func (s *casesyncd) stop() error {
	select {
	case <-s.done:
		return nil
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
		return errors.New("casesyncd did not stop within 30 s; killed")
	}
	var ee *exec.ExitError
	if s.err != nil && !errors.As(s.err, &ee) {
		return s.err
	}
	if s.err != nil {
		return fmt.Errorf("casesyncd exited with %v: %s", s.err, s.tail())
	}
	return nil
}

// tail returns the end of the server's log, for error messages.
func (s *casesyncd) tail() string {
	b, _ := os.ReadFile(s.logf)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// admin calls the admin API.
func (s *casesyncd) admin(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, s.url+"/v1/admin"+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+s.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("admin %s %s: %s: %s", method, path, resp.Status, b)
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

func (s *casesyncd) addUser(ctx context.Context, name, role string, areas []string) error {
	return s.admin(ctx, http.MethodPost, "/users", map[string]any{"name": name, "role": role, "areas": areas}, nil)
}

// enroll makes a device for user and returns its token.
func (s *casesyncd) enroll(ctx context.Context, user, label string) (string, error) {
	var e struct {
		Token string `json:"token"`
	}
	if err := s.admin(ctx, http.MethodPost, "/devices", map[string]string{"user": user, "label": label}, &e); err != nil {
		return "", err
	}
	return e.Token, nil
}

// copyDir copies the regular files under src to dst (a fresh directory):
// stopped servers' data directories and closed replicas are snapshots that
// each run starts from.
func copyDir(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(to, 0o700)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		in, err := os.Open(p)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.OpenFile(to, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	})
}
