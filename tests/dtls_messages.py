"""DTLS 1.3 messages for the tests: wolfSSL's real ClientHello1s (captured from
``dtls13_peer client``, in tests/data/dtls) and the ClientHello2 a client makes from one and our
HelloRetryRequest; DTLSPlaintext records around handshake fragments.  Test scaffolding, not a
DTLS client: the real client of the tests is wolfSSL's (tests/peers/test_dtls_peers.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import x25519

from stateless13.dtls_flight import fragment_message
from stateless13.messages import (
    ExtensionType,
    KeyShareEntry,
    pull_client_hello,
    pull_server_hello,
    push_client_hello,
)

DATA = Path(__file__).resolve().parent / "data" / "dtls"


def wolfssl_client_hello(name: str) -> tuple[bytes, int]:
    """(ClientHello1 as a TLS-format handshake message, the datagram's size)."""
    datagram = (DATA / f"ch1_{name}.bin").read_bytes()
    record = datagram[13:]  # DTLSPlaintext header: type, version, epoch, seq, length
    assert datagram[0] == 22 and record[0] == 1
    length = int.from_bytes(record[1:4], "big")
    assert int.from_bytes(record[6:9], "big") == 0 and int.from_bytes(record[9:12], "big") == length
    return bytes(record[:4]) + record[12 : 12 + length], len(datagram)


def client_hello_2(message: bytes, hrr: bytes) -> tuple[bytes, x25519.X25519PrivateKey]:
    """ClientHello2 as RFC 8446 §4.1.2 has a client make it: the cookie echoed, one key share
    for the group the HRR named (x25519 here)."""
    hello = pull_client_hello(message[4:], dtls=True)
    server_hello = pull_server_hello(hrr[4:])
    cookie = dict(server_hello.extensions)[ExtensionType.cookie]
    key = x25519.X25519PrivateKey.generate()
    share = KeyShareEntry(0x001D, key.public_key().public_bytes_raw())
    extensions = []
    for ext_type, body in hello.extensions:
        if ext_type == ExtensionType.key_share:
            entry = share.group.to_bytes(2, "big") + len(share.key_exchange).to_bytes(2, "big")
            entry += share.key_exchange
            body = len(entry).to_bytes(2, "big") + entry
        extensions.append((ext_type, body))
    extensions.append((ExtensionType.cookie, cookie))  # the HRR's extension body, echoed
    return push_client_hello(dataclasses.replace(hello, extensions=tuple(extensions))), key


def plaintext_record(fragment: bytes, *, seq: int = 0, content_type: int = 22) -> bytes:
    """A DTLSPlaintext record in epoch 0 (RFC 9147 §4)."""
    header = bytes((content_type,)) + b"\xfe\xfd\x00\x00" + seq.to_bytes(6, "big")
    return header + len(fragment).to_bytes(2, "big") + fragment


def datagrams_of(message: bytes, *, message_seq: int = 0, fragment_size: int = 4096) -> list[bytes]:
    """A TLS-format handshake message in DTLSPlaintext records, one fragment per datagram."""
    fragments = fragment_message(message, message_seq, fragment_size)
    return [plaintext_record(f, seq=n) for n, f in enumerate(fragments)]
