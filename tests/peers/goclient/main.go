// Go crypto/tls TLS 1.3 client for the interop tests (stdlib only, Go 1.19).
//
// Usage: goclient [-ca cert.pem] [-servername localhost] [-curves x25519,p256,p384] [-suite 0x1301]
//
//	[-resume] [-cert chain.pem -key key.pem] HOST:PORT
//
// It asks for -servername by SNI (default localhost) and verifies the server against -ca for that
// name (without -ca it does not verify), offers the -curves in that order (the first one gets the
// key share in ClientHello1), sends "GET / HTTP/1.1", reads the reply until EOF and prints
//
//	version 0x0304 cipher 0x1301
//	<the reply>
//
// It exits 0 only for TLS 1.3 plus a non-empty reply. Go does not let a client choose its TLS 1.3
// cipher suites, so -suite is a check: the exit status is 1 if another suite was negotiated.
//
// With -resume it does all that twice, on two TCP connections sharing one
// tls.NewLRUClientSessionCache (the first connection's NewSessionTickets arrive while its reply
// is read), and after each connection's reply prints whether Go says it resumed:
//
//	did_resume false
//	...
//	did_resume true
//
// The exit status says nothing about resumption: the caller reads those lines.
//
// With -cert and -key (tls.LoadX509KeyPair: the PEM chain, leaf first, and its key) it answers a
// CertificateRequest with that chain, through tls.Config.Certificates: Go sends it only if it
// suits the request (a signature scheme in common, and an issuer the request's
// certificate_authorities name, when it names any), else an empty Certificate.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}

func main() {
	ca := flag.String("ca", "", "PEM file to verify the server against (for -servername)")
	servername := flag.String("servername", "localhost", "the name to ask for (SNI) and verify")
	curves := flag.String("curves", "", "comma list of x25519,p256,p384,p521, in preference order")
	suite := flag.String("suite", "", "expected cipher suite, e.g. 0x1303 (Go cannot restrict it)")
	resume := flag.Bool("resume", false, "connect twice with one session cache; print did_resume")
	cert := flag.String("cert", "", "PEM chain (leaf first) of a client certificate, with -key")
	key := flag.String("key", "", "PEM private key of the -cert client certificate")
	flag.Parse()
	if flag.NArg() != 1 || (*cert == "") != (*key == "") {
		fmt.Fprintln(os.Stderr, "usage: goclient [-ca cert.pem] [-servername localhost] [-curves ...] [-suite 0x1301] [-resume] [-cert chain.pem -key key.pem] HOST:PORT")
		os.Exit(2)
	}
	cfg := &tls.Config{ServerName: *servername, MinVersion: tls.VersionTLS13, MaxVersion: tls.VersionTLS13}
	if *cert != "" {
		pair, err := tls.LoadX509KeyPair(*cert, *key)
		if err != nil {
			fmt.Fprintln(os.Stderr, "client certificate:", err)
			os.Exit(2)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	if *ca != "" {
		pem, err := os.ReadFile(*ca)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			fmt.Fprintln(os.Stderr, "no certificate in", *ca)
			os.Exit(2)
		}
		cfg.RootCAs = pool
	} else {
		cfg.InsecureSkipVerify = true
	}
	if *curves != "" {
		known := map[string]tls.CurveID{
			"x25519": tls.X25519, "p256": tls.CurveP256, "p384": tls.CurveP384, "p521": tls.CurveP521,
		}
		for _, name := range strings.Split(*curves, ",") {
			id, ok := known[name]
			if !ok {
				fmt.Fprintln(os.Stderr, "unknown curve", name)
				os.Exit(2)
			}
			cfg.CurvePreferences = append(cfg.CurvePreferences, id)
		}
	}
	var want uint64
	if *suite != "" {
		var err error
		if want, err = strconv.ParseUint(*suite, 0, 16); err != nil {
			fmt.Fprintln(os.Stderr, "bad -suite:", err)
			os.Exit(2)
		}
	}

	connections := 1
	if *resume {
		cfg.ClientSessionCache = tls.NewLRUClientSessionCache(8)
		connections = 2
	}
	for i := 0; i < connections; i++ {
		st := fetch(cfg, flag.Arg(0))
		if *suite != "" && uint64(st.CipherSuite) != want {
			fail("negotiated cipher 0x%04x, expected 0x%04x", st.CipherSuite, want)
		}
		if *resume {
			fmt.Printf("did_resume %t\n", st.DidResume)
		}
	}
}

// fetch makes one connection: the handshake, the request, the whole reply (printed). It exits 1
// unless TLS 1.3 was negotiated and a reply came back.
func fetch(cfg *tls.Config, addr string) tls.ConnectionState {
	raw, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		fail("dial: %v", err)
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(15 * time.Second))
	conn := tls.Client(raw, cfg)
	if err := conn.Handshake(); err != nil {
		fail("handshake: %v", err)
	}
	st := conn.ConnectionState()
	fmt.Printf("version 0x%04x cipher 0x%04x\n", st.Version, st.CipherSuite)
	if _, err := conn.Write([]byte("GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")); err != nil {
		fail("write: %v", err)
	}
	reply, err := io.ReadAll(conn)
	os.Stdout.Write(reply)
	fmt.Println()
	if err != nil {
		fail("read: %v", err)
	}
	if st.Version != tls.VersionTLS13 || len(reply) == 0 {
		fail("not TLS 1.3 with a reply")
	}
	return st
}
