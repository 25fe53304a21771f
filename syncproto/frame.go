package syncproto

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"

	"github.com/klauspost/compress/zstd"
)

// Frame layout (PROTOCOL.md §3). Every WebSocket binary message carries
// exactly one frame:
//
//	offset  size  field
//	0       1     message type
//	1       1     flags: bit 0 set = payload is one zstd frame; other bits 0
//	2       4     payload length after decompression, big-endian
//	6       …     payload: one JSON object, zstd-compressed if bit 0 is set
//
// The declared length lets a receiver refuse an oversized payload before
// decompressing a byte of it, and bound the decompression exactly.
const HeaderLen = 6

// FlagZstd marks a zstd-compressed payload.
const FlagZstd = 0x01

// CompressionZstd is the name of zstd compression in Hello and Welcome.
const CompressionZstd = "zstd"

// compressMin is the smallest payload worth compressing: below it zstd's
// frame overhead outweighs the gain.
const compressMin = 256

// Header is a decoded frame header.
type Header struct {
	Type   Type
	Flags  uint8
	Length uint32
}

// ParseHeader decodes the header at the start of frame.
func ParseHeader(frame []byte) (Header, error) {
	if len(frame) < HeaderLen {
		return Header{}, Errorf(ErrMalformed, "frame of %d bytes is shorter than its %d-byte header", len(frame), HeaderLen)
	}
	return Header{Type: Type(frame[0]), Flags: frame[1], Length: binary.BigEndian.Uint32(frame[2:6])}, nil
}

// Marshal encodes v as JSON the way the protocol does: compact and without
// HTML escaping, so that values compare byte for byte on every replica.
func Marshal(v any) ([]byte, error) {
	// Records, their fields and changes have their own encoders
	// (recordjson.go, jsonenc.go): the same bytes, without reflection.
	switch v := v.(type) {
	case *Record:
		return v.appendJSON(nil)
	case Record:
		return v.appendJSON(nil)
	case *Change:
		return v.appendJSON(nil)
	case Change:
		return v.appendJSON(nil)
	case map[string]Field:
		return appendFields(nil, v)
	case *Push:
		return v.appendJSON(nil)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// Codec encodes and decodes frames. One codec serves many connections: it
// is safe for concurrent use and holds one zstd encoder and decoder, whose
// buffers are reused.
type Codec struct {
	maxPayload int
	enc        *zstd.Encoder
	dec        *zstd.Decoder
}

// NewCodec returns a codec that refuses payloads over maxPayload bytes after
// decompression (at most MaxPayload).
func NewCodec(maxPayload int) (*Codec, error) {
	if maxPayload <= 0 || maxPayload > MaxPayload {
		maxPayload = MaxPayload
	}
	enc, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.SpeedDefault),
		// EncodeAll is called from every session at once: one encoder
		// state per CPU, or they queue on one.
		zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)),
		zstd.WithWindowSize(1<<20),
	)
	if err != nil {
		return nil, fmt.Errorf("syncproto: new zstd encoder: %w", err)
	}
	dec, err := zstd.NewReader(nil,
		zstd.WithDecoderMaxMemory(uint64(maxPayload)),
		zstd.WithDecoderMaxWindow(8<<20),
		zstd.WithDecodeAllCapLimit(true),
		zstd.WithDecoderConcurrency(2),
	)
	if err != nil {
		enc.Close()
		return nil, fmt.Errorf("syncproto: new zstd decoder: %w", err)
	}
	return &Codec{maxPayload: maxPayload, enc: enc, dec: dec}, nil
}

// Close releases the codec's zstd state.
func (c *Codec) Close() {
	c.enc.Close()
	c.dec.Close()
}

// MaxPayload returns the codec's payload limit.
func (c *Codec) MaxPayload() int { return c.maxPayload }

// MaxFrame returns the largest frame, on the wire, that can carry a payload
// within the limit: set the WebSocket read limit to it. A compressed payload
// can be slightly larger than the original.
func (c *Codec) MaxFrame() int { return HeaderLen + c.enc.MaxEncodedSize(c.maxPayload) }

// Encode returns m as a frame, compressed with zstd if compress is set and
// the payload is large enough to gain from it. It returns ErrFrameTooLarge
// if the payload exceeds the codec's limit: split the batch.
func (c *Codec) Encode(m Message, compress bool) ([]byte, error) {
	var payload []byte
	var err error
	if ch, ok := m.(*Changes); ok {
		payload, err = ch.appendJSON(nil)
	} else {
		payload, err = Marshal(m)
	}
	if err != nil {
		return nil, fmt.Errorf("syncproto: encode %s: %w", m.Type(), err)
	}
	if len(payload) > c.maxPayload {
		return nil, Errorf(ErrFrameTooLarge, "%s payload of %d bytes exceeds the limit of %d", m.Type(), len(payload), c.maxPayload)
	}
	var flags uint8
	frame := make([]byte, HeaderLen, HeaderLen+len(payload))
	if compress && len(payload) >= compressMin && !handshake(m.Type()) {
		flags = FlagZstd
		frame = c.enc.EncodeAll(payload, frame)
	} else {
		frame = append(frame, payload...)
	}
	frame[0] = byte(m.Type())
	frame[1] = flags
	binary.BigEndian.PutUint32(frame[2:6], uint32(len(payload)))
	return frame, nil
}

// Decode parses a frame. compressed says whether zstd was negotiated; a
// compressed frame without it is an error. A frame of an unknown type
// returns *Unknown and no error: skip it. Every other message is validated.
// Errors are *Error: ErrMalformed, ErrCompression or ErrFrameTooLarge, or
// the message's own validation error.
func (c *Codec) Decode(frame []byte, compressed bool) (Message, error) {
	h, err := ParseHeader(frame)
	if err != nil {
		return nil, err
	}
	if h.Flags&^FlagZstd != 0 {
		return nil, Errorf(ErrCompression, "frame has unknown flags %#02x", h.Flags)
	}
	limit := c.maxPayload
	if h.Type == TypeHello || h.Type == TypeWelcome {
		limit = min(limit, MaxHelloPayload)
	}
	if int64(h.Length) > int64(limit) {
		return nil, Errorf(ErrFrameTooLarge, "%s payload of %d bytes exceeds the limit of %d", h.Type, h.Length, limit)
	}
	body := frame[HeaderLen:]
	var payload []byte
	if h.Flags&FlagZstd != 0 {
		if !compressed {
			return nil, Errorf(ErrCompression, "compressed frame before zstd was negotiated")
		}
		if handshake(h.Type) {
			return nil, Errorf(ErrCompression, "%s must not be compressed", h.Type)
		}
		payload, err = c.dec.DecodeAll(body, make([]byte, 0, h.Length))
		switch {
		case errors.Is(err, zstd.ErrDecoderSizeExceeded), errors.Is(err, zstd.ErrWindowSizeExceeded):
			return nil, Errorf(ErrFrameTooLarge, "%s payload decompresses beyond its declared %d bytes", h.Type, h.Length)
		case err != nil:
			return nil, Errorf(ErrMalformed, "%s payload is not valid zstd", h.Type)
		case len(payload) != int(h.Length):
			return nil, Errorf(ErrMalformed, "%s payload decompresses to %d bytes, not the declared %d", h.Type, len(payload), h.Length)
		}
	} else {
		if len(body) != int(h.Length) {
			return nil, Errorf(ErrMalformed, "%s payload is %d bytes, not the declared %d", h.Type, len(body), h.Length)
		}
		payload = body
	}
	m := newMessage(h.Type)
	if m == nil {
		return &Unknown{T: h.Type}, nil
	}
	if p := bytes.TrimLeft(payload, " \t\r\n"); len(p) == 0 || p[0] != '{' {
		return nil, Errorf(ErrMalformed, "%s payload is not a JSON object", h.Type)
	}
	switch m := m.(type) {
	case *Changes, *Push:
		// Their decoders check the syntax of all they read (recordjson.go,
		// changejson.go): encoding/json's validation pass first would cost
		// as much again.
		err = m.(json.Unmarshaler).UnmarshalJSON(payload)
	default:
		err = json.Unmarshal(payload, m)
	}
	if err != nil {
		var e *Error
		if errors.As(err, &e) {
			return nil, e
		}
		return nil, Errorf(ErrMalformed, "%s payload is not a valid JSON message: %s", h.Type, jsonErrorSummary(err))
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return m, nil
}

// handshake reports whether t is hello or welcome, which are never
// compressed: they are sent before compression is negotiated.
func handshake(t Type) bool { return t == TypeHello || t == TypeWelcome }

// jsonErrorSummary describes a JSON error without echoing payload content:
// values from the payload may be note text.
func jsonErrorSummary(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("syntax error at byte %d", se.Offset)
	case errors.As(err, &te):
		return fmt.Sprintf("field %q has the wrong type (%s, want %s)", te.Field, te.Value, te.Type)
	}
	return "cannot parse"
}
