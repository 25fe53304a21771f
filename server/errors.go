package server

import (
	"errors"
	"net/http"

	"github.com/casesync/casesync/syncproto"
)

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("server: closed")

// httpStatus is the one table from error codes to HTTP statuses, used for
// the upgrade request and the admin API.
var httpStatus = map[syncproto.Code]int{
	syncproto.CodeAuth:       http.StatusUnauthorized,
	syncproto.CodeRevoked:    http.StatusUnauthorized,
	syncproto.CodeScope:      http.StatusForbidden,
	syncproto.CodeValidation: http.StatusBadRequest,
	syncproto.CodeVersion:    http.StatusBadRequest,
	syncproto.CodeTooLarge:   http.StatusRequestEntityTooLarge,
	syncproto.CodeRate:       http.StatusTooManyRequests,
	syncproto.CodeProtocol:   http.StatusBadRequest,
	syncproto.CodeInternal:   http.StatusInternalServerError,
}

// statusOf returns the HTTP status for err.
func statusOf(err error) int {
	if st, ok := httpStatus[syncproto.CodeOf(err)]; ok {
		return st
	}
	return http.StatusInternalServerError
}

var (
	errNoToken      = &syncproto.Error{Code: syncproto.CodeAuth, Reason: "no_token", Message: "send the device token as 'Authorization: Bearer <token>'"}
	errBadToken     = &syncproto.Error{Code: syncproto.CodeAuth, Reason: "unknown_token", Message: "unknown device token; enroll the device again"}
	errRevoked      = &syncproto.Error{Code: syncproto.CodeRevoked, Message: "this device was revoked; its local data must be wiped"}
	errTooManyConns = &syncproto.Error{Code: syncproto.CodeRate, Reason: "connections", Message: "too many open connections for this device; close the others"}
	errShutdown     = &syncproto.Error{Code: syncproto.CodeInternal, Reason: "shutdown", Message: "the server is shutting down; retry shortly"}
)
