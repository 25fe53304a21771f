// Package e2e holds end-to-end tests of the client library against a real
// server over real sockets: the field scenarios of a caseworker's day.
//
// Two tools sit between a device and the server. Proxy is a TCP proxy that
// delays, blackholes and cuts connections. Relay sees the protocol's
// messages: it holds, reorders and cuts what the server sends, so a test
// can make happen, every time, an order the server's scheduler produces
// only sometimes (an ack ahead of the scope update and backlog of its
// session, say); order_test.go runs scenarios through every such order.
package e2e
