// A quic-go client for the interop tests: GET https://HOST:PORT/PATH over HTTP/3.
//
// Built offline against Debian's golang-github-lucas-clemente-quic-go-dev (quic-go 0.29, qtls for
// Go 1.19) in GOPATH mode:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o quicgoclient main.go
//
// Usage: quicgoclient [-curves x25519,p256,p384] [-sni localhost] [-path /] [-cert CHAIN.pem -key KEY.pem] [-connections N] HOST:PORT
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
package main

import (
	"crypto/tls"
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
	flag.Parse()
	if flag.NArg() != 1 || (*cert == "") != (*key == "") || *connections < 1 {
		fmt.Fprintln(os.Stderr, "usage: quicgoclient [-curves ...] [-sni name] [-path /] [-cert chain.pem -key key.pem] [-connections N] HOST:PORT")
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
	if *connections == 1 {
		get(tlsConf, quicConf, flag.Arg(0)+*path)
		return
	}
	tokens := &loggingTokenStore{store: quic.NewLRUTokenStore(4, 4)}
	quicConf.TokenStore = tokens
	for i := 1; i <= *connections; i++ {
		fmt.Printf("CONNECTION %d\n", i)
		get(tlsConf, quicConf, flag.Arg(0)+*path, func() {
			for deadline := time.Now().Add(time.Second); tokens.count() < i && time.Now().Before(deadline); {
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}

// get makes one GET on a new connection, prints what it got and exits 1 unless it was a 200;
// then calls each of beforeClose before it closes the connection.
func get(tlsConf *tls.Config, quicConf *quic.Config, target string, beforeClose ...func()) {
	transport := &http3.RoundTripper{TLSClientConfig: tlsConf, QuicConfig: quicConf}
	defer transport.Close()
	client := &http.Client{Transport: transport, Timeout: 15 * time.Second}
	response, err := client.Get("https://" + target)
	if err != nil {
		fail("GET: %v", err)
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
