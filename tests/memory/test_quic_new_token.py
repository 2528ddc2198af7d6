"""NEW_TOKEN (RFC 9000 §8.1.3, §19.7), in memory: a returning client skips address validation.

After the handshake our connection sends one NEW_TOKEN frame (sealed by the cookie key ring as a
token of its own kind, bound to the client's IP address); a later first Initial carrying it
from the same IP starts its connection at once, under every validation mode and on any front
holding the key.  aioquic's own client takes the frame (``token_handler``) and sends the token
back (``QuicConfiguration.token``); it cannot go past our HRR, so its first connection is
validated by a Retry.  Each run counts the datagrams both ways and the client's flights until
its handshake completed: the returning client needs one round trip fewer.  Tokens that do not
validate (another IP, expired, tampered, another key, a Retry token, a cookie, a ticket,
replayed) are ignored, never refused: the client is validated as if it had none.  Real clients
(quic-go, gtlsclient) are in tests/peers/test_quic_new_token_peers.py.
"""

from __future__ import annotations

import dataclasses
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from aioquic.buffer import Buffer
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import pull_quic_header
from aioquic.quic.packet_builder import QuicPacketBuilder

from stateless13 import CookieKeyRing, DecryptError, LocalProtocolError, ReplayFilter
from stateless13.cookie import TOKEN_FORMAT_VERSION, CookieState, peer_binding
from stateless13.ticket import TICKET_TOKEN_KIND, open_ticket
from stateless13.transports.quic_front import (
    Accept,
    InitialFront,
    QuicOptions,
    Reply,
    ReplyKind,
    Validation,
)
from stateless13.transports.quic_server import quic_configuration
from stateless13.transports.quic_tls import StatelessQuicConnection
from stateless13.transports.quic_tokens import (
    _SEALED_TOKEN_VERSION,
    NEW_TOKEN_KIND,
    RETRY_TOKEN_KIND,
    SERVER_CID_LENGTH,
    AddressTokens,
    InvalidToken,
    RetryTokens,
    StaleRetryToken,
    token_kind,
)
from tests.memory.test_quic import (
    CLIENT,
    CONFIG,
    NOW,
    SERVER,
    client_initial,
    hrr_cookie,
    open_initial,
    with_cookie,
)

DAY = 24 * 3600.0
KEY_A, KEY_B = b"a" * 32, b"b" * 32


# ---------------------------------------------------------------------------------------------
# One connection of aioquic's client against a front and the connection it creates.


@dataclass
class Counts:
    client_datagrams: int = 0
    client_bytes: int = 0
    server_datagrams: int = 0
    server_bytes: int = 0

    def __str__(self) -> str:
        return (
            f"client->server {self.client_datagrams} datagrams/{self.client_bytes} B, "
            f"server->client {self.server_datagrams} datagrams/{self.server_bytes} B"
        )


class CountingConnection(StatelessQuicConnection):
    """Counts the NEW_TOKEN frames it writes (a lost one is written again)."""

    new_token_frames = 0

    def _write_new_token_frame(self, builder: QuicPacketBuilder) -> None:
        super()._write_new_token_frame(builder)
        self.new_token_frames += 1


@dataclass
class Run:
    """What one connection attempt did, until both ends fell quiet."""

    replies: list[ReplyKind] = field(default_factory=list)  # the front's stateless answers
    connection: CountingConnection | None = None
    tokens: list[bytes] = field(default_factory=list)  # NEW_TOKEN frames the client took
    completed: bool = False
    #: The client's flights (batches of datagrams, each answered) until its handshake completed.
    round_trips: int = 0
    #: Datagrams both ways until the client's handshake completed, and in all.
    to_handshake: Counts = field(default_factory=Counts)
    total: Counts = field(default_factory=Counts)
    client_events: list[events.QuicEvent] = field(default_factory=list)

    @property
    def validation(self) -> str | None:
        return None if self.connection is None else self.connection.start.validation


def connect(
    front: InitialFront,
    *,
    token: bytes = b"",
    peer: tuple[str, int] = CLIENT,
    now: float = NOW,
    client_cid_length: int = 8,
    drop_server: Callable[[Run, bytes], bool] = lambda run, data: False,
) -> Run:
    """aioquic's client (offering ``token``) through ``front`` from ``peer``, zero delay, the
    timers run until nothing is left to do; ``drop_server`` loses server datagrams."""
    run = Run()
    client = QuicConnection(
        configuration=QuicConfiguration(
            is_client=True,
            alpn_protocols=["h3"],
            verify_mode=ssl.CERT_NONE,
            server_name="localhost",
            token=token,
            connection_id_length=client_cid_length,
        ),
        token_handler=run.tokens.append,
    )
    client.connect(SERVER, now=now)
    clock = [now]

    def counted(client_side: bool, data: bytes) -> None:
        for counts in (run.total, *(() if run.completed else (run.to_handshake,))):
            if client_side:
                counts.client_datagrams += 1
                counts.client_bytes += len(data)
            else:
                counts.server_datagrams += 1
                counts.server_bytes += len(data)

    def to_client(data: bytes) -> None:
        counted(False, data)
        if not drop_server(run, data):
            client.receive_datagram(data, SERVER, clock[0])
        while (event := client.next_event()) is not None:
            run.client_events.append(event)
            run.completed = run.completed or isinstance(event, events.HandshakeCompleted)

    def exchange() -> bool:
        """Everything both ends have to send at this instant; False if there was nothing."""
        sent = False
        while True:
            flight = [data for data, _ in client.datagrams_to_send(clock[0])]
            if flight and not run.completed:
                run.round_trips += 1
            for data in flight:
                counted(True, data)
                if run.connection is not None:
                    run.connection.receive_datagram(data, peer, clock[0])
                    continue
                result = front.receive(data, peer, clock[0])
                if isinstance(result, Reply):
                    run.replies.append(result.kind)
                    to_client(result.datagram)
                elif isinstance(result, Accept):
                    run.connection = CountingConnection(
                        configuration=quic_configuration(front.config, front.options),
                        server_config=front.config,
                        peer=peer,
                        start=result.start,
                        new_token=lambda: front.new_token(peer, clock[0]),
                    )
                    for datagram in result.start.datagrams:
                        run.connection.receive_datagram(datagram, peer, clock[0])
            answer = []
            if run.connection is not None:
                answer = [data for data, _ in run.connection.datagrams_to_send(clock[0])]
                for data in answer:
                    to_client(data)
            if not flight and not answer:
                return sent
            sent = True

    for _ in range(200):
        exchange()
        ends: list[QuicConnection] = [client]
        if run.connection is not None:
            ends.append(run.connection)
        timers = [(t, end) for end in ends if (t := end.get_timer()) is not None]
        if not timers or min(t for t, _ in timers) > now + 10:  # only idle timeouts are left
            break
        clock[0] = max(clock[0], min(t for t, _ in timers))
        for t, end in timers:
            if t <= clock[0]:
                end.handle_timer(clock[0])
    return run


def retry_token_of(front: InitialFront) -> bytes:
    """A Retry token the front gave aioquic's client (taken from its second Initial)."""
    client = QuicConnection(
        configuration=QuicConfiguration(
            is_client=True, alpn_protocols=["h3"], verify_mode=ssl.CERT_NONE
        )
    )
    client.connect(SERVER, now=NOW)
    (first, _), *_ = client.datagrams_to_send(NOW)
    retry = front.receive(first, CLIENT, NOW)
    assert isinstance(retry, Reply) and retry.kind is ReplyKind.RETRY
    client.receive_datagram(retry.datagram, SERVER, NOW)
    (second, _), *_ = client.datagrams_to_send(NOW)
    header = pull_quic_header(Buffer(data=second), host_cid_length=SERVER_CID_LENGTH)
    assert token_kind(header.token) == RETRY_TOKEN_KIND
    return header.token


def first_connection(front: InitialFront) -> Run:
    run = connect(front)
    assert run.completed and run.connection is not None, run
    assert len(run.tokens) == 1 and run.tokens[0] == run.connection.new_token, run.tokens
    return run


# ---------------------------------------------------------------------------------------------
# The round trip saved.


def test_a_returning_client_completes_in_one_round_trip_fewer() -> None:
    """Validation RETRY (aioquic's client cannot take our HRR): the first connection pays the
    Retry round trip and gets a NEW_TOKEN; the second, carrying it, gets none."""
    front = InitialFront(CONFIG, validation=Validation.RETRY)
    first = first_connection(front)
    assert first.replies == [ReplyKind.RETRY] and first.validation == "retry"
    assert first.connection is not None and first.connection.new_token_acknowledged
    second = connect(front, token=first.tokens[0], peer=(CLIENT[0], CLIENT[1] + 1), now=NOW + 60)
    assert second.completed and second.replies == [] and second.validation == "token", second
    assert second.round_trips == first.round_trips - 1 == 1
    # The Retry and the Initial that answered it are the whole difference until the handshake.
    assert second.to_handshake.client_datagrams == first.to_handshake.client_datagrams - 1
    assert second.to_handshake.server_datagrams == first.to_handshake.server_datagrams - 1
    assert second.total.client_datagrams == first.total.client_datagrams - 1
    assert second.total.server_datagrams == first.total.server_datagrams - 1
    assert front.stats.retry_sent == 1 and front.stats.accepted == 2
    assert front.stats.tokens_issued == 2 and front.stats.tokens_accepted == 1
    assert front.stats.tokens_ignored == 0
    # A fresh token each time (RFC 9000 §8.1.3: unique across clients), 40 bytes.
    assert second.tokens and second.tokens[0] != first.tokens[0]
    assert len(first.tokens[0]) == 40
    print(
        f"\nfirst connection (Retry): {first.round_trips} round trips until the handshake; "
        f"{first.to_handshake}; in all {first.total}"
        f"\nreturning (NEW_TOKEN):    {second.round_trips} round trip until the handshake; "
        f"{second.to_handshake}; in all {second.total}"
    )


@pytest.mark.parametrize("validation", list(Validation), ids=lambda v: v.value)
def test_a_token_skips_validation_under_every_mode_on_any_node(validation: Validation) -> None:
    """A token from node A lets the client straight into node B (same cookie keys), whatever B's
    validation: no HRR (which aioquic's client could not even take), no Retry."""
    node_a = InitialFront(CONFIG, validation=Validation.RETRY)
    token = first_connection(node_a).tokens[0]
    node_b = InitialFront(
        dataclasses.replace(CONFIG),
        validation=validation,
        handshakes_in_progress=lambda: 10**6,  # ADAPTIVE under pressure: the stateless HRR
    )
    if validation is Validation.ADAPTIVE:  # a new client without a token gets the HRR now
        newcomer = connect(node_b, peer=("198.51.100.8", 5000))
        assert newcomer.replies[0] is ReplyKind.HRR and not newcomer.completed
    returning = connect(node_b, token=token, now=NOW + 3600)
    assert returning.completed and returning.validation == "token", returning
    assert returning.replies == [] and returning.round_trips == 1
    assert node_b.stats.tokens_accepted == 1 and node_b.stats.tokens_issued == 1
    start = returning.connection.start if returning.connection else None
    # Validated for the front, not for aioquic: the 3x limit holds until a Handshake packet.
    assert start is not None and not start.address_validated and start.resume is None


def test_the_3x_limit_holds_until_the_handshake() -> None:
    """A token connection starts with an unvalidated path (RFC 9000 §8.1.4: a replayed token
    must not make the server an amplifier): what it sends before the client's Handshake packet
    is at most 3x what it received; the path is validated once the handshake is done."""
    front = InitialFront(CONFIG, validation=Validation.RETRY)
    token = first_connection(front).tokens[0]
    client = QuicConnection(
        configuration=QuicConfiguration(
            is_client=True, alpn_protocols=["h3"], verify_mode=ssl.CERT_NONE, token=token
        )
    )
    client.connect(SERVER, now=NOW)
    (initial, _), *_ = client.datagrams_to_send(NOW)
    accepted = front.receive(initial, CLIENT, NOW)
    assert isinstance(accepted, Accept) and accepted.start.validation == "token"
    connection = StatelessQuicConnection(
        configuration=quic_configuration(front.config, front.options),
        server_config=front.config,
        peer=CLIENT,
        start=accepted.start,
    )
    connection.receive_datagram(initial, CLIENT, NOW)
    assert not connection._network_paths[0].is_validated
    sent = sum(len(d) for d, _ in connection.datagrams_to_send(NOW))
    assert 0 < sent <= 3 * len(initial)
    run = connect(front, token=first_connection(front).tokens[0])
    assert run.connection is not None and run.connection._network_paths[0].is_validated


# ---------------------------------------------------------------------------------------------
# The frame.


def test_a_lost_new_token_frame_is_sent_again() -> None:
    """The server's first 1-RTT flight after the handshake (HANDSHAKE_DONE, NEW_TOKEN, tickets)
    is lost: loss recovery declares the frame lost and it goes out again, the same token."""
    front = InitialFront(CONFIG, validation=Validation.NONE)
    dropped: list[bytes] = []

    def lose_until_sent_again(run: Run, data: bytes) -> bool:
        """Every 1-RTT (short header) datagram between the frame's first and second writing."""
        connection = run.connection
        lose = connection is not None and connection.new_token_frames == 1 and data[0] < 0x80
        if lose:
            dropped.append(data)
        return lose

    run = connect(front, drop_server=lose_until_sent_again)
    assert dropped and run.completed and run.connection is not None
    assert run.connection.new_token_frames >= 2, "the NEW_TOKEN frame was not sent again"
    assert run.tokens and set(run.tokens) == {run.connection.new_token}
    assert run.connection.new_token_acknowledged
    assert front.stats.tokens_issued == 1


def test_no_new_token_when_the_lifetime_is_zero() -> None:
    options = QuicOptions(new_token_lifetime=0)
    front = InitialFront(CONFIG, options, validation=Validation.RETRY)
    run = connect(front)
    assert run.completed and run.tokens == [] and front.stats.tokens_issued == 0
    token = first_connection(InitialFront(CONFIG, validation=Validation.RETRY)).tokens[0]
    again = connect(front, token=token)  # a token from a front that issues them: ignored here
    assert again.completed and again.replies == [ReplyKind.RETRY] and again.validation == "retry"
    assert front.stats.tokens_ignored == 1


# ---------------------------------------------------------------------------------------------
# Tokens that do not validate: ignored, never refused.


def _tampered(token: bytes, position: int) -> bytes:
    changed = bytearray(token)
    changed[position] ^= 0x01
    return bytes(changed)


@pytest.mark.parametrize(
    "case",
    [
        "another_ip",
        "expired",
        "issued_in_the_future",
        "tampered_version",
        "tampered_kind",
        "tampered_key_id",
        "tampered_nonce",
        "tampered_body",
        "tampered_tag",
        "another_key_ring",
        "retry_token",
        "retry_token_to_a_20_byte_cid",
        "cookie",
        "ticket_under_the_cookie_keys",
        "junk",
        "replayed",
    ],
)
def test_a_token_that_does_not_validate_falls_back_to_a_retry(case: str) -> None:
    """Under RETRY: a Retry, not a CONNECTION_CLOSE (RFC 9000 §8.1.3), then the ordinary path."""
    options = QuicOptions(new_token_replay=ReplayFilter(bits=1 << 16, window=DAY))
    front = InitialFront(CONFIG, options, validation=Validation.RETRY)
    token = first_connection(front).tokens[0]
    peer, now, cid_length = CLIENT, NOW + 60, 8
    positions = {"version": 0, "kind": 1, "key_id": 2, "nonce": 5, "body": 17, "tag": 39}
    if case == "another_ip":
        peer = ("203.0.113.9", CLIENT[1])
    elif case == "expired":
        now = NOW + DAY + 60
    elif case == "issued_in_the_future":
        now = NOW - 60
    elif case.startswith("tampered_"):
        token = _tampered(token, positions[case.removeprefix("tampered_")])
    elif case == "another_key_ring":
        other = InitialFront(
            dataclasses.replace(CONFIG, cookie_keys=CookieKeyRing.from_bytes(KEY_B)),
            validation=Validation.RETRY,
        )
        token = first_connection(other).tokens[0]
    elif case == "retry_token":  # kept from another connection (RFC 9000 §8.1.3 forbids it)
        token = retry_token_of(front)
    elif case == "retry_token_to_a_20_byte_cid":  # opens, but names another Retry's SCID
        token, cid_length = retry_token_of(front), SERVER_CID_LENGTH
    elif case == "cookie":
        token = CONFIG.cookie_keys.seal(
            CookieState(int(NOW), 0x1301, 0x1D, False, b"h" * 32, b"d" * 32), peer_binding(CLIENT)
        )
    elif case == "ticket_under_the_cookie_keys":
        token = CONFIG.cookie_keys.seal_token(TICKET_TOKEN_KIND, b"\x02" + bytes(40), b"")
    elif case == "junk":
        token = b"\x02\x02" + bytes(60)
    elif case == "replayed":
        assert connect(front, token=token, now=now).validation == "token"
    ignored_before = front.stats.tokens_ignored
    run = connect(front, token=token, peer=peer, now=now, client_cid_length=cid_length)
    assert run.replies == [ReplyKind.RETRY], run.replies
    assert run.completed and run.validation == "retry", run
    assert front.stats.tokens_ignored == ignored_before + 1
    assert front.stats.closes_sent == 0


@pytest.mark.parametrize("validation", [Validation.HRR, Validation.BOTH, Validation.ADAPTIVE])
def test_an_ignored_token_gets_the_modes_own_answer(validation: Validation) -> None:
    front = InitialFront(CONFIG, validation=validation, handshakes_in_progress=lambda: 10**6)
    token = first_connection(InitialFront(CONFIG, validation=Validation.RETRY)).tokens[0]
    run = connect(front, token=token, peer=("203.0.113.9", 4433))  # another IP address
    expected = ReplyKind.HRR if validation is not Validation.BOTH else ReplyKind.RETRY
    assert run.replies[:1] == [expected] and front.stats.closes_sent == 0, run.replies
    assert front.stats.tokens_ignored >= 1 and front.stats.tokens_accepted == 0


def test_a_port_change_keeps_the_token_valid() -> None:
    """Bound to the IP address, not the port (RFC 9000 §8.1.3)."""
    front = InitialFront(CONFIG, validation=Validation.RETRY)
    token = first_connection(front).tokens[0]
    for port in (1, 40001, 65535):
        assert connect(front, token=token, peer=(CLIENT[0], port)).validation == "token"


@pytest.mark.parametrize("cid_length", [8, SERVER_CID_LENGTH])
def test_a_client_hello2_keeps_its_path_whatever_its_token_says(cid_length: int) -> None:
    """Key rotation across a fleet: node A, without the token's key, ignores it and sends the
    stateless HRR; ClientHello2 (which repeats the token, RFC 9000 §8.1.3) reaches node B, which
    holds that key: it is still a ClientHello2, finished from its cookie.  After a first DCID of
    8 bytes ClientHello2 goes to our HRR's CID; after one of 20 (quic-go picks 8 to 20), which
    our HRR keeps, to the same CID as ClientHello1: its CRYPTO offset tells them apart."""
    secret = b"s" * 32
    node_c = InitialFront(
        dataclasses.replace(CONFIG, cookie_keys=CookieKeyRing.from_bytes(KEY_B, KEY_A)),
        QuicOptions(secret=secret),
        validation=Validation.RETRY,
    )
    token = first_connection(node_c).tokens[0]  # sealed under KEY_B
    node_a = InitialFront(
        dataclasses.replace(CONFIG, cookie_keys=CookieKeyRing.from_bytes(KEY_A)),
        QuicOptions(secret=secret),
    )
    node_b = InitialFront(
        dataclasses.replace(CONFIG, cookie_keys=CookieKeyRing.from_bytes(KEY_A, KEY_B)),
        QuicOptions(secret=secret),
    )
    client = QuicConnection(
        configuration=QuicConfiguration(
            is_client=True,
            alpn_protocols=["h3"],
            verify_mode=ssl.CERT_NONE,
            token=token,
            connection_id_length=cid_length,
        )
    )
    client.connect(SERVER, now=NOW)
    (first, _), *_ = client.datagrams_to_send(NOW)
    opened = open_initial(first, _dcid(first), sent_by_client=True)
    assert len(opened.destination_cid) == cid_length
    assert opened.token == token
    hrr = node_a.receive(first, CLIENT, NOW)
    assert isinstance(hrr, Reply) and hrr.kind is ReplyKind.HRR
    assert node_a.stats.tokens_ignored == 1
    hrr_packet = open_initial(hrr.datagram, opened.destination_cid, sent_by_client=False)
    assert (hrr_packet.source_cid == opened.destination_cid) is (cid_length == SERVER_CID_LENGTH)
    client_hello = opened.crypto_at(0)
    second = client_initial(
        key_cid=opened.destination_cid,
        destination_cid=hrr_packet.source_cid,
        source_cid=opened.source_cid,
        packet_number=1,
        crypto_offset=len(client_hello),
        crypto=with_cookie(client_hello, hrr_cookie(hrr_packet.crypto_at(0))),
        ack=hrr_packet.packet_number,
        token=token,
    )
    accepted = node_b.receive(second, CLIENT, NOW)
    assert isinstance(accepted, Accept), accepted
    assert accepted.start.validation == "cookie" and accepted.start.resume is not None
    assert node_b.stats.tokens_accepted == 0 and node_b.stats.tokens_ignored == 0


def _dcid(datagram: bytes) -> bytes:
    return pull_quic_header(
        Buffer(data=datagram), host_cid_length=SERVER_CID_LENGTH
    ).destination_cid


# ---------------------------------------------------------------------------------------------
# The token itself.


def test_address_tokens_open_for_their_ip_within_their_lifetime() -> None:
    tokens = AddressTokens(CookieKeyRing.from_bytes(KEY_A), lifetime=DAY, clock_skew=5)
    token = tokens.seal(CLIENT, NOW)
    assert len(token) == 40 and token_kind(token) == NEW_TOKEN_KIND
    assert tokens.seal(CLIENT, NOW) != token  # a random nonce each: unique tokens
    assert tokens.open(token, CLIENT, NOW + DAY) == NOW
    assert tokens.open(token, ("198.51.100.7", 1), NOW) == NOW  # any port
    assert tokens.open(token, CLIENT, NOW - 5) == NOW  # within the clock skew
    refusals = [
        (("198.51.100.8", CLIENT[1]), NOW, "does not authenticate"),
        (("::ffff:198.51.100.7", CLIENT[1]), NOW, "does not authenticate"),
        (CLIENT, NOW + DAY + 1, "expired"),
        (CLIENT, NOW - 6, "in the future"),
    ]
    for peer, now, reason in refusals:
        with pytest.raises(InvalidToken, match=reason):
            tokens.open(token, peer, now)
    for position in range(len(token)):
        with pytest.raises(InvalidToken):
            tokens.open(_tampered(token, position), CLIENT, NOW)
    with pytest.raises(InvalidToken, match="truncated"):
        tokens.open(token[:30], CLIENT, NOW)


def test_address_tokens_rotate_with_the_cookie_keys() -> None:
    token = AddressTokens(CookieKeyRing.from_bytes(KEY_A), DAY).seal(CLIENT, NOW)
    rotated = AddressTokens(CookieKeyRing.from_bytes(KEY_B, KEY_A), DAY)  # the new key first
    assert rotated.open(token, CLIENT, NOW) == NOW
    assert token_kind(rotated.seal(CLIENT, NOW)) == NEW_TOKEN_KIND
    with pytest.raises(InvalidToken, match="unknown key id"):
        AddressTokens(CookieKeyRing.from_bytes(KEY_B), DAY).open(token, CLIENT, NOW)


def test_tokens_retry_tokens_cookies_and_tickets_never_stand_in_for_each_other() -> None:
    """Four kinds under one key ring: none opens as another (the kind and the cookie's version
    byte are in the associated data)."""
    keys = CookieKeyRing.from_bytes(KEY_A)
    binding = peer_binding(CLIENT)
    new_tokens, retry_tokens = AddressTokens(keys, DAY), RetryTokens(keys, 10)
    new_token = new_tokens.seal(CLIENT, NOW)
    retry_token = retry_tokens.seal(CLIENT, b"o" * 8, b"r" * 20, NOW)
    cookie = keys.seal(CookieState(int(NOW), 0x1301, 0x1D, False, b"h" * 32, b"d" * 32), binding)
    ticket = keys.seal_token(TICKET_TOKEN_KIND, b"\x02" + bytes(40), b"")
    assert {token_kind(new_token), token_kind(retry_token), token_kind(ticket)} == {
        NEW_TOKEN_KIND,
        RETRY_TOKEN_KIND,
        TICKET_TOKEN_KIND,
    }
    assert token_kind(cookie) is None
    for other in (retry_token, cookie, ticket):
        with pytest.raises(InvalidToken):
            new_tokens.open(other, CLIENT, NOW)
    for other in (new_token, cookie, ticket):
        with pytest.raises(InvalidToken) as caught:
            retry_tokens.open(other, CLIENT, b"r" * 20, NOW)
        assert not isinstance(caught.value, StaleRetryToken)
    for other in (new_token, retry_token, ticket):
        with pytest.raises(DecryptError):
            keys.open(other, binding)
    for other in (new_token, retry_token, cookie):
        assert open_ticket(keys, other) is None
    # The kind byte forged to another kind does not open either (it is authenticated).
    forged = bytes((new_token[0], RETRY_TOKEN_KIND)) + new_token[2:]
    with pytest.raises(InvalidToken):
        retry_tokens.open(forged, CLIENT, b"r" * 20, NOW)


def test_the_token_header_is_the_key_rings() -> None:
    assert _SEALED_TOKEN_VERSION == TOKEN_FORMAT_VERSION
    assert len({RETRY_TOKEN_KIND, NEW_TOKEN_KIND, TICKET_TOKEN_KIND}) == 3
    assert token_kind(b"") is None and token_kind(b"\x02") is None
    assert token_kind(b"\x01\x02" + bytes(40)) is None


def test_the_options_are_checked() -> None:
    with pytest.raises(LocalProtocolError, match="new_token_lifetime"):
        QuicOptions(new_token_lifetime=-1)
    assert InitialFront(CONFIG, QuicOptions(new_token_lifetime=0)).new_token(CLIENT, NOW) is None


def test_a_first_dcid_that_reads_as_one_of_our_cids_still_takes_its_token() -> None:
    """A client's random first DCID of 20 bytes reads as one of our HRR's CIDs about once in 256
    (its first byte, unpermuted, says 19); quic-go's are 8 to 20 bytes.  Its token must still
    let it in: the Initial decrypts under its own DCID's keys, which a ClientHello2 sent to our
    CID never does (the fleet's rotation test met one in 174 quic-go connections)."""
    front = InitialFront(CONFIG, validation=Validation.RETRY)
    token = first_connection(front).tokens[0]
    lookalike = front.cids.encode(bytes(range(1, 20)))  # what our HRR would choose for a client
    assert len(front.cids.key_candidates(lookalike)) == 2
    client = QuicConnection(
        configuration=QuicConfiguration(
            is_client=True, alpn_protocols=["h3"], verify_mode=ssl.CERT_NONE, token=token
        )
    )
    client._peer_cid.cid = lookalike  # aioquic draws it at random; here, the unlucky draw
    client.connect(SERVER, now=NOW)
    (first, _), *_ = client.datagrams_to_send(NOW)
    assert _dcid(first) == lookalike
    accepted = front.receive(first, CLIENT, NOW)
    assert isinstance(accepted, Accept) and accepted.start.validation == "token", accepted
    assert front.stats.tokens_accepted == 1 and front.stats.tokens_ignored == 0
