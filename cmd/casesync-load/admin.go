package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// admin creates the load test's users and devices through casesyncd's
// admin API (the same calls `casesyncd admin` makes), so the load
// generator needs nothing from the server but its URL and admin token.
type admin struct {
	server string
	token  string
	http   *http.Client
}

func newAdmin(server, token string) *admin {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = enrollWorkers
	return &admin{server: server, token: token, http: &http.Client{Timeout: 30 * time.Second, Transport: tr}}
}

// enrollWorkers is how many enrollments run at once. Each is one store
// update with fsync; the server's writer group-commits concurrent ones, so
// a few in flight make ten thousand take seconds instead of a minute.
const enrollWorkers = 16

// call sends one admin request and decodes the JSON answer into out.
func (a *admin) call(ctx context.Context, method, path string, body, out any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, method, a.server+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(data))
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

// addUser creates a caseworker with the given areas.
func (a *admin) addUser(ctx context.Context, name string, areas ...string) error {
	return a.call(ctx, http.MethodPost, "/v1/admin/users", map[string]any{"name": name, "role": "caseworker", "areas": areas}, nil)
}

// enroll enrolls one device for user.
func (a *admin) enroll(ctx context.Context, user, label string) (device, error) {
	var out struct {
		Device struct {
			ID string `json:"id"`
		} `json:"device"`
		Token string `json:"token"`
	}
	if err := a.call(ctx, http.MethodPost, "/v1/admin/devices", map[string]any{"user": user, "label": label}, &out); err != nil {
		return device{}, err
	}
	return device{ID: out.Device.ID, Token: out.Token, User: user}, nil
}

// enrollMany enrolls devices for users: userOf(i) names the user of the
// i-th device.
func (a *admin) enrollMany(ctx context.Context, n int, userOf func(i int) string) ([]device, error) {
	devs := make([]device, n)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
		next  = make(chan int)
	)
	for range enrollWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				d, err := a.enroll(ctx, userOf(i), fmt.Sprintf("load %d", i))
				if err != nil {
					once.Do(func() { first = err; cancel() })
					continue
				}
				devs[i] = d
			}
		}()
	}
feed:
	for i := range n {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if first != nil {
		return nil, first
	}
	return devs, ctx.Err()
}
