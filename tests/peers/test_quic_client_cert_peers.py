"""Client certificates over QUIC (RFC 9001 §4.4; RFC 8446 §4.3.2, §4.4.2) with real clients.

Each client answers our CertificateRequest with a certificate from tests/pki.py (a chain through
an intermediate to the root the server trusts, or a bad one).  quic-go and gtlsclient do it
through the stateless HRR (``Validation.HRR``, the ``quic_server`` fixture's default: the HRR
went out in a stateless Initial, ClientHello2's cookie opened, and only then was the certificate
asked for and judged); aioquic's client, which cannot take an HRR, after a Retry.  What the
server judged is read from its own report (``handshake.client_certificate``, or ``error``: the
alert) and from the HTTP/3 page, which names the client certificate's subject; a refusal closes
the connection with CRYPTO_ERROR + the alert, which each client prints.

Peers: quic-go (``quicgoclient -cert -key``: ``tls.Config.Certificates``), ngtcp2's gtlsclient
(GnuTLS: ``--cert``/``--key``), aioquic (``QuicConfiguration.load_cert_chain``), and the CLI
(``serve --quic --client-ca``).  Like Go's crypto/tls over TCP (tests/peers/test_client_cert_
peers.py), qtls and GnuTLS send a certificate only if the request's certificate_authorities
name an issuer of its chain: with our root named, a chain to another root is withheld (an empty
Certificate: certificate_required); only a server that names no CA gets it, and refuses it
(unknown_ca).
"""

from __future__ import annotations

import asyncio
import re
import ssl
from pathlib import Path

import pytest
from aioquic.asyncio.client import connect
from aioquic.quic.configuration import QuicConfiguration
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from stateless13 import AlertDescription, ClientAuth, ClientCertificate, NamedGroup
from stateless13.transports.common import ConnectionReport
from stateless13.transports.quic_front import Validation
from stateless13.transports.quic_server import PAGE_TEXT
from tests.peers.test_cli import Serve, serve_once
from tests.peers.test_cli import serve as serve  # the fixture: `serve(args)` starts the CLI
from tests.peers.test_quic_peers import (
    PeerRun,
    QuicServerFactory,
    QuicTestServer,
    _H3Client,
    assert_report,
    run_gtlsclient,
    run_quicgo,
)
from tests.peers.test_quic_peers import quic_server as quic_server  # the fixtures
from tests.peers.test_quic_peers import quicgoclient as quicgoclient
from tests.pki import ClientIdentity, Pki

#: The group of the stateless HRR for each peer with the default groups: quic-go shares x25519
#: (the HRR names P-256, its tier-mate), GnuTLS x25519 and P-256 (and refuses a cookie-only HRR:
#: P-384).
QUICGO_GROUP = NamedGroup.secp256r1
GTLS_GROUP = NamedGroup.secp384r1

#: The good identities: ECDSA P-256 and RSA 2048, each through the intermediate.
GOOD = {"alice-p256": "good", "bob-rsa": "rsa"}
#: Each refusal: the client's certificate (a Pki identity, None: none), whether the request
#: names our CA (certificate_authorities), and the alert.
REFUSALS = {
    "untrusted": ("untrusted", False, AlertDescription.unknown_ca),
    "untrusted_withheld": ("untrusted", True, AlertDescription.certificate_required),
    "expired": ("expired", True, AlertDescription.certificate_expired),
    "server_only_eku": ("not_for_clients", True, AlertDescription.bad_certificate),
    "no_certificate": (None, True, AlertDescription.certificate_required),
    "callback_refuses": ("good", True, AlertDescription.access_denied),
}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.make(tmp_path_factory.mktemp("pki"))


def refuse(certificate: ClientCertificate) -> str:
    return "not on the list"


def client_auth(pki: Pki, *, names: bool = True, **options: object) -> ClientAuth:
    """Trust our root; require a certificate unless ``required=False``."""
    return ClientAuth.from_pem(pki.ca_file, certificate_authorities=names, **options)  # type: ignore[arg-type]


def identity_of(pki: Pki, name: str | None) -> ClientIdentity | None:
    if name is None:
        return None
    identity: ClientIdentity = getattr(pki, name)
    return identity


def page_line(identity: ClientIdentity | None) -> str:
    """What the HTTP/3 page says of the client's certificate (as the TCP page does)."""
    return f"client certificate: {identity.subject if identity else 'none'}</p>"


def crypto_error(alert: AlertDescription) -> int:
    return 0x100 + int(alert)


def der_chain(identity: ClientIdentity) -> tuple[bytes, ...]:
    pem = identity.chain.read_bytes()
    return tuple(c.public_bytes(Encoding.DER) for c in x509.load_pem_x509_certificates(pem))


def assert_authenticated(
    server: QuicTestServer, identity: ClientIdentity, pki: Pki, group: NamedGroup, validation: str
) -> ConnectionReport:
    """One connection, authenticated by ``identity``: the chain as the client sent it (leaf and
    intermediate) and verified up to our root."""
    report = assert_report(server, group, validation=validation)
    assert report.error is None, report
    assert report.handshake is not None
    certificate = report.handshake.client_certificate
    assert certificate is not None, report
    assert certificate.subject == identity.subject, report
    assert certificate.chain == der_chain(identity), report  # leaf, intermediate
    root = pki.root.public_bytes(Encoding.DER)
    assert certificate.verified_chain == (*der_chain(identity), root), report
    return report


def assert_refused(server: QuicTestServer, alert: AlertDescription) -> ConnectionReport:
    """One connection, built from ClientHello2 after the stateless HRR, refused with ``alert``."""
    (report,) = server.wait_reports(1)
    assert report.handshake is None, report
    assert report.validation == "cookie" and report.hello_retry, report
    assert report.error is not None and report.error.startswith(f"{alert.name}: "), report
    assert server.stats.hrr_sent == 1 and server.stats.accepted == 1
    return report


# ---------------------------------------------------------------------------------------------
# quic-go (qtls, Go's crypto/tls lineage) through the stateless HRR.


def quicgo_with(binary: Path, server: QuicTestServer, identity: ClientIdentity | None) -> PeerRun:
    credentials = (
        [] if identity is None else ["-cert", str(identity.chain), "-key", str(identity.key)]
    )
    return run_quicgo(binary, server.port, *credentials)


@pytest.mark.parametrize("which", GOOD.values(), ids=GOOD.keys())
def test_quic_go_presents_a_certificate_through_the_stateless_hrr(
    quic_server: QuicServerFactory, quicgoclient: Path, pki: Pki, which: str
) -> None:
    server = quic_server(client_auth=client_auth(pki))
    identity = getattr(pki, which)
    run = quicgo_with(quicgoclient, server, identity)
    assert run.ok, run.output
    assert page_line(identity) in run.output, run.output
    assert_authenticated(server, identity, pki, QUICGO_GROUP, "cookie")


@pytest.mark.parametrize("case", REFUSALS)
def test_quic_go_refused(
    quic_server: QuicServerFactory, quicgoclient: Path, pki: Pki, case: str
) -> None:
    name, names, alert = REFUSALS[case]
    callback = refuse if case == "callback_refuses" else None
    server = quic_server(client_auth=client_auth(pki, names=names, verify_callback=callback))
    run = quicgo_with(quicgoclient, server, identity_of(pki, name))
    assert not run.ok, run.output
    # quic-go names the code and the server's reason: "CRYPTO_ERROR (0x130): unknown_ca: ..."
    assert f"CRYPTO_ERROR (0x{crypto_error(alert):x})" in run.output, run.output
    assert f"{alert.name}: " in run.output, run.output
    assert_refused(server, alert)


def test_quic_go_without_a_certificate_when_optional(
    quic_server: QuicServerFactory, quicgoclient: Path, pki: Pki
) -> None:
    server = quic_server(client_auth=client_auth(pki, required=False))
    run = quicgo_with(quicgoclient, server, None)
    assert run.ok, run.output
    assert page_line(None) in run.output, run.output
    report = assert_report(server, QUICGO_GROUP)
    assert report.handshake is not None and report.handshake.client_certificate is None


# ---------------------------------------------------------------------------------------------
# gtlsclient (ngtcp2 with GnuTLS): --cert/--key, through the stateless HRR (P-384 for GnuTLS).


def gtls_with(
    server: QuicTestServer, identity: ClientIdentity | None, download: Path
) -> tuple[PeerRun, str]:
    """The run and the page it downloaded (gtlsclient prints the body only as a hex dump)."""
    credentials = [] if identity is None else [f"--cert={identity.chain}", f"--key={identity.key}"]
    download.mkdir(exist_ok=True)
    run = run_gtlsclient(server.port, f"--download={download}", *credentials)
    page = download / "index.html"
    return run, page.read_text() if page.exists() else ""


def test_gtlsclient_presents_a_certificate_through_the_stateless_hrr(
    quic_server: QuicServerFactory, pki: Pki, tmp_path: Path
) -> None:
    server = quic_server(client_auth=client_auth(pki))
    run, page = gtls_with(server, pki.good, tmp_path)
    assert run.ok and run.hrr_seen, run.output
    assert PAGE_TEXT in page and page_line(pki.good) in page, page
    assert_authenticated(server, pki.good, pki, GTLS_GROUP, "cookie")


@pytest.mark.parametrize("names", [True, False], ids=["ca_names", "no_ca_names"])
def test_gtlsclient_rsa_certificate(
    quic_server: QuicServerFactory, pki: Pki, tmp_path: Path, names: bool
) -> None:
    """GnuTLS's own choice of a client certificate (gtlsclient has no callback, unlike
    gnutls-cli) keeps one whose key type is among those of the request's signature_algorithms
    when the request names CAs, and it takes rsa_pss_rsae_* for RSASSA-PSS keys (GnuTLS's sign
    table: ``.pk = GNUTLS_PK_RSA_PSS``): an rsaEncryption certificate is sent because the
    request also lists the rsa_pkcs1 schemes (for certificates' signatures, RFC 8446 §4.2.3;
    without them it sent an empty Certificate).  With or without CA names."""
    server = quic_server(client_auth=client_auth(pki, names=names))
    run, page = gtls_with(server, pki.rsa, tmp_path)
    assert run.ok and run.hrr_seen, run.output
    assert page_line(pki.rsa) in page, page
    assert_authenticated(server, pki.rsa, pki, GTLS_GROUP, "cookie")


#: gtlsclient's log line for a CONNECTION_CLOSE it received.
GTLS_CLOSE = re.compile(
    r"frm rx \d+ \w+ CONNECTION_CLOSE\(0x1c\) error_code=CRYPTO_ERROR\((0x\w+)\)"
)


@pytest.mark.parametrize("case", ["untrusted", "untrusted_withheld", "expired", "no_certificate"])
def test_gtlsclient_refused(
    quic_server: QuicServerFactory, pki: Pki, tmp_path: Path, case: str
) -> None:
    name, names, alert = REFUSALS[case]
    server = quic_server(client_auth=client_auth(pki, names=names))
    run, page = gtls_with(server, identity_of(pki, name), tmp_path)
    assert not run.ok and not page, run.output
    # The client finished its side, then received our CONNECTION_CLOSE with the alert.
    assert "QUIC handshake has completed" in run.output, run.output
    codes = set(GTLS_CLOSE.findall(run.output))
    assert codes == {f"0x{crypto_error(alert):x}"}, run.output
    assert_refused(server, alert)


# ---------------------------------------------------------------------------------------------
# aioquic's client (no HRR: after a Retry), fetching the page.


def aioquic_fetch(port: int, identity: ClientIdentity | None) -> tuple[int | None, str]:
    """GET / over HTTP/3 with ``identity``: (status, body), or (None, the error)."""

    async def fetch() -> tuple[int | None, str]:
        configuration = QuicConfiguration(
            is_client=True,
            alpn_protocols=["h3"],
            verify_mode=ssl.CERT_NONE,
            server_name="localhost",
        )
        if identity is not None:
            configuration.load_cert_chain(identity.chain, identity.key)
        async with connect(
            "127.0.0.1", port, configuration=configuration, create_protocol=_H3Client
        ) as client:
            assert isinstance(client, _H3Client)
            stream_id = client._quic.get_next_available_stream_id()
            request = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"localhost")]
            client.h3.send_headers(stream_id, [*request, (b":path", b"/")], end_stream=True)
            client.transmit()
            await asyncio.wait_for(client.done, 10)
            status = int(client.status) if client.status is not None else None
            return status, client.body.decode()

    try:
        return asyncio.run(asyncio.wait_for(fetch(), 20))
    except Exception as error:  # a peer failing is a result, reported with its reason
        return None, repr(error)


def test_aioquic_presents_a_certificate_after_a_retry(
    quic_server: QuicServerFactory, pki: Pki
) -> None:
    server = quic_server(Validation.RETRY, client_auth=client_auth(pki))
    status, body = aioquic_fetch(server.port, pki.good)
    assert status == 200 and page_line(pki.good) in body, body
    report = server.handshakes(1)[0]
    assert report.validation == "retry" and not report.hello_retry, report
    assert report.handshake is not None and report.handshake.client_certificate is not None
    assert report.handshake.client_certificate.subject == pki.good.subject, report


# ---------------------------------------------------------------------------------------------
# The CLI: serve --quic --client-ca.


def test_cli_quic_client_ca(serve: Serve, quicgoclient: Path, pki: Pki) -> None:
    """``serve --quic --client-ca PEM``: quic-go with alice's certificate gets the page, which
    names her, through the stateless HRR; the log line says ``client='CN=alice,...'``; without
    a certificate it gets CRYPTO_ERROR certificate_required."""
    server = serve(["--quic", "--validation", "hrr", "--client-ca", str(pki.ca_file)])
    assert server.mode == "h3"
    credentials = ["-cert", str(pki.good.chain), "-key", str(pki.good.key)]
    alice = run_quicgo(quicgoclient, server.port, *credentials)
    assert alice.ok, alice.output
    assert page_line(pki.good) in alice.output, alice.output
    nobody = run_quicgo(quicgoclient, server.port)
    assert not nobody.ok, nobody.output
    assert "CRYPTO_ERROR (0x174)" in nobody.output, nobody.output
    alice_line = server.wait_for(
        server.stderr,
        r"peer=\S+ quic validation=cookie hrr=yes cookie=verified .* alpn=h3 .*"
        r" client='CN=alice,O=stateless13 tests' ",
    )
    assert "error=" not in alice_line[0], server.output()
    server.wait_for(
        server.stderr,
        r"peer=\S+ quic validation=cookie hrr=yes .*"
        r" error='certificate_required: the client sent no certificate'$",
    )
    server.stop()


def test_cli_quic_refuses_post_handshake_verification(pki: Pki, tmp_path: Path) -> None:
    """``--verify-client post-handshake`` would never ask over QUIC (RFC 9001 §4.4): refused at
    start, in one line, exit status 2."""
    run = serve_once(
        tmp_path, "--quic", "--client-ca", str(pki.ca_file), "--verify-client", "post-handshake"
    )
    assert run.returncode == 2, run
    assert "RFC 9001 §4.4" in run.stderr and "Traceback" not in run.stderr, run.stderr
