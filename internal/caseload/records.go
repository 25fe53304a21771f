package caseload

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/casesync/casesync/syncproto"
)

// Change returns the change a device makes to create the case: seq is the
// device's change number, at its stamp. Values are canonical, as the client
// writes them.
func (c *Case) Change(seq uint64, at syncproto.Stamp) (syncproto.Change, error) {
	return change(syncproto.Cases, c.ID, seq, at, c.Fields())
}

// Change returns the change the note's author makes to create it.
func (n *Note) Change(seq uint64, at syncproto.Stamp) (syncproto.Change, error) {
	f := n.Fields()
	f[syncproto.FieldCaseID] = n.CaseID
	f[syncproto.FieldAuthor] = n.Author
	return change(syncproto.Entries, n.ID, seq, at, f)
}

func change(coll syncproto.Collection, id string, seq uint64, at syncproto.Stamp, fields map[string]any) (syncproto.Change, error) {
	raw := make(map[string]json.RawMessage, len(fields))
	for name, v := range fields {
		b, err := syncproto.Marshal(v)
		if err != nil {
			return syncproto.Change{}, fmt.Errorf("caseload: %s.%s: %w", id, name, err)
		}
		if b, err = syncproto.Canonical(b); err != nil {
			return syncproto.Change{}, fmt.Errorf("caseload: %s.%s: %w", id, name, err)
		}
		raw[name] = b
	}
	return syncproto.Edit(nil, coll, id, seq, at, raw), nil
}

// Batch returns the first n records of the dataset (cases first, then
// notes; n ≤ 0 means all) as the changes that created them, all made by
// device with seqs 1, 2, …, and as the record states the server files for
// them: what a push carries and what a changes message carries.
func (d *Dataset) Batch(n int, device string) ([]syncproto.Change, []syncproto.Record, error) {
	total := len(d.Cases) + len(d.Notes)
	if n <= 0 || n > total {
		n = total
	}
	area := make(map[string]string, len(d.Cases))
	for _, c := range d.Cases {
		area[c.ID] = c.Area
	}
	at := syncproto.MakeStamp(time.Date(2024, 6, 1, 9, 0, 0, 0, time.UTC))
	changes := make([]syncproto.Change, 0, n)
	records := make([]syncproto.Record, 0, n)
	for i := range n {
		seq := uint64(i + 1)
		var ch syncproto.Change
		var a string
		var err error
		if i < len(d.Cases) {
			c := &d.Cases[i]
			ch, err = c.Change(seq, at+syncproto.Stamp(i))
			a = c.Area
		} else {
			nt := &d.Notes[i-len(d.Cases)]
			ch, err = nt.Change(seq, at+syncproto.Stamp(i))
			a = area[nt.CaseID]
		}
		if err != nil {
			return nil, nil, err
		}
		r := ch.State(device)
		r.Area = a
		changes = append(changes, ch)
		records = append(records, *r)
	}
	return changes, records, nil
}

// Default returns the shared dataset found from the working directory
// (tests run in their package's directory), or, where it is absent, a
// synthetic caseload of the same shape so that benchmarks still run. The
// second result names the source.
func Default() (*Dataset, string, error) {
	if p, err := Find("."); err == nil {
		d, err := Load(p)
		return d, p, err
	}
	return Synthetic(1000, 20000, 1), "synthetic (dataset not found)", nil
}

// Synthetic returns a caseload shaped like caseload-1k: 12 areas, 5
// workers, notes of 400–1,500 bytes of Dutch-like text drawn from a small
// vocabulary (so it compresses like the real one), from a fixed seed.
func Synthetic(cases, notes int, seed uint64) *Dataset {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	areas := []string{"Zuilen", "Tuinwijk", "Ondiep", "Rivierenwijk", "Lombok", "Transwijk",
		"Kanaleneiland", "Pijlsweerd", "Wittevrouwen", "Voordorp", "Lunetten", "Hoograven"}
	workers := []string{"w-bram", "w-anouk", "w-esra", "w-chantal", "w-daan"}
	tags := []string{"huisvesting", "huurachterstand", "schulden", "jeugd", "inkomen", "overlast", "mantelzorg", "taalbarriere"}
	words := strings.Fields("de het een en van in op dat is met voor gezin mevrouw meneer huur schimmel " +
		"afspraak huisarts woningcorporatie schuldhulp overleg bezoek zorgen buurt trap keuken water " +
		"energie rekening dochter zoon werk supermarkt voedselbank begeleider collega volgende week")
	st := []string{syncproto.StatusOpen, syncproto.StatusWaiting, syncproto.StatusClosed}
	d := &Dataset{}
	for i := range cases {
		c := Case{
			ID: fmt.Sprintf("case-%06d", i+1), Tenant: fmt.Sprintf("Tenant %d", i+1),
			Address: fmt.Sprintf("Straat %d, 3566 BN Utrecht", rng.IntN(200)+1),
			Area:    areas[rng.IntN(len(areas))], Status: st[rng.IntN(len(st))],
			Owner: workers[rng.IntN(len(workers))], Tags: []string{tags[rng.IntN(len(tags))], tags[rng.IntN(len(tags))]},
			Priority: rng.IntN(3) + 1, HouseholdSize: rng.IntN(6) + 1,
			OpenedAt: "2024-04-14T12:57:05Z", UpdatedAt: "2024-06-05T08:19:53Z",
		}
		c.Title = strings.Join(c.Tags, ", ")
		d.Cases = append(d.Cases, c)
	}
	for i := range notes {
		c := d.Cases[rng.IntN(len(d.Cases))]
		var sb strings.Builder
		for n := 400 + rng.IntN(1100); sb.Len() < n; {
			sb.WriteString(words[rng.IntN(len(words))])
			sb.WriteByte(' ')
		}
		author := c.Owner
		if rng.IntN(6) == 0 {
			author = workers[rng.IntN(len(workers))]
		}
		d.Notes = append(d.Notes, Note{
			ID: fmt.Sprintf("note-%07d", i+1), CaseID: c.ID, Author: author, Kind: syncproto.KindVisit,
			OccurredAt: "2024-02-05", Text: strings.TrimSpace(sb.String()), DurationMin: 15 + rng.IntN(90),
			CreatedAt: "2024-02-06T17:46:06Z", UpdatedAt: "2024-02-06T18:42:47Z",
		})
	}
	for i := range d.Cases {
		b, _ := json.Marshal(d.Cases[i])
		d.Lines = append(d.Lines, b)
		d.JSONBytes += int64(len(b)) + 1
	}
	for i := range d.Notes {
		b, _ := json.Marshal(d.Notes[i])
		d.Lines = append(d.Lines, b)
		d.JSONBytes += int64(len(b)) + 1
	}
	return d
}
