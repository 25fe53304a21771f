package client

// Encryption at rest.
//
// The store is encrypted with a random 256-bit data key, never with a key
// derived directly from the passphrase: the data key is wrapped under a
// key-encryption key (KEK), so a passphrase change or a second unlock method
// would rewrap 32 bytes instead of re-encrypting the whole file. The KEK is
// Argon2id(passphrase, salt) or the 32 bytes of a key file.
//
// Every value outside the header bucket is sealed with AES-256-GCM and a
// random 96-bit nonce. The additional data binds each value to where it is
// stored (bucket name, 0x00, bbolt key), so an attacker with write access to
// the file cannot move a note from one record to another, or an outbox
// change into another slot, without the read failing.

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/crypto/argon2"
)

// KDFParams are Argon2id parameters. They are chosen when a store is
// created and recorded in its header; opening uses the recorded ones, so
// raising DefaultKDF later does not lock anyone out.
type KDFParams struct {
	Time      uint32
	MemoryKiB uint32
	Threads   uint8
}

// DefaultKDF is time=3, memory=64 MiB, threads=4: RFC 9106's second
// recommended setting, for machines that cannot spare 2 GiB. Caseworkers'
// laptops are modest and the store is unlocked once per session, so this is
// the strongest setting that stays well under a second there.
var DefaultKDF = KDFParams{Time: 3, MemoryKiB: 64 * 1024, Threads: 4}

// Bounds on KDF parameters read from a header. The header is plaintext, so
// a tampered one must not make open allocate terabytes or spin for hours.
const (
	maxKDFTime      = 64
	maxKDFMemoryKiB = 4 << 20 // 4 GiB
)

func (p KDFParams) validate() error {
	if p.Time < 1 || p.Time > maxKDFTime || p.Threads < 1 ||
		p.MemoryKiB < 8*uint32(p.Threads) || p.MemoryKiB > maxKDFMemoryKiB {
		return fmt.Errorf("argon2id parameters time=%d memory=%d KiB threads=%d are out of bounds", p.Time, p.MemoryKiB, p.Threads)
	}
	return nil
}

// keySource says how to unlock a store. A store created with a key file
// can only be opened with that key file, and likewise for a passphrase; if
// both are given, the one the store was created with is used, and a new
// store prefers the key file. kdf applies only when a store is created.
type keySource struct {
	passphrase []byte
	keyFile    string
	kdf        KDFParams
}

const (
	keyLen  = 32 // AES-256
	saltLen = 16

	kdfArgon2id = "argon2id"
	kdfKeyFile  = "keyfile"

	// storeFormat names the layout; it is the first thing open checks.
	storeFormat = "casesync-store/1"

	// sealVersion prefixes every sealed value, so a later format (another
	// cipher, a rotated key) can be told apart from this one.
	sealVersion = 1

	// maxKeyFile bounds what is read of a key file: a key is 32 or 64 bytes.
	maxKeyFile = 1 << 10
)

// keyHeader is the plaintext record of how the data key is wrapped. It
// holds no secret: the salt and parameters are public by design, and the
// wrapped key is useless without the passphrase or key file.
type keyHeader struct {
	KDF       string `json:"kdf"`
	Salt      []byte `json:"salt,omitempty"`
	Time      uint32 `json:"time,omitempty"`
	MemoryKiB uint32 `json:"memory_kib,omitempty"`
	Threads   uint8  `json:"threads,omitempty"`
	// Wrapped is nonce ‖ AES-256-GCM(KEK, data key).
	Wrapped []byte `json:"wrapped"`
}

func (h *keyHeader) params() KDFParams {
	return KDFParams{Time: h.Time, MemoryKiB: h.MemoryKiB, Threads: h.Threads}
}

// aad binds the wrapped key to the header's parameters: a header edited to
// other parameters fails to unwrap instead of yielding a different key.
func (h *keyHeader) aad() []byte {
	b := make([]byte, 0, 64)
	b = append(b, storeFormat+" data key\x00"...)
	b = append(b, h.KDF...)
	b = append(b, 0)
	b = append(b, h.Salt...)
	b = binary.BigEndian.AppendUint32(b, h.Time)
	b = binary.BigEndian.AppendUint32(b, h.MemoryKiB)
	return append(b, h.Threads)
}

func (ks keySource) empty() bool { return len(ks.passphrase) == 0 && ks.keyFile == "" }

// kek derives the key-encryption key for header h from ks.
func (ks keySource) kek(h *keyHeader) ([]byte, error) {
	switch h.KDF {
	case kdfKeyFile:
		if ks.keyFile == "" {
			return nil, fmt.Errorf("%w (this store is unlocked with a key file, not a passphrase)", ErrWrongPassphrase)
		}
		return readKeyFile(ks.keyFile)
	case kdfArgon2id:
		if len(ks.passphrase) == 0 {
			return nil, fmt.Errorf("%w (this store is unlocked with a passphrase, not a key file)", ErrWrongPassphrase)
		}
		p := h.params()
		if err := p.validate(); err != nil {
			return nil, fmt.Errorf("%w: key header: %v", ErrCorrupt, err)
		}
		if len(h.Salt) != saltLen {
			return nil, fmt.Errorf("%w: key header: salt of %d bytes", ErrCorrupt, len(h.Salt))
		}
		return argon2.IDKey(ks.passphrase, h.Salt, p.Time, p.MemoryKiB, p.Threads, keyLen), nil
	default:
		return nil, fmt.Errorf("%w: key header names unknown method %q", ErrCorrupt, h.KDF)
	}
}

// readKeyFile returns the 32-byte key in path: either 32 raw bytes, or 64
// hex digits optionally followed by a newline (so `openssl rand -hex 32 >
// key` works). Anything else is refused rather than hashed into a key, so a
// wrong file (a passphrase file, a PEM key) is reported, not silently used.
func readKeyFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("client: key file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("client: key file: %w", err)
	}
	defer clear(b)
	if len(b) == keyLen {
		return bytes.Clone(b), nil
	}
	t := bytes.TrimSuffix(bytes.TrimSuffix(b, []byte("\n")), []byte("\r"))
	if len(t) == 2*keyLen {
		key := make([]byte, keyLen)
		if _, err := hex.Decode(key, t); err == nil {
			return key, nil
		}
	}
	return nil, fmt.Errorf("%w: key file %s must hold 32 raw bytes or 64 hex digits", ErrWrongPassphrase, path)
}

// newKey makes a fresh data key and the header that wraps it under ks.
func newKey(ks keySource) (hdr *keyHeader, dataKey []byte, err error) {
	hdr = &keyHeader{KDF: kdfKeyFile}
	if ks.keyFile == "" {
		p := ks.kdf
		if p == (KDFParams{}) {
			p = DefaultKDF
		}
		if err := p.validate(); err != nil {
			return nil, nil, fmt.Errorf("client: %v", err)
		}
		hdr = &keyHeader{KDF: kdfArgon2id, Salt: make([]byte, saltLen), Time: p.Time, MemoryKiB: p.MemoryKiB, Threads: p.Threads}
		rand.Read(hdr.Salt)
	}
	kek, err := ks.kek(hdr)
	if err != nil {
		return nil, nil, err
	}
	defer clear(kek)
	dataKey = make([]byte, keyLen)
	rand.Read(dataKey)
	hdr.Wrapped = mustAEAD(kek).Seal(nil, nil, dataKey, hdr.aad())
	return hdr, dataKey, nil
}

// unwrap returns the data key in hdr, or ErrWrongPassphrase.
func unwrap(hdr *keyHeader, ks keySource) ([]byte, error) {
	kek, err := ks.kek(hdr)
	if err != nil {
		return nil, err
	}
	defer clear(kek)
	dataKey, err := mustAEAD(kek).Open(nil, nil, hdr.Wrapped, hdr.aad())
	if err != nil || len(dataKey) != keyLen {
		return nil, ErrWrongPassphrase
	}
	return dataKey, nil
}

// mustAEAD returns AES-256-GCM with random nonces prepended to the
// ciphertext. Random nonces are safe for 2^32 seals under one key, far
// beyond what one caseworker's laptop writes.
func mustAEAD(key []byte) cipher.AEAD {
	block, err := aes.NewCipher(key)
	if err != nil {
		panic("bug: " + err.Error()) // only for a key of the wrong length
	}
	aead, err := cipher.NewGCMWithRandomNonce(block)
	if err != nil {
		panic("bug: " + err.Error())
	}
	return aead
}

// sealer seals and opens values under the data key.
type sealer struct{ aead cipher.AEAD }

func newSealer(dataKey []byte) *sealer { return &sealer{aead: mustAEAD(dataKey)} }

// valueAAD is bucket ‖ 0x00 ‖ key. Bucket names hold no 0x00, so no two
// (bucket, key) pairs share an AAD.
func valueAAD(bucket, key []byte) []byte {
	aad := make([]byte, 0, len(bucket)+1+len(key))
	aad = append(aad, bucket...)
	aad = append(aad, 0)
	return append(aad, key...)
}

// seal returns sealVersion ‖ nonce ‖ ciphertext ‖ tag for plain stored at
// bucket/key. The result is a new slice that bbolt may keep until commit.
func (s *sealer) seal(bucket, key, plain []byte) []byte {
	out := make([]byte, 1, 1+s.aead.Overhead()+len(plain))
	out[0] = sealVersion
	return s.aead.Seal(out, nil, plain, valueAAD(bucket, key))
}

// open authenticates and decrypts a sealed value into a new slice. Any
// failure, including a value sealed for another bucket or key, is
// ErrCorrupt: the caller must never see data that was not written there.
func (s *sealer) open(bucket, key, sealed []byte) ([]byte, error) {
	if len(sealed) < 1+s.aead.Overhead() || sealed[0] != sealVersion {
		return nil, fmt.Errorf("%w: %s %q: not a sealed value", ErrCorrupt, bucket, key)
	}
	plain, err := s.aead.Open(nil, nil, sealed[1:], valueAAD(bucket, key))
	if err != nil {
		return nil, fmt.Errorf("%w: %s %q: authentication failed", ErrCorrupt, bucket, key)
	}
	return plain, nil
}

// encodeHeader and decodeHeader convert the key header to the JSON kept in
// the header bucket: readable with bbolt's CLI when supporting a user.
func encodeHeader(h *keyHeader) []byte {
	b, err := json.Marshal(h)
	if err != nil {
		panic("bug: " + err.Error())
	}
	return b
}

func decodeHeader(b []byte) (*keyHeader, error) {
	var h keyHeader
	if err := json.Unmarshal(b, &h); err != nil {
		return nil, fmt.Errorf("%w: key header: %v", ErrCorrupt, err)
	}
	if len(h.Wrapped) == 0 {
		return nil, fmt.Errorf("%w: key header holds no wrapped key", ErrCorrupt)
	}
	return &h, nil
}

// errorsIsAny reports whether err is any of targets.
func errorsIsAny(err error, targets ...error) bool {
	for _, t := range targets {
		if errors.Is(err, t) {
			return true
		}
	}
	return false
}
