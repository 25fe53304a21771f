package servertest

import (
	"fmt"

	"github.com/casesync/casesync/server"
	"github.com/casesync/casesync/syncproto"
)

// Snapshot is a store's current truth as the invariant checks of the
// simulation and the chaos test read it: every record, the users, the
// areas and the admin's conflict index.
type Snapshot struct {
	Records map[syncproto.Key]*syncproto.Record
	Users   map[string]server.User
	Areas   []string
	Flagged map[syncproto.Key]bool // the conflict index
}

// Scope returns the scope the server gives user u now.
func (s *Snapshot) Scope(u string) syncproto.Scope { return s.Users[u].Scope(s.Areas) }

// ReadSnapshot reads every record (a scan of every area from the start of
// the log), the users and the conflict index in tx. A record filed twice,
// or under an area that is not its own, is an error: the store is damaged.
func ReadSnapshot(tx server.Tx) (*Snapshot, error) {
	s := &Snapshot{Records: map[syncproto.Key]*syncproto.Record{}, Users: map[string]server.User{}, Flagged: map[syncproto.Key]bool{}}
	head, err := tx.Head()
	if err != nil {
		return nil, err
	}
	if s.Areas, err = tx.Areas(); err != nil {
		return nil, err
	}
	after := map[string]uint64{}
	for _, a := range s.Areas {
		after[a] = 0
	}
	err = tx.Scan(after, head, func(it server.Item) (bool, error) {
		if it.Record == nil {
			return true, nil // an eviction marker
		}
		if prev, dup := s.Records[it.Key]; dup {
			return false, fmt.Errorf("%s filed twice, under %q and %q", it.Key, prev.Area, it.Area)
		}
		if it.Area != it.Record.Area {
			return false, fmt.Errorf("%s filed under %q but its area is %q", it.Key, it.Area, it.Record.Area)
		}
		s.Records[it.Key] = it.Record
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	users, err := tx.Users()
	if err != nil {
		return nil, err
	}
	for _, u := range users {
		s.Users[u.Name] = u
	}
	err = tx.Conflicts(func(k syncproto.Key, _ string) error {
		s.Flagged[k] = true
		return nil
	})
	return s, err
}
