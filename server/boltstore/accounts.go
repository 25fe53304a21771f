package boltstore

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/casesync/casesync/server"
	"github.com/casesync/casesync/syncproto"
)

// User returns a copy of the user called name.
func (t *tx) User(name string) (server.User, error) {
	var u server.User
	if err := t.read(); err != nil {
		return u, err
	}
	return u, getJSON(t.bucket(bucketUsers), []byte(name), &u)
}

// PutUser creates or replaces u.
func (t *tx) PutUser(u server.User) error {
	if err := t.write(); err != nil {
		return err
	}
	if u.Name == "" {
		return errors.New("boltstore: PutUser of a user without a name")
	}
	return putJSON(t.bucket(bucketUsers), []byte(u.Name), u)
}

// Users returns every user, by name.
func (t *tx) Users() ([]server.User, error) {
	if err := t.read(); err != nil {
		return nil, err
	}
	return allJSON[server.User](t.bucket(bucketUsers))
}

// Device returns a copy of the device id.
func (t *tx) Device(id string) (server.Device, error) {
	var d server.Device
	if err := t.read(); err != nil {
		return d, err
	}
	return d, getJSON(t.bucket(bucketDevices), []byte(id), &d)
}

// DeviceByToken returns the device whose token hashes to hash.
func (t *tx) DeviceByToken(hash []byte) (server.Device, error) {
	if err := t.read(); err != nil {
		return server.Device{}, err
	}
	if len(hash) == 0 {
		return server.Device{}, server.ErrNotFound
	}
	id := t.bucket(bucketTokens).Get(hash)
	if id == nil {
		return server.Device{}, server.ErrNotFound
	}
	d, err := t.Device(string(id))
	if errors.Is(err, server.ErrNotFound) {
		return d, fmt.Errorf("%w: token names device %q, which does not exist", ErrCorrupt, id)
	}
	return d, err
}

// PutDevice creates or replaces d and points d.TokenHash at it, removing
// the mapping of the device's previous hash. A hash that belongs to
// another device is refused: one token must never open two devices.
func (t *tx) PutDevice(d server.Device) error {
	if err := t.write(); err != nil {
		return err
	}
	if d.ID == "" {
		return errors.New("boltstore: PutDevice of a device without an ID")
	}
	devices, tokens := t.bucket(bucketDevices), t.bucket(bucketTokens)
	id := []byte(d.ID)
	if len(d.TokenHash) > 0 {
		if owner := tokens.Get(d.TokenHash); owner != nil && !bytes.Equal(owner, id) {
			return fmt.Errorf("boltstore: token hash of device %s already belongs to device %s", d.ID, owner)
		}
	}
	var old server.Device
	switch err := getJSON(devices, id, &old); {
	case errors.Is(err, server.ErrNotFound):
	case err != nil:
		return err
	case len(old.TokenHash) > 0 && !bytes.Equal(old.TokenHash, d.TokenHash):
		if bytes.Equal(tokens.Get(old.TokenHash), id) {
			if err := tokens.Delete(old.TokenHash); err != nil {
				return err
			}
		}
	}
	if len(d.TokenHash) > 0 {
		if err := tokens.Put(bytes.Clone(d.TokenHash), id); err != nil {
			return err
		}
	}
	return putJSON(devices, id, d)
}

// Devices returns every device, by ID.
func (t *tx) Devices() ([]server.Device, error) {
	if err := t.read(); err != nil {
		return nil, err
	}
	return allJSON[server.Device](t.bucket(bucketDevices))
}

// getJSON decodes the value of k into v, or returns server.ErrNotFound.
func getJSON(b *bolt.Bucket, k []byte, v any) error {
	raw := b.Get(k)
	if raw == nil {
		return server.ErrNotFound
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("%w: decode %s: %v", ErrCorrupt, k, err)
	}
	return nil
}

// putJSON stores v under k, encoded by syncproto.Marshal.
func putJSON(b *bolt.Bucket, k []byte, v any) error {
	raw, err := syncproto.Marshal(v)
	if err != nil {
		return fmt.Errorf("boltstore: encode %s: %w", k, err)
	}
	return b.Put(k, raw)
}

// allJSON decodes every value of b, in key order.
func allJSON[T any](b *bolt.Bucket) ([]T, error) {
	var out []T
	err := b.ForEach(func(k, raw []byte) error {
		var v T
		if err := json.Unmarshal(raw, &v); err != nil {
			return fmt.Errorf("%w: decode %s: %v", ErrCorrupt, k, err)
		}
		out = append(out, v)
		return nil
	})
	return out, err
}
