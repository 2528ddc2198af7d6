// A quic-go client for the interop tests: GET https://HOST:PORT/PATH over HTTP/3.
//
// Built offline against Debian's golang-github-lucas-clemente-quic-go-dev (quic-go 0.29, qtls for
// Go 1.19) in GOPATH mode:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o quicgoclient main.go
//
// Usage: quicgoclient [-curves x25519,p256,p384] [-sni localhost] [-path /] [-cert CHAIN.pem -key KEY.pem] [-connections N] [-resume] HOST:PORT
//
// qtls sends a key share for the first curve only, so "-curves p256,p384" against a server that
// prefers P-384 makes it switch groups after the HelloRetryRequest.  "-cert" and "-key" load a
// client certificate (tls.LoadX509KeyPair: the chain file's certificates, leaf first, all sent)
// into tls.Config.Certificates, presented when the server sends a CertificateRequest; like Go's
// crypto/tls, qtls presents it only if the request's certificate_authorities (when it has any)
// name an issuer of the chain, and sends an empty Certificate otherwise.  It prints
// "HANDSHAKE_DONE alpn h3 tls 0x0304 cipher 0x1301", then "status 200" and the body, and exits 0
// only for a 200 response.
//
// "-connections N" makes the GET N times, one after the other, each on a new QUIC connection (a
// new http3.RoundTripper) with one token store for all (quic.Config.TokenStore, an LRU store of
// quic.NewLRUTokenStore): a NEW_TOKEN frame of one connection goes into the next one's Initials.
// It prints "CONNECTION i" before each, "TOKEN_RECEIVED" when a NEW_TOKEN frame's token is stored
// and "TOKEN_SENT" when a connection takes one from the store, and waits up to a second after each
// response for a token to arrive before closing that connection.
//
// "-resume" gives all the connections one session cache (tls.Config.ClientSessionCache, an LRU
// cache of tls.NewLRUClientSessionCache): the tickets of one connection resume the next one, and
// from the second connection on the GET goes as http3.MethodGet0RTT, that is in 0-RTT packets
// when the ticket allows early data (quic-go dials with quic.DialAddrEarlyContext).  It prints
// "TICKET_RECEIVED" when a ticket is stored, waits up to a second after each response for one
// (then only 100 ms for a token, which comes with the tickets if at all), and prints after each
// GET "RESUMED true|false EARLY_DATA true|false" (the connection's ConnectionState().TLS:
// DidResume, Used0RTT, once its handshake is complete).  quic-go's http3 client (0.29) fails a
// request whose 0-RTT the server refused (an HRR refuses it): then it prints
// "EARLY_DATA_REJECTED" and, once the handshake is complete, makes the GET again on the same
// connection (NextConnection).
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	quic "github.com/lucas-clemente/quic-go"
	"github.com/lucas-clemente/quic-go/http3"
)

var curveNames = map[string]tls.CurveID{
	"x25519": tls.X25519,
	"p256":   tls.CurveP256,
	"p384":   tls.CurveP384,
	"p521":   tls.CurveP521,
}

// loggingTokenStore is quic-go's token store, saying what goes in and out.
type loggingTokenStore struct {
	store    quic.TokenStore
	mutex    sync.Mutex
	received int
}

func (s *loggingTokenStore) Put(key string, token *quic.ClientToken) {
	s.mutex.Lock()
	s.received++
	s.mutex.Unlock()
	fmt.Printf("TOKEN_RECEIVED for %s\n", key)
	s.store.Put(key, token)
}

func (s *loggingTokenStore) Pop(key string) *quic.ClientToken {
	token := s.store.Pop(key)
	if token != nil {
		fmt.Printf("TOKEN_SENT for %s\n", key)
	}
	return token
}

func (s *loggingTokenStore) count() int {
	s.mutex.Lock()
	defer s.mutex.Unlock()
	return s.received
}

// loggingSessionCache is Go's session cache, saying when a ticket goes in.
type loggingSessionCache struct {
	cache    tls.ClientSessionCache
	mutex    sync.Mutex
	received int
}

func (c *loggingSessionCache) Get(key string) (*tls.ClientSessionState, bool) {
	return c.cache.Get(key)
}

func (c *loggingSessionCache) Put(key string, session *tls.ClientSessionState) {
	if session != nil { // nil: forget the key's session
		c.mutex.Lock()
		c.received++
		c.mutex.Unlock()
		fmt.Printf("TICKET_RECEIVED for %s\n", key)
	}
	c.cache.Put(key, session)
}

func (c *loggingSessionCache) count() int {
	c.mutex.Lock()
	defer c.mutex.Unlock()
	return c.received
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}

func main() {
	curves := flag.String("curves", "x25519,p256,p384", "key exchange groups, the first gets the key share")
	sni := flag.String("sni", "localhost", "server name")
	path := flag.String("path", "/", "path to GET")
	cert := flag.String("cert", "", "PEM client certificate chain, leaf first (with -key)")
	key := flag.String("key", "", "PEM private key of the -cert certificate")
	connections := flag.Int("connections", 1, "GETs, each on a new connection, sharing one token store")
	resume := flag.Bool("resume", false, "one session cache for all connections, GETs after the first in 0-RTT")
	flag.Parse()
	if flag.NArg() != 1 || (*cert == "") != (*key == "") || *connections < 1 {
		fmt.Fprintln(os.Stderr, "usage: quicgoclient [-curves ...] [-sni name] [-path /] [-cert chain.pem -key key.pem] [-connections N] [-resume] HOST:PORT")
		os.Exit(2)
	}
	var preferences []tls.CurveID
	for _, name := range strings.Split(*curves, ",") {
		curve, ok := curveNames[strings.TrimSpace(name)]
		if !ok {
			fail("unknown curve %q", name)
		}
		preferences = append(preferences, curve)
	}
	tlsConf := &tls.Config{
		InsecureSkipVerify: true,
		ServerName:         *sni,
		NextProtos:         []string{"h3"},
		CurvePreferences:   preferences,
	}
	if *cert != "" {
		pair, err := tls.LoadX509KeyPair(*cert, *key)
		if err != nil {
			fail("loading -cert %s -key %s: %v", *cert, *key, err)
		}
		tlsConf.Certificates = []tls.Certificate{pair}
	}
	quicConf := &quic.Config{
		HandshakeIdleTimeout: 5 * time.Second,
		MaxIdleTimeout:       10 * time.Second,
		Versions:             []quic.VersionNumber{quic.Version1},
	}
	sessions := &loggingSessionCache{cache: tls.NewLRUClientSessionCache(8)}
	if *resume {
		tlsConf.ClientSessionCache = sessions
	}
	if *connections == 1 {
		get(tlsConf, quicConf, flag.Arg(0)+*path, http.MethodGet)
		return
	}
	tokens := &loggingTokenStore{store: quic.NewLRUTokenStore(4, 4)}
	quicConf.TokenStore = tokens
	for i := 1; i <= *connections; i++ {
		fmt.Printf("CONNECTION %d\n", i)
		method := http.MethodGet
		if *resume && i > 1 {
			method = http3.MethodGet0RTT
		}
		tickets := sessions.count()
		get(tlsConf, quicConf, flag.Arg(0)+*path, method, func() {
			tokenWait := time.Second
			if *resume {
				waitUntil(func() bool { return sessions.count() > tickets }, time.Second)
				// A NEW_TOKEN frame comes with the tickets, if the server sends one at all.
				tokenWait = 100 * time.Millisecond
			}
			waitUntil(func() bool { return tokens.count() >= i }, tokenWait)
		})
	}
}

// waitUntil polls done every 10 ms, for up to timeout.
func waitUntil(done func() bool, timeout time.Duration) {
	for deadline := time.Now().Add(timeout); !done() && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
}

// roundTripper makes HTTP/3 requests on the connection it dials (or on conn), kept in
// dialed so that its TLS state can be read.
func roundTripper(tlsConf *tls.Config, quicConf *quic.Config, dialed *quic.EarlyConnection, conn quic.EarlyConnection) *http3.RoundTripper {
	return &http3.RoundTripper{
		TLSClientConfig: tlsConf,
		QuicConfig:      quicConf,
		Dial: func(ctx context.Context, addr string, tlsCfg *tls.Config, cfg *quic.Config) (quic.EarlyConnection, error) {
			if conn != nil {
				return conn, nil
			}
			c, err := quic.DialAddrEarlyContext(ctx, addr, tlsCfg, cfg)
			*dialed = c
			return c, err
		},
	}
}

func do(transport *http3.RoundTripper, method, target string) (*http.Response, error) {
	request, err := http.NewRequest(method, "https://"+target, nil)
	if err != nil {
		fail("request: %v", err)
	}
	client := &http.Client{Transport: transport, Timeout: 15 * time.Second}
	return client.Do(request)
}

// get makes one GET (method: GET, or http3.MethodGet0RTT) on a new connection, prints what it
// got and exits 1 unless it was a 200; then calls each of beforeClose before it closes the
// connection.
func get(tlsConf *tls.Config, quicConf *quic.Config, target string, method string, beforeClose ...func()) {
	var conn quic.EarlyConnection
	transport := roundTripper(tlsConf, quicConf, &conn, nil)
	defer transport.Close()
	response, err := do(transport, method, target)
	if err != nil && conn != nil && (errors.Is(err, quic.Err0RTTRejected) || strings.Contains(err.Error(), quic.Err0RTTRejected.Error())) {
		fmt.Println("EARLY_DATA_REJECTED")
		select {
		case <-conn.HandshakeComplete().Done():
		case <-conn.Context().Done():
			fail("GET: the connection closed before its handshake completed")
		}
		next, ok := conn.NextConnection().(quic.EarlyConnection)
		if !ok {
			fail("NextConnection is not an EarlyConnection")
		}
		again := roundTripper(tlsConf, quicConf, &conn, next)
		defer again.Close()
		response, err = do(again, http.MethodGet, target)
	}
	if err != nil {
		fail("GET: %v", err)
	}
	if tlsConf.ClientSessionCache != nil && conn != nil {
		<-conn.HandshakeComplete().Done()
		state := conn.ConnectionState().TLS
		fmt.Printf("RESUMED %t EARLY_DATA %t\n", state.DidResume, state.Used0RTT)
	}
	body, err := io.ReadAll(response.Body)
	response.Body.Close()
	if err != nil {
		fail("reading the body: %v", err)
	}
	state := response.TLS
	if state == nil {
		fail("no TLS state in the response")
	}
	fmt.Printf("HANDSHAKE_DONE alpn %s tls 0x%04x cipher 0x%04x\n",
		state.NegotiatedProtocol, state.Version, state.CipherSuite)
	fmt.Printf("status %d\n%s", response.StatusCode, body)
	if response.StatusCode != 200 {
		os.Exit(1)
	}
	for _, wait := range beforeClose {
		wait()
	}
}
