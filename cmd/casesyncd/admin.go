package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"
)

const adminUsage = `Usage: casesyncd admin [--server URL] [--token-file F] [--json] COMMAND

Commands:
  user add NAME --role caseworker|lead --areas A,B
  user set-areas NAME --areas A,B
  user list
  device enroll USER [--label L]     prints the new device token alone on stdout
  device list
  device revoke DEVICE
  conflicts [--area A]
`

type adminClient struct {
	server string
	token  string
	http   *http.Client
}

func admin(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("casesyncd admin", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, adminUsage); fs.PrintDefaults() }
	srvURL := fs.String("server", envOr("CASESYNC_SERVER", "http://127.0.0.1:8420"), "server URL (env CASESYNC_SERVER)")
	tokenFile := fs.String("token-file", envOr("CASESYNC_ADMIN_TOKEN_FILE", "./casesync-data/admin.token"), "admin token file (env CASESYNC_ADMIN_TOKEN_FILE)")
	asJSON := fs.Bool("json", false, "print JSON")
	role := fs.String("role", "", "user role: caseworker or lead")
	areas := fs.String("areas", "", "comma-separated areas")
	label := fs.String("label", "", "device label")
	area := fs.String("area", "", "only this area")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		fs.Usage()
		return errUsage
	}
	known := map[string]bool{"user add": true, "user set-areas": true, "user list": true, "device enroll": true, "device list": true, "device revoke": true, "conflicts": true}
	if !known[strings.Join(pos[:min(2, len(pos))], " ")] && pos[0] != "conflicts" {
		fs.Usage()
		return errUsage
	}
	b, err := os.ReadFile(*tokenFile)
	if err != nil {
		return fmt.Errorf("read admin token: %w (pass --token-file; casesyncd writes it to <data>/admin.token)", err)
	}
	c := &adminClient{server: strings.TrimRight(*srvURL, "/"), token: strings.TrimSpace(string(b)), http: &http.Client{Timeout: 30 * time.Second}}
	splitAreas := func() []string {
		var out []string
		for _, a := range strings.Split(*areas, ",") {
			if a = strings.TrimSpace(a); a != "" {
				out = append(out, a)
			}
		}
		if out == nil {
			out = []string{}
		}
		return out
	}
	need := func(n int, what string) error {
		if len(pos) != n {
			fmt.Fprintf(stderr, "usage: casesyncd admin %s\n", what)
			return errUsage
		}
		return nil
	}
	var out any
	cmd := strings.Join(pos[:min(2, len(pos))], " ")
	switch cmd {
	case "user add":
		if err := need(3, "user add NAME --role caseworker|lead --areas A,B"); err != nil {
			return err
		}
		out, err = c.do(ctx, http.MethodPost, "/v1/admin/users", map[string]any{"name": pos[2], "role": *role, "areas": splitAreas()})
	case "user set-areas":
		if err := need(3, "user set-areas NAME --areas A,B"); err != nil {
			return err
		}
		out, err = c.do(ctx, http.MethodPut, "/v1/admin/users/"+url.PathEscape(pos[2])+"/areas", map[string]any{"areas": splitAreas()})
	case "user list":
		out, err = c.do(ctx, http.MethodGet, "/v1/admin/users", nil)
	case "device enroll":
		if err := need(3, "device enroll USER [--label L]"); err != nil {
			return err
		}
		out, err = c.do(ctx, http.MethodPost, "/v1/admin/devices", map[string]any{"user": pos[2], "label": *label})
		if err == nil && !*asJSON {
			// The token alone on stdout, so scripts can capture it.
			fmt.Fprintln(stdout, out.(map[string]any)["token"])
			return nil
		}
	case "device list":
		out, err = c.do(ctx, http.MethodGet, "/v1/admin/devices", nil)
	case "device revoke":
		if err := need(3, "device revoke DEVICE"); err != nil {
			return err
		}
		out, err = c.do(ctx, http.MethodPost, "/v1/admin/devices/"+url.PathEscape(pos[2])+"/revoke", nil)
	case "conflicts":
		q := ""
		if *area != "" {
			q = "?area=" + url.QueryEscape(*area)
		}
		out, err = c.do(ctx, http.MethodGet, "/v1/admin/conflicts"+q, nil)
	default:
		fs.Usage()
		return errUsage
	}
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	return printHuman(stdout, cmd, out)
}

// do calls the admin API and decodes its JSON answer.
func (c *adminClient) do(ctx context.Context, method, path string, body any) (any, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.server+path, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("reach casesyncd at %s: %w (is it running? pass --server)", c.server, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("read answer: %w", err)
	}
	var out any
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, fmt.Errorf("server answered %s with non-JSON", resp.Status)
	}
	if resp.StatusCode >= 300 {
		if m, ok := out.(map[string]any); ok {
			return nil, fmt.Errorf("%s: %v (%v)", resp.Status, m["message"], m["code"])
		}
		return nil, errors.New(resp.Status)
	}
	return out, nil
}

func printHuman(w io.Writer, cmd string, out any) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	defer tw.Flush()
	str := func(m map[string]any, k string) string {
		switch v := m[k].(type) {
		case nil:
			return ""
		case string:
			return v
		case []any:
			parts := make([]string, len(v))
			for i, p := range v {
				parts[i] = fmt.Sprint(p)
			}
			return strings.Join(parts, ",")
		default:
			return fmt.Sprint(v)
		}
	}
	rows := func(v any) []map[string]any {
		switch v := v.(type) {
		case []any:
			out := make([]map[string]any, 0, len(v))
			for _, x := range v {
				if m, ok := x.(map[string]any); ok {
					out = append(out, m)
				}
			}
			return out
		case map[string]any:
			return []map[string]any{v}
		}
		return nil
	}
	switch {
	case strings.HasPrefix(cmd, "user"):
		fmt.Fprintln(tw, "NAME\tROLE\tAREAS")
		for _, m := range rows(out) {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", str(m, "name"), str(m, "role"), str(m, "areas"))
		}
	case strings.HasPrefix(cmd, "device"):
		fmt.Fprintln(tw, "DEVICE\tUSER\tLABEL\tONLINE\tREVOKED\tLAST SEEN")
		for _, m := range rows(out) {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", str(m, "id"), str(m, "user"), str(m, "label"), str(m, "online"), str(m, "revoked"), str(m, "last_seen"))
		}
	case cmd == "conflicts":
		fmt.Fprintln(tw, "RECORD\tAREA\tFIELD\tVALUES")
		for _, m := range rows(out) {
			cs, _ := m["conflicts"].([]any)
			for _, c := range cs {
				cm, _ := c.(map[string]any)
				vals, _ := cm["values"].([]any)
				var vs []string
				for _, v := range vals {
					vm, _ := v.(map[string]any)
					vs = append(vs, fmt.Sprintf("%v", vm["val"]))
				}
				fmt.Fprintf(tw, "%s/%s\t%s\t%s\t%s\n", str(m, "coll"), str(m, "id"), str(m, "area"), str(cm, "field"), strings.Join(vs, " | "))
			}
		}
	}
	return nil
}
