"""The key exchange group policy: tiers of equal preference, and what the HelloRetryRequest names.

The default groups are X25519MLKEM768, then (x25519, P-256, P-384) as one tier.  Against the
ClientHello1s captured from real peers (tests/data/client_hellos), the stateless HRR names a
group whenever that costs the client nothing in our ranking, and is cookie-only only when naming
another would demote it: Chromium keeps X25519MLKEM768; GnuTLS, which refuses a cookie-only HRR,
is asked for P-384.  The real peers completing these handshakes: tests/peers/.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from stateless13 import LocalProtocolError, NamedGroup, ServerConfig
from stateless13.messages import ClientHello
from stateless13.negotiation import group_to_request, negotiate
from stateless13.retry import parse_client_hello
from stateless13.transports.memory import MemoryServer
from tests.helpers import PythonSSLClient

CONFIG = ServerConfig.self_signed()
CAPTURED = Path(__file__).parent.parent / "data" / "client_hellos"

G = NamedGroup
#: peer -> (the group the client ends up with, whether the HRR names it).
EXPECTED = {
    "chromium": (G.X25519MLKEM768, False),  # shared our first choice: cookie-only, keeps it
    "curl": (G.secp256r1, True),  # shared x25519 only: the same tier's next
    "go": (G.secp256r1, True),
    "openssl": (G.secp256r1, True),
    "python_ssl": (G.secp256r1, True),
    "gnutls": (G.secp384r1, True),  # shared x25519 and P-256
    "tlslite": (G.secp384r1, True),
}


def captured(name: str) -> ClientHello:
    record = (CAPTURED / f"{name}.bin").read_bytes()
    return parse_client_hello(record[5:], CONFIG.max_client_hello_size)


def hrr_group(config: ServerConfig, hello: ClientHello) -> tuple[NamedGroup, bool]:
    negotiated = negotiate(config, hello)
    named = group_to_request(config, hello, negotiated)
    assert negotiated.group is not None  # these clients offer no PSK: a group or an error
    return (negotiated.group if named is None else NamedGroup(named)), named is not None


def test_every_captured_peer_is_in_the_table() -> None:
    assert {path.stem for path in CAPTURED.glob("*.bin")} == set(EXPECTED)


@pytest.mark.parametrize("peer", sorted(EXPECTED))
def test_stateless_hrr_for_each_captured_peer(peer: str) -> None:
    assert hrr_group(CONFIG, captured(peer)) == EXPECTED[peer]


@pytest.mark.parametrize("peer", sorted(EXPECTED))
def test_ordinary_handshake_takes_a_share_the_client_sent(peer: str) -> None:
    """Without the stateless HRR (Validation.NONE, or ADAPTIVE while calm) no peer needs an HRR:
    within a tier, the server takes the group the client already sent a share for."""
    hello = captured(peer)
    negotiated = negotiate(CONFIG, hello)
    assert negotiated.client_share is not None
    expected = G.X25519MLKEM768 if peer == "chromium" else None
    assert expected is None or negotiated.group == expected
    shared = [share.group for share in hello.key_share or ()]
    assert negotiated.group in shared


def test_a_flat_group_list_is_a_strict_order() -> None:
    """Each group its own tier: OpenSSL's x25519 share is taken, and the HRR is cookie-only
    (naming P-256 would demote it), unless retry_names_a_group says otherwise."""
    strict = dataclasses.replace(CONFIG, groups=(G.x25519, G.secp256r1))
    assert strict.group_tiers == ((G.x25519,), (G.secp256r1,))
    assert hrr_group(strict, captured("openssl")) == (G.x25519, False)
    assert hrr_group(strict, captured("gnutls")) == (G.x25519, False)
    override = dataclasses.replace(strict, retry_names_a_group=True)
    assert hrr_group(override, captured("openssl")) == (G.secp256r1, True)
    assert hrr_group(override, captured("gnutls")) == (G.x25519, False)  # nothing left to name


def test_a_client_without_our_first_tier_gets_it_named_when_it_supports_it() -> None:
    """A client that supports our hybrid group but sent only x25519 is asked for the hybrid:
    a promotion, not a demotion."""
    hello = captured("chromium")
    only_x25519 = tuple(s for s in hello.key_share or () if s.group == G.x25519)
    assert hrr_group(CONFIG, dataclasses.replace(hello, key_share=only_x25519)) == (
        G.X25519MLKEM768,
        True,
    )


def test_tiers_survive_replace_and_are_validated() -> None:
    assert CONFIG.group_tiers == ((G.X25519MLKEM768,), (G.x25519, G.secp256r1, G.secp384r1))
    copy = dataclasses.replace(CONFIG, alpn_protocols=(b"h2",))
    assert copy.group_tiers == CONFIG.group_tiers and copy.groups == CONFIG.groups
    with pytest.raises(LocalProtocolError, match="no group twice"):
        dataclasses.replace(CONFIG, groups=(G.x25519, (G.secp256r1, G.x25519)))
    with pytest.raises(LocalProtocolError, match="every tier needs a group"):
        dataclasses.replace(CONFIG, groups=(G.x25519, ()))


@pytest.mark.parametrize(
    ("stateless", "group", "hello_retry"),
    [(True, G.secp256r1, True), (False, G.x25519, False)],
    ids=["stateless-hrr", "ordinary"],
)
def test_python_ssl_completes_with_the_group_of_the_table(
    stateless: bool, group: NamedGroup, hello_retry: bool
) -> None:
    """OpenSSL (Python's ssl) on the default config: through the stateless HRR it is asked for
    P-256 (its x25519 share's tier-mate); in an ordinary handshake its x25519 share is taken."""
    client, server = PythonSSLClient(), MemoryServer(CONFIG, stateless=stateless)
    to_server = client.step()
    for _ in range(4):
        server.receive(to_server)
        to_server = client.step(server.data_to_send())
    server.receive(to_server)
    assert client.handshake_done and server.handshake is not None, server.error
    assert (server.handshake.group, server.hello_retry) == (group, hello_retry)
