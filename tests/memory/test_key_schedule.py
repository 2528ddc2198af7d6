"""The key schedule's own HMAC and HKDF (stateless13/key_schedule.py says why they are ours)
against the standard library's ``hmac`` and ``cryptography``'s HKDF, for every suite's hash."""

from __future__ import annotations

import hmac

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand
from hypothesis import given, settings
from hypothesis import strategies as st

from stateless13 import key_schedule as ks
from stateless13.primitives import SUITES, SuiteParams

HASHES: dict[str, hashes.HashAlgorithm] = {"sha256": hashes.SHA256(), "sha384": hashes.SHA384()}
SUITE_PARAMS = list(SUITES.values())


@pytest.mark.parametrize("suite", SUITE_PARAMS, ids=lambda suite: suite.code.name)
@settings(max_examples=200, deadline=None)
@given(key=st.binary(max_size=300), messages=st.lists(st.binary(max_size=300), max_size=3))
def test_keyed_hmac_is_hmac(suite: SuiteParams, key: bytes, messages: list[bytes]) -> None:
    """Keys shorter than, as long as and longer than the block (which HMAC hashes first); one
    keyed object gives every message its own HMAC (its states are copied, never consumed)."""
    keyed = ks.KeyedHmac(suite, key)
    for message in messages:
        assert keyed.digest(message) == hmac.digest(key, message, suite.hash_name)


@pytest.mark.parametrize("suite", SUITE_PARAMS, ids=lambda suite: suite.code.name)
@settings(max_examples=200, deadline=None)
@given(
    secret=st.binary(min_size=1, max_size=64),
    label=st.binary(max_size=12),
    context=st.binary(max_size=64),
    length=st.integers(min_value=1, max_value=600),
)
def test_expand_label_is_hkdf_expand(
    suite: SuiteParams, secret: bytes, label: bytes, context: bytes, length: int
) -> None:
    """One block and several (exporters may ask for up to 255 hash lengths)."""
    full_label = b"tls13 " + label
    info = length.to_bytes(2, "big") + bytes((len(full_label),)) + full_label
    info += bytes((len(context),)) + context
    expected = HKDFExpand(HASHES[suite.hash_name], length, info).derive(secret)
    assert ks.hkdf_expand_label(suite, secret, label, context, length) == expected


@pytest.mark.parametrize("suite", SUITE_PARAMS, ids=lambda suite: suite.code.name)
@settings(max_examples=100, deadline=None)
@given(salt=st.binary(max_size=200), ikm=st.binary(max_size=100))
def test_extract_is_hkdf_extract(suite: SuiteParams, salt: bytes, ikm: bytes) -> None:
    # RFC 5869 §2.2: an empty salt is HashLen zeros, which HMAC pads to the same block.
    expected = HKDF.extract(HASHES[suite.hash_name], salt, ikm)
    assert ks.hkdf_extract(suite, salt, ikm) == expected


def test_expand_refuses_more_than_255_blocks() -> None:
    suite = SUITES[0x1301]
    assert len(ks.hkdf_expand_label(suite, b"s" * 32, b"x", b"", 255 * 32)) == 255 * 32
    with pytest.raises(ValueError, match="at most 8160 bytes"):
        ks.hkdf_expand_label(suite, b"s" * 32, b"x", b"", 255 * 32 + 1)
