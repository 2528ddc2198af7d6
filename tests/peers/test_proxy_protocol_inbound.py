"""PROXY protocol on the TCP listener (issue 17, item 4): behind a balancer, the client its
header names is the peer, for the cookie, the per-source limit, the report and the log line.

Loopback has every address of 127.0.0.0/8: the balancer is 127.0.0.1 (the one address listed
in ``Limits.proxy_protocol_from``), real clients connect from 127.0.0.2 and 127.0.0.3.

* Both socket loops (asyncio and blocking), through raw sockets: a v2 header made by our own
  encoder and a v1 line made by hand (in fragments) before a real TLS client (Python's ssl)
  going through the stateless HRR; a balancer that sends no header, garbage, or half a header
  (closed without a TLS alert; cut at the handshake timeout); a header from an address that is
  not listed (a TLS alert, as any garbage); a health check; the cookie bound to the client the
  header names (ClientHello2 replayed under another client's header fails); the per-source limit
  counting the clients behind the balancer, not the balancer.
* ``stateless13 serve --proxy-protocol-from`` fetched by curl's ``--haproxy-protocol`` (v1; this
  curl has no ``--haproxy-clientip``), and by curl from an unlisted address, with and without
  the header.
* An unmodified nginx (Debian's, its stream module, ``proxy_protocol on``: a v1 line) in front
  of our server, started by the test with its own configuration and stopped by its PID: the
  report's peer is the client's own address and port as nginx saw it, the cookie binds it, and
  the per-source limit counts the clients behind nginx.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from stateless13 import Credential, ServerConfig
from stateless13.transports import blocking
from stateless13.transports.asyncio_tcp import TLSStream
from stateless13.transports.common import ConnectionReport, HandshakeError, Limits
from stateless13.transports.proxy_protocol import parse_networks, proxy_v2_header
from tests.helpers import PythonSSLClient, read_record, read_until_closed
from tests.peers.test_proxy import FrontDoor, curl
from tests.servers import PAGE_TEXT, RunningServer, ServerFactory, http_handler, require_peer

BALANCER = "127.0.0.1"
CLIENT_A, CLIENT_B = "127.0.0.2", "127.0.0.3"
REQUEST = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
SHORT = 0.5  # the handshake timeout of the tests that wait for it
SLACK = 3.0
NGINX_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")  # libnginx-mod-stream
ROOT = Path(__file__).resolve().parents[2]


def balancer_limits(**changes: object) -> Limits:
    return Limits(proxy_protocol_from=parse_networks(BALANCER), **changes)  # type: ignore[arg-type]


# --- The two servers, with a handler that says who it thinks the client is -------------------


def describe(peer: tuple[str, int], via: tuple[str, int] | None) -> str:
    return f"peer={peer[0]}:{peer[1]} via={'-' if via is None else f'{via[0]}:{via[1]}'}"


def response(text: str) -> bytes:
    body = text.encode()
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
    return head + body


async def whoami(stream: TLSStream) -> None:
    request = b""
    while b"\r\n\r\n" not in request:
        data = await stream.read()
        if not data:
            return
        request += data
    local = stream.local_address
    stream.write(response(f"{describe(stream.peer, stream.via)} local={local[0]}:{local[1]}"))
    await stream.close()


def blocking_whoami(stream: blocking.BlockingTLSStream) -> None:
    request = b""
    while b"\r\n\r\n" not in request:
        data = stream.recv()
        if not data:
            return
        request += data
    stream.sendall(response(describe(stream.peer, stream.via)))
    stream.close()


Starter = Callable[..., RunningServer]  # start(limits=..., page=False)


@pytest.fixture(params=["asyncio", "blocking"])
def start(
    request: pytest.FixtureRequest, tls_server: ServerFactory, tmp_path: Path
) -> Iterator[Starter]:
    """``start(limits=balancer_limits(), page=False)``: the server through the stateless HRR,
    answering ``whoami`` (or the page)."""
    if request.param == "asyncio":

        def start_asyncio(*, limits: Limits | None = None, page: bool = False) -> RunningServer:
            handler = http_handler if page else whoami
            return tls_server(limits=limits or balancer_limits(), handler=handler)

        yield start_asyncio
        return
    started: list[tuple[blocking.ThreadedServer, threading.Thread]] = []

    def start_blocking(*, limits: Limits | None = None, page: bool = False) -> RunningServer:
        assert not page, "the page is the asyncio server's"
        credential = Credential.self_signed("localhost")
        cert_path = tmp_path / f"blocking{len(started)}.pem"
        cert_path.write_bytes(credential.certificate_pem())
        reports: list[ConnectionReport] = []
        server = blocking.serve(
            ServerConfig(credentials=(credential,)),
            blocking_whoami,
            "127.0.0.1",
            0,
            limits=limits or balancer_limits(),
            validation="hrr",
            on_report=reports.append,
        )
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        started.append((server, thread))
        return RunningServer("127.0.0.1", server.server_address[1], cert_path, credential, reports)

    yield start_blocking
    for server, thread in started:
        server.shutdown()
        thread.join(5)


# --- Clients ----------------------------------------------------------------------------------


def connect(port: int, source: str = BALANCER) -> socket.socket:
    """A connection to 127.0.0.1:``port`` from ``source`` (an address of the loopback)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def local(sock: socket.socket) -> tuple[str, int]:
    address: tuple[str, int] = sock.getsockname()[:2]
    return address


def finish(sock: socket.socket, client: PythonSSLClient) -> str:
    """The handshake on ``sock`` to its end, then GET /: the body of the server's answer."""
    while not client.handshake_done:
        data = sock.recv(65536)
        assert data, "the server closed during the handshake"
        if out := client.step(data):
            sock.sendall(out)
    sock.sendall(client.send(REQUEST))
    answer = client.receive(read_until_closed(sock)).decode()
    assert answer.startswith("HTTP/1.1 200 OK\r\n"), answer
    return answer.partition("\r\n\r\n")[2]


def fetch(sock: socket.socket, header: bytes = b"") -> str:
    """``header``, then a TLS client (OpenSSL's) through the stateless HRR, then GET /."""
    client = PythonSSLClient()
    sock.sendall(header + client.step())
    return finish(sock, client)


def hello_retry(sock: socket.socket, client: PythonSSLClient, header: bytes = b"") -> bytes:
    """``header`` and ClientHello1 on ``sock``; the HelloRetryRequest and the compatibility CCS
    the server answered (the connection then holds a handshake in progress)."""
    sock.sendall(header + client.step())
    return read_record(sock) + read_record(sock)


def v1(source: tuple[str, int], destination: tuple[str, int] = ("198.51.100.2", 443)) -> bytes:
    protocol = "TCP6" if ":" in source[0] else "TCP4"
    return (
        f"PROXY {protocol} {source[0]} {destination[0]} {source[1]} {destination[1]}\r\n".encode()
    )


def reports_of(server: RunningServer, count: int) -> list[ConnectionReport]:
    reports = server.wait_reports(count, timeout=SHORT + SLACK + 5)
    assert len(reports) == count, reports
    return reports


# --- Both loops, raw sockets ------------------------------------------------------------------


@pytest.mark.parametrize(
    "client, destination",
    [
        (("203.0.113.7", 50000), ("198.51.100.2", 443)),
        (("2001:db8::7", 50007), ("2001:db8::1", 8443)),
    ],
)
def test_a_v2_header_from_our_encoder_names_the_client(
    start: Starter, client: tuple[str, int], destination: tuple[str, int]
) -> None:
    server = start()
    with connect(server.port) as sock:
        balancer = local(sock)
        header = proxy_v2_header(client, destination, alpn="http/1.1", authority="localhost")
        answer = fetch(sock, header)
    via = f"{balancer[0]}:{balancer[1]}"
    assert f"peer={client[0]}:{client[1]} via={via}" in answer, answer
    if "local=" in answer:  # the asyncio stream: the address the client connected to
        assert answer.endswith(f"local={destination[0]}:{destination[1]}"), answer
    (report,) = reports_of(server, 1)
    assert report.peer == client and report.via == balancer
    assert report.hello_retry and report.cookie_verified and report.error is None
    assert report.log_line().startswith(f"peer={client[0]}:{client[1]} via={via} ")


def test_a_hand_made_v1_line_in_fragments(start: Starter) -> None:
    server = start()
    line = v1(("192.0.2.44", 40001))
    with connect(server.port) as sock:
        for piece in (line[:9], line[9:30], line[30:]):  # the server reads them one by one
            sock.sendall(piece)
            time.sleep(0.05)
        answer = fetch(sock)
        balancer = local(sock)
    assert answer.startswith(f"peer=192.0.2.44:40001 via={balancer[0]}:{balancer[1]}"), answer
    (report,) = reports_of(server, 1)
    assert report.peer == ("192.0.2.44", 40001) and report.cookie_verified


def test_a_balancer_that_sends_no_header_or_garbage_is_closed_without_an_alert(
    start: Starter, caplog: pytest.LogCaptureFixture
) -> None:
    server = start()
    with caplog.at_level(logging.INFO, logger="stateless13.server"):
        for first in (
            PythonSSLClient().step(),
            b"GET / HTTP/1.1\r\n\r\n",
            v1(("1.2.3.4", 1))[:-2] + b"\n",
        ):
            with connect(server.port) as sock:
                sock.sendall(first)
                assert read_until_closed(sock) == b""  # no alert: TLS had not begun
        reports = reports_of(server, 3)
    assert [r.outcome for r in reports] == ["proxy_protocol"] * 3
    assert all(r.peer[0] == BALANCER and r.via is None for r in reports)
    assert reports[0].error is not None
    assert reports[0].error.startswith("proxy_protocol: a TLS record where the PROXY header")
    assert reports[2].error == "proxy_protocol: v1: a line feed without its carriage return"
    # Counted, and one warning (rate-limited) rather than a line per connection.
    lines = [r.getMessage() for r in caplog.records if "PROXY" in r.getMessage()]
    assert len(lines) == 1 and "bad PROXY protocol headers from balancers (1 times)" in lines[0]


@pytest.mark.parametrize(
    "partial", [b"PROXY TCP4 192.0.2.1 ", proxy_v2_header(("192.0.2.1", 1), ("192.0.2.2", 2))[:20]]
)
def test_an_incomplete_header_is_cut_at_the_handshake_timeout(
    start: Starter, partial: bytes
) -> None:
    server = start(limits=balancer_limits(handshake_timeout=SHORT))
    with connect(server.port) as sock:
        sock.sendall(partial)
        began = time.monotonic()
        assert read_until_closed(sock, timeout=SHORT + SLACK) == b""
        waited = time.monotonic() - began
    assert SHORT - 0.1 < waited < SHORT + SLACK
    (report,) = reports_of(server, 1)
    assert report.error == f"handshake_timeout ({SHORT:g}s): no complete PROXY protocol header"
    assert report.outcome == "handshake_timeout" and report.peer[0] == BALANCER


def test_a_header_from_an_unlisted_address_is_tls_garbage(start: Starter) -> None:
    server = start()
    with connect(server.port, CLIENT_A) as sock:  # not a balancer: the header is not read
        sock.sendall(v1(("192.0.2.9", 9)) + PythonSSLClient().step())
        answer = read_until_closed(sock)
        spoofer = local(sock)
    assert answer[:1] == b"\x15", answer  # a TLS alert, as for any other garbage
    with connect(server.port, CLIENT_B) as sock:  # without one: served as ever
        assert fetch(sock).startswith(f"peer={CLIENT_B}:{local(sock)[1]} via=-")
        client = local(sock)
    by_peer = {r.peer: r for r in reports_of(server, 2)}  # in whatever order they ended
    refused, served = by_peer[spoofer], by_peer[client]
    assert refused.via is None and refused.error is not None
    assert refused.error.startswith("unexpected_message: not a TLS record"), refused.error
    assert served.via is None and served.cookie_verified


def test_a_health_check_is_the_balancers_own(start: Starter) -> None:
    server = start()
    checks = []
    for header in (b"\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00", b"PROXY UNKNOWN\r\n"):
        with connect(server.port) as sock:  # LOCAL, UNKNOWN: the balancer itself, over TLS
            assert fetch(sock, header).startswith(f"peer={BALANCER}:{local(sock)[1]} via=-")
            checks.append(local(sock))
    with connect(server.port) as sock:  # a plain TCP check: connects and leaves
        checks.append(local(sock))
    by_peer = {r.peer: r for r in reports_of(server, 3)}  # in whatever order they ended
    local_check, unknown, plain = (by_peer[peer] for peer in checks)
    assert local_check.via is None and local_check.cookie_verified
    assert unknown.via is None and unknown.cookie_verified
    assert plain.outcome == "client_left" and plain.error is not None
    assert plain.error.startswith("client closed before its PROXY protocol header")


def test_the_cookie_binds_the_client_the_header_names(start: Starter) -> None:
    server = start()
    client = PythonSSLClient()
    with connect(server.port) as sock:
        retry = hello_retry(sock, client, v1(("192.0.2.1", 1111)))
    client_hello2 = client.step(retry)
    # ClientHello2 replayed behind another client's header: its cookie is not that client's.
    with connect(server.port) as sock:
        sock.sendall(v1(("192.0.2.66", 1111)) + client_hello2)
        assert read_until_closed(sock)[:1] == b"\x15"
    # The same ClientHello2 from the client it was for (another port, another connection).
    with connect(server.port) as sock:
        sock.sendall(v1(("192.0.2.1", 2222)) + client_hello2)
        assert finish(sock, client).startswith("peer=192.0.2.1:2222 via=")
    by_peer = {r.peer: r for r in reports_of(server, 3)}  # in whatever order they ended
    first, replayed = by_peer[("192.0.2.1", 1111)], by_peer[("192.0.2.66", 1111)]
    second = by_peer[("192.0.2.1", 2222)]
    assert first.outcome == "left_after_hrr"
    assert not replayed.cookie_verified and replayed.error is not None
    assert replayed.error.startswith("decrypt_error: cookie does not authenticate"), replayed.error
    assert second.cookie_verified
    assert second.handshake is not None and second.error is None


def test_the_per_source_limit_counts_the_clients_behind_the_balancer(start: Starter) -> None:
    server = start(limits=balancer_limits(max_handshakes_per_source=2))
    stalled = [connect(server.port) for _ in range(2)]
    try:
        for index, sock in enumerate(stalled):  # two handshakes of client A in progress
            hello_retry(sock, PythonSSLClient(), v1(("192.0.2.1", 1000 + index)))
        with connect(server.port) as sock:  # a third of A's: over its limit, closed
            sock.sendall(v1(("192.0.2.1", 1002)) + PythonSSLClient().step())
            assert read_until_closed(sock) == b""
            balancer = local(sock)
        with connect(server.port) as sock:  # B, through the same balancer: served
            assert fetch(sock, v1(("192.0.2.2", 2000))).startswith("peer=192.0.2.2:2000")
    finally:
        for sock in stalled:
            sock.close()
    reports = reports_of(server, 4)
    refused = [r for r in reports if r.outcome == "refused_max_handshakes_per_source"]
    assert len(refused) == 1, reports
    assert refused[0].peer == ("192.0.2.1", 1002) and refused[0].via == balancer
    assert [r.peer for r in reports if r.handshake is not None] == [("192.0.2.2", 2000)]


def test_accept_tls_reads_the_header_too() -> None:
    """``blocking.accept_tls`` on a socket of one's own: the header first, from a balancer."""
    config = ServerConfig.self_signed()
    outcomes: list[object] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:

        def serve_two() -> None:
            for _ in range(2):
                sock, _ = listener.accept()
                with sock:
                    try:
                        stream = blocking.accept_tls(sock, config, limits=balancer_limits())
                    except HandshakeError as error:
                        outcomes.append(str(error))
                        continue
                    outcomes.append((stream.peer, stream.via))
                    blocking_whoami(stream)

        thread = threading.Thread(target=serve_two, daemon=True)
        thread.start()
        port = listener.getsockname()[1]
        with connect(port) as sock:
            assert fetch(sock, v1(("192.0.2.5", 5555))).startswith("peer=192.0.2.5:5555 via=")
            balancer = local(sock)
        with connect(port) as sock:
            sock.sendall(PythonSSLClient().step())
            assert read_until_closed(sock) == b""
        thread.join(10)
    assert outcomes[0] == (("192.0.2.5", 5555), balancer)
    assert isinstance(outcomes[1], str) and outcomes[1].startswith("proxy_protocol: a TLS record")


# --- The command, and curl's --haproxy-protocol ------------------------------------------------


def curl_from(port: int, source: str, *args: str) -> tuple[subprocess.CompletedProcess[bytes], int]:
    """curl from ``source``: the result, and its own port (``%{local_port}``, its last line)."""
    got = curl(port, "--interface", source, "--write-out", "\n%{local_port}", *args)
    last = got.stdout.decode(errors="replace").rpartition("\n")[2]
    assert last.isdigit(), got
    return got, int(last)


def test_curl_haproxy_protocol_through_the_command(tmp_path: Path) -> None:
    server = FrontDoor(
        ["--proxy-protocol-from", BALANCER, "--validation", "hrr", "--stats-interval", "60"],
        tmp_path,
    )
    try:
        assert "PROXY protocol from 127.0.0.1/32" in server.stdout[0], server.output()
        url = f"https://localhost:{server.port}/"
        # curl names itself in a v1 line: from the balancer's address, the client is curl.
        got, port = curl_from(server.port, BALANCER, "--haproxy-protocol", url)
        assert got.returncode == 0 and PAGE_TEXT.encode() in got.stdout, got
        server.line(
            rf"peer=127\.0\.0\.1:{port} via=127\.0\.0\.1:{port} validation=hrr hrr=yes"
            r" cookie=verified"
        )
        # From elsewhere, the header is garbage to TLS; without it, served as ever.
        got, port = curl_from(server.port, CLIENT_A, "--haproxy-protocol", url)
        assert got.returncode != 0, got
        server.line(rf"peer=127\.0\.0\.2:{port} validation=hrr hrr=no cookie=none .*error=")
        got, port = curl_from(server.port, CLIENT_A, url)
        assert got.returncode == 0 and PAGE_TEXT.encode() in got.stdout, got
        server.line(rf"peer=127\.0\.0\.2:{port} validation=hrr hrr=yes cookie=verified")
        # The balancer without a header: closed, counted, warned of.
        with connect(server.port) as sock:
            sock.sendall(PythonSSLClient().step())
            assert read_until_closed(sock) == b""
        server.line(r"bad PROXY protocol headers from balancers \(1 times\): 127\.0\.0\.1:\d+")
        server.stop()
        assert re.search(
            r"stats tcp: completed=2 .* proxied=1 .*failed=\S*proxy_protocol=1",
            "\n".join(server.stderr),
        ), server.output()
    finally:
        server.kill()


def test_the_command_refuses_what_cannot_work(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for args, message in (
        (["--proxy-protocol-from", "10.0.0.1/8"], "has host bits set"),
        (["--proxy-protocol-from", "balancer"], "does not appear to be an IPv4 or IPv6"),
        (["--quic", "--proxy-protocol-from", "10.0.0.0/8"], "--proxy-protocol-from is for TCP"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "stateless13", "serve", *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 2 and message in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr


# --- nginx in front ---------------------------------------------------------------------------

NGINX_CONF = """\
load_module {module};
daemon off;
worker_processes 1;
pid {directory}/nginx.pid;
error_log {directory}/error.log info;
events {{ worker_connections 64; }}
stream {{
    server {{
        listen 127.0.0.1:{port};
        proxy_pass 127.0.0.1:{upstream};
        proxy_protocol on;
        proxy_connect_timeout 5s;
    }}
}}
"""


@dataclass
class Nginx:
    port: int
    process: subprocess.Popen[bytes]
    directory: Path

    def log(self) -> str:
        path = self.directory / "error.log"
        return path.read_text(errors="replace") if path.exists() else "(no error.log)"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Callable[[int], Nginx]]:
    """``nginx(upstream_port)``: Debian's nginx, its stream module sending a PROXY header to
    127.0.0.1:``upstream_port``; started in the foreground with its own configuration, stopped
    by its PID.  One that does not start fails the test."""
    started: list[Nginx] = []

    def start(upstream: int) -> Nginx:
        binary = require_peer("nginx")
        assert NGINX_MODULE.exists(), "nginx's stream module is missing: ./run-tests installs it"
        directory = tmp_path / f"nginx{len(started)}"
        directory.mkdir()
        port = free_port()
        conf = directory / "nginx.conf"
        conf.write_text(
            NGINX_CONF.format(
                module=NGINX_MODULE, directory=directory, port=port, upstream=upstream
            )
        )
        process = subprocess.Popen(
            [binary, "-p", str(directory), "-c", str(conf), "-e", str(directory / "error.log")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        running = Nginx(port, process, directory)
        started.append(running)
        # The master writes its PID file once its listening socket is open (no probe connection:
        # it would reach the server as a client of its own).
        deadline = time.monotonic() + 15
        while not (directory / "nginx.pid").exists():
            assert process.poll() is None, f"nginx exited ({process.returncode}):\n{running.log()}"
            assert time.monotonic() < deadline, f"nginx did not start:\n{running.log()}"
            time.sleep(0.02)
        return running

    yield start
    for running in started:
        running.process.terminate()  # SIGTERM to the master, by its PID: it stops its workers
        try:
            running.process.wait(10)
        except subprocess.TimeoutExpired:
            running.process.kill()
            running.process.wait(10)


def test_nginx_names_the_real_client_to_both_loops(
    start: Starter, nginx: Callable[[int], Nginx]
) -> None:
    server = start()
    front = nginx(server.port)
    with connect(front.port, CLIENT_A) as sock:
        answer = fetch(sock)
        client = local(sock)
    # The client's own address and port, as nginx saw them; via: nginx's side of its upstream
    # connection, from the balancer's address.
    assert answer.startswith(f"peer={client[0]}:{client[1]} via={BALANCER}:"), answer
    (report,) = reports_of(server, 1)
    assert report.peer == client and report.via is not None and report.via[0] == BALANCER
    assert report.hello_retry and report.cookie_verified, report
    assert report.log_line().startswith(f"peer={CLIENT_A}:{client[1]} via={BALANCER}:")


def test_curl_through_nginx(tls_server: ServerFactory, nginx: Callable[[int], Nginx]) -> None:
    server = tls_server(limits=balancer_limits(), handler=http_handler)
    front = nginx(server.port)
    got, port = curl_from(front.port, CLIENT_B, f"https://localhost:{front.port}/")
    assert got.returncode == 0 and PAGE_TEXT.encode() in got.stdout, (got, front.log())
    (report,) = reports_of(server, 1)
    assert report.peer == (CLIENT_B, port) and report.via is not None, report
    assert report.hello_retry and report.cookie_verified


def test_through_nginx_the_cookie_binds_the_client(
    start: Starter, nginx: Callable[[int], Nginx]
) -> None:
    server = start()
    front = nginx(server.port)
    client = PythonSSLClient()
    with connect(front.port, CLIENT_A) as sock:
        retry = hello_retry(sock, client)
        first = local(sock)
    client_hello2 = client.step(retry)
    with connect(front.port, CLIENT_B) as sock:  # replayed from another real address
        sock.sendall(client_hello2)
        assert read_until_closed(sock)[:1] == b"\x15"
        replayer = local(sock)
    with connect(front.port, CLIENT_A) as sock:  # from the client's own, on a new connection
        sock.sendall(client_hello2)
        assert finish(sock, client).startswith(f"peer={CLIENT_A}:{local(sock)[1]} via=")
        second = local(sock)
    by_peer = {r.peer: r for r in reports_of(server, 3)}  # in whatever order they ended
    assert by_peer[first].outcome == "left_after_hrr"
    replayed, completed = by_peer[replayer], by_peer[second]
    assert not replayed.cookie_verified and replayed.error is not None
    assert replayed.error.startswith("decrypt_error: cookie does not authenticate"), replayed.error
    assert completed.cookie_verified and completed.error is None


def test_through_nginx_the_per_source_limit_counts_real_clients(
    start: Starter, nginx: Callable[[int], Nginx]
) -> None:
    server = start(limits=balancer_limits(max_handshakes_per_source=2))
    front = nginx(server.port)
    stalled = [connect(front.port, CLIENT_A) for _ in range(2)]
    try:
        for sock in stalled:  # A's two handshakes in progress
            hello_retry(sock, PythonSSLClient())
        with connect(front.port, CLIENT_A) as sock:  # A's third: refused, nginx closes
            sock.sendall(PythonSSLClient().step())
            assert read_until_closed(sock) == b""
            over = local(sock)
        with connect(front.port, CLIENT_B) as sock:  # B: served, through the same nginx
            assert fetch(sock).startswith(f"peer={CLIENT_B}:{local(sock)[1]} via=")
    finally:
        for sock in stalled:
            sock.close()
    reports = reports_of(server, 4)
    refused = [r for r in reports if r.outcome == "refused_max_handshakes_per_source"]
    assert [r.peer for r in refused] == [over], reports
    assert refused[0].via is not None and refused[0].via[0] == BALANCER
    # Four connections from nginx's one address, over a per-source limit of two.
    assert all(r.via is not None and r.via[0] == BALANCER for r in reports)
    assert sum(r.handshake is not None for r in reports) == 1


def test_nginx_is_stopped_by_its_pid(tmp_path: Path, nginx: Callable[[int], Nginx]) -> None:
    """The fixture's own promise: the master we started, and only it, is stopped."""
    front = nginx(free_port())
    pid = int((front.directory / "nginx.pid").read_text())
    assert pid == front.process.pid
    front.process.terminate()
    assert front.process.wait(10) == 0, front.log()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
