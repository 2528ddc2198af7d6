"""0-RTT's rules and bad inputs (RFC 8446 §4.2.10, §8), with a client made here from the codec.

Real clients prove that 0-RTT works (tests/peers/test_resumption_peers.py: openssl s_client
-early_data); this client exists to break the rules they keep: more early data than the ticket
allows, a ticket's early data offered twice, an age that disagrees with ours, a malformed
EndOfEarlyData.  Its ticket is sealed here with the server's ticket keys, as the server seals its
own, and its PSK binder, early secret and records come from stateless13's key schedule.
"""

from __future__ import annotations

import dataclasses
import os
import time

import pytest
from cryptography.hazmat.primitives.asymmetric import x25519

from stateless13 import (
    AlertDescription,
    CookieKeyRing,
    EarlyData,
    Event,
    ServerConfig,
    ServerConnection,
)
from stateless13 import key_schedule as ks
from stateless13.alerts import AlertError
from stateless13.messages import (
    ClientHello,
    ExtensionType,
    HandshakeType,
    pull_encrypted_extensions,
    push_client_hello,
    push_handshake,
)
from stateless13.primitives import SUITES
from stateless13.record import ContentType, RecordProtection, frame_plaintext
from stateless13.replay import ReplayFilter
from stateless13.ticket import TicketState, seal_ticket
from stateless13.transcript import Transcript

SUITE = SUITES[0x1301]
LIMIT = 1000
CONFIG = ServerConfig.self_signed(
    ticket_keys=CookieKeyRing.from_bytes(bytes(range(32))),
    cipher_suites=(SUITE.code,),
    early_data=LIMIT,
)
AGE_ADD = 123456789


def u16s(values: list[int], length_size: int = 2) -> bytes:
    data = b"".join(v.to_bytes(2, "big") for v in values)
    return len(data).to_bytes(length_size, "big") + data


class EarlyClient:
    """A ClientHello resuming a ticket of ours with early data, and the client's early key."""

    def __init__(
        self, config: ServerConfig, *, age_error_ms: int = 0, early_data_context: bytes = b""
    ) -> None:
        now_ms = int(time.time() * 1000)
        psk = os.urandom(32)
        state = TicketState(now_ms - 5000, 7200, SUITE.code, AGE_ADD, LIMIT, psk, None, "localhost")
        state.early_data_context = early_data_context
        ticket = seal_ticket(config.ticket_keys, state)
        share = x25519.X25519PrivateKey.generate().public_key().public_bytes_raw()
        name = b"localhost"
        age = (5000 + age_error_ms + AGE_ADD) % (1 << 32)
        identity = len(ticket).to_bytes(2, "big") + ticket + age.to_bytes(4, "big")
        binders_size = 2 + 1 + 32
        extensions = (
            (ExtensionType.server_name,
             (len(name) + 3).to_bytes(2, "big") + b"\x00" + len(name).to_bytes(2, "big") + name),
            (ExtensionType.supported_groups, u16s([0x001D])),
            (ExtensionType.signature_algorithms, u16s([0x0403, 0x0804])),
            (ExtensionType.supported_versions, b"\x02\x03\x04"),
            (ExtensionType.psk_key_exchange_modes, b"\x01\x01"),
            (ExtensionType.key_share, (36).to_bytes(2, "big") + b"\x00\x1d\x00\x20" + share),
            (ExtensionType.early_data, b""),
            (ExtensionType.pre_shared_key,
             len(identity).to_bytes(2, "big") + identity + bytes(binders_size)),
        )  # fmt: skip
        hello = ClientHello(0x0303, os.urandom(32), b"", (SUITE.code,), b"\x00", extensions)
        message = push_client_hello(hello)
        early = ks.early_secret(SUITE, psk)
        truncated = message[: len(message) - binders_size]
        binder = ks.psk_binder(SUITE, early, Transcript(SUITE).digest_with(truncated))
        self.message = truncated + (33).to_bytes(2, "big") + b"\x20" + binder
        secret = ks.client_early_traffic_secret(SUITE, early, SUITE.digest(self.message))
        self.early = RecordProtection(SUITE, secret)

    def hello(self) -> bytes:
        return frame_plaintext(ContentType.handshake, self.message)

    def early_data(self, data: bytes) -> bytes:
        return self.early.seal(ContentType.application_data, data)

    def end_of_early_data(self, body: bytes = b"") -> bytes:
        return self.early.seal(ContentType.handshake, push_handshake(HandshakeType(5), body))


def accepted(server: ServerConnection, flight: bytes, secrets: dict[str, bytes]) -> bool:
    """Whether the server's EncryptedExtensions carry early_data (its acceptance, §4.2.10)."""
    offset = 5 + int.from_bytes(flight[3:5], "big")  # past the ServerHello record
    protection = RecordProtection(SUITE, secrets["SERVER_HANDSHAKE_TRAFFIC_SECRET"])
    header = flight[offset : offset + 5]
    payload = flight[offset + 5 : offset + 5 + int.from_bytes(header[3:5], "big")]
    _, data = protection.open(header, payload)
    assert data[0] == HandshakeType.encrypted_extensions
    body = data[4 : 4 + int.from_bytes(data[1:4], "big")]
    return ExtensionType.early_data in dict(pull_encrypted_extensions(body).extensions)


def serve(config: ServerConfig, *records: bytes) -> tuple[ServerConnection, list[Event], bool]:
    """A server fed the records: itself, its events so far, whether it accepted the 0-RTT."""
    secrets: dict[str, bytes] = {}

    def keylog(line: str) -> None:
        label, _, secret = line.split()
        secrets[label] = bytes.fromhex(secret)

    server = ServerConnection(dataclasses.replace(config, keylog=keylog))
    server.receive_data(b"".join(records))
    events = server.events()
    return server, events, accepted(server, server.data_to_send(), secrets)


def fresh_config() -> ServerConfig:
    return dataclasses.replace(CONFIG, early_data_replay=ReplayFilter(window=10.0))


def test_early_data_up_to_the_limit_is_delivered_as_early_data() -> None:
    client = EarlyClient(CONFIG)
    config = fresh_config()
    server, events, early = serve(config, client.hello(), client.early_data(b"x" * LIMIT))
    assert early and events == [EarlyData(b"x" * LIMIT)]
    server.receive_data(client.end_of_early_data())
    assert server.events() == []  # then the client's Finished, under its handshake key


def test_more_early_data_than_the_ticket_allows_is_unexpected_message() -> None:
    client = EarlyClient(CONFIG)
    server = ServerConnection(fresh_config())
    server.receive_data(client.hello() + client.early_data(bytes(LIMIT)) + client.early_data(b"!"))
    with pytest.raises(AlertError) as raised:
        server.events()
    assert raised.value.description == AlertDescription.unexpected_message


def test_a_tickets_early_data_is_accepted_once() -> None:
    """§8.1: the second offer of a ticket's early data (a replay, or a client reusing a ticket)
    resumes in 1-RTT; its early records are skipped."""
    config = fresh_config()
    client = EarlyClient(config)
    _, events, early = serve(config, client.hello(), client.early_data(b"ping"))
    assert early and events == [EarlyData(b"ping")]
    _, events, early = serve(config, client.hello(), client.early_data(b"ping"))
    assert not early and events == []


def test_an_age_that_disagrees_with_ours_refuses_the_early_data() -> None:
    """§8.3: the client's view of the ticket's age and ours differ by more than the window."""
    client = EarlyClient(CONFIG, age_error_ms=int(CONFIG.early_data_window * 1000) + 1000)
    _, events, early = serve(fresh_config(), client.hello(), client.early_data(b"ping"))
    assert not early and events == []


def test_a_ticket_issued_over_quic_brings_no_early_data_over_tcp() -> None:
    """A ticket that remembers a transport's context (QUIC's transport parameters), offered
    with early data over TCP, whose handshakes have none: the early data is refused (the
    context must be ours, byte for byte), where the same ticket without it is accepted."""
    client = EarlyClient(CONFIG, early_data_context=b"\x01QUIC transport parameters")
    _, events, early = serve(fresh_config(), client.hello(), client.early_data(b"ping"))
    assert not early and events == []


def test_a_server_that_refuses_early_data_skips_it() -> None:
    """A config without early_data: the ticket's promise is not kept, the data is skipped."""
    client = EarlyClient(CONFIG)
    _, events, early = serve(
        dataclasses.replace(CONFIG, early_data=0), client.hello(), client.early_data(b"ping")
    )
    assert not early and events == []


@pytest.mark.parametrize(
    ("record", "alert"),
    [
        pytest.param(lambda c: c.end_of_early_data(b"\x00"), AlertDescription.decode_error,
                     id="end_of_early_data-with-a-body"),
        pytest.param(lambda c: c.early.seal(ContentType.handshake,
                                            push_handshake(HandshakeType.finished, bytes(32))),
                     AlertDescription.unexpected_message, id="finished-under-the-early-key"),
    ],
)  # fmt: skip
def test_a_broken_end_of_early_data(record: object, alert: AlertDescription) -> None:
    client = EarlyClient(CONFIG)
    server = ServerConnection(fresh_config())
    server.receive_data(client.hello() + client.early_data(b"ping") + record(client))  # type: ignore[operator]
    with pytest.raises(AlertError) as raised:
        server.events()
    assert raised.value.description == alert


@pytest.mark.parametrize("configured", [LIMIT // 2, LIMIT * 2], ids=["lowered", "raised"])
def test_the_limit_is_the_lower_of_the_tickets_promise_and_the_config(configured: int) -> None:
    """A ticket that promised 1000 bytes, a server now set to 500 or 2000: the lower is the
    limit (§4.2.10: the ticket's max_early_data_size is what the client was told)."""
    client = EarlyClient(CONFIG)
    config = dataclasses.replace(fresh_config(), early_data=configured)
    server = ServerConnection(config)
    server.receive_data(client.hello() + client.early_data(bytes(min(configured, LIMIT) + 1)))
    with pytest.raises(AlertError) as raised:
        server.events()
    assert raised.value.description == AlertDescription.unexpected_message


def test_the_default_filter_outlasts_a_replay_that_the_age_check_lets_through() -> None:
    """A replay passes the age check for up to 2 windows after the first use (the client's age
    ran ahead by a window): the default filter remembers each ticket at least that long."""
    config = ServerConfig.self_signed(early_data=LIMIT, early_data_window=10.0)
    replay = config.early_data_replay
    assert isinstance(replay, ReplayFilter)
    window = config.early_data_window
    assert replay.first_use(b"another ticket", 1000.0)  # the filter's generation starts here
    first = 1000.0 + window - 0.01  # the worst case: the end of a generation
    assert replay.first_use(b"ticket", first)
    assert not replay.first_use(b"ticket", first + 2 * window - 0.1)
