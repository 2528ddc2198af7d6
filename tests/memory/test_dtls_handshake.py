"""The handshake engine in DTLS 1.3 mode (RFC 9147 §5), message by message, without records.

ClientHello1s are wolfSSL 5.8.4's, captured from ``dtls13_peer client`` (tests/data/dtls; the
DTLS handshake header stripped, as reassembly hands them over): the engine must read a DTLS
ClientHello (its legacy_cookie), answer with DTLS's versions, seal a cookie bound to the client's
port as well as its IP, and run DTLS 1.3's key schedule (the "dtls13" label prefix, §5.9).
"""

from __future__ import annotations

import dataclasses

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.hashes import Hash
from cryptography.hazmat.primitives.hmac import HMAC
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from stateless13 import (
    Credential,
    DecodeError,
    DecryptError,
    Direction,
    Epoch,
    IllegalParameter,
    InstallSecret,
    ProtocolVersion,
    SendChangeCipherSpec,
    SendHandshake,
    ServerConfig,
    ServerHandshake,
)
from stateless13.messages import (
    DTLS12,
    DTLS13,
    ExtensionType,
    pull_client_hello,
    pull_server_hello,
    push_client_hello,
)
from stateless13.retry import CookieVerified, RetryRequest, answer_client_hello, open_cookie
from tests.dtls_messages import client_hello_2, wolfssl_client_hello

CONFIG = ServerConfig(credentials=(Credential.self_signed("localhost"),))
PEER = ("192.0.2.10", 50123)
NOW = 1_800_000_000.0


def hello_retry(message: bytes, peer: tuple[str, int] = PEER) -> RetryRequest:
    answer = answer_client_hello(CONFIG, message, peer=peer, now=NOW, dtls=True)
    assert isinstance(answer, RetryRequest)
    return answer


@pytest.mark.parametrize("name", ["x25519", "none", "secp384r1"])
def test_a_dtls_client_hello_gets_a_dtls_hello_retry_request_smaller_than_itself(name: str) -> None:
    message, datagram_size = wolfssl_client_hello(name)
    hello = pull_client_hello(message[4:], dtls=True)
    assert (
        hello.dtls and hello.legacy_version == DTLS12 and DTLS13 in (hello.supported_versions or ())
    )
    answer = hello_retry(message)
    hrr = pull_server_hello(answer.hello_retry_request[4:])
    assert hrr.is_hello_retry_request and hrr.legacy_version == DTLS12
    assert dict(hrr.extensions)[ExtensionType.supported_versions] == DTLS13.to_bytes(2, "big")
    # What goes on the wire: a 13-byte DTLSPlaintext header, a 12-byte handshake header.
    assert 13 + 12 + len(answer.hello_retry_request) - 4 <= datagram_size


def test_the_same_client_hello_read_as_tls_is_refused() -> None:
    message, _ = wolfssl_client_hello("x25519")
    with pytest.raises(DecodeError):  # the legacy_cookie byte shifts every field after it
        answer_client_hello(CONFIG, message, peer=PEER, now=NOW)


def test_a_legacy_cookie_is_illegal_parameter() -> None:
    message, _ = wolfssl_client_hello("x25519")
    at = 34 + 1 + message[4 + 34]  # in the body: after version, random, session id
    body = message[4:][:at] + b"\x01\x00" + message[4:][at + 1 :]  # a 1-byte legacy_cookie
    with pytest.raises(IllegalParameter, match="legacy_cookie"):
        answer_client_hello(
            CONFIG, b"\x01" + len(body).to_bytes(3, "big") + body, peer=PEER, now=NOW, dtls=True
        )


def test_a_dtls_client_hello_without_dtls_13_is_protocol_version() -> None:
    message, _ = wolfssl_client_hello("x25519")
    hello = pull_client_hello(message[4:], dtls=True)
    extensions = tuple(
        (t, b"\x02\xfe\xfd" if t == ExtensionType.supported_versions else body)
        for t, body in hello.extensions
    )
    with pytest.raises(ProtocolVersion, match=r"DTLS 1\.3"):
        answer_client_hello(
            CONFIG,
            push_client_hello(dataclasses.replace(hello, extensions=extensions)),
            peer=PEER,
            now=NOW,
            dtls=True,
        )


def dtls13_expand_label(secret: bytes, label: bytes, context: bytes, length: int) -> bytes:
    """HKDF-Expand-Label with DTLS 1.3's "dtls13" prefix, from cryptography's HKDF alone."""
    full = b"dtls13" + label
    info = length.to_bytes(2, "big") + bytes((len(full),)) + full + bytes((len(context),)) + context
    return HKDFExpand(hashes.SHA256(), length, info).derive(secret)


def test_client_hello_2_with_the_cookie_resumes_with_dtls_versions_and_labels() -> None:
    message, _ = wolfssl_client_hello("none")
    hrr = hello_retry(message).hello_retry_request
    ch2, key = client_hello_2(message, hrr)
    verified = answer_client_hello(CONFIG, ch2, peer=PEER, now=NOW + 1, dtls=True)
    assert isinstance(verified, CookieVerified)
    handshake = ServerHandshake.resume_from_cookie(CONFIG, verified, peer=PEER)
    assert handshake.dtls
    actions = handshake.take_actions()
    assert not any(isinstance(a, SendChangeCipherSpec) for a in actions)  # §5: no compat mode
    server_hello_message = next(
        a.data for a in actions if isinstance(a, SendHandshake) and a.epoch == Epoch.INITIAL
    )
    server_hello = pull_server_hello(server_hello_message[4:])
    assert server_hello.legacy_version == DTLS12
    extensions = dict(server_hello.extensions)
    assert extensions[ExtensionType.supported_versions] == DTLS13.to_bytes(2, "big")
    # The server's handshake traffic secret, recomputed here with "dtls13" labels (§5.9) from
    # the shared secret and the transcript message_hash(CH1) | HRR | CH2 | SH.
    assert server_hello.cipher_suite == 0x1301  # our preference; SHA-256 below
    share = extensions[ExtensionType.key_share]
    shared = key.exchange(x25519.X25519PublicKey.from_public_bytes(share[4:]))

    def sha256(data: bytes) -> bytes:
        digest = Hash(hashes.SHA256())
        digest.update(data)
        return digest.finalize()

    ch1_hash = sha256(message)
    transcript = sha256(b"\xfe\x00\x00\x20" + ch1_hash + hrr + ch2 + server_hello_message)

    def extract(salt: bytes, ikm: bytes) -> bytes:
        mac = HMAC(salt, hashes.SHA256())
        mac.update(ikm)
        return mac.finalize()

    early = extract(bytes(32), bytes(32))
    derived = dtls13_expand_label(early, b"derived", sha256(b""), 32)
    handshake_secret = extract(derived, shared)
    server_secret = dtls13_expand_label(handshake_secret, b"s hs traffic", transcript, 32)
    installed = [
        a.secret
        for a in actions
        if isinstance(a, InstallSecret)
        and a.epoch == Epoch.HANDSHAKE
        and a.direction == Direction.ENCRYPT
    ]
    assert installed == [server_secret]


def test_the_cookie_binds_the_client_port_and_never_opens_over_tls() -> None:
    message, _ = wolfssl_client_hello("none")
    hrr = hello_retry(message).hello_retry_request
    ch2, _ = client_hello_2(message, hrr)
    with pytest.raises(IllegalParameter, match="RFC 9147"):  # §5.1: illegal_parameter
        answer_client_hello(CONFIG, ch2, peer=(PEER[0], PEER[1] + 1), now=NOW, dtls=True)
    with pytest.raises(IllegalParameter, match="RFC 9147"):
        answer_client_hello(CONFIG, ch2, peer=("192.0.2.11", PEER[1]), now=NOW, dtls=True)


def test_tls_and_dtls_cookies_never_open_as_each_other() -> None:
    """The DTLS binding carries a tag and the port: a cookie sealed for a TLS ClientHello from
    the same IP never opens for a DTLS one, and the reverse."""
    message, _ = wolfssl_client_hello("none")
    hrr = hello_retry(message).hello_retry_request
    ch2, _ = client_hello_2(message, hrr)
    cookie = pull_client_hello(ch2[4:], dtls=True).cookie
    assert cookie is not None
    with pytest.raises(DecryptError):  # over TLS: decrypt_error
        open_cookie(CONFIG, cookie, peer=PEER, now=NOW)
    with pytest.raises(DecryptError):
        open_cookie(CONFIG, cookie, peer=(PEER[0], 0), now=NOW, dtls=True)
    assert open_cookie(CONFIG, cookie, peer=PEER, now=NOW, dtls=True).cipher_suite == 0x1301
