"""The shared replay store's logic (transports/redis_replay.py) over a fake Redis client: the
keys it writes, its answers, failing safe, the down state and its retries, the cookie fallback,
the stat line, the CLI options; and the core using it for 0-RTT and cookies, two "servers"
sharing one store.  Against a real Redis and real clients: tests/peers/test_redis_replay.py."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import time
import tomllib
from pathlib import Path
from typing import cast

import pytest
import redis

from stateless13 import (
    Accepted,
    AlertDescription,
    EarlyData,
    HelloRetry,
    Rejected,
    ReplayFilter,
    ServerConfig,
    stateless_accept,
)
from stateless13.transports import redis_replay
from stateless13.transports.cli import (
    REDIS_REQUIREMENT,
    CommandError,
    build_config,
    build_parser,
)
from stateless13.transports.common import ServerStats
from stateless13.transports.redis_replay import RedisReplayStore
from tests.helpers import PEER, PythonSSLClient
from tests.memory.test_early_data import CONFIG, EarlyClient, serve

ROOT = Path(__file__).resolve().parents[2]


class FakeRedis:
    """What the store uses of redis.Redis (``set``, ``get``, ``pipeline``) over a dict shared by
    every store given this client; ``fail`` makes each command raise it.  Its epochs are 0 (an
    operator's word that nothing was lost) unless ``lost_keys``: then missing, as in a new Redis.
    """

    def __init__(self, *, lost_keys: bool = False) -> None:
        self.keys: dict[str, object] = {}
        self.calls: list[tuple[object, ...]] = []
        self.fail: Exception | None = None
        self.lost_keys = lost_keys

    def set(
        self, name: str, value: object, *, nx: bool = False, px: int | None = None
    ) -> bool | None:
        self.calls.append(("SET", name, value, nx, px))
        if self.fail is not None:
            raise self.fail
        if nx and name in self.keys:
            return None
        self.keys[name] = value
        return True

    def get(self, name: str) -> bytes | None:
        self.calls.append(("GET", name))
        if self.fail is not None:
            raise self.fail
        if name in self.keys:
            return str(self.keys[name]).encode()
        return None if self.lost_keys or not name.endswith(":epoch") else b"0"

    def pipeline(self, transaction: bool) -> FakePipeline:
        assert not transaction
        return FakePipeline(self)


class FakePipeline:
    def __init__(self, redis: FakeRedis) -> None:
        self.redis = redis
        self.queued: list[tuple[str, tuple[object, ...], dict[str, object]]] = []

    def __enter__(self) -> FakePipeline:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.queued.clear()

    def set(self, *args: object, **kwargs: object) -> None:
        self.queued.append(("set", args, kwargs))

    def get(self, *args: object) -> None:
        self.queued.append(("get", args, {}))

    def execute(self) -> list[object]:
        return [getattr(self.redis, c)(*a, **k) for c, a, k in self.queued]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def store_on(
    fake: FakeRedis, prefix: str = "p:", **options: object
) -> tuple[RedisReplayStore, Clock]:
    store = RedisReplayStore(
        cast(redis.Redis, fake),
        prefix=prefix,
        window=options.pop("window", 30.0),  # type: ignore[arg-type]
        **options,  # type: ignore[arg-type]
    )
    clock = Clock()
    store.clock = store.wall = clock  # the retries' and the epoch's
    return store, clock


def sets(fake: FakeRedis) -> int:
    return sum(call[0] == "SET" for call in fake.calls)


def test_the_key_is_a_prefixed_hash_set_nx_with_the_window() -> None:
    fake = FakeRedis()
    store, _ = store_on(fake, "stateless13:0rtt:", window=30.0)
    secret_looking = b"the sealed ticket, never written as it is"
    assert store.first_use(secret_looking, 0.0)
    ((command, name, value, nx, px), epoch) = fake.calls  # one pipelined round trip
    assert command == "SET" and epoch == ("GET", "stateless13:0rtt:epoch")
    assert name == store.key(secret_looking)
    assert name.startswith("stateless13:0rtt:") and len(name) == len("stateless13:0rtt:") + 32
    assert secret_looking.hex() not in name and "sealed" not in name
    assert (value, nx, px) == (1, True, 30_000)


def test_first_use_then_refused_by_another_store_on_the_same_redis() -> None:
    """Two servers' stores on one Redis: whichever sees a key second refuses it; another
    purpose (another prefix) with the same bytes does not collide."""
    fake = FakeRedis()
    a, _ = store_on(fake)
    b, _ = store_on(fake)
    other_purpose, _ = store_on(fake, "q:")
    assert a.first_use(b"ticket", 0.0)
    assert not b.first_use(b"ticket", 0.0)
    assert not a.first_use(b"ticket", 0.0)
    assert other_purpose.first_use(b"ticket", 0.0)
    assert b.first_use(b"another ticket", 0.0)
    assert (a.replays, b.replays, a.errors, b.errors) == (1, 1, 0, 0)
    assert a.up is True


@pytest.mark.parametrize("answer", [None, "OK", b"OK", 1, False])
def test_only_redis_saying_it_set_the_key_is_a_first_use(answer: object) -> None:
    class Odd(FakeRedis):
        def set(
            self, name: str, value: object, *, nx: bool = False, px: int | None = None
        ) -> bool | None:
            return answer  # type: ignore[return-value]

    store, _ = store_on(Odd())
    assert not store.first_use(b"ticket", 0.0)


@pytest.mark.parametrize(
    "error",
    [
        redis.exceptions.ConnectionError("Connection refused"),
        redis.exceptions.TimeoutError("Timeout reading from socket"),
        redis.exceptions.ResponseError("OOM command not allowed"),
        OSError("anything else"),
        RuntimeError("even a bug of the client"),
    ],
    ids=["refused", "timeout", "error-reply", "oserror", "other"],
)
def test_any_failure_refuses_and_the_store_is_down(error: Exception) -> None:
    fake = FakeRedis()
    store, _ = store_on(fake, name="0rtt")
    fake.fail = error
    assert not store.first_use(b"ticket", 0.0)
    assert (store.up, store.errors, store.refused, store.replays) == (False, 1, 1, 0)
    fields = store.stat_fields()
    assert fields["replay_0rtt"] == "down"
    assert time.strptime(str(fields["replay_0rtt_down_since"]), "%Y-%m-%dT%H:%M:%SZ")


def test_a_store_that_is_down_answers_at_once_and_retries_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Down: no call to Redis until retry_interval has passed (the event loop does not wait on
    a dead Redis at every 0-RTT attempt); then one probe; back up, it answers again.  The state
    changes are logged once each, not per refusal."""
    fake = FakeRedis()
    store, clock = store_on(fake, name="0rtt", retry_interval=1.0)
    fake.fail = redis.exceptions.TimeoutError("Timeout reading from socket")
    with caplog.at_level(logging.WARNING, "stateless13.server"):
        assert not store.first_use(b"a", 0.0)
        for _ in range(5):
            clock.now += 0.1
            assert not store.first_use(b"b", 0.0)
        assert sets(fake) == 1  # only the first reached Redis
        clock.now += 0.6  # 1.1 s after the failure: one probe, which fails again
        assert not store.first_use(b"c", 0.0)
        assert not store.first_use(b"d", 0.0)
        assert sets(fake) == 2
        fake.fail = None
        clock.now += 1.0
        assert store.first_use(b"e", 0.0)  # the probe reaches Redis: up again
        assert store.first_use(b"f", 0.0)
        assert not store.first_use(b"f", 0.0)
    assert (store.errors, store.refused, store.replays) == (2, 8, 1)
    assert store.stat_fields() == {
        "replay_0rtt": "up",
        "replay_0rtt_errors": 2,
        "replay_0rtt_refused": 8,
        "replay_0rtt_replays": 1,
    }
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    assert messages[0].startswith("replay store 0rtt (None:None/0) is down: TimeoutError: ")
    assert "first uses refused until Redis answers again (a try every 1s)" in messages[0]
    assert "answers again, after" in messages[1]


def test_a_redis_that_lost_its_keys_is_not_trusted_for_a_window(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No epoch (a new Redis, or one restarted without its keys): whatever was used in the last
    window could be replayed, so first uses are recorded but refused (warming) until the epoch
    the store sets now is a window old; a replay meanwhile is still a replay."""
    fake = FakeRedis(lost_keys=True)
    store, clock = store_on(fake, "stateless13:0rtt:", name="0rtt", window=30.0)
    with caplog.at_level(logging.WARNING, "stateless13.server"):
        assert not store.first_use(b"a", 0.0)
        assert fake.keys["stateless13:0rtt:epoch"] == repr(clock.now)  # never expires
        assert store.stat_fields() == {
            "replay_0rtt": "warming",
            "replay_0rtt_warm_until": "1970-01-01T00:17:10Z",  # 1030 s
            "replay_0rtt_errors": 0,
            "replay_0rtt_refused": 1,
            "replay_0rtt_replays": 0,
        }
        clock.now += 29.9
        assert not store.first_use(b"b", 0.0)
        clock.now += 0.1
        assert not store.first_use(b"a", 0.0)  # recorded while warming: a replay
        assert store.first_use(b"c", 0.0)
    assert (store.refused, store.replays) == (2, 1)
    assert store.stat_fields()["replay_0rtt"] == "up"
    (message,) = [r.getMessage() for r in caplog.records]
    assert message == (
        "replay store 0rtt (None:None/0) has held its keys only since 1970-01-01T00:16:40Z (new,"
        " or restarted without them): first uses refused until 1970-01-01T00:17:10Z, a window"
        " later"
    )


def test_the_epoch_another_server_set_or_the_operator_s_word() -> None:
    """The epoch is read at every use: set 10 s ago by another server, 20 s of warming are
    left; set to 0 by an operator who knows the new Redis lost nothing, trusted at once."""
    fake = FakeRedis(lost_keys=True)
    store, clock = store_on(fake, name="0rtt", window=30.0)
    fake.keys["p:epoch"] = repr(clock.now - 10)
    assert not store.first_use(b"a", 0.0)
    assert store.warm_until == clock.now + 20
    fake.keys["p:epoch"] = "0"
    assert store.first_use(b"b", 0.0)
    fake.keys["p:epoch"] = "not a time"  # not ours: trusted for nothing older than now
    assert not store.first_use(b"c", 0.0)


def test_a_cookie_store_may_fall_back_to_this_process_s_filter() -> None:
    """fail-open for cookies: while Redis is down, the process's own filter answers (a replay
    to this server is still refused); counted as fallbacks, not refusals."""
    fake = FakeRedis()
    store, _ = store_on(fake, name="cookie", fallback=ReplayFilter(bits=1 << 12, window=40))
    fake.fail = redis.exceptions.ConnectionError("Connection refused")
    assert store.first_use(b"cookie", 100.0)
    assert not store.first_use(b"cookie", 101.0)
    assert store.stat_fields()["replay_cookie_fallbacks"] == 2
    assert store.refused == 0


def test_ping_reports_and_sets_the_state() -> None:
    fake = FakeRedis()
    store, _ = store_on(fake)
    assert store.stat_fields()["replay_replay"] == "unknown"
    assert store.ping() and store.up is True
    fake.fail = redis.exceptions.ConnectionError("Connection refused")
    assert not store.ping() and store.up is False and store.errors == 1


def test_bad_settings_are_refused() -> None:
    fake = cast(redis.Redis, FakeRedis())
    with pytest.raises(ValueError, match="prefix"):
        RedisReplayStore(fake, prefix="", window=1.0)
    with pytest.raises(ValueError, match="window"):
        RedisReplayStore(fake, prefix="p:", window=0.0)
    with pytest.raises(ValueError, match="timeout"):
        RedisReplayStore("redis://127.0.0.1:6379/0", prefix="p:", window=1.0, timeout=0)


def test_the_client_made_from_a_url_has_short_timeouts_and_no_retries() -> None:
    """redis-py's defaults (5 s timeouts, retries with backoff) would hold a handshake, and the
    event loop, for seconds: the store's own client has neither."""
    store = RedisReplayStore(
        "redis://user:hunter2@127.0.0.1:6390/2", prefix="p:", window=1.0, timeout=0.05
    )
    kwargs = store.client.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == kwargs["socket_connect_timeout"] == 0.05
    assert kwargs["retry"].get_retries() == 0 and kwargs["protocol"] == 2
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("127.0.0.1", 6390, 2)
    assert store.description == "redis://127.0.0.1:6390/2"  # no password in logs
    assert redis_replay.describe("unix:///run/redis.sock?db=1") == "unix:/run/redis.sock"
    assert redis_replay.describe("rediss://:pw@[::1]:7000/0") == "rediss://[::1]:7000/0"


def test_windows_cover_what_the_core_accepts() -> None:
    config = ServerConfig.self_signed("localhost", early_data=1000)
    # |our age - client's age| <= 10 s: a replay can come 20 s after, plus 5 s skew both ways
    assert redis_replay.early_data_window(config) == 30.0
    assert redis_replay.cookie_window(config) == 40.0  # 30 s lifetime + 5 s skew both ways


def test_the_stat_line_shows_the_stores_fields() -> None:
    fake = FakeRedis()
    store, _ = store_on(fake, name="0rtt")
    stats = ServerStats()
    stats.sources.append(store.stat_fields)
    fake.fail = redis.exceptions.ConnectionError("Connection refused")
    store.first_use(b"ticket", 0.0)
    line = ServerStats.line(stats.snapshot(open=0))
    assert line.startswith("stats tcp: completed=0 ")
    assert " open=0 replay_0rtt=down replay_0rtt_down_since=" in line
    assert line.endswith(" replay_0rtt_errors=1 replay_0rtt_refused=1 replay_0rtt_replays=0")
    assert "replay" not in ServerStats.line(ServerStats().snapshot())  # nothing added otherwise


# --- the core with the store: 0-RTT and cookies, two servers sharing one Redis ------------------


def test_a_tickets_early_data_accepted_by_one_server_is_refused_by_another() -> None:
    """Two servers (two configs, the same ticket keys) each with its own store on one Redis:
    the 0-RTT data the first accepted is skipped by the second, which resumes in 1-RTT."""
    fake = FakeRedis()
    first = dataclasses.replace(CONFIG, early_data_replay=store_on(fake)[0])
    second = dataclasses.replace(CONFIG, early_data_replay=store_on(fake)[0])
    client = EarlyClient(CONFIG)
    _, events, early = serve(first, client.hello(), client.early_data(b"GET /"))
    assert early and events == [EarlyData(b"GET /")]
    _, events, early = serve(second, client.hello(), client.early_data(b"GET /"))
    assert not early and events == []


def test_a_store_that_is_down_refuses_0rtt_and_the_handshake_goes_on() -> None:
    fake = FakeRedis()
    store, _ = store_on(fake)
    fake.fail = redis.exceptions.TimeoutError("Timeout reading from socket")
    config = dataclasses.replace(CONFIG, early_data_replay=store)
    client = EarlyClient(CONFIG)
    _, events, early = serve(config, client.hello(), client.early_data(b"GET /"))
    assert not early and events == []  # skipped; the server's flight went out (1-RTT)
    assert store.refused == 1


def cookie_flight(config: ServerConfig) -> bytes:
    """A ClientHello2 with a cookie from ``config``'s server."""
    client = PythonSSLClient()
    retry = stateless_accept(config, client.step(), peer=PEER, now=time.time())
    assert isinstance(retry, HelloRetry)
    return client.step(retry.data_to_send)


def test_a_cookie_accepted_by_one_server_is_refused_by_another() -> None:
    fake = FakeRedis()
    first = ServerConfig.self_signed("localhost", replay_filter=store_on(fake)[0])
    second = dataclasses.replace(first, replay_filter=store_on(fake)[0])
    ch2 = cookie_flight(first)
    now = time.time()
    assert isinstance(stateless_accept(first, ch2, peer=PEER, now=now), Accepted)
    replay = stateless_accept(second, ch2, peer=PEER, now=now)
    assert isinstance(replay, Rejected)
    assert replay.error.description == AlertDescription.illegal_parameter


@pytest.mark.parametrize("fail_open", [False, True], ids=["fail-closed", "fail-open"])
def test_cookies_while_the_store_is_down(fail_open: bool) -> None:
    """Fail closed (the default): every ClientHello2 is refused while Redis is down.  Fail open:
    this process's filter answers, so the first use passes and a replay to it does not."""
    fake = FakeRedis()
    fallback = ReplayFilter(bits=1 << 12, window=40) if fail_open else None
    config = ServerConfig.self_signed(
        "localhost", replay_filter=store_on(fake, fallback=fallback)[0]
    )
    ch2 = cookie_flight(config)
    fake.fail = redis.exceptions.ConnectionError("Connection refused")
    now = time.time()
    result = stateless_accept(config, ch2, peer=PEER, now=now)
    assert isinstance(result, Accepted if fail_open else Rejected)
    assert isinstance(stateless_accept(config, ch2, peer=PEER, now=now), Rejected)


# --- stateless13 serve --replay-store -----------------------------------------------------------


def closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def config_for(*argv: str) -> ServerConfig:
    args = build_parser().parse_args(["serve", *argv])
    args.mode = "http"
    args.backend = None
    with contextlib.ExitStack() as cleanup:
        return build_config(args, cleanup)[0]


def test_the_cli_wires_the_stores(caplog: pytest.LogCaptureFixture) -> None:
    """--replay-store with --early-data: 0-RTT on Redis (30 s window); --replay-cookies: cookies
    too (40 s), fail-open with this process's filter behind.  A Redis that does not answer at
    start is logged, and the server starts all the same (fail safe)."""
    url = f"redis://127.0.0.1:{closed_port()}/0"
    with caplog.at_level(logging.WARNING, "stateless13.server"):
        config = config_for("--early-data", "100", "--replay-store", url)
    store = config.early_data_replay
    assert isinstance(store, RedisReplayStore)
    assert (store.prefix, store.window_ms, store.fallback) == ("stateless13:0rtt:", 30_000, None)
    assert config.replay_filter is None and store.up is False
    assert f"replay store 0rtt ({url}) is down" in caplog.text

    config = config_for("--replay-store", url, "--replay-cookies", "fail-open")
    cookies = config.replay_filter
    assert isinstance(cookies, RedisReplayStore)
    assert (cookies.prefix, cookies.window_ms) == ("stateless13:cookie:", 40_000)
    assert isinstance(cookies.fallback, ReplayFilter)
    assert not isinstance(config.early_data_replay, RedisReplayStore)
    config = config_for(
        "--early-data", "1", "--replay-store", url, "--replay-cookies", "fail-closed"
    )
    assert isinstance(config.replay_filter, RedisReplayStore)
    assert config.replay_filter.fallback is None
    assert config.replay_filter.client is cast(RedisReplayStore, config.early_data_replay).client


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--replay-cookies", "fail-closed"], "--replay-cookies goes with --replay-store"),
        (["--replay-store", "redis://127.0.0.1:1/0"], "--replay-store goes with --early-data"),
        (["--early-data", "1", "--replay-store", "http://x:1/"], "--replay-store: Redis URL must"),
    ],
    ids=["cookies-alone", "store-alone", "bad-url"],
)
def test_cli_misuse_is_one_line(argv: list[str], message: str) -> None:
    with pytest.raises(CommandError) as raised:
        config_for(*argv)
    assert str(raised.value).startswith(message), raised.value


def test_the_fleet_extra_is_what_the_cli_asks_for_and_the_tests_install() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert extras["fleet"] == [REDIS_REQUIREMENT]
    assert REDIS_REQUIREMENT in extras["test"]


def test_the_parser_documents_the_options() -> None:
    parser = build_parser()
    serve_parser = next(
        a for a in parser._actions if isinstance(a, argparse._SubParsersAction)
    ).choices["serve"]
    text = serve_parser.format_help()
    assert "--replay-store URL" in text and "fail-closed" in text and "fail-open" in text
