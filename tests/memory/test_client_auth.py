"""Client certificates (RFC 8446 §4.3.2, §4.4.2, §4.4.3) with Python's ssl client (OpenSSL's
client code) over memory buffers: a chain through an intermediate verified, each failure with its
alert, the application's callback, optional and required modes, through the stateless HRR, and
resumption carrying the client's identity.

The server's judgement is read from its own HandshakeComplete and from the alert it sends.
"""

from __future__ import annotations

import dataclasses
import datetime
import ssl
import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from stateless13 import (
    AlertDescription,
    AlertError,
    ApplicationData,
    ClientAuth,
    ClientAuthenticated,
    ClientCertificate,
    CookieKeyRing,
    Event,
    HandshakeComplete,
    ServerConfig,
    ServerConnection,
)
from stateless13.alerts import BadCertificate, UnsupportedCertificate, UnsupportedExtension
from stateless13.client_auth import MAX_CLIENT_CHAIN, REQUESTED_SCHEMES
from stateless13.messages import (
    Certificate,
    CertificateVerify,
    ExtensionType,
    Finished,
    pull_certificate_request,
    push_certificate,
    push_certificate_verify,
    push_finished,
)
from stateless13.primitives import SUITES, VERIFIABLE_SCHEMES
from stateless13.record import ContentType, RecordProtection
from tests.helpers import PEER, PythonSSLClient, stateless_handshake
from tests.pki import ClientIdentity, Pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.make(tmp_path_factory.mktemp("pki"))


def config_for(pki: Pki, **options: object) -> ServerConfig:
    client_auth = ClientAuth.from_pem(pki.ca_file, **options)  # type: ignore[arg-type]
    return ServerConfig.self_signed(
        client_auth=client_auth, ticket_keys=CookieKeyRing.from_bytes(bytes(32))
    )


def client_with(identity: ClientIdentity | None, **options: object) -> PythonSSLClient:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if identity is not None:
        context.load_cert_chain(identity.chain, identity.key)
    return PythonSSLClient(context=context, **options)  # type: ignore[arg-type]


def run(config: ServerConfig, client: PythonSSLClient) -> ServerConnection:
    """Client flight, server flight, then the client's (its certificate, CertificateVerify and
    Finished) buffered in the server, not yet read."""
    server = ServerConnection(config, peer=PEER)
    server.receive_data(client.step())
    assert server.events() == []
    server.receive_data(client.step(server.data_to_send()))
    return server


def handshake_event(config: ServerConfig, client: PythonSSLClient) -> HandshakeComplete:
    server = run(config, client)
    (event,) = server.events()
    assert isinstance(event, HandshakeComplete), event
    return event


def refused(config: ServerConfig, client: PythonSSLClient) -> AlertError:
    """The server's error; the client is told by the alert the server sends (encrypted under
    the handshake keys): OpenSSL's client reads it as the alert's name."""
    server = run(config, client)
    with pytest.raises(AlertError) as caught:
        server.events()
    with pytest.raises(ssl.SSLError) as told:
        client.receive(server.data_to_send())
    name = caught.value.description.name.upper()
    assert name in str(told.value) or name.replace("_", " ") in str(told.value).upper(), told.value
    return caught.value


def test_a_chain_through_an_intermediate_is_verified(pki: Pki) -> None:
    event = handshake_event(config_for(pki), client_with(pki.good))
    certificate = event.client_certificate
    assert certificate is not None
    assert certificate.subject == pki.good.subject
    assert len(certificate.chain) == 2  # leaf and intermediate, as sent
    verified = [x509.load_der_x509_certificate(der) for der in certificate.verified_chain]
    assert [c.subject for c in verified][-1] == pki.root.subject  # up to our trust anchor
    assert len(verified) == 3


def test_an_rsa_client_certificate(pki: Pki) -> None:
    event = handshake_event(config_for(pki), client_with(pki.rsa))
    assert event.client_certificate is not None
    assert event.client_certificate.subject == pki.rsa.subject


@pytest.mark.parametrize(
    ("which", "alert"),
    [
        ("untrusted", AlertDescription.unknown_ca),
        ("expired", AlertDescription.certificate_expired),
        ("not_for_clients", AlertDescription.bad_certificate),
    ],
)
def test_a_certificate_that_does_not_validate(pki: Pki, which: str, alert: int) -> None:
    error = refused(config_for(pki), client_with(getattr(pki, which)))
    assert error.description == alert, error


def test_no_certificate_when_required_is_certificate_required(pki: Pki) -> None:
    error = refused(config_for(pki), client_with(None))
    assert error.description == AlertDescription.certificate_required


def test_no_certificate_when_optional_goes_on_unauthenticated(pki: Pki) -> None:
    event = handshake_event(config_for(pki, required=False), client_with(None))
    assert event.client_certificate is None


def test_the_callback_sees_the_verified_certificate_and_may_refuse(pki: Pki) -> None:
    seen: list[ClientCertificate] = []

    def only_alice(certificate: ClientCertificate) -> str | None:
        seen.append(certificate)
        return None if "CN=alice" in certificate.subject else "not alice"

    config = config_for(pki, verify_callback=only_alice)
    assert handshake_event(config, client_with(pki.good)).client_certificate is not None
    error = refused(config, client_with(pki.rsa))
    assert error.description == AlertDescription.access_denied and "not alice" in error.reason
    assert [c.subject for c in seen] == [pki.good.subject, pki.rsa.subject]
    assert all(c.verified_chain for c in seen)


def test_without_trust_anchors_the_callback_alone_decides(pki: Pki) -> None:
    """Pinning: no chain validation, the callback judges the certificate the client proved it
    holds (Go's RequireAnyClientCert with VerifyPeerCertificate)."""
    pinned = pki.untrusted.certificate.fingerprint(hashes.SHA256())

    def pin(certificate: ClientCertificate) -> str | None:
        ok = certificate.certificate.fingerprint(hashes.SHA256()) == pinned
        return None if ok else "not the pinned certificate"

    config = ServerConfig.self_signed(client_auth=ClientAuth(verify_callback=pin))
    event = handshake_event(config, client_with(pki.untrusted))
    assert event.client_certificate is not None and event.client_certificate.verified_chain == ()
    assert refused(config, client_with(pki.good)).description == AlertDescription.access_denied


def test_the_certificate_request(pki: Pki) -> None:
    """signature_algorithms lists what we verify; certificate_authorities names our anchors."""
    client_auth = config_for(pki).client_auth
    assert client_auth is not None
    request = pull_certificate_request(client_auth.certificate_request[4:])
    extensions = dict(request.extensions)
    assert request.request_context == b""
    schemes = extensions[ExtensionType.signature_algorithms]
    assert len(schemes) == 2 + 2 * len(REQUESTED_SCHEMES)
    assert set(VERIFIABLE_SCHEMES) < set(REQUESTED_SCHEMES)
    names = extensions[ExtensionType.certificate_authorities]
    assert pki.root.subject.public_bytes() in names
    no_names = pull_certificate_request(
        ClientAuth.from_pem(pki.ca_file, certificate_authorities=False).certificate_request[4:]
    )
    assert ExtensionType.certificate_authorities not in dict(no_names.extensions)


def test_through_the_stateless_hello_retry_request(pki: Pki) -> None:
    accepted = stateless_handshake(config_for(pki), client_with(pki.good))
    (event,) = accepted.connection.events()
    assert isinstance(event, HandshakeComplete)
    assert event.cookie_verified and event.client_certificate is not None


def test_a_resumed_session_carries_the_client_certificate(pki: Pki) -> None:
    config = config_for(pki)
    first = client_with(pki.good)
    server = run(config, first)
    server.events()
    first.take_tickets(server.data_to_send())
    second = PythonSSLClient(context=first.context, session=first.tls.session)
    event = handshake_event(config, second)
    assert event.resumed and second.tls.session_reused
    assert event.client_certificate is not None
    assert event.client_certificate.chain == (pki.good.certificate.public_bytes(Encoding.DER),)


def test_a_ticket_without_a_client_certificate_does_not_satisfy_a_server_requiring_one(
    pki: Pki,
) -> None:
    """Issued while the certificate was optional and none was sent; the server now requires
    one: the ticket is not resumed, the full handshake asks for a certificate."""
    optional = config_for(pki, required=False)
    first = client_with(None)
    server = run(optional, first)
    server.events()
    first.take_tickets(server.data_to_send())
    required = dataclasses.replace(optional, client_auth=ClientAuth.from_pem(pki.ca_file))
    second = PythonSSLClient(context=first.context, session=first.tls.session)
    assert refused(required, second).description == AlertDescription.certificate_required


def test_a_self_signed_ca_certificate_trusted_as_its_own_anchor(tmp_path: Path) -> None:
    """What `openssl req -x509` makes (CA:TRUE, no subjectAltName): accepted as OpenSSL and Go
    accept it, where the Web PKI's rules for servers would not."""
    key_path, cert_path = tmp_path / "self.key", tmp_path / "self.crt"
    made = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", key_path, "-out", cert_path, "-days", "2", "-subj", "/CN=self"],
        capture_output=True, timeout=30,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    identity = ClientIdentity(
        "self", x509.load_pem_x509_certificate(cert_path.read_bytes()), cert_path, key_path
    )
    assert identity.certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    config = ServerConfig.self_signed(client_auth=ClientAuth.from_pem(cert_path))
    event = handshake_event(config, client_with(identity))
    assert event.client_certificate is not None and event.client_certificate.subject == "CN=self"


def test_the_configuration_refuses(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="trust anchors or a verify_callback"):
        ClientAuth()
    empty = tmp_path / "empty.pem"
    empty.write_text("")
    with pytest.raises(ValueError, match="no PEM certificate"):
        ClientAuth.from_pem(empty)


# -- §4.6.2 post-handshake authentication ----------------------------------------------------


def pha_client(identity: ClientIdentity | None) -> PythonSSLClient:
    client = client_with(identity)
    client.context.post_handshake_auth = True
    return PythonSSLClient(context=client.context)


def connected(client: PythonSSLClient, config: ServerConfig | None = None) -> ServerConnection:
    server = run(config or ServerConfig.self_signed(), client)
    (event,) = server.events()
    assert isinstance(event, HandshakeComplete) and event.client_certificate is None
    assert client.receive(server.data_to_send()) == b""  # the tickets
    return server


def authenticate(
    server: ServerConnection, client: PythonSSLClient, client_auth: ClientAuth
) -> list[Event]:
    """The server asks; the client (OpenSSL answers a request as it reads it) answers."""
    server.request_client_certificate(client_auth)
    client.receive(server.data_to_send())
    server.receive_data(client.outgoing.read())
    return server.events()


def test_post_handshake_authentication(pki: Pki) -> None:
    client = pha_client(pki.good)
    server = connected(client)
    assert server.post_handshake_auth
    events = authenticate(server, client, ClientAuth.from_pem(pki.ca_file))
    assert len(events) == 1 and isinstance(events[0], ClientAuthenticated), events
    certificate = events[0].certificate
    assert certificate is not None and certificate.subject == pki.good.subject
    assert server.client_certificate == certificate
    # The connection carries on, both ways; and a second request works as the first.
    server.send(b"after")
    assert client.receive(server.data_to_send()) == b"after"
    server.receive_data(client.send(b"too"))
    assert server.events() == [ApplicationData(b"too")]
    (again,) = authenticate(server, client, ClientAuth.from_pem(pki.ca_file))
    assert isinstance(again, ClientAuthenticated) and again.certificate == certificate


@pytest.mark.parametrize(
    ("which", "alert"),
    [
        ("untrusted", AlertDescription.unknown_ca),
        ("expired", AlertDescription.certificate_expired),
        (None, AlertDescription.certificate_required),
    ],
)
def test_post_handshake_authentication_failures(pki: Pki, which: str | None, alert: int) -> None:
    client = pha_client(None if which is None else getattr(pki, which))
    server = connected(client)
    with pytest.raises(AlertError) as caught:
        authenticate(server, client, ClientAuth.from_pem(pki.ca_file))
    assert caught.value.description == alert


def test_post_handshake_authentication_declined_when_optional(pki: Pki) -> None:
    client = pha_client(None)
    server = connected(client)
    (event,) = authenticate(server, client, ClientAuth.from_pem(pki.ca_file, required=False))
    assert event == ClientAuthenticated(None)


def test_no_request_to_a_client_that_did_not_offer_it(pki: Pki) -> None:
    server = connected(client_with(pki.good))
    assert not server.post_handshake_auth
    with pytest.raises(ValueError, match="did not offer post_handshake_auth"):
        server.request_client_certificate(ClientAuth.from_pem(pki.ca_file))


def test_one_request_at_a_time_and_none_unasked(pki: Pki) -> None:
    client = pha_client(pki.good)
    server = connected(client)
    with pytest.raises(ValueError, match="no ClientAuth"):
        server.request_client_certificate()
    server.request_client_certificate(ClientAuth.from_pem(pki.ca_file))
    with pytest.raises(ValueError, match="already pending"):
        server.request_client_certificate(ClientAuth.from_pem(pki.ca_file))


# -- what ClientAuth.judge refuses before any chain validation -----------------------------


def test_judge_refuses_what_it_cannot_read(pki: Pki) -> None:
    client_auth = ClientAuth.from_pem(pki.ca_file)
    leaf = pki.good.certificate.public_bytes(Encoding.DER)
    now = time.time()
    with pytest.raises(BadCertificate, match="does not parse"):
        client_auth.judge(((b"\x30\x03\x02\x01\x00", ()),), now)
    with pytest.raises(BadCertificate, match="a chain of 11"):
        client_auth.judge(((leaf, ()),) * (MAX_CLIENT_CHAIN + 1), now)
    with pytest.raises(UnsupportedExtension):
        client_auth.judge(((leaf, ((5, b""),)),), now)  # status_request: we asked for none
    dsa_key = dsa.generate_private_key(2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dsa")])
    dsa_certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(dsa_key.public_key())
        .serial_number(1)
        .not_valid_before(datetime.datetime(2020, 1, 1))
        .not_valid_after(datetime.datetime(2100, 1, 1))
        .sign(dsa_key, hashes.SHA256())
    )
    with pytest.raises(UnsupportedCertificate):
        client_auth.judge(((dsa_certificate.public_bytes(Encoding.DER), ()),), now)


@pytest.mark.parametrize(
    ("message", "alert"),
    [
        (push_certificate(Certificate(b"not ours", ())), AlertDescription.illegal_parameter),
        (
            push_certificate_verify(CertificateVerify(0x0403, b"x" * 64)),
            AlertDescription.unexpected_message,
        ),
        (push_finished(Finished(bytes(32))), AlertDescription.unexpected_message),
    ],
    ids=["another-context", "certificate-verify-first", "finished-first"],
)
def test_post_handshake_answers_out_of_line(pki: Pki, message: bytes, alert: int) -> None:
    """A Certificate for another request's context, or a CertificateVerify or Finished before
    any Certificate: the answers a client makes up rather than gives."""
    secrets: dict[str, bytes] = {}

    def keylog(line: str) -> None:
        label, _, secret = line.split()
        secrets[label] = bytes.fromhex(secret)

    client = pha_client(pki.good)
    server = connected(client, dataclasses.replace(ServerConfig.self_signed(), keylog=keylog))
    server.request_client_certificate(ClientAuth.from_pem(pki.ca_file))
    client_key = RecordProtection(SUITES[0x1301], secrets["CLIENT_TRAFFIC_SECRET_0"])
    server.receive_data(client_key.seal(ContentType.handshake, message))
    with pytest.raises(AlertError) as caught:
        server.events()
    assert caught.value.description == alert
