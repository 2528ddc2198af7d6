"""QUIC 0-RTT (RFC 9001 §4.6), in memory, with aioquic's own client resuming our tickets.

Over QUIC a ticket promises 0xffffffff bytes of early data or none (§4.6.1), and remembers the
transport parameters the client's 0-RTT may rely on (RFC 9000 §7.4.1,
``quic_tokens.ZeroRttParameters``, sealed as the ticket's early data context).  A returning
client's request rides in 0-RTT packets, read with the key the core installs when it accepts
them; the proof is the server's own side: its HandshakeSummary, and the request among its
events before its HandshakeCompleted.  Refused (early data off, transport parameters now lower, a
replay to any server sharing the replay store, an HRR), the handshake resumes in 1-RTT, the
0-RTT packets are dropped for want of a key and the EncryptedExtensions say nothing of early
data.  Where the stateless HRR would go (``hrr``, ``both``, ``adaptive`` validating), a
ClientHello1 offering 0-RTT gets a Retry instead, and keeps its 0-RTT.  Real clients are in
tests/peers/test_quic_early_data_peers.py.
"""

from __future__ import annotations

import dataclasses
import datetime
import ssl
from dataclasses import dataclass, field

import pytest
from aioquic import tls
from aioquic.buffer import Buffer
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import QuicPacketType, pull_quic_header
from aioquic.tls import SessionTicket

from stateless13 import CookieKeyRing, IllegalParameter, NamedGroup, ReplayFilter, ServerConfig
from stateless13 import key_schedule as ks
from stateless13.handshake import HandshakeSummary
from stateless13.messages import ExtensionType, cookie_body, pull_client_hello, push_client_hello
from stateless13.primitives import SUITES
from stateless13.ticket import open_ticket
from stateless13.transcript import Transcript
from stateless13.transports.quic_front import (
    QUIC_MAX_EARLY_DATA,
    Accept,
    Drop,
    InitialFront,
    Reply,
    ReplyKind,
    Validation,
)
from stateless13.transports.quic_server import quic_configuration
from stateless13.transports.quic_tls import StatelessQuicConnection
from stateless13.transports.quic_tokens import SERVER_CID_LENGTH, ZeroRttParameters
from tests.memory.test_quic import (
    CLIENT,
    NOW,
    SERVER,
    client_initial,
    hrr_cookie,
    open_initial,
)

REQUEST = b"GET / in 0-RTT"
CONFIG = ServerConfig.self_signed(
    "localhost",
    alpn_protocols=(b"h3",),
    early_data=1,  # over QUIC: on (served as 0xffffffff)
    ticket_keys=CookieKeyRing.from_bytes(b"t" * 32),
)


@dataclass
class Run:
    """One connection of aioquic's client, driven in memory until both ends fell quiet."""

    replies: list[ReplyKind] = field(default_factory=list)  # the front's stateless answers
    connection: StatelessQuicConnection | None = None
    server_events: list[events.QuicEvent] = field(default_factory=list)
    client_events: list[events.QuicEvent] = field(default_factory=list)
    tickets: list[SessionTicket] = field(default_factory=list)
    tokens: list[bytes] = field(default_factory=list)  # NEW_TOKEN frames
    first_flight: list[bytes] = field(default_factory=list)  # the client's

    @property
    def summary(self) -> HandshakeSummary:
        assert self.connection is not None and self.connection.quic_tls is not None
        handshake = self.connection.quic_tls.server_handshake
        assert handshake is not None and handshake.summary is not None
        return handshake.summary

    @property
    def early_request(self) -> bytes:
        """The stream data the server received before its handshake completed: in 0-RTT."""
        data = b""
        for event in self.server_events:
            if isinstance(event, events.HandshakeCompleted):
                break
            if isinstance(event, events.StreamDataReceived):
                data += event.data
        return data

    def completed(self, side: list[events.QuicEvent]) -> events.HandshakeCompleted:
        (event,) = [e for e in side if isinstance(e, events.HandshakeCompleted)]
        return event


def started_connection(
    front: InitialFront,
    accepted: Accept,
    now: float,
    configuration: QuicConfiguration | None = None,
) -> StatelessQuicConnection:
    """The connection the front handed over, with the datagrams it already took."""
    connection = StatelessQuicConnection(
        configuration=configuration or quic_configuration(front.config, front.options),
        server_config=front.config,
        peer=CLIENT,
        start=accepted.start,
    )
    for datagram in accepted.start.datagrams:
        connection.receive_datagram(datagram, CLIENT, now)
    return connection


def drive(
    front: InitialFront,
    ticket: SessionTicket | None = None,
    *,
    token: bytes = b"",
    configuration: QuicConfiguration | None = None,
    first_flight: list[bytes] | None = None,
    big: bool = False,
) -> Run:
    """aioquic's client (resuming ``ticket``, offering ``token``) against ``front`` and the
    connection it creates, zero delay; timers run (loss recovery sends a refused 0-RTT's data
    again in 1-RTT).  With a ticket, the client's request is queued before its first flight,
    which carries it in 0-RTT when the ticket allows early data.  ``first_flight``: sent
    instead of the client's own (a replay; the client is then a bystander).  ``big``: a
    ClientHello over two datagrams (1200 bytes more of transport parameters), as Chromium's."""
    run = Run()
    end = QuicConnection(
        configuration=QuicConfiguration(
            is_client=True,
            alpn_protocols=["h3"],
            verify_mode=ssl.CERT_NONE,
            server_name="localhost",
            session_ticket=ticket,
            token=token,
            quantum_readiness_test=big,
        ),
        session_ticket_handler=run.tickets.append,
        token_handler=run.tokens.append,
    )
    end.connect(SERVER, now=NOW)
    if ticket is not None:
        end.send_stream_data(0, REQUEST, end_stream=True)
    clock = NOW
    flight = [data for data, _ in end.datagrams_to_send(clock)]
    run.first_flight = flight
    if first_flight is not None:
        flight = first_flight
    for _ in range(100):
        for data in flight:
            if run.connection is not None:
                run.connection.receive_datagram(data, CLIENT, clock)
                continue
            result = front.receive(data, CLIENT, clock)
            if isinstance(result, Reply):
                run.replies.append(result.kind)
                end.receive_datagram(result.datagram, SERVER, clock)
            elif isinstance(result, Accept):
                run.connection = started_connection(front, result, clock, configuration)
        if run.connection is not None:
            while (event := run.connection.next_event()) is not None:
                run.server_events.append(event)
            for data, _ in run.connection.datagrams_to_send(clock):
                end.receive_datagram(data, SERVER, clock)
        while (event := end.next_event()) is not None:
            run.client_events.append(event)
        flight = [data for data, _ in end.datagrams_to_send(clock)]
        if not flight:
            ends = [end] if run.connection is None else [end, run.connection]
            timers = [t for e in ends if (t := e.get_timer()) is not None]
            if not timers or min(timers) > NOW + 5:  # only idle timeouts are left
                break
            clock = max(clock, min(timers))
            for e in ends:
                if (t := e.get_timer()) is not None and t <= clock:
                    e.handle_timer(clock)
            flight = [data for data, _ in end.datagrams_to_send(clock)]
    return run


def tickets_from(front: InitialFront) -> list[SessionTicket]:
    run = drive(front)
    assert run.tickets and run.summary is not None and not run.summary.resumed, run
    return run.tickets


def our_parameters(run: Run) -> ZeroRttParameters:
    assert run.connection is not None and run.connection.quic_tls is not None
    (encoded,) = [d for t, d in run.connection.quic_tls.handshake_extensions if t == 0x39]
    return ZeroRttParameters.of(encoded)


# ---------------------------------------------------------------------------------------------
# The tickets.


@pytest.mark.parametrize("early_data", [0, 1, 16384])
def test_quic_tickets_promise_0xffffffff_or_no_early_data(early_data: int) -> None:
    """Whatever ``early_data`` says, over QUIC a ticket allows 0xffffffff bytes or none (RFC
    9001 §4.6.1: flow control bounds 0-RTT), and remembers our transport parameters."""
    config = dataclasses.replace(CONFIG, early_data=early_data)
    front = InitialFront(config, validation=Validation.NONE)
    assert front.config.early_data == (QUIC_MAX_EARLY_DATA if early_data else 0)
    assert front.config.early_data_replay is config.early_data_replay  # the same store
    run = drive(front)
    assert len(run.tickets) == config.tickets
    promised = QUIC_MAX_EARLY_DATA if early_data else None
    assert all(ticket.max_early_data_size == promised for ticket in run.tickets), run.tickets
    state = open_ticket(config.ticket_keys, run.tickets[0].ticket)
    assert state is not None and state.max_early_data == (promised or 0)
    assert ZeroRttParameters.decode(state.early_data_context) == our_parameters(run)


# ---------------------------------------------------------------------------------------------
# Accepted.


@pytest.mark.parametrize("path", ["none", "retry", "token"])
def test_a_returning_client_sends_its_request_in_0rtt(path: str) -> None:
    """No validation, a Retry (RFC 9000 §17.2.5.3: 0-RTT may follow it; gtlsclient's does,
    tests/peers/test_quic_early_data_peers.py) or, with the stateless HRR on, a NEW_TOKEN token
    that skips it."""
    validation = {"none": Validation.NONE, "retry": Validation.RETRY, "token": Validation.HRR}
    front = InitialFront(CONFIG, validation=validation[path])
    (ticket, *_) = tickets_from(InitialFront(CONFIG, validation=Validation.NONE))
    token = (front.new_token(CLIENT, NOW) or b"") if path == "token" else b""
    run = drive(front, ticket, token=token)
    assert run.replies == ([ReplyKind.RETRY] if path == "retry" else []), run.replies
    assert run.connection is not None and run.connection.start.validation == path
    summary = run.summary
    assert summary.resumed and summary.early_data and not summary.hello_retry, summary
    assert summary.event().early_data  # what the report and the log line (resumed=0rtt) say
    if path != "retry":  # read from the 0-RTT packets, before the client's Finished
        assert run.early_request == REQUEST
    else:  # aioquic's client starts over after a Retry and never sends that request again
        assert run.early_request == b""
    assert run.completed(run.server_events).early_data_accepted
    client_side = run.completed(run.client_events)
    assert client_side.early_data_accepted and client_side.session_resumed


# ---------------------------------------------------------------------------------------------
# Where the stateless HRR would go, a ClientHello1 offering 0-RTT gets a Retry and keeps it.


def validating_front(mode: str, config: ServerConfig = CONFIG) -> InitialFront:
    """A front that makes a new client prove its address: ``hrr``, ``both`` (a Retry, then the
    stateless HRR), or ``adaptive`` held at its HRR level (more handshakes in progress than
    ``QuicOptions.adaptive_handshakes``, 32)."""
    if mode == "adaptive":
        return InitialFront(config, validation=mode, handshakes_in_progress=lambda: 33)
    return InitialFront(config, validation=mode)


@pytest.mark.parametrize("big", [False, True], ids=["one_datagram", "two_datagrams"])
@pytest.mark.parametrize("mode", ["hrr", "both", "adaptive"])
def test_a_0rtt_offer_gets_a_retry_where_the_hrr_would_go(mode: str, big: bool) -> None:
    """The HRR would refuse the early data (RFC 8446 §4.1.2); a Retry keeps it (RFC 9000
    §17.2.5.3): the client's Initial with the Retry's token and its 0-RTT starts the connection
    at once (``validation=retry``, no HRR), and the core accepts the 0-RTT.  A ClientHello over
    two datagrams is held until whole, then gets the Retry (``hrr``, ``adaptive``; ``both``
    sends its Retry at once).  After it, ``hrr`` and ``adaptive`` start the connection from the
    first datagram with the token, as ``retry`` does; ``both`` reads the ClientHello (for the
    HRR it sends when no 0-RTT is offered), so its two datagrams start the connection together.
    ``retry_for_0rtt`` counts the Retries sent instead of an HRR, not BOTH's own."""
    (ticket, *_) = tickets_from(InitialFront(CONFIG, validation=Validation.NONE))
    front = validating_front(mode)
    run = drive(front, ticket, big=big)
    assert set(run.replies) == {ReplyKind.RETRY}, run.replies  # BOTH: one per first datagram
    assert front.stats.hrr_sent == 0 and front.stats.retry_sent == len(run.replies)
    assert front.stats.retry_for_0rtt == (0 if mode == "both" else 1), front.stats
    assert run.connection is not None and run.connection.start.validation == "retry"
    assert len(run.connection.start.datagrams) == (2 if big and mode == "both" else 1)
    summary = run.summary
    assert summary.resumed and summary.early_data and not summary.hello_retry, summary
    assert run.completed(run.server_events).early_data_accepted
    client_side = run.completed(run.client_events)
    assert client_side.early_data_accepted and client_side.session_resumed
    if mode == "adaptive":
        assert front.adaptive_level is Validation.HRR  # it was validating all along


def test_after_that_retry_the_0rtt_meets_the_usual_checks() -> None:
    """The Retry changes only the path: the early data is judged in the connection as always.
    The ticket's second use is refused by the replay store (RFC 8446 §8.1) and resumes in
    1-RTT; so is a ticket whose age disagrees with ours beyond ``early_data_window``."""
    (ticket, *_) = tickets_from(InitialFront(CONFIG, validation=Validation.NONE))
    front = validating_front("hrr")
    first = drive(front, ticket)
    assert first.replies == [ReplyKind.RETRY] and first.summary.early_data
    again = drive(front, ticket)
    assert again.replies == [ReplyKind.RETRY], again.replies
    assert again.summary.resumed and not again.summary.early_data, again.summary
    assert not again.completed(again.client_events).early_data_accepted
    (late, *_) = tickets_from(InitialFront(CONFIG, validation=Validation.NONE))
    late.not_valid_before -= datetime.timedelta(seconds=60)  # a minute older for the client
    aged = drive(front, late)
    assert aged.replies == [ReplyKind.RETRY] and aged.connection is not None
    assert aged.summary.resumed and not aged.summary.early_data, aged.summary


@pytest.mark.parametrize("mode", ["hrr", "both", "adaptive"])
@pytest.mark.parametrize("client", ["new", "ticket_without_0rtt", "server_early_data_off"])
def test_without_a_0rtt_to_keep_the_stateless_hrr_goes_on(mode: str, client: str) -> None:
    """A new client, one resuming a ticket that allows no early data, and one offering 0-RTT to
    a server with early data off (its ticket from one with it on): the stateless HRR as before
    (after BOTH's Retry), which aioquic's client cannot take."""
    early_data = 0 if client == "server_early_data_off" else 1
    on = InitialFront(CONFIG, validation=Validation.NONE)
    off = InitialFront(dataclasses.replace(CONFIG, early_data=0), validation=Validation.NONE)
    ticket = {"new": None, "ticket_without_0rtt": tickets_from(off)[0]}.get(
        client, tickets_from(on)[0]
    )
    front = validating_front(mode, dataclasses.replace(CONFIG, early_data=early_data))
    run = drive(front, ticket)
    first = [ReplyKind.RETRY] if mode == "both" else []
    assert run.replies == [*first, ReplyKind.HRR] and run.connection is None, run.replies
    assert front.stats.retry_for_0rtt == 0


# ---------------------------------------------------------------------------------------------
# Refused: the handshake resumes in 1-RTT.


def test_with_early_data_off_tickets_promise_none_and_resume_in_1rtt() -> None:
    front = InitialFront(dataclasses.replace(CONFIG, early_data=0), validation=Validation.NONE)
    (ticket, *_) = tickets_from(front)
    assert ticket.max_early_data_size is None
    run = drive(front, ticket)
    assert run.summary.resumed and not run.summary.early_data
    assert run.early_request == b""  # aioquic's client sent no 0-RTT for such a ticket
    assert not run.completed(run.client_events).early_data_accepted


def test_a_server_that_turned_early_data_off_refuses_it() -> None:
    """The ticket promised 0-RTT, but this server (same ticket keys) no longer accepts it: the
    EncryptedExtensions carry no early_data, the 0-RTT packets are dropped, and the request
    reaches the server in 1-RTT, after the handshake."""
    (ticket, *_) = tickets_from(InitialFront(CONFIG, validation=Validation.NONE))
    off = InitialFront(dataclasses.replace(CONFIG, early_data=0), validation=Validation.NONE)
    run = drive(off, ticket)
    assert run.summary.resumed and not run.summary.early_data
    assert run.early_request == b""
    assert not run.completed(run.server_events).early_data_accepted
    assert not run.completed(run.client_events).early_data_accepted
    received = b"".join(
        e.data for e in run.server_events if isinstance(e, events.StreamDataReceived)
    )
    assert received == REQUEST  # sent again by the client's loss recovery


@pytest.mark.parametrize("setting", ["max_data", "max_stream_data", "max_datagram_frame_size"])
def test_a_ticket_remembering_larger_transport_parameters_gets_1rtt(setting: str) -> None:
    """RFC 9000 §7.4.1: a server that accepts 0-RTT must not lower the limits the client's
    early data relies on.  Tickets from a server with larger ones resume, without 0-RTT, on one
    with the defaults; the reverse (this server's are larger) accepts it."""
    front = InitialFront(CONFIG, validation=Validation.NONE)
    default = quic_configuration(front.config, front.options)
    larger = dataclasses.replace(default)
    setattr(larger, setting, 2 * (getattr(default, setting) or 600))
    (from_larger, *_) = drive(front, configuration=larger).tickets
    (from_default, *_) = drive(front, configuration=default).tickets

    refused = drive(front, from_larger, configuration=default)
    assert refused.summary.resumed and not refused.summary.early_data
    assert refused.early_request == b""
    accepted = drive(front, from_default, configuration=larger)
    assert accepted.summary.resumed and accepted.summary.early_data
    assert accepted.early_request == REQUEST


def test_zero_rtt_parameters_admit_no_lower_value() -> None:
    ours = ZeroRttParameters(8, 1 << 20, 1 << 20, 1 << 20, 1 << 20, 128, 128, 0)
    assert ZeroRttParameters.decode(ours.encode()) == ours and ours.admits(ours.encode())
    for name in (f.name for f in dataclasses.fields(ours)):
        value = getattr(ours, name)
        assert not ours.admits(dataclasses.replace(ours, **{name: value + 1}).encode()), name
        if value:
            assert ours.admits(dataclasses.replace(ours, **{name: value - 1}).encode()), name
    # A TCP ticket's (empty), junk, another format, truncated, trailing bytes: never admitted.
    encoded = ours.encode()
    for remembered in (b"", b"junk", b"\x02" + encoded[1:], encoded[:-1], encoded + b"\x00"):
        assert not ours.admits(remembered), remembered
        with pytest.raises(ValueError):
            ZeroRttParameters.decode(remembered)
    # Absent parameters count as RFC 9000 §18.2's defaults.
    assert ZeroRttParameters.of(b"") == ZeroRttParameters(2, 0, 0, 0, 0, 0, 0, 0)


def test_0rtt_replayed_to_a_server_sharing_the_replay_store_is_refused() -> None:
    """The same first flight (ClientHello and 0-RTT packets) sent again, to the first server
    or to another one of the fleet sharing its replay store (here a ReplayFilter; a fleet's:
    transports/redis_replay.py): the ticket resumes, but its early data was used (RFC 8446
    §8.1) and is refused.  A server with a store of its own accepts the replay: the store is
    what refuses it."""
    store = ReplayFilter(window=20)
    first_server = InitialFront(
        dataclasses.replace(CONFIG, early_data_replay=store), validation=Validation.NONE
    )
    other_server = InitialFront(
        dataclasses.replace(CONFIG, early_data_replay=store), validation=Validation.NONE
    )
    (ticket, *_) = tickets_from(first_server)
    first = drive(first_server, ticket)
    assert first.summary.early_data and first.early_request == REQUEST
    for server in (first_server, other_server):
        replay = drive(server, first_flight=first.first_flight)  # the client is a bystander
        assert replay.summary.resumed and not replay.summary.early_data
        assert replay.early_request == b""
    own_store = dataclasses.replace(CONFIG, early_data_replay=ReplayFilter(window=20))
    elsewhere = drive(
        InitialFront(own_store, validation=Validation.NONE), first_flight=first.first_flight
    )
    assert elsewhere.summary.early_data and elsewhere.early_request == REQUEST


# ---------------------------------------------------------------------------------------------
# Never through an HRR.


def test_no_0rtt_through_the_stateless_hrr() -> None:
    """A server with early data off (a ClientHello1 offering 0-RTT gets a Retry from one with it
    on, above), its ticket keys shared with one that issued a ticket allowing it: the first
    flight, its 0-RTT coalesced with ClientHello1, gets the HRR and no connection; a datagram of
    0-RTT alone is dropped; a ClientHello2 that still offers early data (RFC 8446 §4.1.2 forbids
    it; quic-go 0.29 sends one) is refused with illegal_parameter."""
    (ticket, *_) = tickets_from(InitialFront(CONFIG, validation=Validation.NONE))
    front = InitialFront(dataclasses.replace(CONFIG, early_data=0), validation=Validation.HRR)
    run = drive(front, ticket)
    assert run.replies == [ReplyKind.HRR] and run.connection is None  # aioquic stops there
    (datagram,) = run.first_flight
    header = pull_quic_header(Buffer(data=datagram), host_cid_length=SERVER_CID_LENGTH)
    zero_rtt = datagram[header.packet_length :]  # what follows the Initial: the 0-RTT packet
    zero_rtt_header = pull_quic_header(Buffer(data=zero_rtt), host_cid_length=SERVER_CID_LENGTH)
    assert zero_rtt_header.packet_type == QuicPacketType.ZERO_RTT
    hrr = front.receive(datagram, CLIENT, NOW)
    assert isinstance(hrr, Reply) and hrr.kind is ReplyKind.HRR
    alone = zero_rtt + bytes(1200 - len(zero_rtt))  # padded as clients do
    assert front.receive(alone, CLIENT, NOW) == Drop("not an Initial packet")
    assert front.stats.accepted == 0

    opened = open_initial(datagram, header.destination_cid, sent_by_client=True)
    hello1 = opened.crypto_at(0)
    parsed = pull_client_hello(hello1[4:])
    assert parsed.early_data
    packet = open_initial(hrr.datagram, header.destination_cid, sent_by_client=False)
    *others, psk = parsed.extensions  # pre_shared_key stays last
    cookie = (int(ExtensionType.cookie), cookie_body(hrr_cookie(packet.crypto_at(0))))
    hello2 = push_client_hello(dataclasses.replace(parsed, extensions=(*others, cookie, psk)))
    second = client_initial(
        key_cid=header.destination_cid,
        destination_cid=packet.source_cid,
        source_cid=opened.source_cid,
        packet_number=opened.packet_number + 1,
        crypto_offset=len(hello1),
        crypto=hello2,
        ack=packet.packet_number,
    )
    accepted = front.receive(second, CLIENT, NOW)
    assert isinstance(accepted, Accept), accepted
    connection = started_connection(front, accepted, NOW)
    assert connection.quic_tls is not None
    error = connection.quic_tls.error
    assert isinstance(error, IllegalParameter) and error.reason == "early_data in ClientHello2"


def test_no_0rtt_after_a_hello_retry_request_inside_the_connection() -> None:
    """Without the stateless front (``Validation.NONE``), a ClientHello whose key shares do not
    fit gets the core's own HRR inside the connection: its 0-RTT is refused, no 0-RTT key is
    installed, and its coalesced 0-RTT packet is dropped.  (aioquic's client shares every group
    it supports, so its ClientHello is remade here without its P-384 share, its binder computed
    again from the ticket's PSK.)"""
    (ticket, *_) = tickets_from(InitialFront(CONFIG, validation=Validation.NONE))
    front = InitialFront(
        dataclasses.replace(CONFIG, groups=(NamedGroup.secp384r1,)), validation=Validation.NONE
    )
    first_flight = drive(InitialFront(CONFIG, validation=Validation.HRR), ticket).first_flight
    (datagram,) = first_flight
    header = pull_quic_header(Buffer(data=datagram), host_cid_length=SERVER_CID_LENGTH)
    opened = open_initial(datagram, header.destination_cid, sent_by_client=True)
    hello = pull_client_hello(opened.crypto_at(0)[4:])
    assert hello.early_data and hello.key_share is not None and hello.pre_shared_key is not None
    entries = b"".join(
        share.group.to_bytes(2, "big") + len(share.key_exchange).to_bytes(2, "big")
        + share.key_exchange
        for share in hello.key_share
        if share.group != NamedGroup.secp384r1
    )  # fmt: skip
    shares = (int(ExtensionType.key_share), len(entries).to_bytes(2, "big") + entries)
    extensions = tuple(
        shares if t == ExtensionType.key_share else (t, d) for t, d in hello.extensions
    )
    message = push_client_hello(dataclasses.replace(hello, extensions=extensions))
    state = open_ticket(CONFIG.ticket_keys, ticket.ticket)
    assert state is not None
    suite = SUITES[state.cipher_suite]
    truncated = message[: len(message) - hello.pre_shared_key.binders_size]
    binder = ks.psk_binder(
        suite, ks.early_secret(suite, state.psk), Transcript(suite).digest_with(truncated)
    )
    message = truncated + (1 + len(binder)).to_bytes(2, "big") + bytes((len(binder),)) + binder
    initial = client_initial(
        key_cid=header.destination_cid,
        destination_cid=header.destination_cid,
        source_cid=opened.source_cid,
        packet_number=opened.packet_number,
        crypto_offset=0,
        crypto=message,
    )
    accepted = front.receive(initial + datagram[header.packet_length :], CLIENT, NOW)
    assert isinstance(accepted, Accept), accepted
    connection = started_connection(front, accepted, NOW)
    assert connection.quic_tls is not None and connection.quic_tls.error is None
    handshake = connection.quic_tls.server_handshake
    assert handshake is not None and handshake.hello_retry_sent and handshake.summary is None
    assert not connection._cryptos[tls.Epoch.ZERO_RTT].recv.is_valid()
    while (event := connection.next_event()) is not None:
        assert not isinstance(event, events.StreamDataReceived), event
