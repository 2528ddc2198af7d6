"""External PSKs and psk_ke (RFC 8446 §2.2, §4.2.9, §4.2.11), with a client made from the codec.

Real clients prove the handshakes (tests/peers/test_external_psk_peers.py: OpenSSL and GnuTLS,
and tlsfuzzer's psk_dhe_ke and psk_ke scripts in tests/conformance/jobs).  This client exists to
reach every branch on the server's side: an external PSK with and without a key exchange, through
the stateless HelloRetryRequest, a binder that does not verify, a PSK for another hash, a
psk_ke-only client at a server that does not allow psk_ke, the ticket after an external PSK
handshake, the configuration's checks.  Its binders, secrets and Finished come from stateless13's
key schedule; the server is the sans-I/O ``ServerHandshake``.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import x25519

from stateless13 import (
    CookieKeyRing,
    ExternalPsk,
    LocalProtocolError,
    NamedGroup,
    ServerConfig,
    load_external_psks,
)
from stateless13 import key_schedule as ks
from stateless13.alerts import DecryptError, HandshakeFailure, MissingExtension
from stateless13.handshake import Action, HandshakeDone, SendHandshake, ServerHandshake
from stateless13.key_schedule import Epoch
from stateless13.messages import (
    ClientHello,
    ExtensionType,
    Finished,
    HandshakeType,
    pull_new_session_ticket,
    pull_server_hello,
    push_client_hello,
    push_finished,
)
from stateless13.primitives import SUITES, SuiteParams
from stateless13.retry import CookieVerified, RetryRequest, answer_client_hello
from stateless13.ticket import (
    TICKET_TOKEN_KIND,
    TicketState,
    encode_ticket_state,
    open_ticket,
    seal_ticket,
)
from stateless13.transcript import Transcript, rebuild_after_retry

SHA256 = SUITES[0x1301]
SHA384 = SUITES[0x1302]
PSK = ExternalPsk(b"device-17", bytes(range(32)))
PSK384 = ExternalPsk(b"device-384", bytes(range(48)), "sha384")
CONFIG = ServerConfig.self_signed(
    external_psks=(PSK, PSK384), ticket_keys=CookieKeyRing.from_bytes(bytes(32))
)
PEER = ("192.0.2.1", 4433)
PSK_KE, PSK_DHE_KE = 0, 1


def u16s(values: list[int], length_size: int = 2) -> bytes:
    data = b"".join(v.to_bytes(2, "big") for v in values)
    return len(data).to_bytes(length_size, "big") + data


@dataclass
class Offer:
    """One PSK the client offers: its identity, key, kind (external or a ticket) and age."""

    identity: bytes
    key: bytes
    external: bool = True
    obfuscated_age: int = 0


class PskClient:
    """A client offering PSKs; it keeps what it needs to finish the handshake."""

    def __init__(
        self,
        offers: list[Offer],
        *,
        modes: tuple[int, ...] = (PSK_DHE_KE,),
        key_share: bool = True,
        signature_algorithms: bool = False,
        suite: SuiteParams = SHA256,
        offered_suites: tuple[int, ...] = (),
        early_data: bool = False,
    ) -> None:
        """``suite``: the one the binders are computed for; ``offered_suites``: the
        ClientHello's list (default: ``suite`` alone)."""
        self.offers = offers
        self.modes = modes
        self.suite = suite
        self.offered_suites = offered_suites or (suite.code,)
        self.random = os.urandom(32)
        self.private = x25519.X25519PrivateKey.generate() if key_share else None
        self.signature_algorithms = signature_algorithms
        self.early_data = early_data
        self.binder_sets: list[list[bytes]] = []

    def hello(self, before: Transcript | None = None, cookie: bytes | None = None) -> bytes:
        """ClientHello (ClientHello2 when ``cookie``, its binders over ``before`` + itself)."""
        extensions: list[tuple[int, bytes]] = [(ExtensionType.supported_versions, b"\x02\x03\x04")]
        if self.private is not None:
            share = self.private.public_key().public_bytes_raw()
            extensions += [
                (ExtensionType.supported_groups, u16s([NamedGroup.x25519])),
                (ExtensionType.key_share, (36).to_bytes(2, "big") + b"\x00\x1d\x00\x20" + share),
            ]
        if self.signature_algorithms:
            extensions.append((ExtensionType.signature_algorithms, u16s([0x0403, 0x0804])))
        if cookie is not None:
            extensions.append((ExtensionType.cookie, len(cookie).to_bytes(2, "big") + cookie))
        if self.early_data and cookie is None:
            extensions.append((ExtensionType.early_data, b""))
        extensions.append(
            (ExtensionType.psk_key_exchange_modes, bytes((len(self.modes), *self.modes)))
        )
        identities = b"".join(
            len(o.identity).to_bytes(2, "big") + o.identity + o.obfuscated_age.to_bytes(4, "big")
            for o in self.offers
        )
        entry = 1 + self.suite.hash_len
        binders_size = 2 + entry * len(self.offers)
        body = len(identities).to_bytes(2, "big") + identities + bytes(binders_size)
        extensions.append((ExtensionType.pre_shared_key, body))
        hello = ClientHello(
            0x0303, self.random, b"", self.offered_suites, b"\x00", tuple(extensions)
        )
        message = push_client_hello(hello)
        truncated = message[: len(message) - binders_size]
        hello_hash = (before or Transcript(self.suite)).digest_with(truncated)
        binders = [
            ks.psk_binder(
                self.suite,
                ks.early_secret(self.suite, o.key),
                hello_hash,
                external=o.external,
            )
            for o in self.offers
        ]
        self.binder_sets.append(binders)
        encoded = b"".join(bytes((len(b),)) + b for b in binders)
        return truncated + len(encoded).to_bytes(2, "big") + encoded


def server_messages(actions: list[Action]) -> list[SendHandshake]:
    return [a for a in actions if isinstance(a, SendHandshake)]


def finish(
    server: ServerHandshake, client: PskClient, transcript: Transcript, flight: list[Action]
) -> list[Action]:
    """The client's Finished over the transcript and the server's flight: the server's actions."""
    secrets = {}
    for line in KEYLOG:
        label, _, secret = line.split()
        secrets[label] = bytes.fromhex(secret)
    for sent in server_messages(flight):
        transcript.update(sent.data)
    verify = ks.finished_verify_data(
        client.suite, secrets["CLIENT_HANDSHAKE_TRAFFIC_SECRET"], transcript.digest()
    )
    return server.receive(Epoch.HANDSHAKE, push_finished(Finished(verify)))


KEYLOG: list[str] = []


def keylogged(config: ServerConfig) -> ServerConfig:
    KEYLOG.clear()
    return dataclasses.replace(config, keylog=KEYLOG.append)


def handshake(config: ServerConfig, client: PskClient) -> tuple[ServerHandshake, list[Action]]:
    """An ordinary (no HRR) PSK handshake to the end: the server and its last actions."""
    server = ServerHandshake(keylogged(config), peer=PEER)
    hello = client.hello()
    flight = server.receive(Epoch.INITIAL, hello)
    transcript = Transcript(client.suite)
    transcript.update(hello)
    return server, finish(server, client, transcript, flight)


def sent_types(actions: list[Action]) -> list[int]:
    return [a.data[0] for a in server_messages(actions)]


def server_hello_extensions(actions: list[Action]) -> dict[int, bytes]:
    message = server_messages(actions)[0].data
    return dict(pull_server_hello(message[4:]).extensions)


def test_an_external_psk_with_a_key_exchange_and_no_certificate() -> None:
    client = PskClient([Offer(PSK.identity, PSK.key)])
    server = ServerHandshake(keylogged(CONFIG), peer=PEER)
    flight = server.receive(Epoch.INITIAL, client.hello())
    assert HandshakeType.certificate not in sent_types(flight)
    extensions = server_hello_extensions(flight)
    assert extensions[ExtensionType.pre_shared_key] == b"\x00\x00"
    assert ExtensionType.key_share in extensions
    summary = server.summary
    assert summary is not None
    assert summary.psk_identity == PSK.identity and summary.signature_scheme is None
    assert summary.group == NamedGroup.x25519 and not summary.resumed


def test_the_handshake_completes_and_its_tickets_carry_the_identity() -> None:
    """A ticket issued after an external-PSK handshake remembers the identity: resuming it
    reports who the client is, as the external PSK did."""
    client = PskClient([Offer(PSK.identity, PSK.key)])
    server, after = handshake(CONFIG, client)
    assert server.complete
    (done,) = [a for a in after if isinstance(a, HandshakeDone)]
    assert done.summary.psk_identity == PSK.identity
    tickets = [pull_new_session_ticket(m.data[4:]) for m in server_messages(after)]
    assert len(tickets) == CONFIG.tickets
    state = open_ticket(CONFIG.ticket_keys, tickets[0].ticket)
    assert state is not None and state.external_psk_identity == PSK.identity

    resumed_client = PskClient(
        [Offer(tickets[0].ticket, state.psk, external=False, obfuscated_age=state.age_add)]
    )
    resumed, _ = handshake(CONFIG, resumed_client)
    summary = resumed.summary
    assert summary is not None and resumed.complete
    assert summary.resumed and summary.psk_identity == PSK.identity


def test_psk_ke_when_allowed_and_the_client_offers_only_it() -> None:
    config = dataclasses.replace(CONFIG, psk_ke=True)
    client = PskClient([Offer(PSK.identity, PSK.key)], modes=(PSK_KE,), key_share=False)
    server = ServerHandshake(keylogged(config), peer=PEER)
    hello = client.hello()
    flight = server.receive(Epoch.INITIAL, hello)
    assert ExtensionType.key_share not in server_hello_extensions(flight)
    transcript = Transcript(SHA256)
    transcript.update(hello)
    after = finish(server, client, transcript, flight)
    assert server.complete and any(isinstance(a, HandshakeDone) for a in after)
    assert server.summary is not None and server.summary.group is None
    assert server.summary.event().key_exchange == "no key exchange (psk_ke)"


def test_both_modes_offered_means_a_key_exchange() -> None:
    """Forward secrecy whenever the client allows it, even with psk_ke allowed."""
    config = dataclasses.replace(CONFIG, psk_ke=True)
    client = PskClient([Offer(PSK.identity, PSK.key)], modes=(PSK_KE, PSK_DHE_KE))
    server, _ = handshake(config, client)
    assert server.summary is not None and server.summary.group == NamedGroup.x25519


@pytest.mark.parametrize(
    ("key_share", "missing"),
    [(False, "supported_groups"), (True, "signature_algorithms")],
    ids=["no-groups", "groups-but-only-psk_ke"],
)
def test_a_psk_ke_only_client_at_a_server_without_psk_ke(key_share: bool, missing: str) -> None:
    """No mode we accept: no PSK, and the full handshake it falls back to needs a group and a
    certificate the client did not ask for (§9.2): the alert a full handshake would have had."""
    client = PskClient([Offer(PSK.identity, PSK.key)], modes=(PSK_KE,), key_share=key_share)
    with pytest.raises(MissingExtension, match=f"no {missing} extension"):
        ServerHandshake(CONFIG, peer=PEER).receive(Epoch.INITIAL, client.hello())


def test_a_binder_that_does_not_verify_is_decrypt_error() -> None:
    client = PskClient([Offer(PSK.identity, bytes(32))])
    with pytest.raises(DecryptError, match="binder of PSK identity 0"):
        ServerHandshake(CONFIG, peer=PEER).receive(Epoch.INITIAL, client.hello())


def test_an_external_binder_never_passes_for_a_resumption_binder() -> None:
    """The labels differ ("ext binder", "res binder"): the right key under the wrong kind."""
    client = PskClient([Offer(PSK.identity, PSK.key, external=False)])
    with pytest.raises(DecryptError):
        ServerHandshake(CONFIG, peer=PEER).receive(Epoch.INITIAL, client.hello())


def test_a_psk_for_another_hash_is_skipped_for_a_full_handshake() -> None:
    """The SHA-384 PSK offered under a SHA-256 suite is not usable (§4.2.11): the client gets a
    certificate handshake, as with an unknown identity."""
    for offer in (Offer(PSK384.identity, PSK384.key), Offer(b"nobody", bytes(32))):
        client = PskClient([offer], signature_algorithms=True)
        server = ServerHandshake(CONFIG, peer=PEER)
        flight = server.receive(Epoch.INITIAL, client.hello())
        assert HandshakeType.certificate in sent_types(flight)
        assert server.summary is not None and server.summary.psk_identity is None


def test_a_sha384_psk_under_a_sha384_suite() -> None:
    client = PskClient([Offer(PSK384.identity, PSK384.key)], suite=SHA384)
    server, _ = handshake(CONFIG, client)
    assert server.complete and server.summary is not None
    assert server.summary.psk_identity == PSK384.identity


def test_a_client_offering_several_suites_gets_one_of_its_psks_hash() -> None:
    """Our first preference is AES-128 (SHA-256); a client holding a SHA-384 PSK gets the
    SHA-384 suite it also offers, and its PSK, rather than a certificate handshake."""
    client = PskClient(
        [Offer(PSK384.identity, PSK384.key)],
        suite=SHA384,
        offered_suites=(SHA256.code, SHA384.code),
        signature_algorithms=True,
    )
    server, _ = handshake(CONFIG, client)
    assert server.summary is not None and server.summary.psk_identity == PSK384.identity
    assert server.summary.cipher_suite == SHA384.code


def test_the_second_identity_when_the_first_is_unknown() -> None:
    client = PskClient([Offer(b"nobody", bytes(32)), Offer(PSK.identity, PSK.key)])
    server = ServerHandshake(CONFIG, peer=PEER)
    flight = server.receive(Epoch.INITIAL, client.hello())
    assert server_hello_extensions(flight)[ExtensionType.pre_shared_key] == b"\x00\x01"


def test_early_data_with_an_external_psk_is_refused() -> None:
    """0-RTT with an external PSK is not built: the client's early data is skipped (1-RTT)."""
    client = PskClient([Offer(PSK.identity, PSK.key)], early_data=True)
    config = dataclasses.replace(CONFIG, early_data=1000)
    server = ServerHandshake(config, peer=PEER)
    actions = server.receive(Epoch.INITIAL, client.hello())
    assert [type(a).__name__ for a in actions if "EarlyData" in type(a).__name__] == [
        "SkipEarlyData"
    ]
    assert server.summary is not None and not server.summary.early_data


@pytest.mark.parametrize("psk_ke", [False, True], ids=["psk_dhe_ke", "psk_ke"])
def test_through_the_stateless_hello_retry_request(psk_ke: bool) -> None:
    """ClientHello1 gets the stateless HRR; ClientHello2's binder covers message_hash(CH1) +
    HRR + CH2 and is checked from the cookie and CH2 alone.  A psk_ke client sent no group: its
    HRR carries the cookie only (group 0 in the cookie: none)."""
    config = dataclasses.replace(CONFIG, psk_ke=psk_ke)
    client = PskClient(
        [Offer(PSK.identity, PSK.key)],
        modes=(PSK_KE,) if psk_ke else (PSK_DHE_KE,),
        key_share=not psk_ke,
    )
    now = time.time()
    first = client.hello()
    retry = answer_client_hello(config, first, peer=PEER, now=now)
    assert isinstance(retry, RetryRequest)
    hrr = pull_server_hello(retry.hello_retry_request[4:])
    extensions = dict(hrr.extensions)
    assert (ExtensionType.key_share in extensions) is False  # x25519 shared, or no group at all
    cookie = extensions[ExtensionType.cookie][2:]
    before = rebuild_after_retry(SHA256, SHA256.digest(first), retry.hello_retry_request)
    second = client.hello(before, cookie)
    verified = answer_client_hello(config, second, peer=PEER, now=now, after_retry=True)
    assert isinstance(verified, CookieVerified)
    KEYLOG.clear()
    server = ServerHandshake.resume_from_cookie(keylogged(config), verified, peer=PEER)
    flight = server.take_actions()
    transcript = rebuild_after_retry(SHA256, SHA256.digest(first), retry.hello_retry_request)
    transcript.update(second)
    finish(server, client, transcript, flight)
    summary = server.summary
    assert server.complete and summary is not None
    assert summary.cookie_verified and summary.psk_identity == PSK.identity
    assert summary.group == (None if psk_ke else NamedGroup.x25519)


def test_a_psk_ke_client_hello1_at_a_stateless_server_without_psk_ke() -> None:
    """Refused at ClientHello1, before any cookie is made: only psk_ke could go on."""
    client = PskClient([Offer(PSK.identity, PSK.key)], modes=(PSK_KE,), key_share=False)
    with pytest.raises(MissingExtension):
        answer_client_hello(CONFIG, client.hello(), peer=PEER, now=time.time())


def test_a_server_with_external_psks_only_needs_no_certificate() -> None:
    config = ServerConfig(credentials=(), external_psks=(PSK,))
    server, _ = handshake(config, PskClient([Offer(PSK.identity, PSK.key)]))
    assert server.complete
    client = PskClient([Offer(b"nobody", bytes(32))], signature_algorithms=True)
    with pytest.raises(HandshakeFailure, match="no signature scheme"):
        ServerHandshake(config, peer=PEER).receive(Epoch.INITIAL, client.hello())


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: ExternalPsk(b"id", bytes(15)), "at least 16 bytes"),
        (lambda: ExternalPsk(b"", bytes(16)), "1 to 255 bytes"),
        (lambda: ExternalPsk(b"x" * 256, bytes(16)), "1 to 255 bytes"),
        (lambda: ExternalPsk(b"id", bytes(16), "md5"), "sha256 or sha384"),
        (lambda: ServerConfig(credentials=(), external_psks=(PSK, PSK)), "same identity"),
        (lambda: ServerConfig(credentials=()), "a Credential or an external PSK"),
    ],
)
def test_the_configuration_refuses(make: object, reason: str) -> None:
    with pytest.raises(LocalProtocolError, match=reason):
        make()  # type: ignore[operator]


def test_the_key_is_not_in_the_repr() -> None:
    assert PSK.key.hex() not in repr(PSK) and "key" not in repr(PSK)


def test_load_external_psks(tmp_path: Path) -> None:
    path = tmp_path / "psks"
    path.write_text(
        f"# devices\n\n{PSK.identity.decode()} {PSK.key.hex()}\n"
        f"{PSK384.identity.decode()} {PSK384.key.hex()} sha384\n"
    )
    assert load_external_psks(path) == (PSK, PSK384)
    for line, reason in [
        ("a 00112233", "line 1: an external PSK needs at least 16 bytes"),
        ("a zz", "line 1: non-hexadecimal"),
        ("a", "line 1: expected IDENTITY HEX-KEY"),
        (f"a {PSK.key.hex()} sha1", "line 1: external PSK hash 'sha1'"),
    ]:
        path.write_text(line + "\n")
        with pytest.raises(LocalProtocolError, match=reason):
            load_external_psks(path)


def test_a_format_1_ticket_no_longer_opens() -> None:
    """The ticket format changed (2: the external PSK identity); older tickets give a full
    handshake, as any ticket that does not open."""
    state = TicketState(0, 7200, 0x1301, 0, 0, bytes(32), None, None)
    sealed = seal_ticket(CONFIG.ticket_keys, state)
    assert open_ticket(CONFIG.ticket_keys, sealed) == state
    format_1 = b"\x01" + encode_ticket_state(state)[1:-1]  # without the new field
    sealed_1 = CONFIG.ticket_keys.seal_token(TICKET_TOKEN_KIND, format_1, b"")
    assert open_ticket(CONFIG.ticket_keys, sealed_1) is None
