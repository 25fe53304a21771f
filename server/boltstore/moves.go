package boltstore

import (
	"encoding/json"
	"fmt"

	"github.com/casesync/casesync/server"
	"github.com/casesync/casesync/syncproto"
)

// bucketMoves holds each case's area history: case ID → []server.Move
// (JSON). It is created on first use, so stores made before it exist keep
// opening.
var bucketMoves = []byte("moves")

// CaseMoves returns the area history of a case, oldest first.
func (t *tx) CaseMoves(caseID string) ([]server.Move, error) {
	if err := t.read(); err != nil {
		return nil, err
	}
	b := t.btx.Bucket(bucketMoves)
	if b == nil {
		return nil, nil
	}
	v := b.Get([]byte(caseID))
	if v == nil {
		return nil, nil
	}
	var out []server.Move
	if err := json.Unmarshal(v, &out); err != nil {
		return nil, fmt.Errorf("%w: moves of case %s: %v", ErrCorrupt, caseID, err)
	}
	return out, nil
}

// AddCaseMove appends a move to a case's area history.
func (t *tx) AddCaseMove(caseID string, m server.Move) error {
	if err := t.write(); err != nil {
		return err
	}
	moves, err := t.CaseMoves(caseID)
	if err != nil {
		return err
	}
	b, err := t.btx.CreateBucketIfNotExists(bucketMoves)
	if err != nil {
		return fmt.Errorf("create bucket %s: %w", bucketMoves, err)
	}
	v, err := syncproto.Marshal(append(moves, m))
	if err != nil {
		return err
	}
	return b.Put([]byte(caseID), v)
}
