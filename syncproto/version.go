package syncproto

// Version is the protocol version this package speaks.
const Version = 1

// MinVersion is the oldest protocol version this package still accepts.
const MinVersion = 1

// Negotiate checks a peer's protocol version. It returns ErrTooOldVersion
// for a version below MinVersion (the peer must upgrade) and
// ErrUnknownVersion for one above Version (this side must upgrade).
func Negotiate(peer int) error {
	switch {
	case peer < MinVersion:
		return Errorf(ErrTooOldVersion, "protocol version %d is too old; this server accepts %d to %d: upgrade the client", peer, MinVersion, Version)
	case peer > Version:
		return Errorf(ErrUnknownVersion, "protocol version %d is unknown; this server speaks %d to %d: upgrade the server", peer, MinVersion, Version)
	}
	return nil
}
