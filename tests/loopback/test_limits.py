"""The socket adapters' limits (``stateless13.transports.common.Limits``), over real TCP sockets.

Each test runs twice: against the asyncio server (``tls_server``) and against the blocking,
thread-per-connection server (``stateless13.transports.blocking.serve``). The misbehaving clients
speak through raw sockets with real ClientHello bytes from Python's ssl (``PythonSSLClient``); the
well-behaved ones are Python's ssl over a socket."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stateless13 import AlertDescription, Credential, ServerConfig
from stateless13.transports import blocking
from stateless13.transports.common import ConnectionReport, Limits
from tests.helpers import PythonSSLClient, read_record, read_until_closed
from tests.servers import (
    PAGE_TEXT,
    RunningServer,
    ServerFactory,
    echo_handler,
    http_handler,
)

SHORT = 0.5  # seconds: every timeout under test
SLACK = 2.0  # how much later than its limit a cut-off may come (a loaded 2-core machine)
REQUEST = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
CHANGE_CIPHER_SPEC = b"\x14\x03\x03\x00\x01\x01"  # after the HRR in compatibility mode
HRR_RANDOM = bytes.fromhex("CF21AD74E59A6111BE1D8C021E65B891C2A211167ABB8C5E079E09E2C8A8339C")

Starter = Callable[..., RunningServer]  # start(limits=..., echo=False, **config_options)


# --- the two servers ---------------------------------------------------------------------------


def blocking_http(stream: blocking.BlockingTLSStream) -> None:
    request = b""
    while b"\r\n\r\n" not in request:
        data = stream.recv()
        if not data:
            return
        request += data
    body = f"<html><body><h1>{PAGE_TEXT}</h1></body></html>\n".encode()
    stream.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\nConnection: close\r\n\r\n"
        + body
    )
    stream.close()


def blocking_echo(stream: blocking.BlockingTLSStream) -> None:
    while data := stream.recv():
        stream.sendall(data)
    stream.close()


@pytest.fixture(params=["asyncio", "blocking"])
def start(
    request: pytest.FixtureRequest, tls_server: ServerFactory, tmp_path: Path
) -> Iterator[Starter]:
    """``start(limits=Limits(...), echo=False, **config_options)`` → a RunningServer."""
    if request.param == "asyncio":

        def start_asyncio(
            *, limits: Limits, echo: bool = False, **options: object
        ) -> RunningServer:
            handler = echo_handler if echo else http_handler
            return tls_server(limits=limits, handler=handler, **options)

        yield start_asyncio
        return

    started: list[tuple[blocking.ThreadedServer, threading.Thread]] = []

    def start_blocking(*, limits: Limits, echo: bool = False, **options: object) -> RunningServer:
        credential = Credential.self_signed("localhost")
        cert_path = tmp_path / f"blocking{len(started)}.pem"
        cert_path.write_bytes(credential.certificate_pem())
        config = ServerConfig(credentials=(credential,), **options)  # type: ignore[arg-type]
        reports: list[ConnectionReport] = []
        server = blocking.serve(
            config,
            blocking_echo if echo else blocking_http,
            "127.0.0.1",
            0,
            limits=limits,
            validation="hrr",  # as tls_server(): the stateless front for every client
            on_report=reports.append,
        )
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        started.append((server, thread))
        port = server.server_address[1]
        return RunningServer("127.0.0.1", port, cert_path, credential, reports)

    yield start_blocking
    for server, thread in started:
        server.shutdown()
        thread.join(5)


# --- raw-socket clients ------------------------------------------------------------------------


def connect(server: RunningServer) -> socket.socket:
    sock = socket.create_connection((server.host, server.port), timeout=SHORT + SLACK + 3)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def client_hello() -> bytes:
    """A real ClientHello1 record from OpenSSL (Python's ssl), 248 bytes."""
    return PythonSSLClient().step()


def alert_record(description: AlertDescription) -> bytes:
    return bytes((0x15, 0x03, 0x03, 0x00, 0x02, 0x02, description))


def one_report(server: RunningServer) -> ConnectionReport:
    reports = server.wait_reports(1, timeout=SHORT + SLACK + 3)
    assert len(reports) == 1, reports
    return reports[0]


def https_get(server: RunningServer) -> bytes:
    context = ssl.create_default_context(cafile=str(server.cert_path))
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    with (
        socket.create_connection((server.host, server.port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(REQUEST)
        reply = b""
        while chunk := tls.recv(65536):
            reply += chunk
        return reply


# --- handshake_timeout -------------------------------------------------------------------------


def test_slow_loris_half_a_client_hello(start: Starter) -> None:
    server = start(limits=Limits(handshake_timeout=SHORT))
    hello = client_hello()
    with connect(server) as sock:
        started = time.monotonic()
        sock.sendall(hello[: len(hello) // 2])
        assert read_until_closed(sock) == b""  # closed by the server, nothing sent
        waited = time.monotonic() - started
    assert SHORT * 0.8 <= waited < SHORT + SLACK, waited
    report = one_report(server)
    assert report.error is not None and "handshake_timeout" in report.error, report
    assert not report.hello_retry and report.handshake is None, report


def test_stall_after_the_hello_retry_request(start: Starter) -> None:
    """ClientHello1 is answered with an HRR; ClientHello2 never comes: cut off all the same."""
    server = start(limits=Limits(handshake_timeout=SHORT))
    with connect(server) as sock:
        started = time.monotonic()
        sock.sendall(client_hello())
        hrr = read_record(sock)
        assert hrr[0] == 22 and hrr[5] == 2 and hrr[11:43] == HRR_RANDOM, hrr
        rest = read_until_closed(sock)  # the compatibility-mode CCS, then the close
        waited = time.monotonic() - started
    assert rest in (b"", CHANGE_CIPHER_SPEC), rest
    assert SHORT * 0.8 <= waited < SHORT + SLACK, waited
    report = one_report(server)
    assert report.error is not None and "handshake_timeout" in report.error, report
    assert report.hello_retry and not report.cookie_verified, report


# --- max_concurrent_handshakes -----------------------------------------------------------------


def test_max_concurrent_handshakes(start: Starter) -> None:
    """Two clients stall after their HRR; a third is refused at accept; once the two are cut
    off, a normal client gets its page."""
    server = start(limits=Limits(handshake_timeout=SHORT * 2, max_concurrent_handshakes=2))
    stalled = [connect(server), connect(server)]
    try:
        for sock in stalled:  # an HRR back proves the server is handshaking with it
            sock.sendall(client_hello())
            assert read_record(sock)[11:43] == HRR_RANDOM
        with connect(server) as third:
            started = time.monotonic()
            third.sendall(client_hello())
            assert read_until_closed(third) == b""
            assert time.monotonic() - started < SHORT  # at once, not after a timeout
        for sock in stalled:  # cut off after handshake_timeout
            assert read_until_closed(sock) in (b"", CHANGE_CIPHER_SPEC)
    finally:
        for sock in stalled:
            sock.close()
    reports = server.wait_reports(3)
    assert len(reports) == 3, reports
    refused = [r for r in reports if r.error and "refused" in r.error]
    assert len(refused) == 1 and "max_concurrent_handshakes" in str(refused[0].error), reports
    assert refused[0].handshake is None and not refused[0].hello_retry, reports
    timed_out = [r for r in reports if r.error and "handshake_timeout" in r.error]
    assert len(timed_out) == 2 and all(r.hello_retry for r in timed_out), reports

    assert PAGE_TEXT.encode() in https_get(server)
    report = server.wait_reports(4)[-1]
    assert report.error is None and report.cookie_verified, report


# --- max_handshake_buffer ----------------------------------------------------------------------


def test_max_handshake_buffer_a_client_hello_too_big_for_it(start: Starter) -> None:
    server = start(limits=Limits(max_handshake_buffer=200))
    with connect(server) as sock:
        sock.sendall(client_hello())  # 248 bytes
        assert read_until_closed(sock) == b""
    report = one_report(server)
    assert report.error is not None and "max_handshake_buffer" in report.error, report


def test_max_handshake_buffer_a_client_hello_that_never_ends(start: Starter) -> None:
    """A ClientHello announced as 12000 bytes (under max_client_hello_size) keeps the server
    waiting for more: it buffers at most max_handshake_buffer, then closes."""
    server = start(limits=Limits(max_handshake_buffer=4096))
    body = client_hello()[9:]  # a real ClientHello body, after the record and message headers
    announced = 12000
    header = b"\x16\x03\x01" + (announced + 4).to_bytes(2, "big")
    header += b"\x01" + announced.to_bytes(3, "big")
    with connect(server) as sock:
        sock.sendall((header + body).ljust(5000, b"\x00"))
        assert read_until_closed(sock) == b""
    report = one_report(server)
    assert report.error is not None and "max_handshake_buffer" in report.error, report


# --- what the TLS core refuses: the alert goes back before the close ---------------------------


def test_client_hello_over_max_client_hello_size(start: Starter) -> None:
    server = start(limits=Limits(), max_client_hello_size=512)
    alpn = [f"protocol-{i:02d}-" + "x" * 40 for i in range(12)]
    hello = PythonSSLClient(alpn=alpn).step()
    assert len(hello) > 512 + 5
    with connect(server) as sock:
        sock.sendall(hello)
        assert read_until_closed(sock) == bytes.fromhex("15 03 03 00 02 02 2f")
    report = one_report(server)
    assert report.error is not None and "illegal_parameter" in report.error, report
    assert report.handshake is None and not report.hello_retry, report


def test_garbage_an_http_request_to_the_tls_port(start: Starter) -> None:
    server = start(limits=Limits())
    with connect(server) as sock:
        sock.sendall(REQUEST)
        assert read_until_closed(sock) == alert_record(AlertDescription.unexpected_message)
    report = one_report(server)
    assert report.error is not None and "unexpected_message" in report.error, report
    assert report.handshake is None, report


# --- idle_timeout ------------------------------------------------------------------------------


def test_idle_timeout_closes_an_established_connection(start: Starter) -> None:
    server = start(limits=Limits(idle_timeout=SHORT), echo=True)
    context = ssl.create_default_context(cafile=str(server.cert_path))
    with (
        socket.create_connection((server.host, server.port), timeout=SHORT + SLACK + 3) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(b"ping")
        assert tls.recv(100) == b"ping"
        idle_since = time.monotonic()
        assert tls.recv(100) == b""  # the server's close_notify, then its close
        idle = time.monotonic() - idle_since
    assert SHORT * 0.8 <= idle < SHORT + SLACK, idle
    report = one_report(server)
    assert report.error is None and report.cookie_verified, report
    assert report.duration >= SHORT * 0.8, report


def test_a_client_that_stops_reading_is_cut_at_the_write_timeout(start: Starter) -> None:
    """Issue 20: it used to hold its connection and ~420 KiB of buffers forever."""
    server = start(limits=Limits(write_timeout=SHORT), echo=True)
    context = ssl.create_default_context(cafile=str(server.cert_path))
    with (
        socket.create_connection((server.host, server.port), timeout=SHORT + SLACK) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.settimeout(0.2)
        chunk = bytes(1 << 16)
        sent = 0
        started = time.monotonic()
        with contextlib.suppress(TimeoutError, OSError):  # the server stops reading, or cuts us
            while time.monotonic() - started < SHORT + SLACK + 5:
                sent += tls.send(chunk)  # echoed back, and never read
        report = one_report(server)
    assert report.handshake is not None, report
    assert report.error is not None and report.error.startswith("write_timeout"), report
    assert report.duration < SHORT + SLACK + 6, report
    assert sent > 1 << 20, sent  # megabytes went out before the server's buffers filled


def test_one_source_holding_stalled_handshakes_leaves_room_for_others(start: Starter) -> None:
    """Issue 20: 2,000 idle connections from one address left honest clients 12.7% success.
    Here 127.0.0.2 holds as many stalled handshakes as it may (and more, refused at accept);
    honest clients from 127.0.0.1 are all served."""
    limits = Limits(max_concurrent_handshakes=60, max_handshakes_per_source=20)
    server = start(limits=limits)
    stalled = []
    for _ in range(100):  # five times what one source may hold
        sock = socket.socket()
        sock.bind(("127.0.0.2", 0))
        sock.settimeout(SHORT + SLACK)
        with contextlib.suppress(OSError):
            sock.connect((server.host, server.port))
        stalled.append(sock)
    try:
        server.wait_reports(80)  # the 80 over the source's limit, refused at accept
        for _ in range(10):
            page = https_get(server)
            assert PAGE_TEXT.encode() in page
        reports = server.wait_reports(90)
        refused = [r for r in reports if r.error == "refused: max_handshakes_per_source reached"]
        assert len(refused) == 80 and all(r.peer[0] == "127.0.0.2" for r in refused)
        served = [r for r in reports if r.handshake is not None]
        assert len(served) == 10 and all(r.peer[0] == "127.0.0.1" for r in served)
    finally:
        for sock in stalled:
            sock.close()
