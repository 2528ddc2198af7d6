"""Client certificates over QUIC (RFC 9001 §4.4; RFC 8446 §4.3.2, §4.4.2), in memory: aioquic's
own client, with ``QuicConfiguration.load_cert_chain``, against the connections our QUIC front
builds (as tests/memory/test_quic.py drives them).

The CertificateRequest goes out in the server's Handshake flight; the client's Certificate and
CertificateVerify come back as Handshake-epoch CRYPTO data before its Finished, and a refusal
closes the connection with CRYPTO_ERROR + the alert.  Two ways:

- Validation NONE and RETRY: aioquic's ``QuicConnection`` whole (it never sees an HRR).
- Through the stateless HRR: aioquic's TLS client (``QuicConnection.tls``, an
  ``aioquic.tls.Context``) with QUIC packets made here.  aioquic cannot parse an HRR, so it is
  never given one: ClientHello2 is ClientHello1 plus the cookie (what a client answers to a
  cookie-only HRR), and the client's transcript is set to what it would be after that exchange
  (message_hash(ClientHello1), HRR, ClientHello2; RFC 8446 §4.4.1), through the one private
  attribute this needs (``Context._key_schedule_proxy``; and the server's connection ID, which
  aioquic's client would take from the first server Initial, and the version, are set for its
  transport parameter checks).  Everything after (ServerHello on) is aioquic's own work.

Post-handshake authentication is not available over QUIC (RFC 9001 §4.4): a client's offer of it
is ignored and every way to ask refuses with LocalProtocolError.  Real QUIC peers (quic-go,
gtlsclient) are in tests/peers/test_quic_client_cert_peers.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from aioquic import tls
from aioquic.buffer import Buffer
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.crypto import CryptoPair
from aioquic.quic.packet import (
    QuicFrameType,
    QuicPacketType,
    QuicProtocolVersion,
    pull_ack_frame,
    pull_quic_header,
)
from aioquic.quic.packet_builder import QuicPacketBuilder
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from stateless13 import ClientAuth, LocalProtocolError, ServerConfig
from stateless13.alerts import AlertDescription
from stateless13.messages import ExtensionType
from stateless13.transports.quic_front import (
    Accept,
    InitialFront,
    QuicOptions,
    Reply,
    ReplyKind,
    Validation,
)
from stateless13.transports.quic_server import H3PageProtocol, quic_configuration
from stateless13.transports.quic_tls import StatelessQuicConnection
from tests.memory.test_quic import (
    CLIENT,
    CONFIG,
    NOW,
    SERVER,
    client_initial,
    crypto_error,
    hrr_cookie,
    open_initial,
    with_cookie,
)
from tests.pki import ClientIdentity, Pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.make(tmp_path_factory.mktemp("pki"))


def config_for(pki: Pki, **options: object) -> ServerConfig:
    """Trust the test root; require a certificate unless ``required=False``."""
    client_auth = ClientAuth.from_pem(pki.ca_file, **options)  # type: ignore[arg-type]
    return dataclasses.replace(CONFIG, client_auth=client_auth)


def der_chain(identity: ClientIdentity) -> tuple[bytes, ...]:
    """The identity's chain file as DER, leaf first: what the client sends."""
    pem = identity.chain.read_bytes()
    return tuple(c.public_bytes(Encoding.DER) for c in x509.load_pem_x509_certificates(pem))


class _OffersPostHandshakeAuth(QuicConnection):
    """aioquic's client, its ClientHello also offering post_handshake_auth (RFC 8446 §4.2.6),
    which RFC 9001 §4.4 does not let a QUIC server use."""

    def _initialize(self, peer_cid: bytes) -> None:
        super()._initialize(peer_cid)
        self.tls.handshake_extensions.append((int(ExtensionType.post_handshake_auth), b""))


def aioquic_client(
    identity: ClientIdentity | None, *, post_handshake_auth: bool = False
) -> tuple[QuicConnection, list[bytes]]:
    """aioquic's client presenting ``identity`` (None: no certificate), and its first flight."""
    configuration = QuicConfiguration(
        is_client=True,
        alpn_protocols=["h3"],
        verify_mode=ssl.CERT_NONE,
        server_name="localhost",
    )
    if identity is not None:
        configuration.load_cert_chain(identity.chain, identity.key)  # leaf, then intermediate
    kind = _OffersPostHandshakeAuth if post_handshake_auth else QuicConnection
    client = kind(configuration=configuration)
    client.connect(SERVER, now=NOW)
    return client, [data for data, _ in client.datagrams_to_send(now=NOW)]


def new_connection(config: ServerConfig, accepted: Accept) -> StatelessQuicConnection:
    connection = StatelessQuicConnection(
        configuration=quic_configuration(config, QuicOptions()),
        server_config=config,
        peer=CLIENT,
        start=accepted.start,
    )
    for datagram in accepted.start.datagrams:
        connection.receive_datagram(datagram, CLIENT, now=NOW)
    return connection


# ---------------------------------------------------------------------------------------------
# Validation NONE and RETRY: aioquic's QuicConnection, whole.


@dataclass
class Outcome:
    connection: StatelessQuicConnection | None
    client_events: list[events.QuicEvent] = field(default_factory=list)
    replies: list[ReplyKind] = field(default_factory=list)

    @property
    def server(self) -> StatelessQuicConnection:
        assert self.connection is not None, self
        return self.connection

    @property
    def client_closed(self) -> events.ConnectionTerminated | None:
        """The CONNECTION_CLOSE the client received, if any."""
        closed = [e for e in self.client_events if isinstance(e, events.ConnectionTerminated)]
        return closed[0] if closed else None

    @property
    def completed(self) -> bool:
        return any(isinstance(e, events.HandshakeCompleted) for e in self.client_events)


def drive(
    front: InitialFront, client: QuicConnection, first: list[bytes], *, closed: bool = False
) -> Outcome:
    """Datagrams back and forth, in memory, until neither side has any more to send;
    ``closed``: then let the client's closing period end (it reports the server's
    CONNECTION_CLOSE as ConnectionTerminated only then; an open connection would idle out)."""
    outcome = Outcome(connection=None)
    outgoing, now = first, NOW
    for _ in range(30):
        for datagram in outgoing:
            if outcome.connection is not None:
                outcome.connection.receive_datagram(datagram, CLIENT, now)
                continue
            result = front.receive(datagram, CLIENT, now)
            if isinstance(result, Reply):
                outcome.replies.append(result.kind)
                client.receive_datagram(result.datagram, SERVER, now)
            elif isinstance(result, Accept):
                outcome.connection = new_connection(front.config, result)
        replied = False
        if outcome.connection is not None:
            for data, _ in outcome.connection.datagrams_to_send(now):
                client.receive_datagram(data, SERVER, now)
                replied = True
        while (event := client.next_event()) is not None:
            outcome.client_events.append(event)
        now += 0.005
        outgoing = [data for data, _ in client.datagrams_to_send(now)]
        if not outgoing and not replied:
            break
    if closed:
        client.handle_timer(now + 60)
        while (event := client.next_event()) is not None:
            outcome.client_events.append(event)
    return outcome


VALIDATIONS = [Validation.NONE, Validation.RETRY]


@pytest.mark.parametrize("which", ["good", "rsa"])
@pytest.mark.parametrize("validation", VALIDATIONS, ids=str)
def test_verified_client_certificate_is_reported(
    pki: Pki, validation: Validation, which: str
) -> None:
    identity: ClientIdentity = getattr(pki, which)  # ECDSA P-256 or RSA, via the intermediate
    front = InitialFront(config_for(pki), validation=validation)
    client, first = aioquic_client(identity)
    outcome = drive(front, client, first)
    assert outcome.completed and outcome.client_closed is None, outcome
    engine = outcome.server.quic_tls
    assert engine is not None and engine.error is None
    summary = engine.summary
    assert summary is not None and summary.signature_scheme is not None, summary
    certificate = summary.client_certificate
    assert certificate is not None
    assert certificate.subject == identity.subject
    assert certificate.chain == der_chain(identity)  # as sent: leaf, intermediate
    root = pki.root.public_bytes(Encoding.DER)
    assert certificate.verified_chain == (*der_chain(identity), root)  # up to our anchor
    assert summary.event().client_certificate == certificate  # what reports and pages read
    if validation is Validation.RETRY:
        assert outcome.replies == [ReplyKind.RETRY]


REFUSALS = {
    "untrusted": ("untrusted", AlertDescription.unknown_ca),
    "expired": ("expired", AlertDescription.certificate_expired),
    "server_only_eku": ("not_for_clients", AlertDescription.bad_certificate),
    "no_certificate": (None, AlertDescription.certificate_required),
}


@pytest.mark.parametrize("case", REFUSALS)
@pytest.mark.parametrize("validation", VALIDATIONS, ids=str)
def test_refused_client_certificate_closes_with_crypto_error(
    pki: Pki, validation: Validation, case: str
) -> None:
    name, alert = REFUSALS[case]
    identity = getattr(pki, name) if name is not None else None
    front = InitialFront(config_for(pki), validation=validation)
    client, first = aioquic_client(identity)
    outcome = drive(front, client, first, closed=True)
    # The client's side of the handshake was over (its Finished sent) when the server judged.
    assert outcome.completed, outcome
    closed = outcome.client_closed
    assert closed is not None, outcome
    assert closed.error_code == crypto_error(alert), closed  # 0x100 + the alert (RFC 9001 §4.8)
    assert closed.reason_phrase.startswith(f"{alert.name}: "), closed
    engine = outcome.server.quic_tls
    assert engine is not None and engine.error is not None
    assert engine.error.description == alert
    assert engine.summary is None  # the handshake never completed on the server


def test_optional_client_certificate_may_be_absent(pki: Pki) -> None:
    front = InitialFront(config_for(pki, required=False), validation=Validation.NONE)
    client, first = aioquic_client(None)
    outcome = drive(front, client, first)
    assert outcome.completed and outcome.client_closed is None, outcome
    summary = outcome.server.quic_tls.summary if outcome.server.quic_tls else None
    assert summary is not None and summary.client_certificate is None


# ---------------------------------------------------------------------------------------------
# Through the stateless HRR: aioquic's TLS client, QUIC packets made here.


def hash_as_after_hrr(context: tls.Context, hello1: bytes, hrr: bytes, hello2: bytes) -> None:
    """Set the client's transcript to message_hash(ClientHello1) | HRR | ClientHello2, what it
    would be had it answered the HRR itself (RFC 8446 §4.4.1), in every suite it offered."""
    proxy = context._key_schedule_proxy
    assert proxy is not None
    for suite in context._cipher_suites:
        schedule = proxy.select(suite)
        digest = hashes.Hash(schedule.algorithm)
        digest.update(hello1)
        hello1_hash = digest.finalize()
        schedule.hash = hashes.Hash(schedule.algorithm)
        schedule.update_hash(bytes([254, 0, 0, len(hello1_hash)]) + hello1_hash + hrr + hello2)


@dataclass
class Packet:
    packet_type: QuicPacketType
    crypto: list[tuple[int, bytes]] = field(default_factory=list)
    close: tuple[int, bytes] | None = None  # error code, reason


def open_long_packets(
    datagram: bytes, keys: Callable[[QuicPacketType], CryptoPair | None]
) -> list[Packet]:
    """The long-header packets of a datagram, decrypted in order (each one's keys may come from
    the packet before: the Handshake keys from the ServerHello); 1-RTT packets are left."""
    packets = []
    offset = 0
    while offset < len(datagram) and datagram[offset] & 0x80:
        buf = Buffer(data=datagram[offset:])
        header = pull_quic_header(buf, host_cid_length=8)
        pair = keys(header.packet_type)
        assert pair is not None, f"no keys for a {header.packet_type} packet"
        end = header.packet_length
        _, payload, _ = pair.decrypt_packet(datagram[offset : offset + end], buf.tell(), 0)
        offset += end
        packet = Packet(header.packet_type)
        frames = Buffer(data=payload)
        while not frames.eof():
            frame_type = frames.pull_uint_var()
            if frame_type in (QuicFrameType.PADDING, QuicFrameType.PING):
                continue
            if frame_type == QuicFrameType.ACK:
                pull_ack_frame(frames)
            elif frame_type == QuicFrameType.CRYPTO:
                at = frames.pull_uint_var()
                packet.crypto.append((at, frames.pull_bytes(frames.pull_uint_var())))
            elif frame_type == QuicFrameType.TRANSPORT_CLOSE:
                code = frames.pull_uint_var()
                frames.pull_uint_var()  # the frame type that caused it
                packet.close = (code, frames.pull_bytes(frames.pull_uint_var()))
                break
            else:
                raise AssertionError(f"unexpected frame 0x{frame_type:x}")
        packets.append(packet)
    return packets


@dataclass
class HrrRun:
    """A handshake through the stateless HRR: the server's connection, the messages of its
    Handshake flight, and the close the client received (None if none)."""

    connection: StatelessQuicConnection
    client: tls.Context
    server_flight: list[int]  # handshake message types, in order
    close: tuple[int, bytes] | None


def handshake_through_the_hrr(config: ServerConfig, identity: ClientIdentity | None) -> HrrRun:
    front = InitialFront(config, validation=Validation.HRR)
    quic_client, (first,) = aioquic_client(identity)
    context = quic_client.tls  # aioquic's TLS client, ClientHello1 sent
    original_dcid = pull_quic_header(Buffer(data=first), host_cid_length=8).destination_cid
    sent = open_initial(first, original_dcid, sent_by_client=True)
    hello1 = sent.crypto_at(0)
    reply = front.receive(first, CLIENT, NOW)
    assert isinstance(reply, Reply) and reply.kind is ReplyKind.HRR, reply
    hrr_packet = open_initial(reply.datagram, original_dcid, sent_by_client=False)
    hrr = hrr_packet.crypto_at(0)
    hello2 = with_cookie(hello1, hrr_cookie(hrr))  # a cookie-only HRR: aioquic shares every group
    hash_as_after_hrr(context, hello1, hrr, hello2)
    accepted = front.receive(
        client_initial(
            key_cid=original_dcid,
            destination_cid=hrr_packet.source_cid,
            source_cid=sent.source_cid,
            packet_number=1,
            crypto_offset=len(hello1),
            crypto=hello2,
            ack=hrr_packet.packet_number,
        ),
        CLIENT,
        NOW,
    )
    assert isinstance(accepted, Accept), accepted
    connection = new_connection(config, accepted)
    # What aioquic's client learns from the server's first Initial: the transport parameters in
    # EncryptedExtensions must name that connection ID (and the client's original DCID).
    quic_client._remote_initial_source_connection_id = hrr_packet.source_cid
    quic_client._crypto_packet_version = QuicProtocolVersion.VERSION_1

    # The client's keys, as aioquic's TLS client derives them.
    initial = CryptoPair()
    initial.setup_initial(original_dcid, is_client=True, version=QuicProtocolVersion.VERSION_1)
    handshake = CryptoPair()

    def install(
        direction: tls.Direction, epoch: tls.Epoch, suite: tls.CipherSuite, secret: bytes
    ) -> None:
        if epoch is tls.Epoch.HANDSHAKE:
            side = handshake.recv if direction is tls.Direction.DECRYPT else handshake.send
            side.setup(cipher_suite=suite, secret=secret, version=QuicProtocolVersion.VERSION_1)

    context.update_traffic_key_cb = install
    buffers = {epoch: Buffer(capacity=16384) for epoch in tls.Epoch}

    def keys(packet_type: QuicPacketType) -> CryptoPair | None:
        if packet_type == QuicPacketType.INITIAL:
            return initial
        return handshake if handshake.recv.is_valid() else None

    server_flight: list[int] = []
    expected = {tls.Epoch.INITIAL: len(hrr), tls.Epoch.HANDSHAKE: 0}  # CRYPTO offsets
    for datagram, _ in connection.datagrams_to_send(now=NOW):
        for packet in open_long_packets_in_order(datagram, keys, context, buffers, expected):
            if packet.packet_type == QuicPacketType.HANDSHAKE:
                for _, data in packet.crypto:
                    server_flight += message_types(data)

    # The client's flight (Certificate, CertificateVerify, Finished) in Handshake packets.
    flight = buffers[tls.Epoch.HANDSHAKE].data
    assert flight, "aioquic's client answered nothing"
    for number, at in enumerate(range(0, len(flight), 900)):
        builder = QuicPacketBuilder(
            host_cid=sent.source_cid,
            peer_cid=hrr_packet.source_cid,
            version=QuicProtocolVersion.VERSION_1,
            is_client=True,
            max_datagram_size=1200,
            packet_number=number,
        )
        builder.start_packet(QuicPacketType.HANDSHAKE, handshake)
        chunk = flight[at : at + 900]
        buf = builder.start_frame(QuicFrameType.CRYPTO, capacity=16 + len(chunk))
        buf.push_uint_var(at)
        buf.push_uint16(len(chunk) | 0x4000)
        buf.push_bytes(chunk)
        (datagram,), _ = builder.flush()
        connection.receive_datagram(datagram, CLIENT, now=NOW)

    close = None
    for datagram, _ in connection.datagrams_to_send(now=NOW):
        for packet in open_long_packets(datagram, keys):
            close = close or packet.close
    return HrrRun(connection, context, server_flight, close)


def open_long_packets_in_order(
    datagram: bytes,
    keys: Callable[[QuicPacketType], CryptoPair | None],
    context: tls.Context,
    buffers: dict[tls.Epoch, Buffer],
    expected: dict[tls.Epoch, int],
) -> list[Packet]:
    """Like open_long_packets, each packet's CRYPTO data given to the client before the next
    packet is opened (the ServerHello brings the Handshake keys)."""
    packets = []
    offset = 0
    while offset < len(datagram) and datagram[offset] & 0x80:
        header = pull_quic_header(Buffer(data=datagram[offset:]), host_cid_length=8)
        (packet,) = open_long_packets(datagram[offset : offset + header.packet_length], keys)
        offset += header.packet_length
        epoch = tls.Epoch.INITIAL if packet.packet_type == QuicPacketType.INITIAL else None
        epoch = epoch or tls.Epoch.HANDSHAKE
        for at, data in sorted(packet.crypto):
            assert at == expected[epoch], (epoch, at, expected)  # in order, nothing lost
            expected[epoch] += len(data)
            context.handle_message(data, buffers)
        packets.append(packet)
    return packets


def message_types(data: bytes) -> list[int]:
    """The handshake message types in ``data`` (whole messages, as our server sends them)."""
    types = []
    while data:
        types.append(data[0])
        data = data[4 + int.from_bytes(data[1:4], "big") :]
    return types


CERTIFICATE_REQUEST = 13


@pytest.mark.parametrize("which", ["good", "rsa"])
def test_through_the_stateless_hrr_the_certificate_is_verified(pki: Pki, which: str) -> None:
    identity: ClientIdentity = getattr(pki, which)
    run = handshake_through_the_hrr(config_for(pki), identity)
    # EncryptedExtensions, CertificateRequest, Certificate, CertificateVerify, Finished.
    assert run.server_flight == [8, CERTIFICATE_REQUEST, 11, 15, 20], run.server_flight
    assert run.close is None, run.close
    assert run.client.state is tls.State.CLIENT_POST_HANDSHAKE
    engine = run.connection.quic_tls
    assert engine is not None and engine.error is None
    summary = engine.summary
    assert summary is not None and summary.hello_retry and summary.cookie_verified, summary
    certificate = summary.client_certificate
    assert certificate is not None and certificate.subject == identity.subject
    assert certificate.chain == der_chain(identity)
    assert certificate.verified_chain[-1] == pki.root.public_bytes(Encoding.DER)
    assert run.connection.start.validation == "cookie"
    completed = []
    while (event := run.connection.next_event()) is not None:
        completed.append(isinstance(event, events.HandshakeCompleted))
    assert any(completed)


@pytest.mark.parametrize("case", ["untrusted", "no_certificate"])
def test_through_the_stateless_hrr_a_refusal_is_a_crypto_error(pki: Pki, case: str) -> None:
    name, alert = REFUSALS[case]
    identity = getattr(pki, name) if name is not None else None
    run = handshake_through_the_hrr(config_for(pki), identity)
    assert CERTIFICATE_REQUEST in run.server_flight
    assert run.close is not None, "no CONNECTION_CLOSE in a Handshake packet"
    code, reason = run.close
    assert code == crypto_error(alert), run.close
    assert reason.startswith(f"{alert.name}: ".encode()), reason
    engine = run.connection.quic_tls
    assert engine is not None and engine.error is not None and engine.summary is None


# ---------------------------------------------------------------------------------------------
# No post-handshake authentication over QUIC (RFC 9001 §4.4).


def test_post_handshake_auth_offer_is_ignored_and_requests_refused(pki: Pki) -> None:
    front = InitialFront(config_for(pki, required=False), validation=Validation.NONE)
    client, first = aioquic_client(pki.good, post_handshake_auth=True)
    outcome = drive(front, client, first)
    assert outcome.completed and outcome.client_closed is None, outcome
    engine = outcome.server.quic_tls
    assert engine is not None and engine.server_handshake is not None
    offered = [t for t, _ in engine.received_extensions or ()]
    assert ExtensionType.post_handshake_auth in offered  # the client did offer it
    handshake = engine.server_handshake
    assert handshake.complete and not handshake.post_handshake_auth
    assert handshake.state.transcript is None  # type: ignore[union-attr]  # none kept for it
    with pytest.raises(LocalProtocolError, match=r"RFC 9001 §4\.4"):
        engine.request_client_certificate()
    with pytest.raises(LocalProtocolError, match="post_handshake_auth"):
        handshake.request_client_certificate()  # the core refuses too: no request goes out

    async def protocol_refuses() -> None:
        protocol = H3PageProtocol(outcome.server)
        with pytest.raises(LocalProtocolError, match=r"RFC 9001 §4\.4"):
            protocol.request_client_certificate()
        certificate = protocol.client_certificate
        assert certificate is not None and certificate.subject == pki.good.subject

    asyncio.run(protocol_refuses())


def test_post_handshake_only_client_auth_is_refused(pki: Pki) -> None:
    """A ClientAuth that asks only after the handshake would never ask over QUIC."""
    with pytest.raises(LocalProtocolError, match=r"post_handshake_only.*RFC 9001 §4\.4"):
        InitialFront(config_for(pki, post_handshake_only=True))
