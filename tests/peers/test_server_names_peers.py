"""Certificates chosen by server name (RFC 6066 §3) and post-handshake authentication (RFC 8446
§4.6.2) with real, independent clients over TCP, through the stateless HRR.

Server names: one server holds two certificates, each self-signed for one name: ECDSA P-256 for
``ecdsa.test`` (first, so the fallback for any other name) and RSA for ``rsa.test``.  Each peer
asks for each name by SNI and verifies what it got against that name's certificate alone, host
name checked (``s_client -CAfile -verify_hostname``, ``gnutls-cli --x509cafile
--verify-hostname``, ``curl --cacert`` with ``--resolve``, Python's ssl ``server_hostname``, Go
``goclient -ca -servername``): only the right certificate passes.  The server's report says which
name was asked for (``handshake.server_name``) and how it signed (``signature_scheme``: ECDSA or
RSA-PSS), after an HRR whose cookie came back verified.  A name no certificate has gets the first
certificate (any of them may serve it, and the first whose key the client's signature_algorithms
allow does: ECDSA for every peer here), or unrecognized_name (112), sent at once for
ClientHello1 rather than an HRR, with ``refuse_unknown_server_names``; a client sending no SNI
gets the first.  The CLI does the same with ``--cert A --key A --cert B --key B``.

Post-handshake authentication: a server whose ``ClientAuth`` is ``post_handshake_only`` asks
nothing in the handshake, and the demo page's ``GET /secret`` asks a client that offered
post_handshake_auth for its certificate then.  The connection's report says so:
``handshake.client_certificate`` stays None (the handshake got none), its ``client_certificate``
is the one received later (and the log line's ``client=``), or its ``error`` the alert sent; the
page the server serves names the subject too.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from stateless13 import AlertDescription, ClientAuth, Credential, SignatureScheme
from stateless13.transports.common import ConnectionReport
from tests.peers.test_cli import CliServer, Serve, s_client
from tests.peers.test_cli import serve as serve  # the fixture: `serve(args)` starts the CLI
from tests.peers.test_cli_peers import (
    AES128,
    P256,
    PEER_TIMEOUT,
    REQUEST,
    PeerRun,
    assert_curl_ok,
    assert_openssl_ok,
    run_peer,
)
from tests.peers.test_client_cert_peers import (
    OPENSSL_ALERTS,
    assert_logged,
    cli_credentials,
    intermediates,
    page_line,
)
from tests.peers.test_client_cert_peers import pki as pki  # the fixture: a module's Pki
from tests.peers.test_go import assert_go_success, run_goclient
from tests.peers.test_go import goclient as goclient  # the fixture: goclient built once
from tests.pki import ClientIdentity, Pki
from tests.servers import PAGE_TEXT, RunningServer, ServerFactory, require_peer

ECDSA_NAME = "ecdsa.test"
RSA_NAME = "rsa.test"
UNKNOWN_NAME = "other.test"  # no certificate names it
KEYS = {ECDSA_NAME: "ecdsa-p256", RSA_NAME: "rsa"}
SCHEMES = {
    ECDSA_NAME: SignatureScheme.ecdsa_secp256r1_sha256,
    RSA_NAME: SignatureScheme.rsa_pss_rsae_sha256,
}
#: What OpenSSL's s_client says of the server's signature, by the certificate's name.
OPENSSL_SIGNATURE = {
    ECDSA_NAME: "Peer signature type: ECDSA",
    RSA_NAME: "Peer signature type: RSA-PSS",
}
#: gnutls-cli's session description names the signature scheme.
GNUTLS_SIGNATURE = {ECDSA_NAME: "-(ECDSA-SECP256R1-SHA256)-", RSA_NAME: "-(RSA-PSS-RSAE-SHA256)-"}
GNUTLS_UNRECOGNIZED_NAME = "*** Received alert [112]: The server name sent was not recognized"


@dataclass(frozen=True)
class Named:
    """One certificate of the server: its name, the credential, and its PEM for peers to trust."""

    name: str
    credential: Credential
    pem: Path
    key: Path

    @property
    def der(self) -> bytes:
        return self.credential.certificate_chain[0]


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Named]:
    """ECDSA P-256 for ecdsa.test, RSA 2048 for rsa.test, each self-signed with that name as its
    one subjectAltName (hence its ``server_names``), written as PEM (certificate and key)."""
    directory = tmp_path_factory.mktemp("server-names")
    named = {}
    for name, key_type in KEYS.items():
        credential = Credential.self_signed(name, key_type)
        assert credential.server_names == (name,)
        pem, key = directory / f"{name}.pem", directory / f"{name}.key"
        pem.write_bytes(credential.certificate_pem())
        key.write_bytes(
            credential.private_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        named[name] = Named(name, credential, pem, key)
    return named


NamedServer = Callable[..., RunningServer]


@pytest.fixture
def named_server(tls_server: ServerFactory, certificates: dict[str, Named]) -> NamedServer:
    """``named_server(**config_options)``: the ``tls_server`` fixture (stateless HRR by default,
    the demo page, one report per connection) serving the ECDSA certificate then the RSA one."""
    ours = (certificates[ECDSA_NAME].credential, certificates[RSA_NAME].credential)

    def start(**options: object) -> RunningServer:
        return tls_server(credentials=ours, **options)

    return start


# --- what the server says ------------------------------------------------------------------------


def assert_served(server: RunningServer, asked: str | None, served: str) -> ConnectionReport:
    """One connection through the stateless HRR (its cookie verified) that asked for ``asked``
    (None: no SNI) and was served the certificate for ``served``: it signed with that key."""
    report = server.only_report()
    assert report.error is None, report
    assert report.hello_retry and report.cookie_verified, report
    handshake = report.handshake
    assert handshake is not None, report
    assert handshake.hello_retry and handshake.cookie_verified, report
    assert handshake.server_name == asked, report
    assert handshake.signature_scheme == SCHEMES[served], report
    return report


def assert_unrecognized(server: RunningServer) -> ConnectionReport:
    """One connection refused with unrecognized_name (112) for the name no certificate has, at
    its first ClientHello: the stateless front sends that alert (one 7-byte plaintext record)
    rather than an HRR, as no cookie could make the name known."""
    report = server.only_report()
    assert report.validation == "hrr" and not report.hello_retry, report
    assert not report.cookie_verified and report.handshake is None, report
    assert report.error == f"unrecognized_name: no certificate for server name {UNKNOWN_NAME!r}"
    assert report.bytes_out == 7, report
    return report


# --- openssl s_client ----------------------------------------------------------------------------


def openssl_sni(server: RunningServer, asked: str | None, trusted: Named, *options: str) -> PeerRun:
    """``s_client -servername ASKED`` (``-noservername``: no SNI), verifying the certificate it
    gets against ``trusted`` alone, for ``trusted``'s name."""
    args = [require_peer("openssl"), "s_client", "-connect", f"127.0.0.1:{server.port}"]
    args += ["-servername", asked] if asked is not None else ["-noservername"]
    args += ["-tls1_3", "-ign_eof", "-msg", "-CAfile", str(trusted.pem), "-verify_return_error"]
    args += ["-verify_hostname", trusted.name, *options]
    return run_peer(args, REQUEST)


def assert_openssl_verified(run: PeerRun, served: str) -> None:
    assert_openssl_ok(run, AES128, P256, hellos=2)
    assert "Verify return code: 0 (ok)" in run.output, run.log
    assert f"subject=CN = {served}\n" in run.output, run.log
    assert OPENSSL_SIGNATURE[served] in run.output, run.log


@pytest.mark.parametrize("name", KEYS)
def test_openssl_gets_the_certificate_for_its_name(
    named_server: NamedServer, certificates: dict[str, Named], name: str
) -> None:
    server = named_server()
    assert_openssl_verified(openssl_sni(server, name, certificates[name]), name)
    assert_served(server, name, name)


@pytest.mark.parametrize("asked", [UNKNOWN_NAME, None], ids=["unknown_name", "no_sni"])
def test_openssl_gets_the_first_certificate_otherwise(
    named_server: NamedServer, certificates: dict[str, Named], asked: str | None
) -> None:
    server = named_server()
    assert_openssl_verified(openssl_sni(server, asked, certificates[ECDSA_NAME]), ECDSA_NAME)
    assert_served(server, asked, ECDSA_NAME)


def test_openssl_unknown_name_refused(
    named_server: NamedServer, certificates: dict[str, Named]
) -> None:
    server = named_server(refuse_unknown_server_names=True)
    run = openssl_sni(server, UNKNOWN_NAME, certificates[ECDSA_NAME])
    assert run.returncode != 0, run.log
    assert "tlsv1 unrecognized name" in run.output, run.log
    assert f"SSL alert number {AlertDescription.unrecognized_name.value}" in run.output, run.log
    assert "<<< TLS 1.3, Alert [length 0002], fatal unrecognized_name" in run.output, run.log
    assert_unrecognized(server)


# --- gnutls-cli ----------------------------------------------------------------------------------


def gnutls_sni(server: RunningServer, asked: str | None, trusted: Named) -> PeerRun:
    """``gnutls-cli --sni-hostname ASKED`` (``--disable-sni``: none) to 127.0.0.1, verifying
    against ``trusted`` alone for its name (``--verify-hostname``: gnutls-cli would otherwise
    check the host it connects to, 127.0.0.1)."""
    args = [require_peer("gnutls-cli"), f"--port={server.port}", "-d", "4"]
    args += [f"--sni-hostname={asked}"] if asked is not None else ["--disable-sni"]
    args += [f"--x509cafile={trusted.pem}", f"--verify-hostname={trusted.name}"]
    args += ["--priority=NORMAL:-VERS-ALL:+VERS-TLS1.3", "127.0.0.1"]
    return run_peer(args, REQUEST, keep_stdin_open=True)


def assert_gnutls_verified(run: PeerRun, served: str) -> None:
    assert run.returncode == 0, run.log
    assert "- Handshake was completed" in run.output, run.log
    assert "HELLO RETRY REQUEST" in run.output, run.log
    assert "- Status: The certificate is trusted." in run.output, run.log
    assert f" - subject `CN={served}', issuer `CN={served}'" in run.output, run.log
    assert GNUTLS_SIGNATURE[served] in run.output, run.log
    assert PAGE_TEXT in run.output, run.log


@pytest.mark.parametrize("name", KEYS)
def test_gnutls_gets_the_certificate_for_its_name(
    named_server: NamedServer, certificates: dict[str, Named], name: str
) -> None:
    server = named_server()
    assert_gnutls_verified(gnutls_sni(server, name, certificates[name]), name)
    assert_served(server, name, name)


@pytest.mark.parametrize("asked", [UNKNOWN_NAME, None], ids=["unknown_name", "no_sni"])
def test_gnutls_gets_the_first_certificate_otherwise(
    named_server: NamedServer, certificates: dict[str, Named], asked: str | None
) -> None:
    server = named_server()
    assert_gnutls_verified(gnutls_sni(server, asked, certificates[ECDSA_NAME]), ECDSA_NAME)
    assert_served(server, asked, ECDSA_NAME)


def test_gnutls_unknown_name_refused(
    named_server: NamedServer, certificates: dict[str, Named]
) -> None:
    server = named_server(refuse_unknown_server_names=True)
    run = gnutls_sni(server, UNKNOWN_NAME, certificates[ECDSA_NAME])
    assert run.returncode == 1, run.log
    assert GNUTLS_UNRECOGNIZED_NAME in run.output, run.log
    assert_unrecognized(server)


# --- curl ----------------------------------------------------------------------------------------


def curl_sni(server: RunningServer, asked: str, trusted: Named) -> PeerRun:
    """``curl https://ASKED:PORT/`` with ASKED resolved to 127.0.0.1, trusting ``trusted``."""
    args = [require_peer("curl"), "--silent", "--show-error", "--verbose", "--tlsv1.3"]
    args += ["--max-time", "5", "--noproxy", "*", "--cacert", str(trusted.pem)]
    args += ["--resolve", f"{asked}:{server.port}:127.0.0.1", f"https://{asked}:{server.port}/"]
    return run_peer(args)


@pytest.mark.parametrize("name", KEYS)
def test_curl_gets_the_certificate_for_its_name(
    named_server: NamedServer, certificates: dict[str, Named], name: str
) -> None:
    server = named_server()
    run = curl_sni(server, name, certificates[name])
    assert_curl_ok(run, AES128)
    assert f"*  subject: CN={name}\n" in run.output, run.log
    assert f'host "{name}" matched cert\'s "{name}"' in run.output, run.log
    assert_served(server, name, name)


def test_curl_unknown_name_refused(
    named_server: NamedServer, certificates: dict[str, Named]
) -> None:
    server = named_server(refuse_unknown_server_names=True)
    run = curl_sni(server, UNKNOWN_NAME, certificates[ECDSA_NAME])
    assert run.returncode == 35, run.log  # CURLE_SSL_CONNECT_ERROR
    assert "tlsv1 unrecognized name" in run.output, run.log
    assert_unrecognized(server)


# --- Python's ssl --------------------------------------------------------------------------------


def python_sni(
    server: RunningServer, asked: str | None, trusted: Named
) -> tuple[str, bytes | None, ssl.SSLError | None]:
    """Python's ssl over a socket asking for ``asked`` (None: no SNI) and trusting ``trusted``
    alone, with its host name checked when the name asked for is its own (otherwise the chain
    only): the reply, the certificate received (DER), and the error it raised, if any."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_verify_locations(trusted.pem)
    context.check_hostname = asked == trusted.name
    reply, certificate = b"", None
    try:
        with (
            socket.create_connection((server.host, server.port), timeout=PEER_TIMEOUT) as raw,
            context.wrap_socket(raw, server_hostname=asked) as tls,
        ):
            assert tls.version() == "TLSv1.3"
            certificate = tls.getpeercert(binary_form=True)
            tls.sendall(REQUEST)
            while chunk := tls.recv(4096):
                reply += chunk
    except ssl.SSLError as error:
        return reply.decode(), certificate, error
    return reply.decode(), certificate, None


@pytest.mark.parametrize("name", KEYS)
def test_python_ssl_gets_the_certificate_for_its_name(
    named_server: NamedServer, certificates: dict[str, Named], name: str
) -> None:
    server = named_server()
    reply, certificate, error = python_sni(server, name, certificates[name])
    assert error is None, error
    assert reply.startswith("HTTP/1.1 200 OK\r\n") and PAGE_TEXT in reply, reply
    assert certificate == certificates[name].der
    assert_served(server, name, name)


@pytest.mark.parametrize("asked", [UNKNOWN_NAME, None], ids=["unknown_name", "no_sni"])
def test_python_ssl_gets_the_first_certificate_otherwise(
    named_server: NamedServer, certificates: dict[str, Named], asked: str | None
) -> None:
    server = named_server()
    reply, certificate, error = python_sni(server, asked, certificates[ECDSA_NAME])
    assert error is None, error
    assert reply.startswith("HTTP/1.1 200 OK\r\n") and PAGE_TEXT in reply, reply
    assert certificate == certificates[ECDSA_NAME].der
    assert_served(server, asked, ECDSA_NAME)


def test_python_ssl_unknown_name_refused(
    named_server: NamedServer, certificates: dict[str, Named]
) -> None:
    server = named_server(refuse_unknown_server_names=True)
    reply, certificate, error = python_sni(server, UNKNOWN_NAME, certificates[ECDSA_NAME])
    assert error is not None and reply == "" and certificate is None, (reply, error)
    assert error.reason == "TLSV1_UNRECOGNIZED_NAME", error
    assert_unrecognized(server)


# --- Go crypto/tls -------------------------------------------------------------------------------


def go_sni(
    goclient: Path, server: RunningServer, asked: str, trusted: Named
) -> subprocess.CompletedProcess[str]:
    """goclient ``-servername ASKED -ca PEM`` (Go verifies the host name it asked for); run_goclient
    passes the fixture server's own ``-ca`` first, and Go's flag package keeps the last one."""
    return run_goclient(goclient, server, "-ca", str(trusted.pem), "-servername", asked)


@pytest.mark.parametrize("name", KEYS)
def test_go_gets_the_certificate_for_its_name(
    goclient: Path, named_server: NamedServer, certificates: dict[str, Named], name: str
) -> None:
    server = named_server()
    assert_go_success(go_sni(goclient, server, name, certificates[name]), server, P256)
    assert_served(server, name, name)


def test_go_unknown_name_gets_the_first_certificate(
    goclient: Path, named_server: NamedServer, certificates: dict[str, Named]
) -> None:
    """Go checks the name it asked for: the first certificate is trusted, but for ecdsa.test."""
    server = named_server()
    result = go_sni(goclient, server, UNKNOWN_NAME, certificates[ECDSA_NAME])
    detail = f"rc={result.returncode}\n{result.stdout}{result.stderr}"
    assert result.returncode == 1, detail
    expected = f"x509: certificate is valid for {ECDSA_NAME}, not {UNKNOWN_NAME}"
    assert expected in result.stderr, detail
    report = server.only_report()
    assert report.hello_retry and report.cookie_verified and report.handshake is None, report
    assert report.error == "client sent bad_certificate", report  # its alert (42)


def test_go_unknown_name_refused(
    goclient: Path, named_server: NamedServer, certificates: dict[str, Named]
) -> None:
    server = named_server(refuse_unknown_server_names=True)
    result = go_sni(goclient, server, UNKNOWN_NAME, certificates[ECDSA_NAME])
    detail = f"rc={result.returncode}\n{result.stdout}{result.stderr}"
    assert result.returncode == 1, detail
    assert "handshake: remote error: tls: unrecognized name" in result.stderr, detail
    assert_unrecognized(server)


# --- the command line ----------------------------------------------------------------------------


def cli_certificates(certificates: dict[str, Named]) -> list[str]:
    """``--cert A --key A --cert B --key B``: ECDSA first (the fallback), then RSA."""
    args = []
    for name in (ECDSA_NAME, RSA_NAME):
        args += ["--cert", str(certificates[name].pem), "--key", str(certificates[name].key)]
    return args


def cli_sni(server: CliServer, asked: str, trusted: Named) -> subprocess.CompletedProcess[str]:
    """test_cli's ``s_client`` asking for ``asked`` (its own ``-servername localhost`` comes
    first; s_client keeps the last), verifying against ``trusted`` alone for its name."""
    verify = ["-CAfile", str(trusted.pem), "-verify_return_error"]
    return s_client(server, "-servername", asked, *verify, "-verify_hostname", trusted.name)


def test_cli_serves_a_certificate_for_each_name(
    serve: Serve, certificates: dict[str, Named]
) -> None:
    """``serve --cert A --key A --cert B --key B``: the banner says which certificate is for
    which name; OpenSSL asking for each gets that one, and for another name the first; each log
    line names what it asked for, through the stateless HRR."""
    server = serve(["--validation", "hrr", *cli_certificates(certificates)])
    for name in KEYS:
        assert f"certificate {certificates[name].pem} for {name}" in server.stdout, server.output()
    fingerprint = certificates[ECDSA_NAME].credential.fingerprint
    assert f"SHA-256 fingerprint {fingerprint}" in server.stdout, server.output()
    cases = [(ECDSA_NAME, ECDSA_NAME), (RSA_NAME, RSA_NAME), (UNKNOWN_NAME, ECDSA_NAME)]
    for asked, served in cases:
        run = cli_sni(server, asked, certificates[served])
        assert run.returncode == 0, run.stdout + run.stderr
        assert "Verify return code: 0 (ok)" in run.stdout, run.stdout
        assert f"subject=CN = {served}\n" in run.stdout, run.stdout
        assert OPENSSL_SIGNATURE[served] in run.stdout, run.stdout
        assert PAGE_TEXT in run.stdout, run.stdout
    lines = assert_logged(server, len(cases))  # each through the stateless HRR
    assert [line["sni"] for line in lines] == [asked for asked, _ in cases], lines
    assert all(line["error"] is None for line in lines), lines
    server.stop()


def test_cli_refuse_unknown_server_names(serve: Serve, certificates: dict[str, Named]) -> None:
    """``--refuse-unknown-server-names``: a name no certificate has gets unrecognized_name;
    the names that have one are still served."""
    args = ["--validation", "hrr", *cli_certificates(certificates)]
    server = serve([*args, "--refuse-unknown-server-names"])
    refused = cli_sni(server, UNKNOWN_NAME, certificates[ECDSA_NAME])
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "tlsv1 unrecognized name" in refused.stderr, refused.stderr
    served = cli_sni(server, RSA_NAME, certificates[RSA_NAME])
    assert served.returncode == 0 and PAGE_TEXT in served.stdout, served.stdout + served.stderr
    refusal, named = server.log_lines(2)
    assert refusal["hrr"] == "no" and refusal["cookie"] == "none", refusal[0]  # at ClientHello1
    error = f"unrecognized_name: no certificate for server name {UNKNOWN_NAME!r}"
    assert refusal["error"] == f'"{error}"', refusal[0]
    assert named["hrr"] == "yes" and named["cookie"] == "verified", named[0]
    assert named["sni"] == RSA_NAME and named["error"] is None, named[0]
    server.stop()


# --- post-handshake authentication ---------------------------------------------------------------

SECRET = b"GET /secret HTTP/1.0\r\nHost: localhost\r\n\r\n"
FORBIDDEN = "HTTP/1.1 403 Forbidden\r\n"


def post_handshake_server(tls_server: ServerFactory, pki: Pki) -> RunningServer:
    """Asks for no certificate in the handshake; GET /secret asks for one after it."""
    return tls_server(client_auth=ClientAuth.from_pem(pki.ca_file, post_handshake_only=True))


def openssl_secret(server: RunningServer, identity: ClientIdentity, *options: str) -> PeerRun:
    """``s_client -cert -cert_chain -key`` fetching /secret (``-enable_pha``: offering
    post_handshake_auth, among ``options``)."""
    credentials = ["-cert", str(identity.chain), "-key", str(identity.key)]
    if (chain := intermediates(identity)) is not None:
        credentials += ["-cert_chain", str(chain)]
    args = [require_peer("openssl"), "s_client", "-connect", f"127.0.0.1:{server.port}"]
    args += ["-servername", "localhost", "-tls1_3", "-ign_eof", "-msg", *credentials, *options]
    return run_peer(args, SECRET)


def after_the_handshake(run: PeerRun) -> str:
    """s_client's ``-msg`` lines after its Finished: what came once the handshake was over."""
    finished = ">>> TLS 1.3, Handshake [length 0024], Finished"
    before, found, after = run.output.partition(finished)
    assert found, run.log
    assert "CertificateRequest" not in before, run.log  # none in the handshake
    return after


def assert_handshake_without_certificate(
    server: RunningServer, error: str | None, later: ClientIdentity | None = None
) -> None:
    """The connection's report: a handshake through the stateless HRR in which the client showed
    no certificate (none was asked for), ``later`` the one it presented after the handshake
    (None: none), and ``error`` (None: it ended well)."""
    report = server.only_report()
    assert report.hello_retry and report.cookie_verified, report
    assert report.handshake is not None and report.handshake.cookie_verified, report
    assert report.handshake.client_certificate is None, report
    if later is None:
        assert report.client_certificate is None, report
    else:
        assert report.client_certificate is not None, report
        assert report.client_certificate.subject == later.subject, report
    if error is None:
        assert report.error is None, report
    else:
        assert report.error is not None and report.error.startswith(f"{error}: "), report


def test_openssl_post_handshake_authentication(tls_server: ServerFactory, pki: Pki) -> None:
    """``-enable_pha``: the request for /secret brings a CertificateRequest; s_client answers
    with alice's chain, and the page names her."""
    server = post_handshake_server(tls_server, pki)
    run = openssl_secret(server, pki.good, "-enable_pha")
    assert run.returncode == 0, run.log
    later = after_the_handshake(run)
    assert "<<< TLS 1.3, Handshake [length" in later and "], CertificateRequest" in later, run.log
    assert "HTTP/1.1 200 OK" in later and page_line(pki.good) in later, run.log
    assert_handshake_without_certificate(server, None, pki.good)


def test_openssl_without_post_handshake_auth_is_forbidden(
    tls_server: ServerFactory, pki: Pki
) -> None:
    """No ``-enable_pha``: the server may not ask (§4.6.2), so /secret is 403."""
    server = post_handshake_server(tls_server, pki)
    run = openssl_secret(server, pki.good)
    assert run.returncode == 0, run.log
    assert FORBIDDEN in run.output and "CertificateRequest" not in run.output, run.log
    assert_handshake_without_certificate(server, None)


def test_openssl_post_handshake_untrusted_certificate(tls_server: ServerFactory, pki: Pki) -> None:
    """A chain to another root, sent after the handshake: unknown_ca, and no page."""
    server = post_handshake_server(tls_server, pki)
    run = openssl_secret(server, pki.untrusted, "-enable_pha")
    later = after_the_handshake(run)
    assert "], CertificateRequest" in later, run.log
    assert "<<< TLS 1.3, Alert [length 0002], fatal unknown_ca" in later, run.log
    assert OPENSSL_ALERTS["unknown_ca"] in run.output, run.log
    assert "HTTP/1.1" not in run.output, run.log
    assert_handshake_without_certificate(server, "unknown_ca")


def python_secret(server: RunningServer, identity: ClientIdentity, *, pha: bool) -> str:
    """Python's ssl over a socket (``post_handshake_auth`` as ``pha``), with
    ``load_cert_chain``, fetching /secret: the reply."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_verify_locations(server.cert_path)
    context.load_cert_chain(identity.chain, identity.key)
    context.post_handshake_auth = pha
    reply = b""
    with (
        socket.create_connection((server.host, server.port), timeout=PEER_TIMEOUT) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(SECRET)
        while chunk := tls.recv(4096):
            reply += chunk
    return reply.decode()


def test_python_ssl_post_handshake_authentication(tls_server: ServerFactory, pki: Pki) -> None:
    server = post_handshake_server(tls_server, pki)
    reply = python_secret(server, pki.rsa, pha=True)
    assert reply.startswith("HTTP/1.1 200 OK\r\n") and page_line(pki.rsa) in reply, reply
    assert_handshake_without_certificate(server, None, pki.rsa)


def test_python_ssl_without_post_handshake_auth_is_forbidden(
    tls_server: ServerFactory, pki: Pki
) -> None:
    server = post_handshake_server(tls_server, pki)
    reply = python_secret(server, pki.rsa, pha=False)
    assert reply.startswith(FORBIDDEN), reply
    assert_handshake_without_certificate(server, None)


def test_cli_verify_client_post_handshake(serve: Serve, pki: Pki) -> None:
    """``serve --client-ca PEM --verify-client post-handshake``: no certificate in the
    handshake; /secret asks s_client ``-enable_pha`` for one and names alice; without
    ``-enable_pha``, 403."""
    args = ["--client-ca", str(pki.ca_file), "--verify-client", "post-handshake"]
    server = serve(["--validation", "hrr", *args])
    alice = s_client(server, "-enable_pha", *cli_credentials(pki.good), request=SECRET)
    assert alice.returncode == 0, alice.stdout + alice.stderr
    assert "HTTP/1.1 200 OK" in alice.stdout and page_line(pki.good) in alice.stdout, alice.stdout
    forbidden = s_client(server, *cli_credentials(pki.good), request=SECRET)
    assert forbidden.returncode == 0, forbidden.stdout + forbidden.stderr
    assert FORBIDDEN.strip() in forbidden.stdout, forbidden.stdout  # text: \r\n read as \n
    # The log line names the certificate the post-handshake authentication got, if any.
    asked, refused = assert_logged(server, 2)
    assert asked["client"] == repr(pki.good.subject) and asked["error"] is None, asked
    assert refused["client"] is None and refused["error"] is None, refused
    server.stop()
