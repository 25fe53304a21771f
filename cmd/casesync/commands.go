package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/casesync/casesync/client"
	"github.com/casesync/casesync/syncproto"
)

var commands map[string]func(e *env, args []string) error

func init() {
	commands = map[string]func(*env, []string) error{
		"enroll":           cmdEnroll,
		"case add":         cmdCaseAdd,
		"case set":         cmdCaseSet,
		"note add":         cmdNoteAdd,
		"note set":         cmdNoteSet,
		"note delete":      cmdNoteDelete,
		"cases":            cmdCases,
		"show":             cmdShow,
		"sync":             cmdSync,
		"run":              cmdRun,
		"status":           cmdStatus,
		"conflicts":        cmdConflicts,
		"resolve":          cmdResolve,
		"rejected":         cmdRejected,
		"rejected dismiss": cmdDismiss,
	}
}

// multi is a repeatable string flag.
type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

// parse parses flags interspersed with positional arguments.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// flags returns a command's flag set; --json is accepted after the command
// as well as before it.
func (e *env) flags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("casesync "+name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.BoolVar(&e.json, "json", e.json, "print JSON")
	return fs
}

// noArgs parses a command that takes only the common flags.
func (e *env) noArgs(name string, args []string) error {
	pos, err := parse(e.flags(name), args)
	if err != nil {
		return err
	}
	return want(pos, 0, name)
}

func want(pos []string, n int, usage string) error {
	if len(pos) != n {
		return fmt.Errorf("%w: casesync %s", errUsage, usage)
	}
	return nil
}

// print writes v as JSON with --json, or calls human.
func (e *env) print(v any, human func(w io.Writer)) error {
	if e.json {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	human(tw)
	return tw.Flush()
}

// stringFields are set from k=v as plain strings, whatever they look like.
var stringFields = map[string]bool{
	"title": true, "tenant": true, "address": true, "area": true, "status": true, "owner": true,
	"summary": true, "next_action": true, "text": true, "kind": true, "occurred_at": true,
	"referred_to": true, "follow_up": true, "case_id": true, "author": true,
}

// fieldValue turns the v of k=v into a value: tags split on commas, an
// empty value clears a field, known text fields stay strings, and other
// (extra) fields take JSON if v is JSON.
func fieldValue(k, v string) any {
	switch {
	case v == "":
		return nil
	case k == "tags":
		var tags []string
		for _, t := range strings.Split(v, ",") {
			if t = strings.TrimSpace(t); t != "" {
				tags = append(tags, t)
			}
		}
		return tags
	case stringFields[k]:
		return v
	}
	var j any
	if json.Unmarshal([]byte(v), &j) == nil {
		return json.RawMessage(v)
	}
	return v
}

func assignments(args []string) (map[string]any, error) {
	out := map[string]any{}
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%q is not field=value", a)
		}
		out[k] = fieldValue(k, v)
	}
	return out, nil
}

func cmdEnroll(e *env, args []string) error {
	fs := e.flags("enroll")
	srv := fs.String("server", "", "server URL, e.g. http://127.0.0.1:8420")
	tok := fs.String("token", "", "device token from 'casesyncd admin device enroll'")
	insecure := fs.Bool("insecure", false, "allow http:// to a server on another machine (test networks only)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if err := want(pos, 0, "enroll --server URL --token T"); err != nil || *srv == "" || *tok == "" {
		return fmt.Errorf("%w: casesync enroll --server URL --token T", errUsage)
	}
	e.opts.AllowInsecure = *insecure
	c, err := e.open()
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Enroll(e.ctx, *srv, *tok); err != nil {
		return err
	}
	st, err := c.Status(e.ctx)
	if err != nil {
		return err
	}
	return e.print(st, func(w io.Writer) {
		fmt.Fprintf(w, "enrolled as %s (%s), device %s, areas %s\n", st.User, st.Role, st.Device, strings.Join(st.Areas, ","))
	})
}

func cmdCaseAdd(e *env, args []string) error {
	fs := e.flags("case add")
	area := fs.String("area", "", "area (neighbourhood)")
	title := fs.String("title", "", "title")
	tenant := fs.String("tenant", "", "tenant name")
	address := fs.String("address", "", "address")
	var sets multi
	fs.Var(&sets, "set", "field=value (repeatable)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if err := want(pos, 0, "case add --area A --title T [--tenant N] [--address A] [--set k=v]..."); err != nil {
		return err
	}
	fields, err := assignments(sets)
	if err != nil {
		return err
	}
	for k, v := range map[string]string{"area": *area, "title": *title, "tenant": *tenant, "address": *address} {
		if v != "" {
			fields[k] = v
		}
	}
	c, err := e.open()
	if err != nil {
		return err
	}
	defer c.Close()
	id, err := c.CreateCase(e.ctx, fields)
	if err != nil {
		return err
	}
	return e.print(map[string]string{"id": id}, func(w io.Writer) { fmt.Fprintln(w, id) })
}

func cmdCaseSet(e *env, args []string) error {
	if len(args) < 2 {
		return fmt.Errorf("%w: casesync case set ID k=v...", errUsage)
	}
	fields, err := assignments(args[1:])
	if err != nil {
		return err
	}
	c, err := e.open()
	if err != nil {
		return err
	}
	defer c.Close()
	return c.SetCase(e.ctx, args[0], fields)
}

func cmdNoteAdd(e *env, args []string) error {
	fs := e.flags("note add")
	kind := fs.String("kind", syncproto.KindNote, "visit, call, office_hours, letter, referral, team_meeting or note")
	text := fs.String("text", "", "the note; read from stdin when omitted")
	at := fs.String("at", "", "when it happened (RFC 3339 or YYYY-MM-DD); default now")
	refTo := fs.String("referred-to", "", "for a referral: the service referred to")
	follow := fs.String("follow-up", "", "for a referral: follow-up date (YYYY-MM-DD)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if err := want(pos, 1, "note add CASE --kind K [--text T]"); err != nil {
		return err
	}
	body := *text
	if !isFlagSet(fs, "text") {
		if f, ok := e.stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			fmt.Fprintln(e.stderr, "Type the note; end with Ctrl-D:")
		}
		b, err := io.ReadAll(io.LimitReader(e.stdin, syncproto.MaxText+1))
		if err != nil {
			return fmt.Errorf("read note from stdin: %w", err)
		}
		body = strings.TrimRight(string(b), "\n")
	}
	fields := map[string]any{"kind": *kind, "text": body}
	if *at != "" {
		fields["occurred_at"] = *at
	}
	if *refTo != "" {
		fields["referred_to"] = *refTo
	}
	if *follow != "" {
		fields["follow_up"] = *follow
	}
	c, err := e.open()
	if err != nil {
		return err
	}
	defer c.Close()
	id, err := c.AddEntry(e.ctx, pos[0], fields)
	if err != nil {
		return err
	}
	return e.print(map[string]string{"id": id}, func(w io.Writer) { fmt.Fprintln(w, id) })
}

func isFlagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func cmdNoteSet(e *env, args []string) error {
	if len(args) < 2 {
		return fmt.Errorf("%w: casesync note set ID k=v...", errUsage)
	}
	fields, err := assignments(args[1:])
	if err != nil {
		return err
	}
	c, err := e.open()
	if err != nil {
		return err
	}
	defer c.Close()
	return c.EditEntry(e.ctx, args[0], fields)
}

func cmdNoteDelete(e *env, args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("%w: casesync note delete ID", errUsage)
	}
	c, err := e.open()
	if err != nil {
		return err
	}
	defer c.Close()
	return c.DeleteEntry(e.ctx, args[0])
}

func cmdCases(e *env, args []string) error {
	fs := e.flags("cases")
	var f client.Filter
	fs.StringVar(&f.Area, "area", "", "only this area")
	fs.StringVar(&f.Status, "status", "", "only this status (open, waiting, closed)")
	fs.StringVar(&f.Search, "search", "", "text to look for in cases and their notes")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if err := want(pos, 0, "cases [--area A] [--status S] [--search Q]"); err != nil {
		return err
	}
	c, err := e.open()
	if err != nil {
		return err
	}
	defer c.Close()
	cases, err := c.Cases(e.ctx, f)
	if err != nil {
		return err
	}
	if cases == nil {
		cases = []*client.View{}
	}
	return e.print(cases, func(w io.Writer) {
		fmt.Fprintln(w, "ID\tAREA\tSTATUS\tTITLE\tTENANT\t")
		for _, v := range cases {
			flag := ""
			if len(v.Conflicts) > 0 {
				flag = "conflict"
			}
			if v.Pending {
				flag = strings.TrimSpace(flag + " unsynced")
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", v.ID, v.Area, v.String("status"), v.String("title"), v.String("tenant"), flag)
		}
	})
}

func cmdShow(e *env, args []string) error {
	args, err := parse(e.flags("show"), args)
	if err != nil {
		return err
	}
	if len(args) != 1 {
		return fmt.Errorf("%w: casesync show ID", errUsage)
	}
	c, err := e.open()
	if err != nil {
		return err
	}
	defer c.Close()
	v, err := c.Find(e.ctx, args[0])
	if err != nil {
		return err
	}
	var entries []*client.View
	if v.Collection == syncproto.Cases {
		if entries, err = c.Entries(e.ctx, v.ID); err != nil {
			return err
		}
	}
	out := struct {
		*client.View
		Entries []*client.View `json:"entries,omitempty"`
	}{v, entries}
	return e.print(out, func(w io.Writer) {
		fmt.Fprintf(w, "%s %s (area %s)\n", strings.TrimSuffix(string(v.Collection), "s"), v.ID, v.Area)
		for _, k := range sortedKeys(v.Fields) {
			fmt.Fprintf(w, "  %s:\t%s\n", k, display(v.Fields[k]))
		}
		for _, cf := range v.Conflicts {
			fmt.Fprintf(w, "  CONFLICT %s: %d values (casesync conflicts)\n", cf.Field, len(cf.Values))
		}
		for _, en := range entries {
			fmt.Fprintf(w, "\n%s  %s  by %s  [%s]\n%s\n", en.String("occurred_at"), en.String("kind"), en.String("author"), en.ID, en.String("text"))
		}
	})
}

func display(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	return string(raw)
}

func sortedKeys(m map[string]json.RawMessage) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	for i := 1; i < len(keys); i++ {
		for j := i; j > 0 && keys[j] < keys[j-1]; j-- {
			keys[j], keys[j-1] = keys[j-1], keys[j]
		}
	}
	return keys
}

func cmdSync(e *env, args []string) error {
	if err := e.noArgs("sync", args); err != nil {
		return err
	}
	c, err := e.open()
	if err != nil {
		return err
	}
	defer c.Close()
	var bar *progressbar.ProgressBar
	opts := &client.SyncOptions{}
	if f, ok := e.stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) && !e.json {
		opts.Progress = func(p client.Progress) {
			total := int64(p.ToPush) + int64(max(p.Head, p.Seq)-min(p.Head, p.Seq))
			if bar == nil && total > 200 {
				bar = progressbar.NewOptions64(total, progressbar.OptionSetWriter(e.stderr), progressbar.OptionSetDescription("syncing"), progressbar.OptionShowCount(), progressbar.OptionClearOnFinish())
			}
			if bar != nil {
				_ = bar.Set64(int64(p.Pushed + p.Pulled))
			}
		}
	}
	res, err := c.Sync(e.ctx, opts)
	if bar != nil {
		_ = bar.Finish()
	}
	if err != nil {
		if errors.Is(err, client.ErrUnreachable) {
			return fmt.Errorf("%w\nyour local data is untouched; changes stay queued until the next sync", err)
		}
		return err
	}
	return e.print(res, func(w io.Writer) {
		fmt.Fprintf(w, "pushed %d, pulled %d, removed %d, conflicts %d, rejected %d", res.Pushed, res.Pulled, res.Evicted, res.Conflicts, res.Rejected)
		if res.Deferred > 0 {
			fmt.Fprintf(w, ", deferred %d (server busy)", res.Deferred)
		}
		fmt.Fprintln(w)
		if res.Rejected > 0 {
			fmt.Fprintln(w, "see 'casesync rejected' for the changes the server refused")
		}
	})
}

func cmdRun(e *env, args []string) error {
	if err := e.noArgs("run", args); err != nil {
		return err
	}
	// Other casesync commands keep working beside 'run': the replica's
	// file is held only for each transaction.
	e.opts.Shared = true
	c, err := e.open()
	if err != nil {
		return err
	}
	defer c.Close()
	fmt.Fprintln(e.stderr, "casesync: syncing in the background; Ctrl-C to stop")
	events, cancel := c.Subscribe()
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.Run(e.ctx) }()
	for {
		select {
		case err := <-done:
			return err // a *client.RevokedError is told by main
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if ev.Remote && len(ev.Keys) > 0 {
				fmt.Fprintf(e.stderr, "%s received %d change(s)\n", time.Now().Format(time.TimeOnly), len(ev.Keys))
			}
		}
	}
}

func cmdStatus(e *env, args []string) error {
	if err := e.noArgs("status", args); err != nil {
		return err
	}
	c, err := e.open()
	if err != nil {
		return err
	}
	defer c.Close()
	st, err := c.Status(e.ctx)
	if err != nil {
		return err
	}
	return e.print(st, func(w io.Writer) {
		if !st.Enrolled {
			fmt.Fprintln(w, "not enrolled: casesync enroll --server URL --token T")
			return
		}
		last := "never"
		if !st.LastSync.IsZero() {
			last = st.LastSync.Local().Format(time.DateTime)
		}
		fmt.Fprintf(w, "user\t%s (%s)\nserver\t%s\ndevice\t%s\nareas\t%s\nconnected\t%v\npending\t%d\nconflicts\t%d\nrejected\t%d\nlast sync\t%s\n",
			st.User, st.Role, st.Server, st.Device, strings.Join(st.Areas, ","), st.Connected, st.Pending, st.Conflicts, st.Rejected, last)
		if st.LastError != "" {
			fmt.Fprintf(w, "last error\t%s\n", st.LastError)
		}
	})
}

func cmdConflicts(e *env, args []string) error {
	if err := e.noArgs("conflicts", args); err != nil {
		return err
	}
	c, err := e.open()
	if err != nil {
		return err
	}
	defer c.Close()
	cs, err := c.Conflicts(e.ctx)
	if err != nil {
		return err
	}
	if cs == nil {
		cs = []client.RecordConflict{}
	}
	return e.print(cs, func(w io.Writer) {
		if len(cs) == 0 {
			fmt.Fprintln(w, "no conflicts")
			return
		}
		fmt.Fprintln(w, "RECORD\tFIELD\tVALUE ID\tVALUE\tWRITTEN")
		for _, rc := range cs {
			for _, cf := range rc.Conflicts {
				for i, v := range cf.Values {
					mark := ""
					if i == 0 {
						mark = " (shown)"
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%s%s\t%s\n", rc.Key.ID, cf.Field, client.ValueID(v), display(v.Data), mark, v.Stamp.Time().Local().Format(time.DateTime))
				}
				if len(cf.Edited) > 0 {
					fmt.Fprintf(w, "%s\t%s\t\tdeleted while %s was edited\t\n", rc.Key.ID, cf.Field, strings.Join(cf.Edited, ","))
				}
			}
		}
		fmt.Fprintln(w, "resolve with: casesync resolve ID FIELD --keep VALUE_ID   (or --value V)")
	})
}

func cmdResolve(e *env, args []string) error {
	fs := e.flags("resolve")
	value := fs.String("value", "", "the new value")
	keep := fs.String("keep", "", "the value ID to keep (see casesync conflicts)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if err := want(pos, 2, "resolve ID FIELD (--value V | --keep VALUE_ID)"); err != nil {
		return err
	}
	if isFlagSet(fs, "value") == isFlagSet(fs, "keep") {
		return fmt.Errorf("%w: give exactly one of --value and --keep", errUsage)
	}
	c, err := e.open()
	if err != nil {
		return err
	}
	defer c.Close()
	var v any
	if *keep == "" {
		v = fieldValue(pos[1], *value)
	}
	return c.Resolve(e.ctx, pos[0], pos[1], *keep, v)
}

func cmdRejected(e *env, args []string) error {
	if err := e.noArgs("rejected", args); err != nil {
		return err
	}
	c, err := e.open()
	if err != nil {
		return err
	}
	defer c.Close()
	rs, err := c.Rejected(e.ctx)
	if err != nil {
		return err
	}
	if rs == nil {
		rs = []client.Rejected{}
	}
	return e.print(rs, func(w io.Writer) {
		if len(rs) == 0 {
			fmt.Fprintln(w, "no rejected changes")
			return
		}
		fmt.Fprintln(w, "SEQ\tRECORD\tFIELDS\tCODE\tREASON")
		for _, r := range rs {
			var names []string
			for k := range r.Change.Fields {
				names = append(names, k)
			}
			fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\n", r.Change.Seq, r.Change.Key(), strings.Join(names, ","), r.Error.Code, r.Error.Message)
		}
		fmt.Fprintln(w, "dismiss one once dealt with: casesync rejected dismiss SEQ")
	})
}

func cmdDismiss(e *env, args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("%w: casesync rejected dismiss SEQ", errUsage)
	}
	seq, err := strconv.ParseUint(args[0], 10, 64)
	if err != nil {
		return fmt.Errorf("%w: SEQ must be a number", errUsage)
	}
	c, err := e.open()
	if err != nil {
		return err
	}
	defer c.Close()
	return c.Dismiss(e.ctx, seq)
}
