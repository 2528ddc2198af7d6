"""The replay store shared by a fleet (transports/redis_replay.py) against a real Redis, and
``stateless13 serve --replay-store`` processes sharing it, with openssl s_client as the client.

Each test starts its own ``redis-server`` (Debian's; ./run-tests installs it) on a free port of
127.0.0.1, saving nothing, and stops it by its PID; a Redis that does not start fails the test.
What is proven, from the servers' own reports (``resumed=0rtt`` against ``resumed=yes``):

- a ticket's 0-RTT data accepted by one process is refused by another that shares the Redis
  and the ticket keys (and, the control, accepted by both without the shared store);
- with Redis stopped mid-run, 0-RTT is refused, the handshake completes in 1-RTT, and the stat
  line says ``replay_0rtt=down`` with the errors and refusals; started again, 0-RTT is back;
- Redis restarted empty between two uses (redis-py reconnects without an error): the replay of
  the 0-RTT accepted before is refused (the store warms for a window) until an operator vouches;
- a "Redis" that accepts the connection and never answers costs one bounded timeout (50 ms),
  not a hung handshake;
- cookies (``--replay-cookies``): a ClientHello2 accepted by one process is refused by another;
  while Redis is down, fail-closed refuses every ClientHello2, fail-open lets them through.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from stateless13.transports.redis_replay import RedisReplayStore
from tests.helpers import PythonSSLClient, read_record, read_until_closed
from tests.peers.test_cli import REQUEST, CliServer, Serve, assert_page, s_client
from tests.peers.test_cli import serve as serve  # the fixture: `serve(args)` starts the CLI
from tests.servers import PAGE_TEXT, require_peer

START_TIMEOUT = 10.0
ILLEGAL_PARAMETER = bytes([21, 3, 3, 0, 2, 2, 47])  # a fatal illegal_parameter alert record


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


#: The epochs an operator sets to 0 on a new Redis to say it lost nothing (RedisReplayStore).
EPOCHS = ("stateless13:0rtt:epoch", "stateless13:cookie:epoch")


class RedisServer:
    """``redis-server`` on 127.0.0.1:``port``, saving nothing, its log in ``directory``; up
    (answering PING) when the constructor returns, or the test fails.  ``vouched``: the epochs
    set to 0, as an operator would for a Redis that lost nothing (else the stores warm for a
    window before they accept a first use)."""

    def __init__(self, directory: Path, port: int | None = None, vouched: bool = True) -> None:
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log = directory / f"redis-{self.port}.log"
        command = [require_peer("redis-server"), "--port", str(self.port)]
        command += ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        command += ["--dir", str(directory), "--logfile", str(self.log), "--daemonize", "no"]
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        with self.client() as client:
            while True:
                try:
                    if client.ping():
                        break
                except redis.exceptions.ConnectionError:
                    pass
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    log = self.log.read_text() if self.log.exists() else "(no log)"
                    pytest.fail(f"redis-server on port {self.port} did not start:\n{log}")
                time.sleep(0.05)
            if vouched:
                self.vouch(client)

    @staticmethod
    def vouch(client: redis.Redis) -> None:
        for epoch in EPOCHS:
            client.set(epoch, 0)

    def stop(self) -> None:
        """SIGTERM to its PID, then SIGKILL if it lingers."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(START_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(START_TIMEOUT)

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)


def redis_keys(server: RedisServer, pattern: str) -> list[str]:
    with server.client() as client:
        keys = client.keys(pattern)
    return sorted(k.decode() if isinstance(k, bytes) else str(k) for k in keys)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def silent_server() -> Iterator[socket.socket]:
    """A listening socket that never accepts nor answers: the kernel completes the TCP
    handshake (the backlog), so a client connects, writes its command and waits."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock


# --- the store itself -------------------------------------------------------------------------


def test_first_use_then_refused_across_two_stores(redis_server: RedisServer) -> None:
    """Two stores with their own clients (two servers' worth) on one Redis: the second use is
    refused whichever store sees it; Redis holds a hash under the prefix, expiring with the
    window, never the value."""
    a = RedisReplayStore(redis_server.url, prefix="stateless13:0rtt:", window=30.0)
    b = RedisReplayStore(redis_server.url, prefix="stateless13:0rtt:", window=30.0)
    value = b"sealed-ticket-identity"
    assert a.first_use(value, time.time())
    assert not b.first_use(value, time.time())
    assert not a.first_use(value, time.time())
    assert b.first_use(b"another ticket", time.time())
    cookies = RedisReplayStore(redis_server.url, prefix="stateless13:cookie:", window=40.0)
    assert cookies.first_use(value, time.time())  # another purpose: another key
    keys = [k for k in redis_keys(redis_server, "*") if k not in EPOCHS]
    assert len(keys) == 3 and a.key(value) in keys and cookies.key(value) in keys, keys
    assert all(re.fullmatch(r"stateless13:(0rtt|cookie):[0-9a-f]{32}", k) for k in keys), keys
    assert not [k for k in keys if "sealed" in k or value.hex() in k]
    with redis_server.client() as client:
        assert 29_000 < client.pttl(a.key(value)) <= 30_000
        assert 39_000 < client.pttl(cookies.key(value)) <= 40_000
    assert (a.up, a.replays, b.replays, a.errors + b.errors) == (True, 1, 1, 0)


def test_a_key_expires_after_the_window(redis_server: RedisServer) -> None:
    store = RedisReplayStore(redis_server.url, prefix="stateless13:0rtt:", window=0.2)
    assert store.first_use(b"x", 0.0)
    assert not store.first_use(b"x", 0.0)
    time.sleep(0.4)
    assert store.first_use(b"x", 0.0)


def test_a_redis_that_never_answers_costs_one_bounded_timeout(
    silent_server: socket.socket,
) -> None:
    """The client connects (the backlog), sends SET with the hashed key, and gives up after the
    50 ms timeout: refused, the store down; the next answers come at once, without I/O, until
    the retry interval has passed."""
    port = silent_server.getsockname()[1]
    store = RedisReplayStore(f"redis://127.0.0.1:{port}/0", prefix="t:", window=5.0)
    started = time.monotonic()
    assert not store.first_use(b"ticket", 0.0)
    first = time.monotonic() - started
    assert 0.04 < first < 0.5, first
    assert (store.up, store.errors, store.refused) == (False, 1, 1)
    started = time.monotonic()
    for _ in range(100):
        assert not store.first_use(b"ticket", 0.0)
    assert time.monotonic() - started < 0.05  # 100 refusals, no network
    assert store.refused == 101 and store.errors == 1
    connection, _ = silent_server.accept()
    with connection:
        connection.settimeout(1)
        sent = connection.recv(65536)
    # SET NX PX and GET of the epoch, in one write (one round trip), the key hashed
    assert sent.startswith(b"*6\r\n$3\r\nSET\r\n") and b"NX" in sent, sent
    assert store.key(b"ticket").encode() in sent and sent.endswith(
        b"$3\r\nGET\r\n$7\r\nt:epoch\r\n"
    )
    assert b"ticket\r\n" not in sent


# --- stateless13 serve: two processes, one Redis ---------------------------------------------


def zero_rtt(
    server: CliServer, session: Path, request: Path, *, accepted: bool, log_index: int
) -> re.Match[str]:
    """s_client resumes ``session`` on ``server`` with its request as 0-RTT data; the page comes
    back either way (sent again after the handshake if the early data was refused).  The
    server's ``log_index``-th log line (from 1), which says how the connection resumed."""
    again = b"" if accepted else REQUEST
    run = s_client(server, "-sess_in", str(session), "-early_data", str(request), request=again)
    assert run.returncode == 0, run.stdout + run.stderr
    verdict = "Early data was accepted" if accepted else "Early data was rejected"
    assert verdict in run.stdout and PAGE_TEXT in run.stdout, run.stdout
    assert "Reused, TLSv1.3" in run.stdout, run.stdout
    log = server.log_lines(log_index)[log_index - 1]
    assert log["error"] is None and log["hrr"] == "no", log[0]
    assert log["resumed"] == ("0rtt" if accepted else "yes"), log[0]
    return log


def new_session(server: CliServer, session: Path) -> None:
    """A full handshake with s_client, which keeps a ticket in ``session``."""
    run = s_client(server, "-sess_out", str(session))
    assert_page(run)
    assert "Post-Handshake New Session Ticket arrived" in run.stdout, run.stdout


def zero_rtt_server(serve: Serve, keys: Path, *options: str) -> CliServer:
    return serve(
        ["--validation", "none", "--early-data", "16384", "--ticket-key-file", str(keys), *options]
    )


@pytest.mark.parametrize("shared", [True, False], ids=["shared-store", "per-process-control"])
def test_0rtt_accepted_by_one_process_is_refused_by_another(
    serve: Serve, redis_server: RedisServer, tmp_path: Path, shared: bool
) -> None:
    """Two ``serve --early-data`` processes with one ticket key file.  A ticket's 0-RTT data
    accepted by A (``resumed=0rtt``), replayed by the same client state to B: with the shared
    store B refuses it and resumes in 1-RTT (``resumed=yes``); without it (the control, the
    in-process filter of each) B accepts it again, which is the replay the store prevents."""
    keys, session, request = tmp_path / "tickets.keys", tmp_path / "s.pem", tmp_path / "req"
    request.write_bytes(REQUEST)
    options = ["--replay-store", redis_server.url] if shared else []
    a = zero_rtt_server(serve, keys, *options)
    b = zero_rtt_server(serve, keys, *options)
    new_session(a, session)
    zero_rtt(a, session, request, accepted=True, log_index=2)
    zero_rtt(b, session, request, accepted=not shared, log_index=1)
    if shared:
        (key,) = set(redis_keys(redis_server, "stateless13:0rtt:*")) - set(EPOCHS)
        assert re.fullmatch(r"stateless13:0rtt:[0-9a-f]{32}", key), key
    a.stop()
    b.stop()


def stat_line(server: CliServer, pattern: str) -> str:
    return server.wait_for(server.stderr, r"stats tcp: .*" + pattern)[0]


def test_redis_stopped_mid_run_refuses_0rtt_and_the_stat_line_says_so(
    serve: Serve, redis_server: RedisServer, tmp_path: Path
) -> None:
    """0-RTT accepted while Redis runs; Redis stopped (SIGTERM to its PID): the next ticket's
    0-RTT is refused, its handshake completes in 1-RTT, the stat line shows the store down,
    since when, its errors and refusals, and one warning says why; Redis started again on the
    same port (its epochs vouched for, as if it had kept its keys): the next attempt after
    the retry interval (1 s) reaches it, 0-RTT is back."""
    keys, request = tmp_path / "tickets.keys", tmp_path / "req"
    request.write_bytes(REQUEST)
    server = zero_rtt_server(
        serve, keys, "--replay-store", redis_server.url, "--stats-interval", "0.2"
    )
    sessions = [tmp_path / f"session{i}.pem" for i in range(3)]
    for session in sessions:  # full handshakes: they never ask Redis
        new_session(server, session)
    zero_rtt(server, sessions[0], request, accepted=True, log_index=4)
    stat_line(server, r"replay_0rtt=up replay_0rtt_errors=0 replay_0rtt_refused=0 ")

    redis_server.stop()
    zero_rtt(server, sessions[1], request, accepted=False, log_index=5)
    line = stat_line(
        server,
        r"replay_0rtt=down replay_0rtt_down_since=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
        r" replay_0rtt_errors=1 replay_0rtt_refused=1 replay_0rtt_replays=0$",
    )
    assert "completed=5 " in line and "resumed=2 " in line, line
    server.wait_for(
        server.stderr,
        rf"replay store 0rtt \(redis://127\.0\.0\.1:{redis_server.port}/0\) is down: "
        r"ConnectionError: .*; first uses refused until Redis answers again",
    )

    restarted = RedisServer(tmp_path, redis_server.port)
    try:
        time.sleep(1.2)  # the retry interval since the failure
        zero_rtt(server, sessions[2], request, accepted=True, log_index=6)
        stat_line(server, r"replay_0rtt=up replay_0rtt_errors=1 replay_0rtt_refused=1 ")
        server.wait_for(server.stderr, r"replay store 0rtt .* answers again, after [\d.]+s down")
    finally:
        restarted.stop()
    server.stop()


def test_a_redis_restarted_without_its_keys_does_not_let_a_replay_through(
    serve: Serve, redis_server: RedisServer, tmp_path: Path
) -> None:
    """The replay a store must not miss: 0-RTT accepted, then Redis restarted empty between two
    uses (redis-py reconnects without an error), then the same 0-RTT again.  Its key is gone,
    but so is the epoch: the store warms (records, refuses) for a window, so the replay
    resumes in 1-RTT and the stat line says warming; once an operator vouches for the new
    Redis (epoch 0), a new ticket's 0-RTT is accepted."""
    keys, request = tmp_path / "tickets.keys", tmp_path / "req"
    request.write_bytes(REQUEST)
    server = zero_rtt_server(
        serve, keys, "--replay-store", redis_server.url, "--stats-interval", "0.2"
    )
    first, second = tmp_path / "first.pem", tmp_path / "second.pem"
    new_session(server, first)
    new_session(server, second)
    zero_rtt(server, first, request, accepted=True, log_index=3)
    redis_server.stop()
    restarted = RedisServer(tmp_path, redis_server.port, vouched=False)
    try:
        zero_rtt(server, first, request, accepted=False, log_index=4)  # the replay
        stat_line(server, r"replay_0rtt=warming replay_0rtt_warm_until=\S+Z .*"
                  r"replay_0rtt_refused=1 replay_0rtt_replays=0$")  # fmt: skip
        server.wait_for(
            server.stderr,
            r"replay store 0rtt .* has held its keys only since \S+ \(new, or restarted without"
            r" them\): first uses refused until \S+, a window later",
        )
        with restarted.client() as client:
            RedisServer.vouch(client)
        zero_rtt(server, second, request, accepted=True, log_index=5)
        stat_line(server, r"replay_0rtt=up .*replay_0rtt_refused=1 replay_0rtt_replays=0$")
    finally:
        restarted.stop()
    server.stop()


def test_a_redis_that_never_answers_does_not_hold_the_handshake(
    serve: Serve, silent_server: socket.socket, tmp_path: Path
) -> None:
    """``--replay-store`` pointing at a socket that never answers: the server starts (its PING
    times out: logged), full handshakes never wait on it, and a 0-RTT attempt after the retry
    interval pays one 50 ms timeout, is refused and completes in 1-RTT."""
    keys, session, request = tmp_path / "tickets.keys", tmp_path / "s.pem", tmp_path / "req"
    request.write_bytes(REQUEST)
    url = f"redis://127.0.0.1:{silent_server.getsockname()[1]}/0"
    server = zero_rtt_server(serve, keys, "--replay-store", url, "--stats-interval", "0.2")
    server.wait_for(server.stderr, r"replay store 0rtt .* is down: TimeoutError: ")
    new_session(server, session)
    time.sleep(1.1)  # past the retry interval: the 0-RTT attempt probes the silent socket
    log = zero_rtt(server, session, request, accepted=False, log_index=2)
    handshake_ms = float(re.search(r"handshake=([\d.]+)ms", log[0])[1])  # type: ignore[index]
    assert 50 <= handshake_ms < 1000, log[0]
    stat_line(server, r"replay_0rtt=down .* replay_0rtt_errors=2 replay_0rtt_refused=1 ")
    server.stop()


# --- cookies --------------------------------------------------------------------------------------


def cookie_server(serve: Serve, keys: Path, url: str, mode: str) -> CliServer:
    options = ["--validation", "hrr", "--cookie-key-file", str(keys), "--replay-store", url]
    return serve([*options, "--replay-cookies", mode, "--stats-interval", "0.2"])


def test_a_cookie_accepted_by_one_process_is_refused_by_another(
    serve: Serve, redis_server: RedisServer, tmp_path: Path
) -> None:
    """``--replay-cookies``: ClientHello2 completes on A; the same bytes sent to B (same cookie
    keys) are refused with illegal_parameter, and B says why."""
    keys = tmp_path / "cookie.keys"
    a = cookie_server(serve, keys, redis_server.url, "fail-closed")
    b = cookie_server(serve, keys, redis_server.url, "fail-closed")
    client = PythonSSLClient(server_hostname="localhost")
    with socket.create_connection((a.host, a.port), timeout=10) as to_a:
        to_a.sendall(client.step())
        client_hello_2 = client.step(read_record(to_a))
        to_a.sendall(client_hello_2)
        while not client.handshake_done:
            data = to_a.recv(65536)
            assert data, "A closed during the handshake"
            finished = client.step(data)
        to_a.sendall(finished + client.send(REQUEST))
        read_until_closed(to_a)
    (log,) = a.log_lines()
    assert log["cookie"] == "verified" and log["error"] is None, log[0]

    with socket.create_connection((b.host, b.port), timeout=10) as to_b:
        to_b.sendall(client_hello_2)  # a replay, to another server of the fleet
        assert read_until_closed(to_b).startswith(ILLEGAL_PARAMETER)
    (log,) = b.log_lines()
    assert log["error"] == "'illegal_parameter: cookie already used (replay)'", log[0]
    stat_line(b, r"replay_cookie=up replay_cookie_errors=0 replay_cookie_refused=0 "
              r"replay_cookie_replays=1$")  # fmt: skip
    a.stop()
    b.stop()


def test_cookies_while_redis_is_down_fail_closed_or_open(
    serve: Serve, redis_server: RedisServer, tmp_path: Path
) -> None:
    """Redis stopped: a fail-closed server refuses the ClientHello2 of an honest client (the
    price of never accepting a cookie twice), a fail-open one answers from its own filter and
    the client gets the page; both stat lines say the store is down."""
    keys = tmp_path / "cookie.keys"
    closed = cookie_server(serve, keys, redis_server.url, "fail-closed")
    opened = cookie_server(serve, keys, redis_server.url, "fail-open")
    redis_server.stop()
    run = s_client(closed)
    assert "Cipher is (NONE)" in run.stdout and PAGE_TEXT not in run.stdout, run.stdout
    assert "illegal parameter" in run.stderr, run.stderr  # our alert, as OpenSSL names it
    (log,) = closed.log_lines()
    assert log["error"] == "'illegal_parameter: cookie already used (replay)'", log[0]
    stat_line(closed, r"replay_cookie=down .* replay_cookie_errors=1 replay_cookie_refused=1 ")
    assert_page(s_client(opened))
    (log,) = opened.log_lines()
    assert log["cookie"] == "verified" and log["error"] is None, log[0]
    stat_line(opened, r"replay_cookie=down .* replay_cookie_refused=0 replay_cookie_fallbacks=1 ")
    closed.stop()
    opened.stop()
