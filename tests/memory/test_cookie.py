"""The cookie on its own: format, keys, rotation, sharing, and every way a cookie can be wrong."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from stateless13 import CookieKeyRing, DecryptError, IllegalParameter
from stateless13.cookie import (
    COOKIE_FORMAT_VERSION,
    TOKEN_FORMAT_VERSION,
    CookieState,
    check_cookie_age,
    decode_cookie_state,
    encode_cookie_state,
    peer_binding,
)

KEY_A = bytes(range(32))
KEY_B = bytes(range(32, 64))
STATE = CookieState(
    issued_at=1_700_000_000,
    cipher_suite=0x1301,
    group=0x001D,
    key_share_requested=False,
    client_hello_hash=bytes(32),
    client_hello_digest=bytes(range(32)),
    app_payload=b"tenant-7",
)
PEER = peer_binding(("203.0.113.7", 4433))

# A golden cookie: fixed key and nonce, so a change of format cannot slip through unnoticed.
GOLDEN_HEX = (
    "01ab000102030405060708090a0b9841f516469c6cc981cf311874c056cd6eee61ed6c5f27462a216c2e74e0"
    "448c9f637dddbe9d72a0a228c2a43e6a60d8b4aed672273e6fe83bc9d79a357a7c5a15f4ad592a584043f360"
    "6bbd0579bbbe8ae34a14f7f47342a71e4fdd82744bbb984654"
)


def test_golden_cookie_is_stable() -> None:
    cookie = CookieKeyRing.from_bytes(KEY_A).seal(STATE, PEER, nonce=bytes(range(12)))
    assert cookie[0] == COOKIE_FORMAT_VERSION and cookie[2:14] == bytes(range(12))
    assert len(cookie) == 105 + len(STATE.app_payload)
    assert cookie.hex() == GOLDEN_HEX

    assert CookieKeyRing.from_bytes(KEY_A).open(bytes.fromhex(GOLDEN_HEX), PEER) == STATE


def test_round_trip_and_sizes() -> None:
    ring = CookieKeyRing.from_bytes(KEY_A)
    assert ring.open(ring.seal(STATE, PEER), PEER) == STATE
    assert decode_cookie_state(encode_cookie_state(STATE)) == STATE
    sha384 = CookieState(1, 0x1302, 0x18, True, bytes(48), bytes(32))
    assert len(ring.seal(sha384, PEER)) == 121


def test_nonces_are_fresh() -> None:
    ring = CookieKeyRing.from_bytes(KEY_A)
    assert ring.seal(STATE, PEER) != ring.seal(STATE, PEER)


def test_rotation_old_keys_still_open_new_key_seals() -> None:
    old = CookieKeyRing.from_bytes(KEY_A)
    rotated = CookieKeyRing.from_bytes(KEY_B, KEY_A)
    assert rotated.open(old.seal(STATE, PEER), PEER) == STATE
    new_cookie = rotated.seal(STATE, PEER)
    with pytest.raises(DecryptError, match="unknown key id"):
        old.open(new_cookie, PEER)


def test_key_file_shared_between_rings(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    CookieKeyRing.write_new_key_file(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert (
        CookieKeyRing.from_file(path).open(CookieKeyRing.from_file(path).seal(STATE, PEER), PEER)
        == STATE
    )
    path.write_text(f"# comment\n{KEY_B.hex()}\n\n{KEY_A.hex()}  # previous\n")
    assert (
        CookieKeyRing.from_file(path).open(CookieKeyRing.from_bytes(KEY_A).seal(STATE, PEER), PEER)
        == STATE
    )
    path.write_text("not hex\n")
    with pytest.raises(ValueError, match="not a hex key"):
        CookieKeyRing.from_file(path)


def test_short_keys_and_empty_rings_are_refused() -> None:
    with pytest.raises(ValueError):
        CookieKeyRing.from_bytes(b"short")
    with pytest.raises(ValueError):
        CookieKeyRing([])


def test_oversized_payload_is_refused() -> None:
    state = CookieState(1, 0x1301, 0x1D, False, bytes(32), bytes(32), b"x" * 65)
    with pytest.raises(ValueError):
        CookieKeyRing.from_bytes(KEY_A).seal(state, PEER)


def _mutations(cookie: bytes) -> dict[str, bytes]:
    return {
        "flipped-version": bytes([cookie[0] ^ 0xFF]) + cookie[1:],
        "flipped-key-id": cookie[:1] + bytes([cookie[1] ^ 0x01]) + cookie[2:],
        "flipped-nonce": cookie[:5] + bytes([cookie[5] ^ 1]) + cookie[6:],
        "flipped-ciphertext": cookie[:40] + bytes([cookie[40] ^ 1]) + cookie[41:],
        "flipped-tag": cookie[:-1] + bytes([cookie[-1] ^ 1]),
        "truncated-by-one": cookie[:-1],
        "truncated-to-header": cookie[:14],
        "extended": cookie + b"\x00",
        "empty": b"",
    }


@pytest.mark.parametrize("mutation", list(_mutations(bytes(120))))
def test_every_tampering_is_a_decrypt_error(mutation: str) -> None:
    ring = CookieKeyRing.from_bytes(KEY_A)
    with pytest.raises(DecryptError):
        ring.open(_mutations(ring.seal(STATE, PEER))[mutation], PEER)


def test_bound_to_the_peer_address_not_the_port() -> None:
    ring = CookieKeyRing.from_bytes(KEY_A)
    cookie = ring.seal(STATE, PEER)
    assert ring.open(cookie, peer_binding(("203.0.113.7", 9999))) == STATE
    with pytest.raises(DecryptError):
        ring.open(cookie, peer_binding(("203.0.113.8", 4433)))
    with pytest.raises(DecryptError):
        ring.open(cookie, peer_binding(None))
    assert peer_binding(("::1", 1)) == bytes(15) + b"\x01"


def test_age_limits() -> None:
    check_cookie_age(STATE, STATE.issued_at + 30, lifetime=30, clock_skew=5)
    check_cookie_age(STATE, STATE.issued_at - 5, lifetime=30, clock_skew=5)
    with pytest.raises(IllegalParameter, match="expired"):
        check_cookie_age(STATE, STATE.issued_at + 31, lifetime=30, clock_skew=5)
    with pytest.raises(IllegalParameter, match="future"):
        check_cookie_age(STATE, STATE.issued_at - 6, lifetime=30, clock_skew=5)


def test_keys_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATELESS13_COOKIE_KEYS", f"{KEY_B.hex()}, {KEY_A.hex()}")
    ring = CookieKeyRing.from_env()
    assert ring.open(CookieKeyRing.from_bytes(KEY_A).seal(STATE, PEER), PEER) == STATE
    assert CookieKeyRing.from_bytes(KEY_B).open(ring.seal(STATE, PEER), PEER) == STATE
    monkeypatch.delenv("STATELESS13_COOKIE_KEYS")
    with pytest.raises(ValueError, match="not set"):
        CookieKeyRing.from_env()


def test_fleet_rotation_in_three_phases_never_fails_a_valid_cookie() -> None:
    """Roll a new key through a fleet whose nodes update one by one, as docs/SECURITY.md says:
    1. add it second (opens, does not seal); 2. move it first (seals); 3. drop the old one
    after a cookie lifetime.  At every step, any node opens any other node's fresh cookies."""
    old, new = KEY_A, KEY_B
    phases = [[old], [old, new], [new, old], [new]]
    for before, after in itertools.pairwise(phases):
        # mid-rollout: some nodes still at `before`, some already at `after`
        nodes = [CookieKeyRing.from_bytes(*before), CookieKeyRing.from_bytes(*after)]
        for minting in nodes:
            cookie = minting.seal(STATE, PEER)
            for verifying in nodes:
                assert verifying.open(cookie, PEER) == STATE, (before, after)


def test_replace_keys_in_place_and_a_bad_file_keeps_the_old_ones(tmp_path: Path) -> None:
    """A running server's reload (``serve`` at SIGHUP): the ring its config holds takes the keys
    of the file read again, in place; a file that does not parse raises before the ring is
    touched, so it keeps sealing and opening as before."""
    path = tmp_path / "keys"
    path.write_text(f"{KEY_A.hex()}\n")
    ring = CookieKeyRing.from_file(path)
    held_elsewhere = ring  # a ServerConfig, a QUIC server's tokens: the same object
    old_cookie, old_token = ring.seal(STATE, PEER), ring.seal_token(TOKEN_KIND, b"t", PEER)
    for bad in ("not hex\n", "# no key at all\n", "abcd\n"):  # unparsable, empty, too short
        path.write_text(bad)
        with pytest.raises(ValueError):
            ring.replace_keys(CookieKeyRing.from_file(path))
        assert len(ring) == 1 and ring.open(old_cookie, PEER) == STATE
    # Phase 1 then 2 of a rotation, each a reload of the same file.
    path.write_text(f"{KEY_A.hex()}\n{KEY_B.hex()}\n")
    ring.replace_keys(CookieKeyRing.from_file(path))
    assert len(held_elsewhere) == 2
    assert held_elsewhere.key_ids == CookieKeyRing.from_bytes(KEY_A, KEY_B).key_ids
    assert ring.seal(STATE, PEER)[1] == CookieKeyRing.from_bytes(KEY_A).key_ids[0]
    path.write_text(f"{KEY_B.hex()}\n{KEY_A.hex()}\n")
    ring.replace_keys(CookieKeyRing.from_file(path))
    new_cookie = held_elsewhere.seal(STATE, PEER)
    assert new_cookie[1] == CookieKeyRing.from_bytes(KEY_B).key_ids[0]
    assert ring.open(old_cookie, PEER) == STATE and ring.open(new_cookie, PEER) == STATE
    assert ring.open_token(TOKEN_KIND, old_token, PEER) == b"t"
    # Phase 3: the old key gone, what it sealed no longer opens.
    ring.replace_keys(CookieKeyRing.from_bytes(KEY_B))
    assert ring.open(new_cookie, PEER) == STATE
    with pytest.raises(DecryptError, match="unknown key id"):
        ring.open(old_cookie, PEER)
    with pytest.raises(DecryptError, match="unknown key id"):
        ring.open_token(TOKEN_KIND, old_token, PEER)


# --- tokens: a transport's own sealed bytes (a QUIC Retry token), under the same ring -----------

TOKEN_KIND = 1
TOKEN_PAYLOAD = b"issued-at|odcid|retry-scid"


def test_token_round_trip_and_format() -> None:
    ring = CookieKeyRing.from_bytes(KEY_A)
    token = ring.seal_token(TOKEN_KIND, TOKEN_PAYLOAD, PEER, nonce=bytes(range(12)))
    assert token[:2] == bytes((TOKEN_FORMAT_VERSION, TOKEN_KIND)) != bytes((COOKIE_FORMAT_VERSION,))
    assert token[2] == ring.seal(STATE, PEER)[1]  # the same key id as the cookies
    assert len(token) == 3 + 12 + len(TOKEN_PAYLOAD) + 16
    assert ring.open_token(TOKEN_KIND, token, PEER) == TOKEN_PAYLOAD
    assert ring.seal_token(TOKEN_KIND, TOKEN_PAYLOAD, PEER) != ring.seal_token(
        TOKEN_KIND, TOKEN_PAYLOAD, PEER
    )
    with pytest.raises(ValueError, match="one byte"):
        ring.seal_token(256, TOKEN_PAYLOAD, PEER)


def test_a_token_never_opens_as_a_cookie_nor_a_cookie_as_a_token() -> None:
    ring = CookieKeyRing.from_bytes(KEY_A)
    token = ring.seal_token(TOKEN_KIND, TOKEN_PAYLOAD, PEER)
    cookie = ring.seal(STATE, PEER)
    with pytest.raises(DecryptError):
        ring.open(token, PEER)
    with pytest.raises(DecryptError):
        ring.open_token(TOKEN_KIND, cookie, PEER)
    with pytest.raises(DecryptError):
        ring.open_token(TOKEN_KIND + 1, token, PEER)  # another kind
    # Relabelled headers do not help: the version and the kind are associated data.
    as_cookie = bytes((COOKIE_FORMAT_VERSION,)) + token[2:]
    with pytest.raises(DecryptError, match="authenticate"):
        ring.open(as_cookie, PEER)
    as_other_kind = token[:1] + bytes((TOKEN_KIND + 1,)) + token[2:]
    with pytest.raises(DecryptError, match="authenticate"):
        ring.open_token(TOKEN_KIND + 1, as_other_kind, PEER)


def test_tokens_rotate_with_the_ring() -> None:
    old = CookieKeyRing.from_bytes(KEY_A)
    rotated = CookieKeyRing.from_bytes(KEY_B, KEY_A)  # the new key first
    assert rotated.open_token(TOKEN_KIND, old.seal_token(TOKEN_KIND, b"x", PEER), PEER) == b"x"
    with pytest.raises(DecryptError, match="unknown key id"):
        old.open_token(TOKEN_KIND, rotated.seal_token(TOKEN_KIND, b"x", PEER), PEER)


def test_every_token_tampering_is_a_decrypt_error() -> None:
    ring = CookieKeyRing.from_bytes(KEY_A)
    token = ring.seal_token(TOKEN_KIND, TOKEN_PAYLOAD, PEER)
    mutations = [token[:i] + bytes([token[i] ^ 1]) + token[i + 1 :] for i in range(len(token))]
    mutations += [token[:-1], token[:15], token + b"\x00", b""]
    for mutated in mutations:
        with pytest.raises(DecryptError):
            ring.open_token(TOKEN_KIND, mutated, PEER)
    with pytest.raises(DecryptError):
        ring.open_token(TOKEN_KIND, token, peer_binding(("203.0.113.8", 4433)))
    assert ring.open_token(TOKEN_KIND, token, peer_binding(("203.0.113.7", 1))) == TOKEN_PAYLOAD
