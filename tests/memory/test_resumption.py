"""Session resumption (issue 15): tickets after the handshake, psk_dhe_ke with binders checked, on
the ordinary path, after a stateful HRR and through the stateless HRR; a ticket another server
issued, or one of ours that expired, means a full handshake, never an error.

The client is Python's ``ssl`` (OpenSSL's client code): it takes our NewSessionTickets into its
session, offers them again, and says itself whether it resumed (``session_reused``); the
server's own event says so too.
"""

from __future__ import annotations

import dataclasses
import time

import pytest

from stateless13 import (
    Accepted,
    AlertDescription,
    CookieKeyRing,
    HandshakeComplete,
    HelloRetry,
    NamedGroup,
    Rejected,
    ServerConfig,
    ServerConnection,
    stateless_accept,
)
from stateless13 import key_schedule as ks
from stateless13.alerts import DecryptError
from stateless13.messages import (
    ExtensionType,
    HandshakeType,
    PskIdentity,
    pull_client_hello,
    pull_new_session_ticket,
    pull_server_hello,
    push_client_hello,
)
from stateless13.negotiation import MAX_PSK_IDENTITIES
from stateless13.primitives import SUITES
from stateless13.record import ContentType, RecordProtection, frame_plaintext
from stateless13.ticket import TICKET_TOKEN_KIND, open_ticket
from stateless13.transcript import Transcript
from tests.helpers import PEER, PythonSSLClient

TICKET_KEY = bytes(range(32))
CONFIG = ServerConfig.self_signed(ticket_keys=CookieKeyRing.from_bytes(TICKET_KEY))


def handshake(
    config: ServerConfig, client: PythonSSLClient, **options: object
) -> tuple[ServerConnection, HandshakeComplete, bytes]:
    """An ordinary handshake: the server, its HandshakeComplete, and what it sent after it."""
    server = ServerConnection(config, peer=PEER, **options)  # type: ignore[arg-type]
    server.receive_data(client.step())
    assert server.events() == []
    server.receive_data(client.step(server.data_to_send()))
    assert client.handshake_done
    (event,) = server.events()
    assert isinstance(event, HandshakeComplete), event
    return server, event, server.data_to_send()


def session_from(config: ServerConfig = CONFIG, **client: object) -> PythonSSLClient:
    """A client that completed a full handshake and took its tickets: its session resumes."""
    first = PythonSSLClient(**client)  # type: ignore[arg-type]
    _, event, tickets = handshake(config, first)
    assert not event.resumed and event.signature_scheme is not None
    first.take_tickets(tickets)
    return first


def resuming(first: PythonSSLClient, **options: object) -> PythonSSLClient:
    return PythonSSLClient(context=first.context, session=first.tls.session, **options)  # type: ignore[arg-type]


def test_two_tickets_follow_the_handshake_and_the_client_takes_them() -> None:
    client = PythonSSLClient()
    _, event, sent = handshake(CONFIG, client)
    assert not event.resumed
    session = client.take_tickets(sent)
    assert session.has_ticket and session.ticket_lifetime_hint == CONFIG.ticket_lifetime


@pytest.mark.parametrize("early_data", [0, 16384])
def test_the_tickets_are_sealed_resumption_state(early_data: int) -> None:
    """Each ticket is its own PSK (its nonce), sealed with the handshake's suite and SNI; over
    TCP it promises ``early_data`` itself (over QUIC 0xffffffff or nothing:
    tests/memory/test_quic_early_data.py) and remembers no transport context."""
    secrets: dict[str, bytes] = {}

    def keylog(line: str) -> None:
        label, _, secret = line.split()
        secrets[label] = bytes.fromhex(secret)

    config = dataclasses.replace(CONFIG, keylog=keylog, early_data=early_data)
    _, event, sent = handshake(config, PythonSSLClient())
    suite = SUITES[event.cipher_suite]
    reader = RecordProtection(suite, secrets["SERVER_TRAFFIC_SECRET_0"])
    stream = b""
    offset = 0
    while offset < len(sent):
        end = offset + 5 + int.from_bytes(sent[offset + 3 : offset + 5], "big")
        content_type, data = reader.open(sent[offset : offset + 5], sent[offset + 5 : end])
        assert content_type == ContentType.handshake
        stream += data
        offset = end
    tickets = []
    while stream:
        assert stream[0] == HandshakeType.new_session_ticket
        end = 4 + int.from_bytes(stream[1:4], "big")
        tickets.append(pull_new_session_ticket(stream[4:end]))
        stream = stream[end:]
    assert [t.nonce for t in tickets] == [b"\x00", b"\x01"]
    states = [open_ticket(CONFIG.ticket_keys, t.ticket) for t in tickets]
    assert all(state is not None for state in states)
    assert states[0] is not None and states[1] is not None
    assert states[0].psk != states[1].psk
    assert (states[0].server_name, states[0].cipher_suite) == ("localhost", event.cipher_suite)
    assert states[0].age_add == tickets[0].age_add and states[0].max_early_data == early_data
    assert states[0].early_data_context == b""
    promised = dict(tickets[0].extensions).get(ExtensionType.early_data)
    assert promised == (early_data.to_bytes(4, "big") if early_data else None)


def test_python_ssl_resumes() -> None:
    first = session_from()
    client = resuming(first)
    _, event, _ = handshake(CONFIG, client)
    assert event.resumed and client.tls.session_reused
    assert event.signature_scheme is None  # no Certificate, no CertificateVerify (§2.2)


def test_resumes_after_a_stateful_hello_retry_request() -> None:
    """The binders of ClientHello2 cover message_hash(CH1) + HRR + CH2 (§4.2.11.2)."""
    first = session_from()
    p256_first = dataclasses.replace(CONFIG, groups=(NamedGroup.secp256r1, NamedGroup.x25519))
    client = resuming(first)
    server = ServerConnection(p256_first, peer=PEER)
    server.receive_data(client.step())
    assert server.events() == []
    hello_retry = server.data_to_send()
    server.receive_data(client.step(hello_retry))
    assert server.events() == []
    server.receive_data(client.step(server.data_to_send()))
    (event,) = server.events()
    assert isinstance(event, HandshakeComplete)
    assert event.resumed and event.hello_retry and client.tls.session_reused


def test_resumes_through_the_stateless_hello_retry_request() -> None:
    """CH1 with a PSK gets the stateless HRR like any other; CH2's binder is checked from the
    cookie and CH2 alone, by a second server with the same keys (another process)."""
    first = session_from()
    client = resuming(first)
    now = time.time()
    retry = stateless_accept(CONFIG, client.step(), peer=PEER, now=now)
    assert isinstance(retry, HelloRetry)
    other_process = ServerConfig(
        credentials=CONFIG.credentials,
        cookie_keys=CONFIG.cookie_keys,
        ticket_keys=CookieKeyRing.from_bytes(TICKET_KEY),
    )
    accepted = stateless_accept(
        other_process, client.step(retry.data_to_send), peer=PEER, now=now, after_retry=True
    )
    assert isinstance(accepted, Accepted)
    accepted.connection.receive_data(client.step(accepted.data_to_send))
    (event,) = accepted.connection.events()
    assert isinstance(event, HandshakeComplete)
    assert event.resumed and event.cookie_verified and client.tls.session_reused
    client.take_tickets(accepted.connection.data_to_send())  # a resumed handshake has new ones
    assert client.tls.session is not None and client.tls.session.has_ticket


def test_a_second_process_with_the_same_ticket_keys_resumes() -> None:
    first = session_from()
    other = ServerConfig.self_signed(ticket_keys=CookieKeyRing.from_bytes(TICKET_KEY))
    client = resuming(first)
    _, event, _ = handshake(other, client)
    assert event.resumed and client.tls.session_reused


@pytest.mark.parametrize(
    ("config", "clock"),
    [
        pytest.param(ServerConfig.self_signed(), None, id="another-ticket-key"),
        pytest.param(CONFIG, lambda: time.time() + CONFIG.ticket_lifetime + 1, id="expired"),
        pytest.param(
            dataclasses.replace(CONFIG, ticket_keys=CONFIG.cookie_keys), None, id="cookie-keys"
        ),
    ],
)
def test_a_ticket_it_cannot_use_means_a_full_handshake(config: ServerConfig, clock: object) -> None:
    first = session_from()
    client = resuming(first)
    _, event, _ = handshake(config, client, clock=clock)
    assert not event.resumed and not client.tls.session_reused
    assert event.signature_scheme is not None


def test_another_server_name_means_a_full_handshake() -> None:
    """§4.6.1: a ticket resumes for the server name it was issued for."""
    first = session_from(server_hostname="a.example")
    client = resuming(first, server_hostname="b.example")
    _, event, _ = handshake(CONFIG, client)
    assert not event.resumed and event.server_name == "b.example"


def test_no_tickets_when_the_config_says_none() -> None:
    client = PythonSSLClient()
    _, _, sent = handshake(dataclasses.replace(CONFIG, tickets=0), client)
    assert sent == b""


def test_a_binder_that_does_not_verify_is_decrypt_error() -> None:
    """The PSK's binder is the last bytes of the ClientHello: one flipped bit is decrypt_error
    (§4.2.11.2), before anything else of the handshake happens."""
    first = session_from()
    hello = bytearray(resuming(first, middlebox_compat=False).step())
    hello[-1] ^= 1
    server = ServerConnection(CONFIG, peer=PEER)
    server.receive_data(bytes(hello))
    with pytest.raises(DecryptError, match="binder"):
        server.events()
    assert server.data_to_send()[-2:] == bytes((2, AlertDescription.decrypt_error))
    # The stateless path checks it at ClientHello2 (here the first ClientHello has no cookie,
    # so it gets the HRR: the binder is checked once the cookie is verified).
    rejected = stateless_accept(CONFIG, bytes(hello), peer=PEER, now=time.time())
    assert isinstance(rejected, HelloRetry)


def test_a_broken_binder_in_clienthello2_is_decrypt_error_on_the_stateless_path() -> None:
    first = session_from()
    client = resuming(first)
    now = time.time()
    retry = stateless_accept(CONFIG, client.step(), peer=PEER, now=now)
    assert isinstance(retry, HelloRetry)
    second = bytearray(client.step(retry.data_to_send))
    second[-1] ^= 1
    rejected = stateless_accept(CONFIG, bytes(second), peer=PEER, now=now, after_retry=True)
    assert isinstance(rejected, Rejected)
    assert rejected.error.description == AlertDescription.decrypt_error


def test_tickets_and_cookies_do_not_stand_in_for_each_other() -> None:
    """Even under one key ring: a ticket is a token of its own kind, bound to no address."""
    ring = CONFIG.ticket_keys
    ticket = ring.seal_token(TICKET_TOKEN_KIND, b"\x01" + bytes(40), b"")
    with pytest.raises(DecryptError):
        ring.open(ticket, b"")  # not a cookie
    with pytest.raises(DecryptError):
        ring.open_token(1, ticket, b"")  # not a QUIC Retry token
    assert open_ticket(ring, ring.seal_token(1, b"\x01" + bytes(40), b"")) is None


def test_resumption_with_the_client_hello_split_over_records() -> None:
    first = session_from()
    client = resuming(first, middlebox_compat=False)
    hello = client.step()
    body = hello[5:]
    records = b"".join(
        bytes((ContentType.handshake, 3, 3)) + len(body[i : i + 50]).to_bytes(2, "big")
        + body[i : i + 50]
        for i in range(0, len(body), 50)
    )  # fmt: skip
    server = ServerConnection(CONFIG, peer=PEER)
    server.receive_data(records)
    assert server.events() == []
    server.receive_data(client.step(server.data_to_send()))
    (event,) = server.events()
    assert isinstance(event, HandshakeComplete) and event.resumed


def _with_identities_before(hello_record: bytes, junk: int) -> bytes:
    """The resuming ClientHello with ``junk`` identities of ours that do not open put before
    its ticket, the ticket's binder recomputed for its new place (index ``junk``)."""
    message = hello_record[5:]
    hello = pull_client_hello(message[4:])
    offered = hello.pre_shared_key
    assert offered is not None
    (real,) = offered.identities
    state = open_ticket(CONFIG.ticket_keys, real.identity)
    assert state is not None
    forged = bytearray(real.identity)
    forged[-1] ^= 1  # our header and key id, but it does not authenticate: an AEAD open each
    identities = [PskIdentity(bytes(forged), 0)] * junk + [real]
    body = b"".join(
        len(i.identity).to_bytes(2, "big") + i.identity + i.obfuscated_ticket_age.to_bytes(4, "big")
        for i in identities
    )
    binder_size = len(offered.binders[0])
    binders_block_size = 2 + (junk + 1) * (1 + binder_size)
    psk_body = len(body).to_bytes(2, "big") + body + bytes(binders_block_size)
    extensions = (*hello.extensions[:-1], (ExtensionType.pre_shared_key, psk_body))
    rebuilt = push_client_hello(dataclasses.replace(hello, extensions=extensions))
    suite = SUITES[state.cipher_suite]
    transcript = Transcript(suite)
    binder = ks.psk_binder(
        suite,
        ks.early_secret(suite, state.psk),
        transcript.digest_with(rebuilt[: len(rebuilt) - binders_block_size]),
    )
    binders = b"".join(bytes((binder_size,)) + (binder if n == junk else bytes(binder_size))
                       for n in range(junk + 1))  # fmt: skip
    rebuilt = rebuilt[: len(rebuilt) - binders_block_size] + (len(binders)).to_bytes(2, "big")
    rebuilt += binders
    return frame_plaintext(ContentType.handshake, rebuilt)


@pytest.mark.parametrize(
    ("junk", "resumed"),
    [(MAX_PSK_IDENTITIES - 1, True), (MAX_PSK_IDENTITIES, False)],
    ids=["ticket-at-the-last-examined-place", "ticket-past-it"],
)
def test_only_the_first_identities_are_examined(junk: int, resumed: bool) -> None:
    """Each identity that looks like ours costs an AEAD open: a client with hundreds cannot make
    the server try them all (MAX_PSK_IDENTITIES); a ticket past them means a full handshake."""
    first = session_from()
    hello = _with_identities_before(resuming(first, middlebox_compat=False).step(), junk)
    server = ServerConnection(CONFIG, peer=PEER)
    server.receive_data(hello)
    assert server.events() == []
    flight = server.data_to_send()
    server_hello = pull_server_hello(flight[9 : 5 + int.from_bytes(flight[3:5], "big")])
    selected = dict(server_hello.extensions).get(ExtensionType.pre_shared_key)
    assert selected == (junk.to_bytes(2, "big") if resumed else None)
