package syncproto

// WebSocket close codes (PROTOCOL.md §3.3). When an error ends a session,
// the sender first sends it as an error message, then closes the WebSocket
// with the code for its Code, so that a peer that missed the message still
// learns the class of the failure.
const (
	CloseNormal    = 1000 // the session is done
	CloseGoingAway = 1001 // the server is shutting down; reconnect later
	CloseAuth      = 4401 // CodeAuth
	CloseRevoked   = 4403 // CodeRevoked: wipe the replica
	CloseTooLarge  = 4413 // CodeTooLarge
	CloseVersion   = 4426 // CodeVersion
	CloseRate      = 4429 // CodeRate
	CloseProtocol  = 4400 // CodeProtocol, CodeValidation, CodeScope
	CloseInternal  = 4500 // CodeInternal
)

// CloseCode returns the WebSocket close code that ends a session because of
// an error of code c.
func (c Code) CloseCode() int {
	switch c {
	case CodeAuth:
		return CloseAuth
	case CodeRevoked:
		return CloseRevoked
	case CodeTooLarge:
		return CloseTooLarge
	case CodeVersion:
		return CloseVersion
	case CodeRate:
		return CloseRate
	case CodeProtocol, CodeValidation, CodeScope:
		return CloseProtocol
	}
	return CloseInternal
}

// CodeForClose returns the error code a close code stands for, and false for
// close codes that are not errors (1000, 1001) or that this version does not
// define.
func CodeForClose(close int) (Code, bool) {
	switch close {
	case CloseAuth:
		return CodeAuth, true
	case CloseRevoked:
		return CodeRevoked, true
	case CloseTooLarge, 1009:
		return CodeTooLarge, true
	case CloseVersion:
		return CodeVersion, true
	case CloseRate:
		return CodeRate, true
	case CloseProtocol, 1002, 1007:
		return CodeProtocol, true
	case CloseInternal, 1011:
		return CodeInternal, true
	}
	return "", false
}
