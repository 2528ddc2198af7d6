"""An optional, fixed-memory filter that refuses a second use of the same cookie.

A stateless server cannot see a replayed ClientHello2 on its own: the cookie is valid for its
whole lifetime.  This filter remembers the cookies it accepted, in two Bloom filters that take
turns covering one cookie lifetime each, so an entry lives at least one lifetime (a cookie cannot
be accepted after that anyway) and memory never grows:

    memory      = 2 generations x ``bits`` bits (fixed at construction)
    false positive (a first use refused as a replay) ≈ (1 - e^(-k n / m))^k
                  for n cookies accepted per lifetime, m bits and k hashes per generation

``ReplayFilter.for_capacity(n, p)`` sizes it for n accepted cookies per lifetime at rate p.  It
is per process: replays sent to another server of a fleet are not seen (share nothing, as the
rest of the design; bound the damage with a short cookie lifetime instead).
"""

from __future__ import annotations

import hashlib
import math
import threading
from typing import Protocol

from .alerts import LocalProtocolError


class ReplayStore(Protocol):
    """What refuses a second use: of a cookie (``ServerConfig.replay_filter``) or of a
    ticket's early data (``ServerConfig.early_data_replay``).  :class:`ReplayFilter` is the
    in-process one; a store shared by a fleet (e.g. Redis's ``SET key NX PX ttl``) fits the same
    method, and must answer False when it cannot tell (fail safe: refuse, never accept twice)."""

    def first_use(self, key: bytes, now: float) -> bool:
        """Record ``key``; False if it was (probably) recorded within the window."""
        ...


class ReplayFilter:
    """Two rotating Bloom filters over the cookies seen in the last one to two lifetimes."""

    def __init__(self, bits: int = 1 << 23, hashes: int = 7, window: float = 30.0) -> None:
        if bits < 64 or not 1 <= hashes <= 16 or window <= 0:
            raise LocalProtocolError(
                "ReplayFilter needs bits >= 64, 1..16 hashes and a positive window"
            )
        self.bits = bits
        self.hashes = hashes
        self.window = window  # seconds per generation: set it to the cookie lifetime
        self._current = bytearray((bits + 7) // 8)
        self._previous = bytearray((bits + 7) // 8)
        self._generation_start: float | None = None
        self._lock = threading.Lock()

    @classmethod
    def for_capacity(
        cls, cookies_per_window: int, false_positive_rate: float = 1e-6, window: float = 30.0
    ) -> ReplayFilter:
        """Size the filter: optimal m = -n ln p / (ln 2)^2 bits and k = (m / n) ln 2 hashes."""
        if cookies_per_window < 1 or not 0 < false_positive_rate < 1:
            raise LocalProtocolError("need a positive capacity and a rate in (0, 1)")
        bits = math.ceil(-cookies_per_window * math.log(false_positive_rate) / math.log(2) ** 2)
        hashes = max(1, min(16, round(bits / cookies_per_window * math.log(2))))
        return cls(bits=max(64, bits), hashes=hashes, window=window)

    @property
    def memory_bytes(self) -> int:
        return len(self._current) + len(self._previous)

    def expected_false_positive_rate(self, cookies_per_window: int) -> float:
        return float((1 - math.exp(-self.hashes * cookies_per_window / self.bits)) ** self.hashes)

    def _positions(self, cookie: bytes) -> list[int]:
        # Kirsch-Mitzenmacher: k positions from two 64-bit hashes, h1 + i * h2 (mod m).
        digest = hashlib.blake2b(cookie, digest_size=16).digest()
        h1, h2 = int.from_bytes(digest[:8], "big"), int.from_bytes(digest[8:], "big") | 1
        return [(h1 + i * h2) % self.bits for i in range(self.hashes)]

    def _contains(self, positions: list[int]) -> bool:
        return any(
            all(bitmap[p >> 3] & (1 << (p & 7)) for p in positions)
            for bitmap in (self._current, self._previous)
        )

    def seen(self, cookie: bytes) -> bool:
        """Whether ``cookie`` is (probably) recorded; records nothing."""
        return self._contains(self._positions(cookie))

    def _rotate(self, now: float) -> None:
        if self._generation_start is None:
            self._generation_start = now
        elapsed = now - self._generation_start
        if elapsed >= 2 * self.window:  # idle for two windows: everything is stale
            self._current = bytearray(len(self._current))
            self._previous = bytearray(len(self._previous))
            self._generation_start = now
        elif elapsed >= self.window:
            self._previous = self._current
            self._current = bytearray(len(self._previous))
            self._generation_start += self.window

    def first_use(self, cookie: bytes, now: float) -> bool:
        """Record ``cookie``; False if it (probably) was recorded within the last window."""
        positions = self._positions(cookie)
        with self._lock:
            self._rotate(now)
            seen = self._contains(positions)
            for p in positions:
                self._current[p >> 3] |= 1 << (p & 7)
        return not seen
