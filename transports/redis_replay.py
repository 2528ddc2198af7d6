"""A replay store shared by a fleet, on Redis: ``SET key 1 NX PX <window>``.

:class:`RedisReplayStore` implements the core's ``ReplayStore`` (``first_use(key, now)``) for
``ServerConfig.early_data_replay`` (each ticket's 0-RTT data accepted once across every server
that shares the Redis) and, optionally, ``ServerConfig.replay_filter`` (each cookie accepted
once).  The in-process :class:`~stateless13.ReplayFilter` stays the default; this module is
imported only by whoever asks for it (``stateless13 serve --replay-store``) and needs redis-py
(the ``fleet`` extra).

Keys: ``<prefix><BLAKE2b-128 of the ticket identity or cookie, hex>``, one prefix per purpose,
so the two uses never collide and Redis never holds a ticket or a cookie, only their hashes.
Redis's own clock expires them (``PX``): the ``now`` the handshake passes is not used.  Beside
them, ``<prefix>epoch`` says since when Redis has held them: a Redis that lost its keys (new,
flushed, restarted without them) is not trusted for one window (*warming*: first uses recorded,
and refused), since whatever was used just before could be replayed (RedisReplayStore).

The call is synchronous: the core asks inside the handshake, on the event loop's thread (the
asyncio and QUIC servers) or the connection's thread (the blocking server).  So:

- only the handshakes that can use it pay it: a ClientHello offering 0-RTT with a ticket that
  allows it, on a server that accepts early data, without an HRR, whose ticket age agrees with
  ours (``_accepts_early_data`` checks all that first); with ``replay_filter``, each
  ClientHello2 carrying a cookie.  Full handshakes, 1-RTT resumptions and HRRs never touch
  Redis.
- one round trip on a pooled connection (SET and the epoch's GET, pipelined: a median of
  0.06 ms on this machine's loopback, p99 0.1 ms), under ``timeout`` (default 50 ms) for the
  connect and for each reply; redis-py's retries are off (its default retries with backoff for
  seconds).
- when Redis fails (an error, a timeout), the store is *down*: it answers False at once, without
  I/O, and tries Redis again once per ``retry_interval`` (1 s).  A dead or silent Redis therefore
  stalls the loop for at most one probe a second (a connect plus its first commands, each under
  ``timeout``), not once per handshake.

Fail safe: any failure, and warming, answer False (for 0-RTT: the early data is refused, and
the handshake goes on in 1-RTT; never a replay accepted).  For cookies False means the
ClientHello2 is refused, so a Redis outage would refuse every client that goes through the
stateless HRR: the default (``fallback=None``) does so; an operator may prefer
``fallback=ReplayFilter(...)``, which answers from this process's own filter while Redis is down
(a replay to another server of the fleet may then pass: the cookie lifetime bounds it).  Never
give 0-RTT a fallback.

``stat_fields()`` is what the server's stat line shows (``ServerStats.sources``), e.g.
``replay_0rtt=down replay_0rtt_down_since=2025-06-01T12:00:00Z replay_0rtt_errors=3
replay_0rtt_refused=7 replay_0rtt_replays=1`` (the state is ``unknown``, ``up``, ``warming``
with ``_warm_until``, or ``down``); each change of state is also logged, once.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from stateless13 import LocalProtocolError, ReplayStore, ServerConfig

logger = logging.getLogger("stateless13.server")

#: Seconds for the connect and for each reply; over it the store is down (loopback and LAN
#: round trips are well under 1 ms).
DEFAULT_TIMEOUT = 0.05
#: Seconds between tries of a store that is down (all answers in between are False, at once).
DEFAULT_RETRY_INTERVAL = 1.0
#: One prefix per purpose: a ticket's early data and a cookie never share a key.
EARLY_DATA_PREFIX = "stateless13:0rtt:"
COOKIE_PREFIX = "stateless13:cookie:"


#: No CLIENT SETINFO round trips on connect either (newer redis-py calls the option driver_info,
#: older ones lib_name and lib_version).
_NO_CLIENT_INFO: dict[str, None] = (
    {"driver_info": None}
    if importlib.util.find_spec("redis.driver_info") is not None
    else {"lib_name": None, "lib_version": None}
)


def early_data_window(config: ServerConfig) -> float:
    """How long a ticket's early data must be remembered: the core accepts it while its ages
    agree within ``early_data_window`` either way (RFC 8446 §8.3), so a replay can come up to
    twice that after the first use; plus the fleet's clock skew (``cookie_clock_skew``) both
    ways, since each server measures ages with its own clock."""
    return 2 * config.early_data_window + 2 * config.cookie_clock_skew


def cookie_window(config: ServerConfig) -> float:
    """How long a cookie must be remembered: accepted while aged ``-cookie_clock_skew`` to
    ``cookie_lifetime`` on whichever server's clock, so up to lifetime + 2 x skew of real time."""
    return config.cookie_lifetime + 2 * config.cookie_clock_skew


def redis_client(url: str, timeout: float = DEFAULT_TIMEOUT) -> redis.Redis:
    """A blocking client for ``url`` (``redis://[[USER]:PASSWORD@]HOST:PORT/DB``, ``rediss://``
    for TLS, ``unix:///PATH?db=N``) as the store needs it: ``timeout`` for the connect and each
    reply, no retries, nothing asked on connect but what the URL needs (AUTH, SELECT).
    ValueError for a bad URL."""
    if timeout <= 0:
        raise LocalProtocolError("the replay store's timeout must be positive")
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
        protocol=2,  # RESP2: no HELLO round trip on connect (and any Redis speaks it)
        **_NO_CLIENT_INFO,
    )


def describe(url: str) -> str:
    """``url`` without its user name and password, for logs."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"unix:{parts.path}"
    host = parts.hostname or "localhost"
    port = parts.port or 6379
    return f"{parts.scheme}://{'[' + host + ']' if ':' in host else host}:{port}{parts.path}"


class RedisReplayStore:
    """``ReplayStore`` on Redis: ``first_use`` is ``SET <prefix><hash> 1 NX PX <window ms>``,
    True only when Redis says it set the key; False for a replay and, fail safe, for any error,
    timeout or a store that is down (or the ``fallback``'s answer then, for cookies only).

    A Redis that lost its keys (new, flushed, restarted without persistence: redis-py then
    reconnects without a word) cannot vouch for the last window: whatever was used then could
    be replayed.  So each SET goes with a GET of ``<prefix>epoch`` (one pipelined round trip), a
    key that the first server to find it missing sets to the time, never expiring: younger than
    a window, first uses are recorded but refused until it is a window old (*warming*).  An
    operator who knows that a new Redis lost nothing sets it to 0 (``SET stateless13:0rtt:epoch
    0``) and the servers trust it at once.

    ``client``: a ``redis.Redis`` (used as it is: give it a short socket timeout and no
    retries, as :func:`redis_client` does), or a URL for one made by :func:`redis_client` with
    ``timeout``.  Several stores (one per purpose) may share one client.  Thread-safe.
    """

    def __init__(
        self,
        client: redis.Redis | str,
        *,
        prefix: str,
        window: float,
        timeout: float = DEFAULT_TIMEOUT,
        retry_interval: float = DEFAULT_RETRY_INTERVAL,
        fallback: ReplayStore | None = None,
        name: str = "replay",
    ) -> None:
        if not prefix:
            raise LocalProtocolError("a replay store needs a prefix (one per purpose)")
        if window <= 0 or retry_interval < 0:
            raise LocalProtocolError("a replay store needs a positive window")
        if isinstance(client, str):
            self.description = describe(client)
            client = redis_client(client, timeout)
        else:  # host:port/db from its pool (never the password), if it has one
            pool = getattr(client, "connection_pool", None)
            kwargs = getattr(pool, "connection_kwargs", {})
            where = kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}"
            self.description = f"{where}/{kwargs.get('db', 0)}"
        self.client = client
        self.prefix = prefix
        self.epoch_key = prefix + "epoch"  # never a hash: those are 32 hex digits
        self.window = window
        self.window_ms = max(1, round(window * 1000))
        self.retry_interval = retry_interval
        self.fallback = fallback
        self.name = name
        self.clock: Callable[[], float] = time.monotonic  # the retries'; tests replace it
        self.wall: Callable[[], float] = time.time  # the epoch's; tests replace it
        #: None before the first answer, then whether the last try reached Redis.
        self.up: bool | None = None
        self.down_since: float | None = None  # wall time of the failure that took it down
        self.warm_until = 0.0  # wall time until which first uses are refused (see above)
        self.errors = 0  # failures: errors and timeouts (each one a try that did not answer)
        self.refused = 0  # first uses refused because the store could not vouch (fail safe)
        self.fallbacks = 0  # answers from the fallback instead
        self.replays = 0  # second uses that Redis saw
        self._retry_at = 0.0
        self._lock = threading.Lock()

    def key(self, value: bytes) -> str:
        """The Redis key of a ticket identity or cookie: a hash, never the value itself."""
        return self.prefix + hashlib.blake2b(value, digest_size=16).hexdigest()

    def first_use(self, key: bytes, now: float) -> bool:
        """Record ``key``; False if it was recorded within the window, or if the store cannot
        vouch for that (down, or warming)."""
        with self._lock:
            if self.up is False:
                if self.clock() < self._retry_at:
                    return self._cannot_tell(key, now)
                self._retry_at = self.clock() + self.retry_interval  # one probe at a time
        try:
            with self.client.pipeline(transaction=False) as pipe:
                pipe.set(self.key(key), 1, nx=True, px=self.window_ms)
                pipe.get(self.epoch_key)
                answer, epoch = pipe.execute()
            since = self._since(epoch)
        except Exception as error:  # anything: fail safe, never into the handshake
            with self._lock:
                self.errors += 1
                self._went_down(error)
                return self._cannot_tell(key, now)
        with self._lock:
            self._came_up(since)
            if answer is not True:
                self.replays += 1
                return False
            if self.wall() < self.warm_until:
                return self._cannot_tell(key, now)
            return True

    def ping(self) -> bool:
        """Whether Redis answers now; the state it leaves (up, warming or down) is logged."""
        try:
            since = self._since(self.client.get(self.epoch_key))
        except Exception as error:
            with self._lock:
                self.errors += 1
                self._went_down(error)
            return False
        with self._lock:
            self._came_up(since)
        return True

    def _since(self, epoch: object) -> float:
        """Since when Redis has held this purpose's keys, from ``epoch_key``'s value; set to
        now if it is missing (Redis is new or lost its keys)."""
        for _ in range(2):
            if epoch is not None:
                try:
                    return float(epoch)  # type: ignore[arg-type]
                except (TypeError, ValueError):  # not ours: trust nothing older than now
                    return self.wall()
            now = self.wall()
            if self.client.set(self.epoch_key, repr(now), nx=True) is True:
                return now
            epoch = self.client.get(self.epoch_key)  # another server set it meanwhile
        return self.wall()

    def _cannot_tell(self, key: bytes, now: float) -> bool:
        if self.fallback is not None:
            self.fallbacks += 1
            return self.fallback.first_use(key, now)
        self.refused += 1
        return False

    def _meanwhile(self) -> str:
        return "answered by this process's filter" if self.fallback else "refused"

    def _went_down(self, error: Exception) -> None:
        self._retry_at = self.clock() + self.retry_interval
        if self.up is not False:
            self.up = False
            self.down_since = self.wall()
            logger.warning(
                "replay store %s (%s) is down: %s; first uses %s until Redis answers again (a"
                " try every %gs)",
                self.name,
                self.description,
                _reason(error),
                self._meanwhile(),
                self.retry_interval,
            )

    def _came_up(self, since: float) -> None:
        if self.up is False and self.down_since is not None:
            logger.warning(
                "replay store %s (%s) answers again, after %.1fs down",
                self.name,
                self.description,
                self.wall() - self.down_since,
            )
        self.up = True
        self.down_since = None
        warm_until = since + self.window
        if warm_until != self.warm_until and warm_until > self.wall():
            logger.warning(
                "replay store %s (%s) has held its keys only since %s (new, or restarted without"
                " them): first uses %s until %s, a window later",
                self.name,
                self.description,
                _utc(since),
                self._meanwhile(),
                _utc(warm_until),
            )
        self.warm_until = warm_until

    def stat_fields(self) -> dict[str, object]:
        """The store's fields for the server's stat line (``ServerStats.sources``)."""
        name = f"replay_{self.name}"
        with self._lock:
            state = {None: "unknown", True: "up", False: "down"}[self.up]
            if self.up and self.wall() < self.warm_until:
                state = "warming"
            fields: dict[str, object] = {name: state}
            if self.down_since is not None:
                fields[f"{name}_down_since"] = _utc(self.down_since)
            if state == "warming":
                fields[f"{name}_warm_until"] = _utc(self.warm_until)
            fields[f"{name}_errors"] = self.errors
            fields[f"{name}_refused"] = self.refused
            if self.fallback is not None:
                fields[f"{name}_fallbacks"] = self.fallbacks
            fields[f"{name}_replays"] = self.replays
        return fields


def _utc(moment: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))


def _reason(error: Exception) -> str:
    text = str(error).rstrip(".")
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
