// Package caseload reads the shared synthetic caseload
// (shared/datasets/caseload-1k.jsonl.gz: 1,000 cases, 20,000 home-visit
// notes) and maps it onto casesync's record model, so that the benchmark
// command and the micro-benchmarks measure the same records a team would
// really sync, mapped one way only (shared/datasets/README.md).
//
// It is benchmark support: nothing in the product imports it.
package caseload

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/casesync/casesync/syncproto"
)

// DefaultFile is the dataset's file name under shared/datasets.
const DefaultFile = "caseload-1k.jsonl.gz"

// Case is one dataset case, already mapped to casesync's vocabulary.
type Case struct {
	ID            string   // dataset _id, e.g. case-000001 (a valid record ID)
	Title         string   // the dataset has none: derived from the tags (see title)
	Tenant        string   // tenant_name
	Address       string   // address
	Area          string   // neighbourhood
	Status        string   // status, mapped to open/waiting/closed
	Owner         string   // assigned_worker
	Tags          []string // tags
	Priority      int      // extra field priority
	HouseholdSize int      // extra field household_size
	OpenedAt      string   // extra field opened_at
	UpdatedAt     string   // extra field updated_at
}

// Note is one dataset note, mapped to an entry.
type Note struct {
	ID          string // dataset _id, e.g. note-0000001
	CaseID      string // case_id
	Author      string // author: the pushing user must be this worker
	Kind        string // home_visit → visit
	OccurredAt  string // visit_date (a date is a valid date-time)
	Text        string // text
	DurationMin int    // extra field duration_min
	CreatedAt   string // extra field created_at
	UpdatedAt   string // extra field updated_at
}

// Dataset is the whole caseload, in file order (cases first).
type Dataset struct {
	Cases []Case
	Notes []Note
	// Lines holds the raw JSON lines, for measuring the machine's limits
	// (bbolt bulk load, zstd, JSON decode) on exactly the same bytes.
	Lines [][]byte
	// JSONBytes is the uncompressed size, newlines included.
	JSONBytes int64
}

// raw is one line of the file.
type raw struct {
	ID            string   `json:"_id"`
	Type          string   `json:"type"`
	TenantName    string   `json:"tenant_name"`
	Address       string   `json:"address"`
	Neighbourhood string   `json:"neighbourhood"`
	Status        string   `json:"status"`
	Tags          []string `json:"tags"`
	Worker        string   `json:"assigned_worker"`
	Priority      int      `json:"priority"`
	HouseholdSize int      `json:"household_size"`
	OpenedAt      string   `json:"opened_at"`
	UpdatedAt     string   `json:"updated_at"`
	Kind          string   `json:"kind"`
	CaseID        string   `json:"case_id"`
	Author        string   `json:"author"`
	VisitDate     string   `json:"visit_date"`
	DurationMin   int      `json:"duration_min"`
	CreatedAt     string   `json:"created_at"`
	Text          string   `json:"text"`
}

// DecodeLine decodes one raw line the way Load does; it is exported so a
// benchmark can time JSON decoding of the dataset's own bytes.
func DecodeLine(line []byte) error {
	var r raw
	return json.Unmarshal(line, &r)
}

// statuses maps the dataset's Dutch statuses onto casesync's three.
var statuses = map[string]string{
	"intake":           syncproto.StatusOpen,
	"actief":           syncproto.StatusOpen,
	"wacht_op_reactie": syncproto.StatusWaiting,
	"doorverwezen":     syncproto.StatusWaiting,
	"afgesloten":       syncproto.StatusClosed,
}

// kinds maps the dataset's note kinds onto entry kinds.
var kinds = map[string]string{"home_visit": syncproto.KindVisit}

// Load reads and maps the dataset at path (gzip-compressed JSON lines).
func Load(path string) (*Dataset, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("caseload: %w", err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return nil, fmt.Errorf("caseload: %s: %w", path, err)
	}
	return Read(zr)
}

// Read maps uncompressed JSON lines from r.
func Read(r io.Reader) (*Dataset, error) {
	d := &Dataset{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 1<<20), 16<<20)
	cases := map[string]bool{}
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		d.JSONBytes += int64(len(sc.Bytes())) + 1
		if len(line) == 0 {
			continue
		}
		var x raw
		if err := json.Unmarshal(line, &x); err != nil {
			return nil, fmt.Errorf("caseload: line %d: %w", n, err)
		}
		d.Lines = append(d.Lines, bytes.Clone(line))
		switch x.Type {
		case "case":
			st, ok := statuses[x.Status]
			if !ok {
				return nil, fmt.Errorf("caseload: line %d: unknown status %q", n, x.Status)
			}
			d.Cases = append(d.Cases, Case{
				ID: x.ID, Title: title(x), Tenant: x.TenantName, Address: x.Address,
				Area: x.Neighbourhood, Status: st, Owner: x.Worker, Tags: x.Tags,
				Priority: x.Priority, HouseholdSize: x.HouseholdSize,
				OpenedAt: x.OpenedAt, UpdatedAt: x.UpdatedAt,
			})
			cases[x.ID] = true
		case "note":
			k, ok := kinds[x.Kind]
			if !ok {
				k = syncproto.KindNote
			}
			if !cases[x.CaseID] {
				return nil, fmt.Errorf("caseload: line %d: note %s names unknown case %q", n, x.ID, x.CaseID)
			}
			d.Notes = append(d.Notes, Note{
				ID: x.ID, CaseID: x.CaseID, Author: x.Author, Kind: k,
				OccurredAt: x.VisitDate, Text: x.Text, DurationMin: x.DurationMin,
				CreatedAt: x.CreatedAt, UpdatedAt: x.UpdatedAt,
			})
		default:
			return nil, fmt.Errorf("caseload: line %d: unknown type %q", n, x.Type)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("caseload: %w", err)
	}
	if len(d.Cases) == 0 {
		return nil, errors.New("caseload: no cases")
	}
	return d, nil
}

// title makes the required case title the dataset lacks: the case's tags,
// which is what a caseworker would write ("huisvesting, huurachterstand"),
// or the tenant's name for an untagged case.
func title(x raw) string {
	if len(x.Tags) > 0 {
		return strings.Join(x.Tags, ", ")
	}
	return x.TenantName
}

// Fields returns the case's fields as client.CreateCase takes them.
func (c *Case) Fields() map[string]any {
	return map[string]any{
		syncproto.FieldTitle: c.Title, syncproto.FieldTenant: c.Tenant,
		syncproto.FieldAddress: c.Address, syncproto.FieldArea: c.Area,
		syncproto.FieldStatus: c.Status, syncproto.FieldOwner: c.Owner,
		syncproto.FieldTags: c.Tags,
		"priority":          c.Priority, "household_size": c.HouseholdSize,
		"opened_at": c.OpenedAt, "updated_at": c.UpdatedAt,
	}
}

// Fields returns the note's fields as client.AddEntry takes them; AddEntry
// adds case_id and author itself.
func (n *Note) Fields() map[string]any {
	return map[string]any{
		syncproto.FieldKind: n.Kind, syncproto.FieldText: n.Text,
		syncproto.FieldOccurredAt: n.OccurredAt,
		"duration_min":            n.DurationMin, "created_at": n.CreatedAt, "updated_at": n.UpdatedAt,
	}
}

// Areas returns the dataset's areas in first-seen order.
func (d *Dataset) Areas() []string {
	var out []string
	seen := map[string]bool{}
	for _, c := range d.Cases {
		if !seen[c.Area] {
			seen[c.Area] = true
			out = append(out, c.Area)
		}
	}
	return out
}

// Workers returns the dataset's workers (owners and authors), in
// first-seen order.
func (d *Dataset) Workers() []string {
	var out []string
	seen := map[string]bool{}
	add := func(w string) {
		if w != "" && !seen[w] {
			seen[w] = true
			out = append(out, w)
		}
	}
	for _, c := range d.Cases {
		add(c.Owner)
	}
	for _, n := range d.Notes {
		add(n.Author)
	}
	return out
}

// Find returns the dataset's path as the repository lays it out: from dir
// (or any parent), the module root holding go.mod, then
// ../shared/datasets/caseload-1k.jsonl.gz beside it.
func Find(dir string) (string, error) {
	root, err := ModuleRoot(dir)
	if err != nil {
		return "", err
	}
	p := filepath.Join(root, "..", "shared", "datasets", DefaultFile)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("caseload: %w", err)
	}
	return filepath.Clean(p), nil
}

// ModuleRoot returns the nearest directory at or above dir that holds a
// go.mod.
func ModuleRoot(dir string) (string, error) {
	d, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", fmt.Errorf("caseload: no go.mod at or above %s", dir)
		}
		d = parent
	}
}
