"""Client certificates (RFC 8446 §4.3.2, §4.4.2, §4.4.3) with real, independent clients over TCP.

Each client answers our CertificateRequest with a certificate from tests/pki.py (a chain through
an intermediate to the root the server trusts, or a bad one) through the stateless HRR of the
``tls_server`` fixture (``validation="hrr"``): the HRR went out with a cookie, ClientHello2's
cookie verified, and only then was the certificate asked for and judged.  What the server judged
is read from its own report: ``handshake.client_certificate`` (the chain as sent, the verified
chain up to our root) or ``error``, the alert it sent (§6.2); where the client prints the alert
it received, that is checked too.

Peers: ``openssl s_client -cert -cert_chain -key``, ``gnutls-cli --x509certfile --x509keyfile``
and Python's ssl over a socket (``load_cert_chain``) with every case; ``curl --cert --key``, Go
(goclient ``-cert -key``: ``tls.Config.Certificates``) and tlslite-ng with a good chain and
failures; the CLI (``serve --client-ca``, ``--verify-client optional``); and resumption, which
carries the client's certificate into the resumed session.

Two peers' own ways show:

- Go sends a certificate only if the CertificateRequest's certificate_authorities name an issuer
  of its chain (crypto/tls ``getClientCertificate``, ``SupportsCertificate``): with our CA names
  in the request it withholds a chain to another root and sends an empty Certificate
  (certificate_required); only a server that names no CAs gets it, and refuses it (unknown_ca).
- tlslite-ng 0.8.2's ``tls.py client -c -k`` cannot authenticate to a server that does not do
  certificate compression: it compresses its Certificate whenever its own ClientHello offered
  compress_certificate (``_clientTLS13Handshake`` passes its ClientHello, not the
  CertificateRequest, to ``_create_cert_msg``), although RFC 8879 §3 allows a client a
  CompressedCertificate only when the CertificateRequest carries the extension; ours does not,
  and a message type the server does not expect is unexpected_message (RFC 8446 §6.2).  tls.py
  has no option to stop it, so tlslite-ng's client is also driven through its API with
  ``certificate_compression_send = []`` (TLSLITE_CLIENT).
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from stateless13 import AlertDescription, ClientAuth, ClientCertificate, NamedGroup
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
    assert_gnutls_ok,
    assert_openssl_ok,
    curl_get,
    gnutls_get,
    openssl_get,
    run_peer,
)
from tests.peers.test_go import assert_go_success, run_goclient
from tests.peers.test_go import goclient as goclient  # the fixture: goclient built once
from tests.peers.test_resumption_peers import GNUTLS_RESUMED
from tests.pki import ClientIdentity, Pki
from tests.servers import RunningServer, ServerFactory, require_peer

#: The group the default server's stateless HRR names for GnuTLS (it shares P-256 and x25519).
P384 = NamedGroup.secp384r1

#: Each refusal: the client's certificate (a Pki identity, None: no certificate) and the alert.
REFUSALS = {
    "untrusted": ("untrusted", "unknown_ca"),
    "expired": ("expired", "certificate_expired"),
    "server_only_eku": ("not_for_clients", "bad_certificate"),
    "no_certificate": (None, "certificate_required"),
    "callback_refuses": ("good", "access_denied"),
}
#: The good identities: ECDSA P-256 and RSA 2048, each through the intermediate.
GOOD = {"alice-p256": "good", "bob-rsa": "rsa"}

# How each peer names the alert it received.
OPENSSL_ALERTS = {  # OpenSSL's reason strings: s_client, curl, Python's ssl
    "unknown_ca": "tlsv1 alert unknown ca",
    "certificate_expired": "sslv3 alert certificate expired",
    "bad_certificate": "sslv3 alert bad certificate",
    "certificate_required": "tlsv13 alert certificate required",
    "access_denied": "tlsv1 alert access denied",
}
GNUTLS_ALERTS = {
    "unknown_ca": "CA is unknown",
    "certificate_expired": "Certificate is expired",
    "bad_certificate": "Certificate is bad",
    "certificate_required": "Certificate is required",
    "access_denied": "Access was denied",
}
GO_ALERTS = {
    "unknown_ca": "unknown certificate authority",
    "certificate_expired": "expired certificate",
    "bad_certificate": "bad certificate",
    "certificate_required": "certificate required",
    "access_denied": "access denied",
}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.make(tmp_path_factory.mktemp("pki"))


class Refuser:
    """A verify callback that refuses every certificate, and remembers what it was shown."""

    def __init__(self) -> None:
        self.seen: list[ClientCertificate] = []

    def __call__(self, certificate: ClientCertificate) -> str | None:
        self.seen.append(certificate)
        return "not on the list"


def client_auth(
    pki: Pki,
    *,
    verify_callback: Refuser | None = None,
    certificate_authorities: bool = True,
) -> ClientAuth:
    """Trust our root, require a certificate."""
    return ClientAuth.from_pem(
        pki.ca_file,
        verify_callback=verify_callback,
        certificate_authorities=certificate_authorities,
    )


def identity_of(pki: Pki, name: str | None) -> ClientIdentity | None:
    if name is None:
        return None
    identity: ClientIdentity = getattr(pki, name)
    return identity


def refusing_server(
    tls_server: ServerFactory, pki: Pki, case: str
) -> tuple[RunningServer, ClientIdentity | None, str, Refuser]:
    """A server for a REFUSALS case, the client's identity, the alert it must send, and the
    callback (refusing only in the callback_refuses case)."""
    name, alert = REFUSALS[case]
    refuser = Refuser()
    callback = refuser if case == "callback_refuses" else None
    server = tls_server(client_auth=client_auth(pki, verify_callback=callback))
    return server, identity_of(pki, name), alert, refuser


def der_chain(identity: ClientIdentity) -> tuple[bytes, ...]:
    """The identity's chain file as DER, leaf first: what a client sends."""
    pem = identity.chain.read_bytes()
    return tuple(c.public_bytes(Encoding.DER) for c in x509.load_pem_x509_certificates(pem))


def intermediates(identity: ClientIdentity) -> Path | None:
    """A PEM file of the chain minus its leaf (for ``s_client -cert_chain``), None if none."""
    pem = identity.chain.read_bytes()
    rest = x509.load_pem_x509_certificates(pem)[1:]
    if not rest:
        return None
    path = identity.chain.with_name(f"{identity.name}.intermediates.pem")
    path.write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in rest))
    return path


def page_line(identity: ClientIdentity | None) -> str:
    """What the demo page says of the client's certificate."""
    return f"client certificate: {identity.subject if identity else 'none'}</p>"


# --- what the server says ------------------------------------------------------------------------


def assert_authenticated(
    server: RunningServer, identity: ClientIdentity, pki: Pki
) -> ConnectionReport:
    """One connection, through the stateless HRR, authenticated by ``identity``: the chain as
    the client sent it (leaf and intermediate) and verified up to our root."""
    report = server.only_report()
    assert report.error is None, report
    assert report.hello_retry and report.cookie_verified, report
    handshake = report.handshake
    assert handshake is not None, report
    assert handshake.hello_retry and handshake.cookie_verified, report
    assert not handshake.resumed and handshake.signature_scheme is not None, report
    certificate = handshake.client_certificate
    assert certificate is not None, report
    assert certificate.subject == identity.subject, report
    sent = der_chain(identity)
    assert len(sent) == 2 and certificate.chain == sent, report  # leaf, intermediate
    root = pki.root.public_bytes(Encoding.DER)
    assert certificate.verified_chain == (*sent, root), report  # up to our trust anchor
    return report


def assert_refused(server: RunningServer, alert: str) -> ConnectionReport:
    """One connection, through the stateless HRR, refused with ``alert``."""
    report = server.only_report()
    assert report.hello_retry and report.cookie_verified, report
    assert report.handshake is None, report
    assert report.error is not None and report.error.startswith(f"{alert}: "), report
    return report


def assert_callback(refuser: Refuser, case: str, pki: Pki) -> None:
    """The callback was asked only when the chain had validated, and saw it verified."""
    if case != "callback_refuses":
        assert refuser.seen == []
        return
    (seen,) = refuser.seen
    assert seen.subject == pki.good.subject
    assert seen.verified_chain[-1] == pki.root.public_bytes(Encoding.DER)


def assert_openssl_alert(run: PeerRun, alert: str) -> None:
    """The alert as OpenSSL's client names it (s_client, curl)."""
    assert run.returncode != 0, run.log
    assert OPENSSL_ALERTS[alert] in run.output, run.log


# --- openssl s_client ----------------------------------------------------------------------------


def openssl_with(server: RunningServer, identity: ClientIdentity | None, *options: str) -> PeerRun:
    """``s_client -cert LEAF -cert_chain INTERMEDIATES -key KEY``: -cert takes the file's first
    certificate only, -cert_chain sends the rest after it."""
    credentials: list[str] = []
    if identity is not None:
        credentials += ["-cert", str(identity.chain), "-key", str(identity.key)]
        if (chain := intermediates(identity)) is not None:
            credentials += ["-cert_chain", str(chain)]
    return openssl_get(server, *credentials, *options)


@pytest.mark.parametrize("which", GOOD.values(), ids=GOOD.keys())
def test_openssl_authenticates(tls_server: ServerFactory, pki: Pki, which: str) -> None:
    server = tls_server(client_auth=client_auth(pki))
    identity = getattr(pki, which)
    run = openssl_with(server, identity)
    assert_openssl_ok(run, AES128, P256, hellos=2)
    # the request named our root (certificate_authorities), and the page names the client
    names = run.output.split("Acceptable client certificate CA names", 1)[1]
    assert names.splitlines()[1] == "O = stateless13 tests, CN = Test Root CA", run.log
    assert page_line(identity) in run.output, run.log
    assert_authenticated(server, identity, pki)


@pytest.mark.parametrize("case", REFUSALS)
def test_openssl_refused(tls_server: ServerFactory, pki: Pki, case: str) -> None:
    server, identity, alert, refuser = refusing_server(tls_server, pki, case)
    run = openssl_with(server, identity)
    assert_openssl_alert(run, alert)
    assert f"SSL alert number {AlertDescription[alert].value}" in run.output, run.log
    assert f"<<< TLS 1.3, Alert [length 0002], fatal {alert}" in run.output, run.log  # -msg
    assert_refused(server, alert)
    assert_callback(refuser, case, pki)


def test_openssl_leaf_without_its_intermediate_is_unknown_ca(
    tls_server: ServerFactory, pki: Pki
) -> None:
    """``-cert`` alone sends the leaf only: our root alone cannot vouch for it."""
    server = tls_server(client_auth=client_auth(pki))
    run = openssl_get(server, "-cert", str(pki.good.chain), "-key", str(pki.good.key))
    assert_openssl_alert(run, "unknown_ca")
    assert_refused(server, "unknown_ca")


# --- gnutls-cli ----------------------------------------------------------------------------------


def gnutls_with(server: RunningServer, identity: ClientIdentity | None, *options: str) -> PeerRun:
    """``gnutls-cli --x509certfile CHAIN --x509keyfile KEY``: it sends the whole chain file."""
    credentials: list[str] = []
    if identity is not None:
        credentials += [f"--x509certfile={identity.chain}", f"--x509keyfile={identity.key}"]
    return gnutls_get(server, *credentials, *options)


@pytest.mark.parametrize("which", GOOD.values(), ids=GOOD.keys())
def test_gnutls_authenticates(tls_server: ServerFactory, pki: Pki, which: str) -> None:
    server = tls_server(client_auth=client_auth(pki))
    identity = getattr(pki, which)
    run = gnutls_with(server, identity)
    assert_gnutls_ok(run, AES128, P384, retry=True)
    assert "- Server has requested a certificate." in run.output, run.log
    assert "- Successfully sent 2 certificate(s) to server." in run.output, run.log
    assert page_line(identity) in run.output, run.log
    assert_authenticated(server, identity, pki)


@pytest.mark.parametrize("case", REFUSALS)
def test_gnutls_refused(tls_server: ServerFactory, pki: Pki, case: str) -> None:
    server, identity, alert, refuser = refusing_server(tls_server, pki, case)
    run = gnutls_with(server, identity)
    assert run.returncode == 1, run.log
    assert "HELLO RETRY REQUEST" in run.output, run.log
    number = AlertDescription[alert].value
    assert f"*** Received alert [{number}]: {GNUTLS_ALERTS[alert]}" in run.output, run.log
    assert_refused(server, alert)
    assert_callback(refuser, case, pki)


# --- Python's ssl over a socket ------------------------------------------------------------------


def python_get(
    server: RunningServer, identity: ClientIdentity | None
) -> tuple[str, ssl.SSLError | None]:
    """Python's ssl client (``load_cert_chain``) over TCP, verifying our certificate: the reply,
    and the error it raised, if any."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_verify_locations(server.cert_path)
    if identity is not None:
        context.load_cert_chain(identity.chain, identity.key)
    reply = b""
    try:
        with (
            socket.create_connection((server.host, server.port), timeout=PEER_TIMEOUT) as raw,
            context.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            assert tls.version() == "TLSv1.3"
            tls.sendall(REQUEST)
            while chunk := tls.recv(4096):
                reply += chunk
    except ssl.SSLError as error:
        return reply.decode(), error
    return reply.decode(), None


@pytest.mark.parametrize("which", GOOD.values(), ids=GOOD.keys())
def test_python_ssl_authenticates(tls_server: ServerFactory, pki: Pki, which: str) -> None:
    server = tls_server(client_auth=client_auth(pki))
    identity = getattr(pki, which)
    reply, error = python_get(server, identity)
    assert error is None, error
    assert reply.startswith("HTTP/1.1 200 OK\r\n") and page_line(identity) in reply, reply
    assert_authenticated(server, identity, pki)


@pytest.mark.parametrize("case", REFUSALS)
def test_python_ssl_refused(tls_server: ServerFactory, pki: Pki, case: str) -> None:
    server, identity, alert, refuser = refusing_server(tls_server, pki, case)
    reply, error = python_get(server, identity)
    assert error is not None and reply == "", (reply, error)
    assert error.reason == OPENSSL_ALERTS[alert].upper().replace(" ", "_"), error
    assert_refused(server, alert)
    assert_callback(refuser, case, pki)


# --- curl ----------------------------------------------------------------------------------------


def curl_with(server: RunningServer, identity: ClientIdentity | None) -> PeerRun:
    """``curl --cert CHAIN --key KEY``: the whole chain file goes out."""
    credentials = [] if identity is None else ["--cert", str(identity.chain)]
    credentials += [] if identity is None else ["--key", str(identity.key)]
    return curl_get(server, *credentials)


def test_curl_authenticates(tls_server: ServerFactory, pki: Pki) -> None:
    server = tls_server(client_auth=client_auth(pki))
    run = curl_with(server, pki.good)
    assert_curl_ok(run, AES128)
    assert "TLSv1.3 (OUT), TLS handshake, Certificate (11):" in run.output, run.log
    assert page_line(pki.good) in run.output, run.log
    assert_authenticated(server, pki.good, pki)


@pytest.mark.parametrize("case", ["untrusted", "no_certificate"])
def test_curl_refused(tls_server: ServerFactory, pki: Pki, case: str) -> None:
    server, identity, alert, _ = refusing_server(tls_server, pki, case)
    run = curl_with(server, identity)
    assert run.returncode == 56, run.log  # CURLE_RECV_ERROR: the alert came on the first read
    assert_openssl_alert(run, alert)
    assert_refused(server, alert)


# --- Go crypto/tls -------------------------------------------------------------------------------


def go_with(
    goclient: Path, server: RunningServer, identity: ClientIdentity | None
) -> subprocess.CompletedProcess[str]:
    credentials = [] if identity is None else ["-cert", str(identity.chain)]
    credentials += [] if identity is None else ["-key", str(identity.key)]
    return run_goclient(goclient, server, *credentials)


@pytest.mark.parametrize("which", GOOD.values(), ids=GOOD.keys())
def test_go_authenticates(goclient: Path, tls_server: ServerFactory, pki: Pki, which: str) -> None:
    server = tls_server(client_auth=client_auth(pki))
    identity = getattr(pki, which)
    result = go_with(goclient, server, identity)
    assert_go_success(result, server, P256)
    assert page_line(identity) in result.stdout, result.stdout
    assert_authenticated(server, identity, pki)


def assert_go_refused(result: subprocess.CompletedProcess[str], alert: str) -> None:
    """goclient finished its side of the handshake, then read the server's alert."""
    detail = f"rc={result.returncode}\n{result.stdout}{result.stderr}"
    assert result.returncode == 1, detail
    assert result.stdout.startswith("version 0x0304 cipher 0x1301\n"), detail
    assert f"read: remote error: tls: {GO_ALERTS[alert]}" in result.stderr, detail


@pytest.mark.parametrize("case", ["expired", "no_certificate", "callback_refuses"])
def test_go_refused(goclient: Path, tls_server: ServerFactory, pki: Pki, case: str) -> None:
    server, identity, alert, refuser = refusing_server(tls_server, pki, case)
    assert_go_refused(go_with(goclient, server, identity), alert)
    assert_refused(server, alert)
    assert_callback(refuser, case, pki)


@pytest.mark.parametrize("names", [True, False], ids=["ca_names", "no_ca_names"])
def test_go_chain_to_another_root(
    goclient: Path, tls_server: ServerFactory, pki: Pki, names: bool
) -> None:
    """Go sends a chain only if the request's certificate_authorities name one of its issuers
    (when they name any): with our root named it sends none (certificate_required); a server
    that names no CA gets the chain, and refuses it (unknown_ca)."""
    server = tls_server(client_auth=client_auth(pki, certificate_authorities=names))
    alert = "certificate_required" if names else "unknown_ca"
    assert_go_refused(go_with(goclient, server, pki.untrusted), alert)
    assert_refused(server, alert)


# --- tlslite-ng ----------------------------------------------------------------------------------

#: tlslite-ng's client through its API, as tls.py client drives it but for one setting: it
#: never compresses its Certificate (see the module's docstring).  argv: PORT CHAIN KEY.
TLSLITE_CLIENT = """
import socket, sys
from tlslite.api import HandshakeSettings, TLSConnection, X509CertChain, parsePEMKey
from tlslite.errors import TLSRemoteAlert
chain = X509CertChain()
chain.parsePemList(open(sys.argv[2]).read())
key = parsePEMKey(open(sys.argv[3]).read(), private=True, implementations=["python"])
settings = HandshakeSettings()
settings.minVersion = (3, 4)
settings.certificate_compression_send = []
connection = TLSConnection(socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5))
try:
    connection.handshakeClientCert(chain, key, settings=settings, serverName="localhost")
    print("Handshake success, version", connection.version)
    connection.send(b"GET / HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n")
    while chunk := connection.recv(4096):
        print(bytes(chunk).decode())
except TLSRemoteAlert as alert:
    sys.exit(f"remote alert: {alert}")
except OSError as error:
    sys.exit(f"socket error: {error!r}")
"""


def tlslite_with(server: RunningServer, identity: ClientIdentity) -> PeerRun:
    require_peer("tls.py")  # tlslite-ng is installed
    args = [sys.executable, "-c", TLSLITE_CLIENT, str(server.port)]
    return run_peer([*args, str(identity.chain), str(identity.key)])


@pytest.mark.parametrize("which", GOOD.values(), ids=GOOD.keys())
def test_tlslite_authenticates(tls_server: ServerFactory, pki: Pki, which: str) -> None:
    server = tls_server(client_auth=client_auth(pki))
    identity = getattr(pki, which)
    run = tlslite_with(server, identity)
    assert run.returncode == 0, run.log
    assert "Handshake success, version (3, 4)" in run.output, run.log
    assert page_line(identity) in run.output, run.log
    assert_authenticated(server, identity, pki)


def test_tlslite_refused(tls_server: ServerFactory, pki: Pki) -> None:
    """The server refuses as soon as it has read the Certificate; tlslite-ng is then still
    writing its CertificateVerify and Finished, so the server's close may reset the connection
    before tlslite-ng reads the alert: its word is checked when it got it."""
    server, identity, alert, _ = refusing_server(tls_server, pki, "untrusted")
    assert identity is not None
    run = tlslite_with(server, identity)
    assert run.returncode == 1, run.log
    assert f"remote alert: {alert}" in run.output or "socket error: " in run.output, run.log
    assert_refused(server, alert)


def test_tlslite_cli_compresses_its_certificate_unasked(
    tls_server: ServerFactory, pki: Pki
) -> None:
    """``tls.py client -c CHAIN -k KEY`` sends a CompressedCertificate (handshake type 25) our
    CertificateRequest did not allow (the module's docstring): the server refuses it as
    unexpected_message.  When tlslite-ng fixes its client, this fails: make it a success test."""
    server = tls_server(client_auth=client_auth(pki))
    args = [require_peer("tls.py"), "client", "-c", str(pki.good.chain), "-k", str(pki.good.key)]
    run = run_peer([*args, f"localhost:{server.port}"])
    assert run.returncode == 1, run.log
    report = assert_refused(server, "unexpected_message")
    assert report.error == (
        "unexpected_message: handshake message type 25 in state ExpectClientCertificate"
    ), report


# --- resumption ----------------------------------------------------------------------------------


def assert_resumed_with_the_certificate(server: RunningServer, pki: Pki) -> None:
    """Two connections through the stateless HRR: a full handshake authenticated by alice, then
    one resumed from its ticket (no CertificateRequest, §4.3.2) that reports alice too, from the
    ticket: the leaf alone, verified when the ticket was issued (no verified chain here)."""
    reports = server.wait_reports(2)
    assert len(reports) == 2, reports
    first, second = reports
    for report in reports:
        assert report.error is None, report
        assert report.hello_retry and report.cookie_verified, report
    assert first.handshake is not None and not first.handshake.resumed, first
    certificate = first.handshake.client_certificate
    assert certificate is not None and certificate.subject == pki.good.subject, first
    assert second.handshake is not None and second.handshake.resumed, second
    assert second.handshake.signature_scheme is None, second  # no certificate of ours either
    resumed = second.handshake.client_certificate
    assert resumed is not None and resumed.subject == pki.good.subject, second
    assert resumed.chain == der_chain(pki.good)[:1], second
    assert resumed.verified_chain == (), second


def test_openssl_resumed_session_carries_the_client_certificate(
    tls_server: ServerFactory, pki: Pki, tmp_path: Path
) -> None:
    """``-sess_out`` with alice's certificate, then ``-sess_in`` with none: the server asks for
    no certificate when it resumes, and the page still names alice."""
    server = tls_server(client_auth=client_auth(pki))
    session = tmp_path / "session.pem"
    first = openssl_with(server, pki.good, "-sess_out", str(session))
    assert_openssl_ok(first, AES128, P256, hellos=2)
    assert "Post-Handshake New Session Ticket arrived" in first.output, first.log
    second = openssl_get(server, "-sess_in", str(session))
    assert_openssl_ok(second, AES128, P256, hellos=2, reused=True)
    assert "Acceptable client certificate CA names" not in second.output, second.log
    assert page_line(pki.good) in second.output, second.log
    assert_resumed_with_the_certificate(server, pki)


def test_gnutls_resumed_session_carries_the_client_certificate(
    tls_server: ServerFactory, pki: Pki
) -> None:
    """``gnutls-cli --resume --waitresumption``: a full handshake with alice's chain, then a
    resumed one that sends no certificate; the page it fetches names alice."""
    server = tls_server(client_auth=client_auth(pki))
    run = gnutls_with(server, pki.good, "--resume", "--waitresumption")
    assert_gnutls_ok(run, AES128, P384, retry=True)
    assert "- Successfully sent 2 certificate(s) to server." in run.output, run.log
    resumed = run.output.split("- Connecting again- trying to resume previous session", 1)[1]
    assert GNUTLS_RESUMED in resumed, run.log
    assert "- No certificate was sent to peer" in resumed, run.log  # none was asked for
    assert page_line(pki.good) in resumed, run.log  # the request went on the resumed one only
    assert_resumed_with_the_certificate(server, pki)


# --- the command line ----------------------------------------------------------------------------


def cli_credentials(identity: ClientIdentity) -> list[str]:
    chain = intermediates(identity)
    assert chain is not None
    return ["-cert", str(identity.chain), "-cert_chain", str(chain), "-key", str(identity.key)]


def assert_logged(server: CliServer, count: int) -> list[dict[str, str | None]]:
    """The first ``count`` log lines' fields, each through the stateless HRR."""
    lines = server.log_lines(count)
    assert len(lines) == count, server.output()
    for line in lines:
        assert line["hrr"] == "yes" and line["cookie"] == "verified", line[0]
    return [line.groupdict() for line in lines]


def test_cli_client_ca_required(serve: Serve, pki: Pki) -> None:
    """``serve --client-ca PEM``: alice gets the page, which names her, and the log line says
    ``client='CN=alice,...'``; a client without a certificate gets certificate_required."""
    server = serve(["--validation", "hrr", "--client-ca", str(pki.ca_file)])
    run = s_client(server, *cli_credentials(pki.good))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "client certificate: CN=alice,O=stateless13 tests</p>" in run.stdout, run.stdout
    refused = s_client(server)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert OPENSSL_ALERTS["certificate_required"] in refused.stderr, refused.stderr
    alice, nobody = assert_logged(server, 2)
    assert alice["client"] == "'CN=alice,O=stateless13 tests'" and alice["error"] is None, alice
    assert nobody["client"] is None and nobody["suite"] is None, nobody
    assert nobody["error"] == "'certificate_required: the client sent no certificate'", nobody
    server.stop()


def test_cli_verify_client_optional(serve: Serve, pki: Pki, tmp_path: Path) -> None:
    """``--client-ca DIR --verify-client optional``: a client without a certificate gets the
    page, which says so, and its log line names no client; one with a certificate is still
    authenticated."""
    directory = tmp_path / "client-cas"
    directory.mkdir()
    shutil.copy(pki.ca_file, directory)
    args = ["--validation", "hrr", "--client-ca", str(directory), "--verify-client", "optional"]
    server = serve(args)
    anonymous = s_client(server)
    assert anonymous.returncode == 0, anonymous.stdout + anonymous.stderr
    assert "client certificate: none</p>" in anonymous.stdout, anonymous.stdout
    alice = s_client(server, *cli_credentials(pki.good))
    assert alice.returncode == 0, alice.stdout + alice.stderr
    assert "client certificate: CN=alice,O=stateless13 tests</p>" in alice.stdout, alice.stdout
    first, second = assert_logged(server, 2)
    assert first["client"] is None and first["error"] is None, first
    assert first["resumed"] == "no", first
    assert second["client"] == "'CN=alice,O=stateless13 tests'", second
    server.stop()
