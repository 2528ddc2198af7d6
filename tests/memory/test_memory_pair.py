"""MemoryPair: the three-line handshake test the README shows (our server, Python's ssl client,
memory buffers), and that it reports failures on either side rather than hanging."""

from __future__ import annotations

import ssl

import pytest

from stateless13 import NamedGroup, ServerConfig
from stateless13.transports.memory import MemoryPair


def test_the_three_lines() -> None:
    pair = MemoryPair(ServerConfig.self_signed())
    event = pair.handshake()
    assert pair.client_sends(b"ping") == [b"ping"]
    assert event.hello_retry and event.cookie_verified  # the stateless HRR, by default
    assert pair.client.version() == "TLSv1.3" and pair.server.cookie_verified
    assert pair.server_sends(b"pong") == b"pong"


def test_without_the_stateless_front() -> None:
    pair = MemoryPair(ServerConfig.self_signed(), stateless=False)
    event = pair.handshake()
    assert not event.hello_retry and event.group == NamedGroup.x25519


def test_a_client_that_refuses_us_raises_its_error() -> None:
    context = ssl.create_default_context()  # verifies: our self-signed certificate fails
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    pair = MemoryPair(ServerConfig.self_signed(), context)
    with pytest.raises(ssl.SSLCertVerificationError):
        pair.handshake()


def test_a_server_that_refuses_the_client_says_why() -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    context.maximum_version = ssl.TLSVersion.TLSv1_2  # no TLS 1.3 offered
    pair = MemoryPair(ServerConfig.self_signed(), context)
    with pytest.raises(AssertionError, match="protocol_version"):
        pair.handshake()
