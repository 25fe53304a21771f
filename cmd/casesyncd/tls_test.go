//go:build unix

package main_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/casesync/casesync/syncproto"
)

// selfSigned writes a self-signed certificate for 127.0.0.1 and its key to
// dir and returns their paths and a pool that trusts the certificate.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "casesync test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// TestTLS runs casesyncd with --tls-cert and --tls-key: the admin CLI and a
// device work over https:// and wss://, and the port speaks nothing but
// TLS 1.2 or later.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pool := selfSigned(t, dir)
	data := filepath.Join(dir, "data")
	addr := freeAddr(t)
	d := launch(t, "", addr, data, nil, "--addr", addr, "--data", data, "--tls-cert", certFile, "--tls-key", keyFile)
	tlsConf := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsConf, DisableKeepAlives: true}}
	base := "https://" + addr
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := client.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("casesyncd with TLS not ready: %v\n%s", err, d.Output())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(d.Output(), "https://"+addr) {
		t.Errorf("log does not announce https://%s:\n%s", addr, d.Output())
	}

	// Plain HTTP on the TLS port gets no answer from the application.
	if resp, err := httpc.Get("http://" + addr + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Error("plain HTTP on the TLS port was served")
		}
	}
	// TLS below 1.2 is refused.
	old := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}
	if conn, err := tls.Dial("tcp", addr, old); err == nil {
		conn.Close()
		t.Error("a TLS 1.1 handshake succeeded")
	} else if !strings.Contains(err.Error(), "version") {
		t.Errorf("a TLS 1.1 handshake failed with %v, want a protocol version alert", err)
	}

	// The admin CLI (trusting the certificate through SSL_CERT_FILE) and a
	// device work over TLS.
	env := []string{"SSL_CERT_FILE=" + certFile}
	tokenFile := filepath.Join(data, "admin.token")
	if r := runIn(t, "", env, "admin", "--server", base, "--token-file", tokenFile, "user", "add", "anouk", "--role", "caseworker", "--areas", "Zuilen"); r.Code != 0 {
		t.Fatalf("admin user add over https: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	r := runIn(t, "", env, "admin", "--server", base, "--token-file", tokenFile, "device", "enroll", "anouk", "--json")
	if r.Code != 0 {
		t.Fatalf("admin device enroll over https: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	e := decodeJSON[enrollment](t, "device enroll", r.Stdout)

	h := http.Header{}
	h.Set("Authorization", "Bearer "+e.Token)
	dialer := websocket.Dialer{TLSClientConfig: tlsConf, HandshakeTimeout: 5 * time.Second}
	ws, resp, err := dialer.Dial("wss://"+addr+"/v1/sync", h)
	if err != nil {
		t.Fatalf("wss upgrade: %v", err)
	}
	resp.Body.Close()
	defer ws.Close()
	codec, err := syncproto.NewCodec(0)
	if err != nil {
		t.Fatal(err)
	}
	defer codec.Close()
	f, _ := codec.Encode(&syncproto.Hello{Version: syncproto.Version, Device: e.Device.ID, Time: time.Now().UnixMilli()}, false)
	if err := ws.WriteMessage(websocket.BinaryMessage, f); err != nil {
		t.Fatal(err)
	}
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, msg, err := ws.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	if m, err := codec.Decode(msg, false); err != nil {
		t.Fatalf("first message over wss: %v", err)
	} else if _, ok := m.(*syncproto.Welcome); !ok {
		t.Fatalf("first message over wss is %T, want welcome", m)
	}
	// Without trusting the certificate, a client refuses the server.
	if _, _, err := (&websocket.Dialer{HandshakeTimeout: 5 * time.Second}).Dial("wss://"+addr+"/v1/sync", h); err == nil {
		t.Error("a client that does not trust the certificate connected")
	}
	ws.Close()
	d.stop(t)
}
