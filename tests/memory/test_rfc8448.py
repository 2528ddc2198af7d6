"""RFC 8448 §3 (simple 1-RTT) and §5 (HelloRetryRequest), reproduced byte for byte.

What these tests prove, from the vectors in ``tests/vectors/rfc8448.json``:

* the key schedule (``stateless13.key_schedule``) turns the trace's shared secret and handshake
  messages into exactly the trace's secrets, traffic keys/IVs and Finished values; for §5 the
  transcript is started with ``rebuild_after_retry`` (message_hash(CH1) || HRR), the same
  function the stateless server uses to resume from a cookie;
* ``build_hello_retry_request`` writes the trace's HelloRetryRequest bit for bit when given the
  trace's cookie, and the stateful server asks for the same group with the same fields;
* the real server code, with only its randomness replaced by the trace's values (server random,
  ephemeral key, RSA-PSS signature), sends exactly the trace's ServerHello record and encrypted
  flight, accepts the trace's client Finished record and completes the handshake.  The injected
  signature is only handed back after checking that the content the server asked to sign
  verifies under the trace's RSA key, so the CertificateVerify transcript is proven too.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from stateless13 import key_schedule as ks
from stateless13.config import Credential, ServerConfig
from stateless13.connection import ServerConnection
from stateless13.cookie import CookieState
from stateless13.events import ApplicationData, ConnectionClosed, HandshakeComplete
from stateless13.handshake import ServerHandshake
from stateless13.messages import (
    CipherSuite,
    ExtensionType,
    NamedGroup,
    build_hello_retry_request,
    pull_certificate,
    pull_certificate_verify,
    pull_client_hello,
    pull_encrypted_extensions,
    pull_new_session_ticket,
    pull_server_hello,
)
from stateless13.negotiation import client_hello_digest
from stateless13.primitives import SUITES, KeyExchange
from stateless13.record import ContentType, frame_plaintext
from stateless13.retry import CookieVerified
from stateless13.ticket import open_ticket
from stateless13.transcript import Transcript, rebuild_after_retry

VECTORS = json.loads((Path(__file__).resolve().parents[1] / "vectors" / "rfc8448.json").read_text())
S3 = {k: bytes.fromhex(v) for k, v in VECTORS["simple_1rtt"].items()}
S5 = {k: bytes.fromhex(v) for k, v in VECTORS["hello_retry"].items()}
SUITE = SUITES[0x1301]  # TLS_AES_128_GCM_SHA256, the suite of both traces
RSA_PSS_RSAE_SHA256 = 0x0804


def assert_bytes(actual: bytes, expected: bytes, what: str) -> None:
    assert actual == expected, (
        f"{what} differs:\n  got      {actual.hex()}\n  expected {expected.hex()}"
    )


# ---------------------------------------------------------------------------------------------
# The trace's server identity and randomness


def rsa_private_key() -> rsa.RSAPrivateKey:
    n = {k: int(v, 16) for k, v in VECTORS["server_rsa_key"].items()}
    public = rsa.RSAPublicNumbers(n["public_exponent"], n["modulus"])
    return rsa.RSAPrivateNumbers(
        n["prime1"],
        n["prime2"],
        n["private_exponent"],
        n["exponent1"],
        n["exponent2"],
        n["coefficient"],
        public,
    ).private_key()


def server_private_key(v: dict[str, bytes]) -> object:
    if "server_x25519_private" in v:
        return x25519.X25519PrivateKey.from_private_bytes(v["server_x25519_private"])
    return ec.derive_private_key(int.from_bytes(v["server_p256_private"]), ec.SECP256R1())


class TraceEntropy:
    """The server's randomness, taken from the trace; the signature is checked before use."""

    def __init__(self, v: dict[str, bytes], *, check_signature: bool = True) -> None:
        self.v = v
        self.check_signature = check_signature
        self.signed_content: bytes | None = None

    def random(self, n: int) -> bytes:
        if n == 4:  # a ticket's ticket_age_add: the trace's where it has a ticket
            if "new_session_ticket" not in self.v:
                return bytes(4)
            return pull_new_session_ticket(self.v["new_session_ticket"][4:]).age_add.to_bytes(4)
        assert n == 32
        return self.v["server_hello"][6:38]

    def key_exchange(self, group: NamedGroup) -> KeyExchange:
        return KeyExchange(group, private_key=server_private_key(self.v))

    def sign(self, credential: Credential, scheme: int, data: bytes) -> bytes:
        assert scheme == RSA_PSS_RSAE_SHA256, f"signature scheme 0x{scheme:04x}"
        verify = pull_certificate_verify(self.v["certificate_verify"][4:])
        assert verify.algorithm == scheme
        if self.check_signature:
            # Raises InvalidSignature unless `data` is exactly the content the trace signed.
            key = credential.private_key
            assert isinstance(key, rsa.RSAPrivateKey)
            key.public_key().verify(
                verify.signature,
                data,
                padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
                hashes.SHA256(),
            )
            self.signed_content = data
        return verify.signature


def server_config(v: dict[str, bytes], groups: tuple[NamedGroup, ...]) -> ServerConfig:
    certificate_der = pull_certificate(v["certificate"][4:]).certificate_list[0][0]
    credential = Credential(certificate_chain=(certificate_der,), private_key=rsa_private_key())
    return ServerConfig(
        credentials=(credential,),
        cipher_suites=(CipherSuite.TLS_AES_128_GCM_SHA256,),
        groups=groups,
        # §3's server sends one ticket of 30 s after the handshake; §5's sends none.
        tickets=1 if "new_session_ticket" in v else 0,
        ticket_lifetime=30,
    )


def extra_encrypted_extensions(v: dict[str, bytes]) -> tuple[tuple[int, bytes], ...]:
    """The trace's EncryptedExtensions minus what the server adds itself: the record_size_limit
    answer (the client sent one; 0x4001 is ours too) and the server_name ack."""
    extensions = pull_encrypted_extensions(v["encrypted_extensions"][4:]).extensions
    assert [t for t, _ in extensions] == [
        ExtensionType.supported_groups,
        ExtensionType.record_size_limit,
        ExtensionType.server_name,
    ]
    return tuple(e for e in extensions if e[0] == ExtensionType.supported_groups)


# ---------------------------------------------------------------------------------------------
# 1. Key schedule


def check_key_schedule(v: dict[str, bytes], transcript: Transcript) -> None:
    """``transcript`` holds everything before the ServerHello; the rest comes from the trace."""
    assert_bytes(ks.early_secret(SUITE), v["early_secret"], "early secret")
    transcript.update(v["server_hello"])
    hs = ks.derive_handshake_secrets(SUITE, v["shared_secret"], transcript.digest())
    assert_bytes(hs.handshake_secret, v["handshake_secret"], "handshake secret")
    assert_bytes(hs.client, v["client_handshake_traffic_secret"], "client hs traffic secret")
    assert_bytes(hs.server, v["server_handshake_traffic_secret"], "server hs traffic secret")
    for name in ("encrypted_extensions", "certificate", "certificate_verify"):
        transcript.update(v[name])
    assert_bytes(
        ks.finished_verify_data(SUITE, hs.server, transcript.digest()),
        v["server_finished_verify_data"],
        "server Finished",
    )
    assert_bytes(v["server_finished"][4:], v["server_finished_verify_data"], "trace Finished")
    transcript.update(v["server_finished"])
    app = ks.derive_application_secrets(SUITE, hs, transcript.digest())
    assert_bytes(app.master_secret, v["master_secret"], "master secret")
    assert_bytes(app.client, v["client_application_traffic_secret"], "client ap traffic secret")
    assert_bytes(app.server, v["server_application_traffic_secret"], "server ap traffic secret")
    assert_bytes(app.exporter, v["exporter_master_secret"], "exporter master secret")
    assert_bytes(
        ks.finished_verify_data(SUITE, hs.client, transcript.digest()),
        v["client_finished_verify_data"],
        "client Finished",
    )
    transcript.update(v["client_finished"])
    assert_bytes(
        ks.resumption_master_secret(SUITE, app.master_secret, transcript.digest()),
        v["resumption_master_secret"],
        "resumption master secret",
    )
    for prefix, secret in [
        ("server_handshake", hs.server),
        ("client_handshake", hs.client),
        ("server_application", app.server),
        ("client_application", app.client),
    ]:
        key, iv = ks.traffic_key_and_iv(SUITE, secret)
        assert_bytes(key, v[prefix + "_key"], prefix + " key")
        assert_bytes(iv, v[prefix + "_iv"], prefix + " iv")
    for who, secret in [("server", hs.server), ("client", hs.client)]:
        finished_key = ks.hkdf_expand_label(SUITE, secret, b"finished", b"", 32)
        assert_bytes(finished_key, v[who + "_finished_key"], who + " finished_key")


def test_key_schedule_simple_1rtt() -> None:
    transcript = Transcript(SUITE)
    transcript.update(S3["client_hello"])
    check_key_schedule(S3, transcript)


def test_key_schedule_hello_retry() -> None:
    ch1_hash = hashlib.sha256(S5["client_hello_1"]).digest()
    transcript = rebuild_after_retry(SUITE, ch1_hash, S5["hello_retry_request"])
    transcript.update(S5["client_hello_2"])
    check_key_schedule(S5, transcript)


def test_key_exchange_gives_trace_shared_secret() -> None:
    for v, group, name in [(S3, NamedGroup.x25519, "x25519"), (S5, NamedGroup.secp256r1, "p256")]:
        exchange = KeyExchange(group, server_private_key(v))
        public, shared = exchange.respond(v[f"client_{name}_public"])
        assert_bytes(public, v[f"server_{name}_public"], f"{group.name} server public key")
        assert_bytes(shared, v["shared_secret"], f"{group.name} shared secret")


# ---------------------------------------------------------------------------------------------
# 2. The HelloRetryRequest


def test_hello_retry_request_bytes() -> None:
    hrr = build_hello_retry_request(
        session_id=b"", suite=0x1301, requested_group=0x0017, cookie=S5["cookie"]
    )
    assert_bytes(hrr, S5["hello_retry_request"], "HelloRetryRequest")
    assert_bytes(
        frame_plaintext(ContentType.handshake, hrr), S5["hello_retry_request_record"], "HRR record"
    )


def test_stateful_server_asks_for_p256_like_the_trace() -> None:
    """Our stateful HRR is the trace's HRR without the cookie extension."""
    config = server_config(S5, (NamedGroup.secp256r1, NamedGroup.x25519))
    conn = ServerConnection(config, entropy=TraceEntropy(S5))
    conn.receive_data(S5["client_hello_1_record"])
    assert conn.next_event() is None
    ours_record = conn.data_to_send()
    assert ours_record[:5] == b"\x16\x03\x03" + (len(ours_record) - 5).to_bytes(2, "big")
    ours, theirs = (
        pull_server_hello(ours_record[9:]),
        pull_server_hello(S5["hello_retry_request"][4:]),
    )
    assert ours.is_hello_retry_request and theirs.is_hello_retry_request
    for field in (
        "legacy_version",
        "random",
        "legacy_session_id_echo",
        "cipher_suite",
        "legacy_compression_method",
    ):
        assert getattr(ours, field) == getattr(theirs, field), field
    without_cookie = tuple(e for e in theirs.extensions if e[0] != ExtensionType.cookie)
    assert ours.extensions == without_cookie, f"{ours.extensions} != {without_cookie}"
    assert_bytes(
        ours_record[5:], build_hello_retry_request(b"", 0x1301, 0x0017, None), "stateful HRR"
    )


# ---------------------------------------------------------------------------------------------
# 3. The server's flight, byte for byte, from the real server code


def finish_handshake(conn: ServerConnection, v: dict[str, bytes], hello_retry: bool) -> None:
    conn.receive_data(v["client_finished_record"])
    event = conn.next_event()
    assert isinstance(event, HandshakeComplete), event
    assert event.cipher_suite == 0x1301
    assert event.signature_scheme == RSA_PSS_RSAE_SHA256
    assert event.server_name == "server"
    assert event.hello_retry is hello_retry
    assert event.group == (NamedGroup.secp256r1 if hello_retry else NamedGroup.x25519)


def test_simple_1rtt_server_flight() -> None:
    config = server_config(S3, (NamedGroup.x25519, NamedGroup.secp256r1))

    # Through the public constructor: the ServerHello record is already exact.  The rest of the
    # flight is not (no supported_groups in EncryptedExtensions), so neither is
    # the CertificateVerify content: skip the signature check here.
    public = ServerConnection(config, entropy=TraceEntropy(S3, check_signature=False))
    public.receive_data(S3["client_hello_record"])
    assert public.next_event() is None
    sent = public.data_to_send()
    assert_bytes(sent[: len(S3["server_hello_record"])], S3["server_hello_record"], "SH record")

    # With the trace's extra EncryptedExtensions, the whole flight is exact.
    entropy = TraceEntropy(S3)
    handshake = ServerHandshake(
        config, encrypted_extensions=extra_encrypted_extensions(S3), entropy=entropy
    )
    conn = ServerConnection(config, _handshake=handshake)
    conn.receive_data(S3["client_hello_record"])
    assert conn.next_event() is None
    assert entropy.signed_content is not None
    assert_bytes(
        conn.data_to_send(),
        S3["server_hello_record"] + S3["server_encrypted_record"],
        "server flight",
    )
    finish_handshake(conn, S3, hello_retry=False)

    # Its NewSessionTicket: the trace's lifetime, age_add and nonce, and a PSK that is the
    # trace's resumption PSK; the ticket itself is ours (sealed), and we allow no early data.
    ticket_record = conn.data_to_send()
    assert len(ticket_record) != len(S3["new_session_ticket_record"])
    keys = ks.traffic_key_and_iv(SUITE, S3["server_application_traffic_secret"])
    opened = AESGCM(keys[0]).decrypt(keys[1], ticket_record[5:], ticket_record[:5])
    ours, theirs = (pull_new_session_ticket(m[4:]) for m in (opened[:-1], S3["new_session_ticket"]))
    assert (ours.lifetime, ours.age_add, ours.nonce) == (theirs.lifetime, theirs.age_add, b"\x00")
    assert theirs.nonce == b"\x00\x00" and ours.extensions == ()
    # The trace's ticket nonce is two zero bytes, ours one: the derivation is the same.
    resumption_master = ks.resumption_master_secret(
        SUITE, S3["master_secret"], hashlib.sha256(b"".join(S3[m] for m in TRANSCRIPT)).digest()
    )
    assert_bytes(resumption_master, S3["resumption_master_secret"], "resumption master secret")
    psk = ks.resumption_psk(SUITE, resumption_master, theirs.nonce)
    assert_bytes(psk, S3["resumption_psk"], "resumption PSK")
    state = open_ticket(config.ticket_keys, ours.ticket)
    assert state is not None and state.psk == ks.resumption_psk(SUITE, resumption_master, b"\x00")
    assert (state.server_name, state.cipher_suite, state.lifetime) == ("server", 0x1301, 30)

    # After the handshake: the client's application data and close_notify.
    conn.receive_data(S3["client_application_data_record"] + S3["client_alert_record"])
    assert conn.next_event() == ApplicationData(S3["client_application_data_payload"])
    assert conn.next_event() == ConnectionClosed(clean=True)


#: The messages of §3's transcript up to the client's Finished.
TRANSCRIPT = (
    "client_hello",
    "server_hello",
    "encrypted_extensions",
    "certificate",
    "certificate_verify",
    "server_finished",
    "client_finished",
)


def test_hello_retry_server_flight_stateless() -> None:
    """``resume_from_cookie`` with the trace's ClientHello2 and what its cookie would hold (the
    trace's cookie is the trace server's, so the opening is left out)."""
    config = server_config(S5, (NamedGroup.secp256r1, NamedGroup.x25519))
    ch1 = pull_client_hello(S5["client_hello_1"][4:])
    ch2 = pull_client_hello(S5["client_hello_2"][4:])
    assert ch2.cookie == S5["cookie"]
    retry = CookieState(
        issued_at=0,
        cipher_suite=0x1301,
        group=0x0017,
        key_share_requested=True,
        client_hello_hash=hashlib.sha256(S5["client_hello_1"]).digest(),
        client_hello_digest=client_hello_digest(ch1),
    )
    entropy = TraceEntropy(S5)
    verified = CookieVerified(ch2, S5["client_hello_2"], retry, S5["hello_retry_request"])
    handshake = ServerHandshake.resume_from_cookie(
        config,
        verified,
        peer=None,
        encrypted_extensions=extra_encrypted_extensions(S5),
        entropy=entropy,
    )
    conn = ServerConnection._from_resumed_handshake(handshake)
    assert entropy.signed_content is not None
    assert_bytes(
        conn.data_to_send(),
        S5["server_hello_record"] + S5["server_encrypted_record"],
        "server flight",
    )
    finish_handshake(conn, S5, hello_retry=True)

    # Closing, as the trace does: the client's close_notify, then ours (our first record under
    # the server application key, as in the trace, which has no NewSessionTicket in §5).
    conn.receive_data(S5["client_alert_record"])
    assert conn.next_event() == ConnectionClosed(clean=True)
    conn.close()
    assert_bytes(conn.data_to_send(), S5["server_alert_record"], "server close_notify record")
