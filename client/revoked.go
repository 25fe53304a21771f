package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// RevokedFile is the notice a wipe after revocation leaves in the client
// directory, in place of the replica. It holds no case data: the device
// and user the replica belonged to, when it was wiped, and how many
// changes went with it.
//
// Why a file: the process that wiped the replica tells the user, but it
// may be killed, or the laptop's lid closed, before anyone reads it. The
// next Open finds the notice, and every command says what happened
// instead of showing an empty, unenrolled replica without a word. The
// notice is written before the wipe starts, so an Open that finds it
// beside a replica (a wipe cut short, or refused because another process
// held the file) finishes the wipe first.
const RevokedFile = "revoked.json"

// notice is RevokedFile's content.
type notice struct {
	Device   string    `json:"device"`
	User     string    `json:"user"`
	At       time.Time `json:"at"`
	Lost     int       `json:"lost"`
	Rejected int       `json:"rejected"`
}

func (n *notice) err() *RevokedError {
	return &RevokedError{Lost: n.Lost, Rejected: n.Rejected, At: n.At}
}

// writeNotice stores n durably in dir: a temporary file, fsync, rename,
// directory fsync.
func writeNotice(dir string, n notice) error {
	b, err := json.Marshal(n)
	if err != nil {
		return err
	}
	path := filepath.Join(dir, RevokedFile)
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("client: write revocation notice: %w", err)
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("client: write revocation notice: %w", err)
	}
	return nil
}

// readNotice returns the notice in dir, or nil if there is none.
func readNotice(dir string) (*notice, error) {
	b, err := os.ReadFile(filepath.Join(dir, RevokedFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("client: read revocation notice: %w", err)
	}
	var n notice
	if err := json.Unmarshal(b, &n); err != nil {
		// Damaged, yet it says the device was revoked: honour it, without
		// claiming counts it no longer holds.
		return &notice{Lost: -1}, nil
	}
	return &n, nil
}

// removeNotice deletes the notice in dir, once a new enrollment has
// replaced the revoked one.
func removeNotice(dir string) error {
	err := os.Remove(filepath.Join(dir, RevokedFile))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("client: remove revocation notice: %w", err)
	}
	return syncDir(dir)
}
