"""The optional replay filter: a second use of a cookie is refused, memory is fixed, and the
false-positive rate is what the sizing formula promises (measured here)."""

from __future__ import annotations

import os
import time

from stateless13 import (
    Accepted,
    AlertDescription,
    HelloRetry,
    Rejected,
    ReplayFilter,
    ServerConfig,
    stateless_accept,
)
from tests.helpers import PEER, PythonSSLClient


def test_a_replayed_client_hello_2_is_refused() -> None:
    config = ServerConfig.self_signed("localhost", replay_filter=ReplayFilter(window=30))
    client = PythonSSLClient()
    now = time.time()
    retry = stateless_accept(config, client.step(), peer=PEER, now=now)
    assert isinstance(retry, HelloRetry)
    ch2 = client.step(retry.data_to_send)
    assert isinstance(stateless_accept(config, ch2, peer=PEER, now=now), Accepted)
    replay = stateless_accept(config, ch2, peer=PEER, now=now + 1)
    assert isinstance(replay, Rejected)
    assert replay.error.description == AlertDescription.illegal_parameter
    assert "replay" in replay.error.reason


def test_without_a_filter_the_same_client_hello_2_is_accepted_twice() -> None:
    """The control: a stateless server alone cannot see replays (documented)."""
    config = ServerConfig.self_signed("localhost")
    client = PythonSSLClient()
    now = time.time()
    retry = stateless_accept(config, client.step(), peer=PEER, now=now)
    assert isinstance(retry, HelloRetry)
    ch2 = client.step(retry.data_to_send)
    for _ in range(2):
        assert isinstance(stateless_accept(config, ch2, peer=PEER, now=now), Accepted)


def test_entries_live_at_least_one_window_and_then_expire() -> None:
    replays = ReplayFilter(bits=1 << 12, hashes=4, window=10)
    assert replays.first_use(b"cookie", 100.0)
    assert not replays.first_use(b"cookie", 109.9)  # same generation
    assert not replays.first_use(b"cookie", 115.0)  # previous generation still remembered
    fresh = ReplayFilter(bits=1 << 12, hashes=4, window=10)
    assert fresh.first_use(b"late", 100.0)
    assert fresh.first_use(b"late", 125.0)  # two windows later it is forgotten


def test_memory_is_fixed_whatever_the_load() -> None:
    replays = ReplayFilter.for_capacity(10_000, 1e-3, window=30)
    before = replays.memory_bytes
    for i in range(50_000):
        replays.first_use(os.urandom(16), 1000.0 + i * 0.01)
    assert replays.memory_bytes == before


def test_false_positive_rate_matches_the_sizing() -> None:
    capacity, target = 20_000, 1e-2
    replays = ReplayFilter.for_capacity(capacity, target, window=30)
    for _ in range(capacity):
        replays.first_use(os.urandom(24), 0.0)
    probes = 20_000
    false_positives = sum(replays.seen(os.urandom(24)) for _ in range(probes))
    measured = false_positives / probes
    assert replays.expected_false_positive_rate(capacity) < target * 1.1
    assert measured < target * 2, f"measured false-positive rate {measured:.4f}"
    print(
        f"ReplayFilter {replays.memory_bytes} B, k={replays.hashes}: "
        f"FP measured {measured:.4%} vs target {target:.2%}"
    )
