package server

import (
	"sync"
)

// hub knows every open session. It wakes the sessions whose scope a commit
// touched, and reaches the sessions of one device or user for revocation and
// scope changes. It never blocks on a session: a wake-up is a flag a session
// collects when it is ready, so one slow device cannot hold up the rest.
type hub struct {
	mu       sync.Mutex
	sessions map[*session]struct{}
	closed   bool

	// frames holds changes messages that sessions of one scope share.
	frames *frameCache
}

func newHub() *hub { return &hub{sessions: make(map[*session]struct{}), frames: newFrameCache()} }

// add registers a session. It fails if the device already has max sessions
// or the hub is closed.
func (h *hub) add(s *session, max int) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false
	}
	n := 0
	for o := range h.sessions {
		if o.device.ID == s.device.ID {
			n++
		}
	}
	if n >= max {
		return false
	}
	h.sessions[s] = struct{}{}
	return true
}

func (h *hub) remove(s *session) {
	h.mu.Lock()
	delete(h.sessions, s)
	h.mu.Unlock()
}

func (h *hub) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.sessions)
}

// wake tells every session that sees one of areas that the log grew.
func (h *hub) wake(areas map[string]struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.sessions {
		if s.sees(areas) {
			s.wake()
		}
	}
}

// userChanged tells the sessions of a user that their scope changed.
func (h *hub) userChanged(user string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.sessions {
		if s.user.Name == user {
			s.scopeChanged()
		}
	}
}

// revoke ends every session of a device with the revoked error.
func (h *hub) revoke(device string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.sessions {
		if s.device.ID == device {
			s.fail(errRevoked)
		}
	}
}

// closeAll ends every session with a close frame and refuses new ones.
func (h *hub) closeAll(code int, reason string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for s := range h.sessions {
		s.close(code, reason)
	}
}

// abortAll drops every session's network connection at once.
func (h *hub) abortAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.sessions {
		s.abort()
	}
}

// online reports whether a device has an open session.
func (h *hub) online(device string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.sessions {
		if s.device.ID == device {
			return true
		}
	}
	return false
}
