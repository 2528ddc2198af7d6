"""Certificates chosen by the server name the client asks for (RFC 6066 §3, RFC 6125 §6.4.3),
with Python's ssl client over memory buffers: which certificate it received is read from its own
connection (``getpeercert``), the server's side from its HandshakeComplete.
"""

from __future__ import annotations

import pytest

from stateless13 import (
    AlertDescription,
    AlertError,
    Credential,
    HandshakeComplete,
    ServerConfig,
    ServerConnection,
)
from tests.helpers import PEER, PythonSSLClient, stateless_handshake

ALPHA = Credential.self_signed("alpha.example", "ecdsa-p256")  # SAN: alpha.example
BETA = Credential.self_signed("beta.example", "rsa")
WILDCARD = Credential(BETA.certificate_chain, BETA.private_key, server_names=("*.gamma.example",))
FALLBACK = Credential.self_signed("fallback.invalid", "ed25519")
CONFIG = ServerConfig(credentials=(FALLBACK, ALPHA, BETA, WILDCARD))


def served(config: ServerConfig, server_name: str | None) -> bytes:
    """The leaf certificate (DER) a client asking for ``server_name`` receives."""
    client = PythonSSLClient(server_hostname=server_name)
    server = ServerConnection(config, peer=PEER)
    server.receive_data(client.step())
    assert server.events() == []
    server.receive_data(client.step(server.data_to_send()))
    (event,) = server.events()
    assert isinstance(event, HandshakeComplete) and event.server_name == server_name
    certificate = client.tls.getpeercert(binary_form=True)
    assert certificate is not None
    return certificate


@pytest.mark.parametrize(
    ("name", "credential"),
    [
        ("alpha.example", ALPHA),
        ("ALPHA.example", ALPHA),  # host names compare without case
        ("beta.example", BETA),
        ("x.gamma.example", WILDCARD),  # one label under the wildcard's parent
        ("x.y.gamma.example", FALLBACK),  # two labels: not the wildcard's
        ("gamma.example", FALLBACK),
        ("unknown.example", FALLBACK),
        (None, FALLBACK),
    ],
)
def test_the_certificate_for_the_name(name: str | None, credential: Credential) -> None:
    assert served(CONFIG, name) == credential.certificate_chain[0]


def test_an_unknown_name_is_refused_when_so_configured() -> None:
    config = ServerConfig(credentials=(ALPHA, BETA), refuse_unknown_server_names=True)
    assert served(config, "beta.example") == BETA.certificate_chain[0]
    assert served(config, None) == ALPHA.certificate_chain[0]  # no SNI: never refused
    client = PythonSSLClient(server_hostname="unknown.example")
    server = ServerConnection(config, peer=PEER)
    server.receive_data(client.step())
    with pytest.raises(AlertError) as caught:
        server.events()
    assert caught.value.description == AlertDescription.unrecognized_name


def test_the_sni_callback_chooses() -> None:
    asked: list[str | None] = []

    def choose(name: str | None) -> tuple[Credential, ...] | None:
        asked.append(name)
        return (BETA,) if name == "dynamic.example" else None

    config = ServerConfig(credentials=(ALPHA, BETA), sni_callback=choose)
    assert served(config, "dynamic.example") == BETA.certificate_chain[0]
    assert served(config, "alpha.example") == ALPHA.certificate_chain[0]  # None: by names
    assert asked == ["dynamic.example", "alpha.example"]


def test_through_the_stateless_hello_retry_request() -> None:
    client = PythonSSLClient(server_hostname="beta.example")
    accepted = stateless_handshake(CONFIG, client)
    (event,) = accepted.connection.events()
    assert isinstance(event, HandshakeComplete) and event.cookie_verified
    assert client.tls.getpeercert(binary_form=True) == BETA.certificate_chain[0]


@pytest.mark.parametrize("name", ["*.com", "a.*.example", "**.example", ""])
def test_names_that_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="a host name or"):
        Credential(ALPHA.certificate_chain, ALPHA.private_key, server_names=(name,))


def test_names_come_from_the_certificate() -> None:
    assert ALPHA.server_names == ("alpha.example",)
    assert Credential.self_signed("localhost").server_names == ("localhost",)
