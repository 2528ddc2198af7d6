// A quic-go client for the interop tests: GET https://HOST:PORT/PATH over HTTP/3.
//
// Built offline against Debian's golang-github-lucas-clemente-quic-go-dev (quic-go 0.29, qtls for
// Go 1.19) in GOPATH mode:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o quicgoclient main.go
//
// Usage: quicgoclient [-curves x25519,p256,p384] [-sni localhost] [-path /] [-cert CHAIN.pem -key KEY.pem] HOST:PORT
//
// qtls sends a key share for the first curve only, so "-curves p256,p384" against a server that
// prefers P-384 makes it switch groups after the HelloRetryRequest.  "-cert" and "-key" load a
// client certificate (tls.LoadX509KeyPair: the chain file's certificates, leaf first, all sent)
// into tls.Config.Certificates, presented when the server sends a CertificateRequest; like Go's
// crypto/tls, qtls presents it only if the request's certificate_authorities (when it has any)
// name an issuer of the chain, and sends an empty Certificate otherwise.  It prints
// "HANDSHAKE_DONE alpn h3 tls 0x0304 cipher 0x1301", then "status 200" and the body, and exits 0
// only for a 200 response.
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
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
	flag.Parse()
	if flag.NArg() != 1 || (*cert == "") != (*key == "") {
		fmt.Fprintln(os.Stderr, "usage: quicgoclient [-curves ...] [-sni name] [-path /] [-cert chain.pem -key key.pem] HOST:PORT")
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
	transport := &http3.RoundTripper{TLSClientConfig: tlsConf, QuicConfig: quicConf}
	defer transport.Close()
	client := &http.Client{Transport: transport, Timeout: 15 * time.Second}
	response, err := client.Get("https://" + flag.Arg(0) + *path)
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
}
