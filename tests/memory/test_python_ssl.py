"""A real client — Python's ``ssl`` (OpenSSL) over memory BIOs — completes handshakes with us.

Each stateless handshake goes CH1 → HelloRetry (nothing kept) → CH2 to a *fresh* ServerConfig built
from the same cookie key bytes → Accepted → client Finished → application data both ways.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import time
from typing import TypedDict, Unpack

import pytest

from stateless13 import (
    Accepted,
    ApplicationData,
    CipherSuite,
    ConnectionClosed,
    CookieKeyRing,
    Credential,
    HandshakeComplete,
    HelloRetry,
    NamedGroup,
    NeedMoreData,
    ServerConfig,
    ServerConnection,
    SignatureScheme,
    stateless_accept,
)
from tests.helpers import PEER, PythonSSLClient, stateless_handshake

CREDENTIAL = Credential.self_signed("localhost")
OPENSSL_SUITE_NAMES = {
    CipherSuite.TLS_AES_128_GCM_SHA256: "TLS_AES_128_GCM_SHA256",
    CipherSuite.TLS_AES_256_GCM_SHA384: "TLS_AES_256_GCM_SHA384",
    CipherSuite.TLS_CHACHA20_POLY1305_SHA256: "TLS_CHACHA20_POLY1305_SHA256",
}
CCS_RECORD = bytes.fromhex("140303000101")


class ConfigOptions(TypedDict, total=False):
    """The ServerConfig fields these tests vary."""

    cipher_suites: tuple[CipherSuite, ...]
    groups: tuple[NamedGroup, ...]
    alpn_protocols: tuple[bytes, ...]


def config_pair(**options: Unpack[ConfigOptions]) -> tuple[ServerConfig, ServerConfig]:
    """Two independent configs that share only the cookie key bytes (as two processes would)."""
    key = os.urandom(32)
    first = ServerConfig(
        credentials=(CREDENTIAL,), cookie_keys=CookieKeyRing.from_bytes(key), **options
    )
    second = ServerConfig(
        credentials=(CREDENTIAL,), cookie_keys=CookieKeyRing.from_bytes(key), **options
    )
    return first, second


def complete_event(accepted: Accepted) -> HandshakeComplete:
    events = accepted.connection.events()
    assert len(events) == 1 and isinstance(events[0], HandshakeComplete), events
    return events[0]


def exchange_data(accepted: Accepted, client: PythonSSLClient, size: int = 100) -> None:
    payload = os.urandom(size)
    accepted.connection.send(payload)
    assert client.receive(accepted.connection.data_to_send()) == payload
    reply = os.urandom(size)
    accepted.connection.receive_data(client.send(reply))
    received = b"".join(
        e.data for e in accepted.connection.events() if isinstance(e, ApplicationData)
    )
    assert received == reply


@pytest.mark.parametrize("suite", list(OPENSSL_SUITE_NAMES), ids=lambda s: s.name)
@pytest.mark.parametrize("compat", [True, False], ids=["compat", "no-compat"])
def test_every_suite_statelessly(suite: CipherSuite, compat: bool) -> None:
    config, fresh = config_pair(cipher_suites=(suite,))
    client = PythonSSLClient(middlebox_compat=compat)
    accepted = stateless_handshake(config, client, resume_config=fresh)
    event = complete_event(accepted)
    assert event.cipher_suite == suite and event.hello_retry and event.cookie_verified
    cipher = client.tls.cipher()
    assert cipher is not None and cipher[0] == OPENSSL_SUITE_NAMES[suite]
    exchange_data(accepted, client)


@pytest.mark.parametrize(
    "group", [NamedGroup.x25519, NamedGroup.secp256r1, NamedGroup.secp384r1], ids=lambda g: g.name
)
@pytest.mark.parametrize("compat", [True, False], ids=["compat", "no-compat"])
def test_every_group_statelessly(group: NamedGroup, compat: bool) -> None:
    """OpenSSL sends only an x25519 share: for the others the HRR must also ask for a share."""
    config, fresh = config_pair(groups=(group,))
    client = PythonSSLClient(middlebox_compat=compat)
    ch1 = client.step()
    retry = stateless_accept(config, ch1, peer=PEER, now=time.time())
    assert isinstance(retry, HelloRetry)
    # Compatibility mode: the HRR record is followed by a dummy CCS record, and only then.
    assert retry.data_to_send.endswith(CCS_RECORD) == compat
    ch2 = client.step(retry.data_to_send)
    assert ch2.startswith(CCS_RECORD) == compat  # and stateless_accept must skip it
    accepted = stateless_accept(fresh, ch2, peer=PEER, now=time.time())
    assert isinstance(accepted, Accepted), accepted
    assert CCS_RECORD not in accepted.data_to_send[:6]  # no second CCS after ServerHello
    accepted.connection.receive_data(client.step(accepted.data_to_send))
    assert client.handshake_done
    assert complete_event(accepted).group == group
    exchange_data(accepted, client)


@pytest.mark.parametrize("split", ["whole", "halves", "bytewise"])
@pytest.mark.parametrize("compat", [True, False], ids=["compat", "no-compat"])
def test_client_hello_in_every_split(split: str, compat: bool) -> None:
    """Both ClientHellos fed in pieces: each incomplete prefix is NeedMoreData, nothing is lost."""
    config, fresh = config_pair()
    client = PythonSSLClient(middlebox_compat=compat)

    def feed(cfg: ServerConfig, data: bytes) -> object:
        cuts = {
            "whole": [len(data)],
            "halves": [len(data) // 2, len(data)],
            "bytewise": range(1, len(data) + 1),
        }[split]
        result: object = None
        for cut in cuts:
            result = stateless_accept(cfg, data[:cut], peer=PEER, now=time.time())
            if cut < len(data):
                assert isinstance(result, NeedMoreData), (cut, result)
        return result

    retry = feed(config, client.step())
    assert isinstance(retry, HelloRetry)
    accepted = feed(fresh, client.step(retry.data_to_send))
    assert isinstance(accepted, Accepted)
    accepted.connection.receive_data(client.step(accepted.data_to_send))
    assert complete_event(accepted).cookie_verified
    exchange_data(accepted, client)


@pytest.mark.parametrize(
    ("key_type", "scheme"),
    [
        ("ecdsa-p256", SignatureScheme.ecdsa_secp256r1_sha256),
        ("ecdsa-p384", SignatureScheme.ecdsa_secp384r1_sha384),
        ("ed25519", SignatureScheme.ed25519),
        ("rsa", SignatureScheme.rsa_pss_rsae_sha256),
    ],
)
def test_every_certificate_type_verified_by_the_client(key_type: str, scheme: int) -> None:
    """The client checks the chain, the host name and our CertificateVerify signature."""
    credential = Credential.self_signed("localhost", key_type)
    config = ServerConfig(credentials=(credential,))
    client = PythonSSLClient(cafile_pem=credential.certificate_pem())
    accepted = stateless_handshake(config, client)
    assert complete_event(accepted).signature_scheme == scheme
    exchange_data(accepted, client)


def test_client_refuses_a_certificate_for_another_name() -> None:
    """A control: the verifying client above really verifies."""
    credential = Credential.self_signed("other.example")
    client = PythonSSLClient(cafile_pem=credential.certificate_pem())
    with pytest.raises(ssl.SSLCertVerificationError):
        stateless_handshake(ServerConfig(credentials=(credential,)), client)


def test_alpn_and_sni() -> None:
    config, fresh = config_pair(alpn_protocols=(b"h2", b"http/1.1"))
    client = PythonSSLClient(alpn=["http/1.1", "h2"], server_hostname="example.test")
    event = complete_event(stateless_handshake(config, client, resume_config=fresh))
    assert event.alpn_protocol == "h2" and client.tls.selected_alpn_protocol() == "h2"
    assert event.server_name == "example.test"


def test_cookie_payload_round_trips() -> None:
    config, fresh = config_pair()
    client = PythonSSLClient()
    retry = stateless_accept(
        config, client.step(), peer=PEER, now=time.time(), cookie_payload=b"tenant-42"
    )
    assert isinstance(retry, HelloRetry)
    accepted = stateless_accept(fresh, client.step(retry.data_to_send), peer=PEER, now=time.time())
    assert isinstance(accepted, Accepted) and accepted.cookie_payload == b"tenant-42"
    accepted.connection.receive_data(client.step(accepted.data_to_send))
    assert complete_event(accepted).cookie_payload == b"tenant-42"


def test_large_transfers_are_fragmented_into_records() -> None:
    config, _ = config_pair()
    client = PythonSSLClient()
    accepted = stateless_handshake(config, client)
    complete_event(accepted)
    exchange_data(accepted, client, size=200_000)


def test_key_update_both_ways() -> None:
    config, _ = config_pair()
    client = PythonSSLClient()
    accepted = stateless_handshake(config, client)
    complete_event(accepted)
    accepted.connection.update_key(request_peer_update=True)
    exchange_data(accepted, client)  # the client answers with its own KeyUpdate
    exchange_data(accepted, client)


def test_close_notify_both_ways() -> None:
    config, _ = config_pair()
    client = PythonSSLClient()
    accepted = stateless_handshake(config, client)
    complete_event(accepted)
    accepted.connection.close()
    client.incoming.write(accepted.connection.data_to_send())
    assert client.tls.read() == b""  # OpenSSL reports our close_notify as a clean EOF
    with contextlib.suppress(ssl.SSLWantReadError):  # it sends its own, then waits for nothing
        client.tls.unwrap()
    accepted.connection.receive_data(client.outgoing.read())
    assert accepted.connection.events() == [ConnectionClosed(clean=True)]


@pytest.mark.parametrize(
    "groups", [(NamedGroup.x25519,), (NamedGroup.secp384r1,)], ids=["no-retry", "stateful-retry"]
)
def test_ordinary_handshake_without_the_stateless_front(groups: tuple[NamedGroup, ...]) -> None:
    """ServerConnection alone: an HRR only when the client's share does not fit."""
    connection = ServerConnection(ServerConfig(credentials=(CREDENTIAL,), groups=groups))
    client = PythonSSLClient()
    connection.receive_data(client.step())
    assert connection.events() == []
    data = client.step(connection.data_to_send())
    if groups == (NamedGroup.secp384r1,):
        assert not client.handshake_done  # that was the HRR; this is CH2
        connection.receive_data(data)
        assert connection.events() == []
        data = client.step(connection.data_to_send())
    assert client.handshake_done
    connection.receive_data(data)
    (event,) = connection.events()
    assert isinstance(event, HandshakeComplete)
    assert event.group == groups[0] and event.hello_retry == (groups[0] != NamedGroup.x25519)
    assert not event.cookie_verified
    connection.send(b"ping")
    assert client.receive(connection.data_to_send()) == b"ping"


def test_keylog_matches_the_clients_own(tmp_path: object) -> None:
    """Our NSS key log lines equal OpenSSL's for the same connection (and exist only on request)."""
    import pathlib

    client_log = pathlib.Path(str(tmp_path)) / "client.keys"
    lines: list[str] = []
    config = ServerConfig(credentials=(CREDENTIAL,), keylog=lines.append)
    client = PythonSSLClient(keylog_filename=str(client_log))
    complete_event(stateless_handshake(config, client))
    client_lines = {
        line for line in client_log.read_text().splitlines() if line and not line.startswith("#")
    }
    assert set(lines) == client_lines and len(lines) == 5
