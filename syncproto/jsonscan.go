package syncproto

// A small JSON scanner for the record codec (recordjson.go): it finds where
// a value ends, checking its syntax as encoding/json does, and copies it
// without insignificant white space. encoding/json runs a state machine
// with a function call per byte for the same work, which made it a fifth
// of a cold pull's client CPU; this is a loop over bytes.

// scanValue returns the end of the JSON value that starts at data[i]
// (after any white space), or ok false if there is none or it is invalid.
// Nesting deeper than maxDepth is refused, as encoding/json refuses it.
func scanValue(data []byte, i int) (end int, ok bool) {
	return scanDepth(data, skipWS(data, i), 0)
}

// maxDepth is encoding/json's own nesting limit.
const maxDepth = 10000

func skipWS(data []byte, i int) int {
	for i < len(data) {
		switch data[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

func scanDepth(data []byte, i, depth int) (int, bool) {
	if i >= len(data) {
		return i, false
	}
	switch c := data[i]; {
	case c == '"':
		return scanString(data, i)
	case c == '{':
		if depth >= maxDepth {
			return i, false
		}
		i = skipWS(data, i+1)
		if i < len(data) && data[i] == '}' {
			return i + 1, true
		}
		for {
			if i >= len(data) || data[i] != '"' {
				return i, false
			}
			var ok bool
			if i, ok = scanString(data, i); !ok {
				return i, false
			}
			i = skipWS(data, i)
			if i >= len(data) || data[i] != ':' {
				return i, false
			}
			if i, ok = scanDepth(data, skipWS(data, i+1), depth+1); !ok {
				return i, false
			}
			i = skipWS(data, i)
			if i >= len(data) {
				return i, false
			}
			if data[i] == '}' {
				return i + 1, true
			}
			if data[i] != ',' {
				return i, false
			}
			i = skipWS(data, i+1)
		}
	case c == '[':
		if depth >= maxDepth {
			return i, false
		}
		i = skipWS(data, i+1)
		if i < len(data) && data[i] == ']' {
			return i + 1, true
		}
		for {
			var ok bool
			if i, ok = scanDepth(data, i, depth+1); !ok {
				return i, false
			}
			i = skipWS(data, i)
			if i >= len(data) {
				return i, false
			}
			if data[i] == ']' {
				return i + 1, true
			}
			if data[i] != ',' {
				return i, false
			}
			i = skipWS(data, i+1)
		}
	case c == '-' || c >= '0' && c <= '9':
		return scanNumber(data, i)
	case c == 't':
		return scanLiteral(data, i, "true")
	case c == 'f':
		return scanLiteral(data, i, "false")
	case c == 'n':
		return scanLiteral(data, i, "null")
	}
	return i, false
}

func scanLiteral(data []byte, i int, lit string) (int, bool) {
	if len(data)-i < len(lit) || string(data[i:i+len(lit)]) != lit {
		return i, false
	}
	return i + len(lit), true
}

// scanString returns the end of the string starting at data[i] == '"'.
// Like encoding/json it accepts any byte from 0x20 up inside a string,
// valid UTF-8 or not, and only the JSON escapes.
func scanString(data []byte, i int) (int, bool) {
	i++
	for i < len(data) {
		c := data[i]
		switch {
		case c == '"':
			return i + 1, true
		case c < 0x20:
			return i, false
		case c == '\\':
			if i+1 >= len(data) {
				return i, false
			}
			switch data[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if len(data)-i < 6 || !isHex(data[i+2]) || !isHex(data[i+3]) || !isHex(data[i+4]) || !isHex(data[i+5]) {
					return i, false
				}
				i += 6
			default:
				return i, false
			}
		default:
			i++
		}
	}
	return i, false
}

func isHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' }

// scanNumber returns the end of the number starting at data[i]:
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func scanNumber(data []byte, i int) (int, bool) {
	if data[i] == '-' {
		i++
	}
	digits := func() bool {
		start := i
		for i < len(data) && data[i] >= '0' && data[i] <= '9' {
			i++
		}
		return i > start
	}
	switch {
	case i < len(data) && data[i] == '0':
		i++
	case i < len(data) && data[i] >= '1' && data[i] <= '9':
		digits()
	default:
		return i, false
	}
	if i < len(data) && data[i] == '.' {
		i++
		if !digits() {
			return i, false
		}
	}
	if i < len(data) && (data[i] == 'e' || data[i] == 'E') {
		i++
		if i < len(data) && (data[i] == '+' || data[i] == '-') {
			i++
		}
		if !digits() {
			return i, false
		}
	}
	return i, true
}

// appendCompact appends the JSON value raw without insignificant white
// space, as json.Compact does (and so as encoding/json writes a
// json.RawMessage when HTML escaping is off). ok is false if raw is not
// exactly one valid JSON value.
func appendCompact(dst, raw []byte) ([]byte, bool) {
	start := skipWS(raw, 0)
	end, ok := scanValue(raw, start)
	if !ok || skipWS(raw, end) != len(raw) {
		return dst, false
	}
	v := raw[start:end]
	if !hasSpaceOutsideStrings(v) {
		return append(dst, v...), true
	}
	inString := false
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case inString:
			dst = append(dst, c)
			if c == '\\' {
				i++
				dst = append(dst, v[i])
			} else if c == '"' {
				inString = false
			}
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
		default:
			dst = append(dst, c)
			inString = c == '"'
		}
	}
	return dst, true
}

// hasSpaceOutsideStrings reports whether the valid JSON value v has white
// space between its tokens.
func hasSpaceOutsideStrings(v []byte) bool {
	inString := false
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case inString:
			if c == '\\' {
				i++
			} else if c == '"' {
				inString = false
			}
		case c == '"':
			inString = true
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			return true
		}
	}
	return false
}
