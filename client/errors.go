package client

import "errors"

// The client's sentinel errors. Compare with errors.Is: most are returned
// wrapped with the path or the detail that explains them.
var (
	// ErrWrongPassphrase is returned by the store's open when the passphrase
	// or key file does not unwrap the store's data key, or the key file is
	// not a key at all. A tampered key header looks the same, by design:
	// AES-GCM cannot tell the two apart, and saying which would help an
	// attacker guess.
	ErrWrongPassphrase = errors.New("client: wrong passphrase or key file: the store cannot be decrypted")

	// ErrNoKey is returned by the store's open when neither a passphrase nor
	// a key file was given. The store is never kept unencrypted, so there is
	// no fallback.
	ErrNoKey = errors.New("client: no passphrase or key file given; set CASESYNC_PASSPHRASE or use a key file")

	// ErrLocked is returned by the store's open (and by a wipe) when another
	// process or handle holds the store file and did not let go within the
	// lock timeout. Two writers would corrupt bbolt's file, so the lock is
	// exclusive.
	ErrLocked = errors.New("client: the store is in use by another casesync process")

	// ErrCorrupt is returned by the store's open and by reads when the file
	// is not a valid store, or a sealed value fails authentication (it was
	// tampered with, truncated or moved to another key). It is always wrapped
	// with the detail: the path, the bucket and key, never the data.
	ErrCorrupt = errors.New("client: the store is damaged")

	// ErrClosed is returned by every store operation after close.
	ErrClosed = errors.New("client: closed")
)
