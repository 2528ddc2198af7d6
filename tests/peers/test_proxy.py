"""The front door (issue 18, item 3): ``stateless13 serve --proxy-to`` in front of a real HTTP/1.1
server, Python's ``http.server`` in a thread, fetched by real clients through the stateless HRR.

TCP (``--proxy-to HOST:PORT``): curl and ``openssl s_client`` through ``--validation hrr`` (the
server's own log line says ``hrr=yes cookie=verified``); a PROXY protocol v2 header parsed by
the backend with a parser of its own, over IPv4 and IPv6; half-close both ways, backpressure and
the idle timeout, with Python's ssl over memory BIOs (it can close one direction); a backend that
is down or does not answer the connect: close_notify to the client, the reason in the log, no
traceback.

HTTP/3 (``--quic --proxy-to http://HOST:PORT``): quic-go (``tests/peers/quicgoclient``, and
``quicgoproxyclient`` below for methods, bodies, headers and several requests at once) and
Chromium over QUIC, both through the stateless HRR; bodies streamed both ways and checked by
SHA-256; the forwarding headers as the backend saw them; 502 when the backend is down, 504 when it
is too slow; 413, 431, 408 and the concurrent-streams limit; the backpressure each way measured
by the server's own request reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.server
import json
import os
import re
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from stateless13 import Credential, ServerConfig
from stateless13.transports.common import ConnectionReport
from stateless13.transports.proxy import (
    PROXY_V2_SIGNATURE,
    Backend,
    ProxyReport,
    proxy_v2_header,
    tcp_proxy,
)
from stateless13.transports.quic_proxy import H3ProxyLimits, RequestReport, h3_proxy
from stateless13.transports.quic_server import QuicServer, serve_quic
from tests.commands import ROOT, Process
from tests.peers.test_quic_peers import QUICGO_SOURCE, load_netlog, quic_sessions
from tests.servers import RunningServer, ServerFactory, build_go_program, require_peer

PEER_TIMEOUT = 60  # seconds for one client run; each takes well under 10
START_TIMEOUT = 15.0
BACKEND_PAGE = "Hello from the backend"
NO_PROXY_ENV = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
GOPATH = Path("/usr/share/gocode")


def pattern(start: int, count: int) -> bytes:
    """The bytes the backend's /big and the quic-go client's bodies are made of."""
    return bytes((start + i) % 251 for i in range(count))


def pattern_sha256(count: int) -> str:
    digest = hashlib.sha256()
    for start in range(0, count, 65536):
        digest.update(pattern(start, min(65536, count - start)))
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# The backend: Python's http.server, with a PROXY protocol v2 parser of its own.


@dataclass(frozen=True)
class ProxyHeader:
    """A PROXY protocol v2 header as the backend read it (HAProxy's proxy-protocol.txt, 2.2)."""

    command: int
    family: int
    source: tuple[str, int]
    destination: tuple[str, int]
    tlvs: dict[int, bytes]


def read_proxy_v2(read: Callable[[int], bytes]) -> ProxyHeader:
    head = read(16)
    assert head[:12] == b"\x0d\x0a\x0d\x0a\x00\x0d\x0a\x51\x55\x49\x54\x0a", head
    version_command, family, length = head[12], head[13], int.from_bytes(head[14:16], "big")
    body = read(length)
    if family == 0x11:  # TCP over IPv4
        size, address_family = 4, socket.AF_INET
    elif family == 0x21:  # TCP over IPv6
        size, address_family = 16, socket.AF_INET6
    else:
        raise AssertionError(f"unexpected family 0x{family:02x}")
    source = socket.inet_ntop(address_family, body[:size])
    destination = socket.inet_ntop(address_family, body[size : 2 * size])
    source_port, destination_port = struct.unpack("!HH", body[2 * size : 2 * size + 4])
    rest, tlvs = body[2 * size + 4 :], {}
    while rest:
        kind, tlv_length = rest[0], int.from_bytes(rest[1:3], "big")
        tlvs[kind] = rest[3 : 3 + tlv_length]
        rest = rest[3 + tlv_length :]
    return ProxyHeader(
        version_command, family, (source, source_port), (destination, destination_port), tlvs
    )


@dataclass(frozen=True)
class SeenRequest:
    method: str
    path: str
    headers: list[tuple[str, str]]
    body_length: int


class HttpBackend:
    """``http.server.ThreadingHTTPServer`` in a thread, HTTP/1.1.

    ``GET /`` a page; ``/headers`` the request's fields as JSON (answered with hop-by-hop fields
    of its own); ``/big?n=N`` N bytes of ``pattern``; ``/slow?s=S`` after S seconds (counting
    how many run at once); ``/form?n=N`` a page that posts N bytes to ``/sha``.  ``POST /echo``
    streams the body back (chunked); ``POST /sha?delay=D`` reads it (D seconds per 64 KiB) and
    answers its length and SHA-256.  Chunked request bodies are read too.
    """

    def __init__(self, *, proxy_protocol: bool = False) -> None:
        self.proxy_protocol = proxy_protocol
        self.requests: list[SeenRequest] = []
        self.proxy_headers: list[ProxyHeader] = []
        self.running = 0
        self.most_running = 0
        self.lock = threading.Lock()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _BackendHandler)
        self.server.daemon_threads = True
        self.server.backend = self  # type: ignore[attr-defined]
        self.port: int = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


class _BackendHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    @property
    def backend(self) -> HttpBackend:
        backend: HttpBackend = self.server.backend  # type: ignore[attr-defined]
        return backend

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def handle(self) -> None:
        if self.backend.proxy_protocol:
            header = read_proxy_v2(self.rfile.read)
            with self.backend.lock:
                self.backend.proxy_headers.append(header)
        super().handle()

    def _record(self, body_length: int = 0) -> None:
        with self.backend.lock:
            self.backend.requests.append(
                SeenRequest(self.command, self.path, list(self.headers.items()), body_length)
            )

    def _query(self) -> tuple[str, dict[str, str]]:
        url = urllib.parse.urlsplit(self.path)
        return url.path, dict(urllib.parse.parse_qsl(url.query))

    def _reply(self, body: bytes, content_type: str = "text/plain", **extra: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in extra.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _body(self, delay: float = 0.0) -> Iterator[bytes]:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while size := int(self.rfile.readline().split(b";")[0], 16):
                data = self.rfile.read(size)
                self.rfile.readline()
                time.sleep(delay)
                yield data
            while self.rfile.readline() not in (b"\r\n", b""):  # trailers
                pass
            return
        left = int(self.headers.get("Content-Length", "0"))
        while left:
            data = self.rfile.read(min(left, 65536))
            if not data:
                return
            left -= len(data)
            time.sleep(delay)
            yield data

    def do_GET(self) -> None:
        path, query = self._query()
        self._record()
        if path == "/headers":
            body = json.dumps(list(self.headers.items())).encode()
            # Hop-by-hop fields of the backend's own, which must not reach the client.
            self._reply(
                body, "application/json", Connection="close, X-Hop", X_Hop="secret",
                Keep_Alive="timeout=5", X_End_To_End="kept",
            )  # fmt: skip
        elif path == "/big":
            size = int(query["n"])
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            for start in range(0, size, 65536):
                self.wfile.write(pattern(start, min(65536, size - start)))
        elif path == "/slow":
            with self.backend.lock:
                self.backend.running += 1
                self.backend.most_running = max(self.backend.most_running, self.backend.running)
            try:
                time.sleep(float(query["s"]))
            finally:
                with self.backend.lock:
                    self.backend.running -= 1
            self._reply(b"slow\n")
        elif path == "/form":
            size = int(query["n"])
            page = (
                "<!doctype html><form method=post enctype=text/plain action=/sha>"
                "<textarea name=a></textarea></form><script>"
                f"document.forms[0].a.value = 'x'.repeat({size - 4});"
                "document.forms[0].submit()</script>"
            )
            self._reply(page.encode(), "text/html")
        else:
            self._reply(f"<!doctype html><h1>{BACKEND_PAGE}</h1>\n".encode(), "text/html")

    do_HEAD = do_GET

    def do_POST(self) -> None:
        path, query = self._query()
        if path == "/echo":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            length = 0
            for chunk in self._body():
                length += len(chunk)
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")
            self._record(length)
            return
        digest, length = hashlib.sha256(), 0
        for chunk in self._body(float(query.get("delay", "0"))):
            digest.update(chunk)
            length += len(chunk)
        self._record(length)
        self._reply(f"length {length} sha256 {digest.hexdigest()}\n".encode())


@pytest.fixture
def http_backend() -> Iterator[Callable[..., HttpBackend]]:
    started: list[HttpBackend] = []

    def start(**options: Any) -> HttpBackend:
        backend = HttpBackend(**options)
        started.append(backend)
        return backend

    yield start
    for backend in started:
        backend.close()


class RawBackend:
    """A TCP server of one behaviour per connection (a thread each), for what HTTP hides:
    ``eof_then_reply`` reads to EOF, then answers how much came and closes; ``greet_then_read``
    sends a line, closes its sending side, and reads to EOF; ``flood`` sends ``size`` bytes as
    fast as they are taken, counting them in ``sent``."""

    def __init__(self, behaviour: str, size: int = 0) -> None:
        self.behaviour = behaviour
        self.size = size
        self.received: list[bytes] = []
        self.sent = 0
        self.done = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            connection, _ = self.listener.accept()
            with connection:
                getattr(self, self.behaviour)(connection)
        self.done.set()

    @staticmethod
    def _read_all(connection: socket.socket) -> bytes:
        data = b""
        while chunk := connection.recv(65536):
            data += chunk
        return data

    def eof_then_reply(self, connection: socket.socket) -> None:
        data = self._read_all(connection)
        self.received.append(data)
        connection.sendall(b"got %d bytes\n" % len(data))

    def greet_then_read(self, connection: socket.socket) -> None:
        connection.sendall(b"hello\n")
        connection.shutdown(socket.SHUT_WR)
        self.received.append(self._read_all(connection))

    def flood(self, connection: socket.socket) -> None:
        chunk = b"f" * 65536
        while self.sent < self.size:
            self.sent += connection.send(chunk)

    def close(self) -> None:
        self.listener.close()


def unanswered_port() -> tuple[socket.socket, socket.socket, int]:
    """A port whose connects hang: a listener with a full accept queue (backlog 0, one
    connection waiting), whose later SYNs Linux drops; both sockets, to close, and the port."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=0)
    port = listener.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port), timeout=5)
    return listener, filler, port


def closed_port() -> int:
    """A port nothing listens on (connects are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------------------------------------
# The front door as a user runs it: ``python -m stateless13 serve ...``.


class FrontDoor(Process):
    """``stateless13 serve ARGS`` of this checkout; its address read from the banner."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        env = {k: v for k, v in os.environ.items() if k != "SSLKEYLOGFILE"}
        env |= {"PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        super().__init__([sys.executable, "-m", "stateless13", "serve", *args], cwd, env)
        serving = self.wait_for(
            self.stdout, r"serving (\w+) on \[?([0-9a-f.:]+?)\]?:(\d+)[ ,]", START_TIMEOUT
        )
        self.mode, self.host, self.port = serving[1], serving[2], int(serving[3])
        spki = re.search(r"--ignore-certificate-errors-spki-list=(\S+)", "\n".join(self.stdout))
        self.spki = spki[1] if spki else ""
        cert = re.search(r"written to (\S+)", "\n".join(self.stdout))
        self.cert_path = Path(cert[1]) if cert else None

    def line(self, pattern: str, count: int = 1) -> re.Match[str]:
        """The ``count``-th stderr line matching ``pattern`` (waited for)."""
        return self.wait_for(self.stderr, pattern, START_TIMEOUT, count)

    def stop(self) -> None:
        self.send_signal(signal.SIGINT)
        assert self.wait(START_TIMEOUT) == 0, self.output()
        assert "Traceback" not in self.output(), self.output()


@pytest.fixture
def front_door(tmp_path: Path) -> Iterator[Callable[..., FrontDoor]]:
    started: list[FrontDoor] = []

    def start(*args: str) -> FrontDoor:
        server = FrontDoor(list(args), tmp_path)
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()


def cli_serve(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "stateless13", "serve", *args]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)


# ---------------------------------------------------------------------------------------------
# TCP clients


def curl(
    port: int, *args: str, host: str = "127.0.0.1", input: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    command = [require_peer("curl"), "--silent", "--show-error", "--tlsv1.3", "--insecure"]
    command += ["--max-time", "20", "--noproxy", "*"]
    command += ["--resolve", f"localhost:{port}:{host}", *args]
    return subprocess.run(
        command, input=input, capture_output=True, timeout=PEER_TIMEOUT, env=NO_PROXY_ENV
    )


class MemoryTLSClient:
    """Python's ssl (OpenSSL) over memory BIOs and a socket: unlike ``SSLSocket`` it can send
    close_notify and go on reading, or read the server's close_notify and go on sending."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_hostname="localhost")
        self.sock = socket.create_connection((host, port), timeout=10)
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                self._fill()
        self._flush()

    def _flush(self) -> None:
        if data := self.outgoing.read():
            self.sock.sendall(data)

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        if data:
            self.incoming.write(data)
        else:
            self.incoming.write_eof()
        return bool(data)

    def send(self, data: bytes) -> None:
        self.tls.write(data)
        self._flush()

    def close_notify(self) -> None:
        """Our close_notify; the connection stays open for what the server still sends."""
        with contextlib.suppress(ssl.SSLWantReadError):
            self.tls.unwrap()  # sends it, then waits for the server's: not here
        self._flush()

    def read_until_closed(self) -> tuple[bytes, str]:
        """Everything until the server closes: (the data, ``close_notify`` or ``eof``)."""
        data = b""
        while True:
            try:
                chunk = self.tls.read(65536)
            except ssl.SSLWantReadError:
                if not self._fill():
                    return data, "eof"
                continue
            except ssl.SSLZeroReturnError:
                return data, "close_notify"
            except ssl.SSLEOFError:
                return data, "eof"
            if not chunk:
                return data, "close_notify"
            data += chunk

    def read(self, count: int) -> bytes:
        """At least ``count`` bytes of application data (fewer if the server closes first)."""
        data = b""
        while len(data) < count:
            try:
                data += self.tls.read(65536)
            except ssl.SSLWantReadError:
                if not self._fill():
                    break
        return data

    def close(self) -> None:
        self.sock.close()


def proxy_reports(reports: list[ProxyReport], count: int = 1) -> list[ProxyReport]:
    deadline = time.monotonic() + 10
    while len(reports) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(reports) >= count, reports
    return reports


# ---------------------------------------------------------------------------------------------
# TCP: curl and openssl s_client through the stateless HRR, in front of http.server


HRR_LINE = r"peer=127\.0\.0\.1:(\d+) validation=hrr hrr=yes cookie=verified .* duration="


def test_curl_through_the_stateless_hrr(
    front_door: Callable[..., FrontDoor], http_backend: Callable[..., HttpBackend]
) -> None:
    backend = http_backend()
    server = front_door("--proxy-to", f"127.0.0.1:{backend.port}", "--validation", "hrr")
    assert server.mode == "proxy"
    assert f"to 127.0.0.1:{backend.port}" in server.stdout[0], server.output()
    got = curl(server.port, f"https://localhost:{server.port}/")
    assert got.returncode == 0 and BACKEND_PAGE.encode() in got.stdout, got
    body = os.urandom(1 << 20)
    posted = curl(
        server.port, "--data-binary", "@-", f"https://localhost:{server.port}/sha", input=body
    )
    expected = f"length {len(body)} sha256 {hashlib.sha256(body).hexdigest()}"
    assert posted.returncode == 0 and expected.encode() in posted.stdout, posted
    # The server's account: each connection through the cookie, each tunnel closed by both.
    server.line(HRR_LINE, count=2)
    line = server.line(r"proxy peer=\S+ backend=\S+ up=(\d+)B down=(\d+)B .* end=closed$", 2)
    assert int(line[1]) > len(body), line[0]
    assert [r.method for r in backend.requests] == ["GET", "POST"]
    server.stop()


def test_openssl_s_client_through_the_stateless_hrr(
    front_door: Callable[..., FrontDoor], http_backend: Callable[..., HttpBackend]
) -> None:
    backend = http_backend()
    server = front_door("--proxy-to", f"127.0.0.1:{backend.port}", "--validation", "hrr")
    command = [require_peer("openssl"), "s_client", "-connect", f"127.0.0.1:{server.port}"]
    command += ["-servername", "localhost", "-tls1_3", "-ign_eof", "-msg"]
    # HTTP/1.0: http.server closes after the answer; its close becomes our close_notify, on
    # which s_client (-ign_eof: reading until the server closes) exits 0.
    run = subprocess.run(
        command, input="GET / HTTP/1.0\r\n\r\n", capture_output=True, text=True, timeout=30
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert BACKEND_PAGE in run.stdout and " 200 OK" in run.stdout, run.stdout[-3000:]
    assert len(re.findall(r">>> TLS 1\.3, Handshake \[length \w+\], ClientHello", run.stdout)) == 2
    server.line(HRR_LINE)
    server.line(r"proxy peer=.* end=closed$")
    server.stop()


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_proxy_protocol_v2_names_the_client(
    front_door: Callable[..., FrontDoor], http_backend: Callable[..., HttpBackend], host: str
) -> None:
    backend = http_backend(proxy_protocol=True)
    server = front_door(
        "--host", host, "--proxy-to", f"127.0.0.1:{backend.port}", "--proxy-protocol", "v2",
        "--alpn", "http/1.1", "--validation", "hrr",
    )  # fmt: skip
    assert "with PROXY protocol v2" in server.stdout[0], server.output()
    got = curl(server.port, f"https://localhost:{server.port}/", host=host)
    assert got.returncode == 0 and BACKEND_PAGE.encode() in got.stdout, got
    (header,) = backend.proxy_headers
    # The client's address and port as the server logged them, and the address it connected to.
    logged = server.line(r"peer=([0-9a-f.:]+):(\d+) validation=hrr hrr=yes cookie=verified")
    assert header.command == 0x21  # version 2, PROXY
    assert header.family == (0x11 if host == "127.0.0.1" else 0x21)  # TCP4, TCP6
    assert header.source == (logged[1], int(logged[2])) and logged[1] == host, header
    assert header.destination == (host, server.port), header
    assert header.tlvs == {0x01: b"http/1.1", 0x02: b"localhost"}  # ALPN, authority (SNI)
    server.stop()


def test_proxy_v2_header_encoding() -> None:
    # HAProxy's proxy-protocol.txt, 2.2: signature, 0x21 (v2, PROXY), family, length, addresses.
    signature = bytes.fromhex("0d0a0d0a000d0a515549540a")
    assert signature == PROXY_V2_SIGNATURE
    v4 = proxy_v2_header(("192.0.2.1", 56324), ("198.51.100.2", 443))
    assert v4 == PROXY_V2_SIGNATURE + bytes.fromhex(
        "21 11 000c c0000201 c6336402 dc04 01bb".replace(" ", "")
    )
    # An IPv4-mapped IPv6 address (a dual-stack socket) is IPv4 on the wire.
    assert proxy_v2_header(("::ffff:192.0.2.1", 56324), ("198.51.100.2", 443)) == v4
    # Mixed families: both as IPv6 (TCP6), the IPv4 one mapped.
    mixed = proxy_v2_header(("2001:db8::1", 1), ("192.0.2.1", 2), alpn="h2", authority="a.b")
    header = read_proxy_v2(_reader(mixed))
    assert header.family == 0x21
    assert header.source == ("2001:db8::1", 1) and header.destination == ("::ffff:192.0.2.1", 2)
    assert header.tlvs == {0x01: b"h2", 0x02: b"a.b"}
    assert len(mixed) == 16 + 36 + (3 + 2) + (3 + 3)


def _reader(data: bytes) -> Callable[[int], bytes]:
    position = 0

    def read(count: int) -> bytes:
        nonlocal position
        position += count
        return data[position - count : position]

    return read


def test_backend_down_gets_a_clean_close_and_a_log_line(
    front_door: Callable[..., FrontDoor],
) -> None:
    port = closed_port()
    server = front_door("--proxy-to", f"127.0.0.1:{port}", "--validation", "hrr")
    client = MemoryTLSClient(server.port)  # the handshake completes: TLS ends here
    client.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    data, how = client.read_until_closed()
    client.close()
    assert (data, how) == (b"", "close_notify")
    got = curl(server.port, f"https://localhost:{server.port}/")
    assert got.returncode == 52, got  # curl: "Empty reply from server"
    line = server.line(r"proxy peer=\S+ backend=\S+ up=\d+B down=0B .* end=backend_down (.*)")
    assert line[1] == f"error='backend 127.0.0.1:{port}: connect: Connection refused'", line[0]
    server.line(rf"backend 127\.0\.0\.1:{port} unreachable \(1 times\)")
    server.line(HRR_LINE)  # the connection's own line: no error of the client's
    server.stop()  # no traceback


def test_backend_connect_timeout(front_door: Callable[..., FrontDoor]) -> None:
    listener, filler, port = unanswered_port()
    try:
        server = front_door("--proxy-to", f"127.0.0.1:{port}", "--proxy-connect-timeout", "0.5")
        started = time.monotonic()
        client = MemoryTLSClient(server.port)
        data, how = client.read_until_closed()
        client.close()
        assert (data, how) == (b"", "close_notify")
        assert 0.4 < time.monotonic() - started < 5
        server.line(r"end=backend_down error='backend \S+: connect timeout \(0\.5s\)'")
        server.stop()
    finally:
        filler.close()
        listener.close()


# ---------------------------------------------------------------------------------------------
# TCP: half-close, backpressure, idle (in this process, the proxy's own reports)


def tunnel_server(
    tls_server: ServerFactory, port: int, reports: list[ProxyReport], **options: Any
) -> RunningServer:
    handler = tcp_proxy(Backend("127.0.0.1", port), on_report=reports.append, **options)
    return tls_server(handler=handler, validation="hrr")


def test_half_close_from_the_client(tls_server: ServerFactory) -> None:
    # The client's close_notify becomes the backend's EOF; the backend's answer still comes
    # back, then its close as our close_notify.
    backend, reports = RawBackend("eof_then_reply"), list[ProxyReport]()
    server = tunnel_server(tls_server, backend.port, reports)
    client = MemoryTLSClient(server.port)
    client.send(b"x" * 300_000)
    client.close_notify()
    data, how = client.read_until_closed()
    client.close()
    assert (data, how) == (b"got 300000 bytes\n", "close_notify")
    assert backend.received == [b"x" * 300_000]
    (report,) = proxy_reports(reports)
    assert (report.end, report.bytes_up, report.bytes_down) == ("closed", 300_000, 17), report
    assert server.only_report().error is None
    backend.close()


def test_half_close_from_the_backend(tls_server: ServerFactory) -> None:
    # The backend closes its sending side first: the client gets close_notify, and what it sends
    # after that still reaches the backend.
    backend, reports = RawBackend("greet_then_read"), list[ProxyReport]()
    server = tunnel_server(tls_server, backend.port, reports)
    client = MemoryTLSClient(server.port)
    data, how = client.read_until_closed()
    assert (data, how) == (b"hello\n", "close_notify")
    client.send(b"sent after the server's close_notify")
    client.close_notify()
    client.sock.shutdown(socket.SHUT_WR)
    assert backend.done.wait(10)
    client.close()
    assert backend.received == [b"sent after the server's close_notify"]
    (report,) = proxy_reports(reports)
    assert report.end == "closed" and report.error is None, report
    backend.close()


def test_backpressure_holds_the_backend(tls_server: ServerFactory) -> None:
    # A client that stops reading: the tunnel stops reading the backend, whose sends block once
    # the sockets' buffers are full (loopback: a few MiB each way), far short of what it has.
    size = 400 << 20
    backend, reports = RawBackend("flood", size), list[ProxyReport]()
    server = tunnel_server(tls_server, backend.port, reports)
    client = MemoryTLSClient(server.port)
    client.send(b"go")
    time.sleep(1.5)
    stalled = backend.sent
    time.sleep(0.5)
    assert backend.sent == stalled < 64 << 20, (stalled, size)
    assert len(client.read(8 << 20)) >= 8 << 20  # reading again lets it go on
    time.sleep(0.5)
    assert backend.sent > stalled
    client.close()
    backend.close()


def test_idle_tunnel_is_closed(tls_server: ServerFactory) -> None:
    backend, reports = RawBackend("eof_then_reply"), list[ProxyReport]()
    server = tunnel_server(tls_server, backend.port, reports, idle_timeout=0.5)
    started = time.monotonic()
    client = MemoryTLSClient(server.port)
    data, how = client.read_until_closed()
    client.close()
    assert (data, how) == (b"", "close_notify")
    assert 0.4 < time.monotonic() - started < 5
    (report,) = proxy_reports(reports)
    assert report.end == "idle" and report.error == "idle_timeout (0.5s)", report
    backend.close()


# ---------------------------------------------------------------------------------------------
# The command line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mode", "echo", "--proxy-to", "127.0.0.1:1"], "--mode echo and --proxy-to: choose one"),
        (["--proxy-protocol", "v2"], "--proxy-protocol goes with --proxy-to"),
        (["--proxy-to", "127.0.0.1"], "--proxy-to '127.0.0.1': give HOST:PORT"),
        (["--proxy-to", "http://127.0.0.1:80"], "give HOST:PORT (TCP pipes bytes"),
        (["--quic", "--proxy-to", "https://a:1"], "only http:// backends"),
        (["--quic", "--proxy-to", "http://a:1/x"], "no path"),
        (["--quic", "--proxy-to", "http://a:1", "--proxy-protocol", "v2"], "is for TCP"),
        (["--proxy-to", "a:1", "--proxy-timeout", "3"], "--proxy-timeout is for --quic"),
        (["--proxy-to", "a:1", "--early-data", "100"], "could not tell replayable"),
        (["--quic", "--proxy-to", "http://a:1", "--early-data", "1"], "could not tell replayable"),
        (["--quic", "--proxy-to", "http://a:1", "--proxy-timeout", "0"], "must be positive"),
    ],
)
def test_command_line_mistakes(args: list[str], message: str) -> None:
    run = cli_serve(*args)
    assert run.returncode == 2, run
    assert run.stderr.startswith("stateless13: ") and message in run.stderr, run.stderr
    assert "Traceback" not in run.stderr and len(run.stderr.splitlines()) == 1, run.stderr


# ---------------------------------------------------------------------------------------------
# HTTP/3: the clients

QUICGO_PROXY_CLIENT = r"""
// quicgoproxyclient: a quic-go HTTP/3 client for the front door's tests (tests/peers/test_proxy.py
// writes this file and builds it, like quicgoclient, against Debian's quic-go 0.29, GOPATH mode).
// Any method; a generated request body (pattern byte i = i % 251), streamed, with or without
// content-length; extra header fields; several requests at once on one connection; a slow
// sender or reader.  Per request: "request I status S in T", "sent N sha256 H", "received N
// sha256 H", "header NAME: VALUE" and, for a short body, "body <%q>".  Exit 0 when every request
// got a whole response (whatever its status), 1 otherwise.
package main

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"flag"
	"fmt"
	"hash"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	quic "github.com/lucas-clemente/quic-go"
	"github.com/lucas-clemente/quic-go/http3"
)

type body struct {
	left  int64
	pos   int64
	sum   hash.Hash
	delay time.Duration
}

func (b *body) Read(p []byte) (int, error) {
	if b.left == 0 {
		return 0, io.EOF
	}
	if b.delay > 0 {
		time.Sleep(b.delay)
	}
	n := int64(len(p))
	if n > b.left {
		n = b.left
	}
	if n > 16384 {
		n = 16384
	}
	for i := int64(0); i < n; i++ {
		p[i] = byte((b.pos + i) % 251)
	}
	b.sum.Write(p[:n])
	b.pos += n
	b.left -= n
	return int(n), nil
}

func (b *body) Close() error { return nil }

type headerList []string

func (h *headerList) String() string     { return strings.Join(*h, ",") }
func (h *headerList) Set(v string) error { *h = append(*h, v); return nil }

func main() {
	method := flag.String("method", "GET", "request method")
	path := flag.String("path", "/", "request path")
	size := flag.Int64("body", -1, "a generated request body of this many bytes (-1: none)")
	unknown := flag.Bool("unknown-length", false, "send the body without content-length")
	sendDelay := flag.Duration("send-delay", 0, "pause before each 16 KiB of the request body")
	readDelay := flag.Duration("read-delay", 0, "pause before each 16 KiB read of the response")
	parallel := flag.Int("n", 1, "requests at once, on one connection")
	var headers headerList
	flag.Var(&headers, "header", "NAME: VALUE, repeatable")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: quicgoproxyclient [options] HOST:PORT")
		os.Exit(2)
	}
	transport := &http3.RoundTripper{
		TLSClientConfig: &tls.Config{
			InsecureSkipVerify: true, ServerName: "localhost", NextProtos: []string{"h3"},
		},
		QuicConfig: &quic.Config{
			HandshakeIdleTimeout: 5 * time.Second,
			MaxIdleTimeout:       30 * time.Second,
			Versions:             []quic.VersionNumber{quic.Version1},
		},
		DisableCompression: true,
	}
	defer transport.Close()
	client := &http.Client{Transport: transport, Timeout: 60 * time.Second}
	var lock sync.Mutex
	var wait sync.WaitGroup
	failed := false
	fail := func() { lock.Lock(); failed = true; lock.Unlock() }
	for i := 0; i < *parallel; i++ {
		wait.Add(1)
		go func(index int) {
			defer wait.Done()
			var out strings.Builder
			defer func() { lock.Lock(); fmt.Print(out.String()); lock.Unlock() }()
			url := "https://" + flag.Arg(0) + *path
			var sent *body
			var request *http.Request
			var err error
			if *size >= 0 {
				sent = &body{left: *size, sum: sha256.New(), delay: *sendDelay}
				request, err = http.NewRequest(*method, url, sent)
				if err == nil {
					request.ContentLength = *size
					if *unknown {
						request.ContentLength = -1
					}
				}
			} else {
				request, err = http.NewRequest(*method, url, nil)
			}
			if err != nil {
				fmt.Fprintf(&out, "request %d error: %v\n", index, err)
				fail()
				return
			}
			for _, header := range headers {
				name, value, _ := strings.Cut(header, ":")
				request.Header.Add(strings.TrimSpace(name), strings.TrimSpace(value))
			}
			started := time.Now()
			response, err := client.Do(request)
			if err != nil {
				fmt.Fprintf(&out, "request %d error: %v\n", index, err)
				fail()
				return
			}
			sum := sha256.New()
			var received int64
			var short []byte
			buf := make([]byte, 16384)
			for {
				if *readDelay > 0 {
					time.Sleep(*readDelay)
				}
				n, rerr := response.Body.Read(buf)
				sum.Write(buf[:n])
				if received+int64(n) <= 4096 {
					short = append(short, buf[:n]...)
				}
				received += int64(n)
				if rerr == io.EOF {
					break
				}
				if rerr != nil {
					fmt.Fprintf(&out, "request %d status %d body error after %d bytes: %v\n",
						index, response.StatusCode, received, rerr)
					fail()
					return
				}
			}
			response.Body.Close()
			fmt.Fprintf(&out, "request %d status %d in %.3fs\n",
				index, response.StatusCode, time.Since(started).Seconds())
			if sent != nil {
				fmt.Fprintf(&out, "sent %d sha256 %s\n",
					sent.pos, hex.EncodeToString(sent.sum.Sum(nil)))
			}
			fmt.Fprintf(&out, "received %d sha256 %s\n", received, hex.EncodeToString(sum.Sum(nil)))
			for name, values := range response.Header {
				for _, value := range values {
					fmt.Fprintf(&out, "header %s: %s\n", strings.ToLower(name), value)
				}
			}
			if received <= 4096 {
				fmt.Fprintf(&out, "body <%q>\n", short)
			}
		}(i)
	}
	wait.Wait()
	if failed {
		os.Exit(1)
	}
}
"""


@pytest.fixture(scope="session")
def quicgo_binaries(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    assert (GOPATH / "src/github.com/lucas-clemente/quic-go").is_dir(), (
        "quic-go is not installed: apt-get install golang-github-lucas-clemente-quic-go-dev"
    )
    work = tmp_path_factory.mktemp("quicgo")
    source = work / "src" / "quicgoproxyclient" / "main.go"
    source.parent.mkdir(parents=True)
    source.write_text(QUICGO_PROXY_CLIENT)
    binaries = work / "bin"  # each binary is named after its source's folder
    binaries.mkdir()
    return {
        "quicgoclient": build_go_program(QUICGO_SOURCE, binaries, GOPATH),
        "quicgoproxyclient": build_go_program(source, binaries, GOPATH),
    }


@dataclass
class Response:
    status: int | None
    received: int = 0
    received_sha256: str = ""
    sent: int | None = None
    sent_sha256: str = ""
    headers: dict[str, list[str]] = field(default_factory=dict)
    body: bytes = b""
    error: str | None = None


@dataclass
class H3Run:
    returncode: int
    output: str
    responses: list[Response]

    @property
    def response(self) -> Response:
        assert len(self.responses) == 1, self.output
        return self.responses[0]


def h3_fetch(binaries: dict[str, Path], port: int, *args: str) -> H3Run:
    """quicgoproxyclient ARGS 127.0.0.1:PORT, its output parsed."""
    command = [str(binaries["quicgoproxyclient"]), *args, f"127.0.0.1:{port}"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=PEER_TIMEOUT)
    responses: list[Response] = []
    for line in run.stdout.splitlines():
        if match := re.fullmatch(r"request \d+ status (\d+) in \S+", line):
            responses.append(Response(int(match[1])))
        elif match := re.fullmatch(r"request \d+ (?:status (\d+) )?(?:body )?error.*", line):
            responses.append(Response(int(match[1]) if match[1] else None, error=line))
        elif match := re.fullmatch(r"(sent|received) (\d+) sha256 (\w+)", line):
            setattr(responses[-1], match[1], int(match[2]))
            setattr(responses[-1], f"{match[1]}_sha256", match[3])
        elif match := re.fullmatch(r"header ([^:]+): (.*)", line):
            responses[-1].headers.setdefault(match[1], []).append(match[2])
        elif line.startswith("body <"):
            responses[-1].body = _go_quoted(line.removeprefix("body <").removesuffix(">"))
    return H3Run(run.returncode, run.stdout + run.stderr, responses)


def _go_quoted(text: str) -> bytes:
    """Go's %q of a byte slice (escapes as in C: \\n, \\", \\xNN) as bytes."""
    return bytes(text[1:-1].encode("latin-1").decode("unicode_escape").encode("latin-1"))


def chromium_h3(port: int, spki: str, url: str, tmp_path: Path, name: str) -> tuple[str, list[Any]]:
    """Headless Chromium over QUIC (PEERS.md, test_quic_peers.py): the DOM and its sessions."""
    netlog = tmp_path / f"netlog-{name}.json"
    command = [
        require_peer("chromium"), "--headless", "--no-sandbox", "--disable-gpu",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={tmp_path / f'profile-{name}'}",
        f"--origin-to-force-quic-on=localhost:{port}",
        f"--ignore-certificate-errors-spki-list={spki}",
        "--host-resolver-rules=MAP localhost 127.0.0.1, MAP * ~NOTFOUND",
        f"--log-net-log={netlog}", "--net-log-capture-mode=Everything",
        "--virtual-time-budget=10000", "--dump-dom", url,
    ]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, timeout=90)
    assert netlog.exists(), f"no NetLog; rc={run.returncode}\n{run.stderr[-2000:]}"
    return run.stdout, quic_sessions(load_netlog(netlog), f"localhost:{port}")


QUIC_HRR_LINE = r"peer=127\.0\.0\.1:\d+ quic validation=cookie hrr=yes cookie=verified"


# ---------------------------------------------------------------------------------------------
# HTTP/3: quic-go and Chromium through the stateless HRR, in front of http.server


def test_quic_go_through_the_stateless_hrr(
    front_door: Callable[..., FrontDoor],
    http_backend: Callable[..., HttpBackend],
    quicgo_binaries: dict[str, Path],
) -> None:
    backend = http_backend()
    server = front_door(
        "--quic", "--proxy-to", f"http://127.0.0.1:{backend.port}", "--validation", "hrr"
    )
    assert f"proxied to http://127.0.0.1:{backend.port}" in server.stdout[0], server.output()
    # The project's own quic-go client (a GET, exit 0 only for 200).
    run = subprocess.run(
        [str(quicgo_binaries["quicgoclient"]), f"127.0.0.1:{server.port}"],
        capture_output=True, text=True, timeout=PEER_TIMEOUT,
    )  # fmt: skip
    assert run.returncode == 0 and BACKEND_PAGE in run.stdout, run.stdout + run.stderr
    assert "HANDSHAKE_DONE alpn h3 tls 0x0304" in run.stdout
    server.line(QUIC_HRR_LINE)
    # What the backend is told, and what the client is not: the forwarding fields replace the
    # client's own claims; the backend's hop-by-hop fields stay behind.
    got = h3_fetch(
        quicgo_binaries, server.port, "-path", "/headers", "-header", "X-Forwarded-For: 6.6.6.6",
        "-header", "Forwarded: for=6.6.6.6", "-header", "Cookie: a=1", "-header", "Cookie: b=2",
    )  # fmt: skip
    response = got.response
    assert got.returncode == 0 and response.status == 200, got.output
    seen = json.loads(response.body)
    fields = {name.lower(): value for name, value in seen}
    peer = server.line(r"h3 peer=127\.0\.0\.1:(\d+) stream=\d+ method=GET target=/headers")
    client = f"127.0.0.1:{peer[1]}"
    authority = f"127.0.0.1:{server.port}"
    assert fields["host"] == authority
    assert fields["x-forwarded-for"] == "127.0.0.1"
    assert fields["x-forwarded-proto"] == "https"
    assert fields["x-forwarded-host"] == authority
    assert fields["forwarded"] == f'for="{client}";proto=https;host="{authority}"'
    assert fields["connection"] == "close"
    assert fields["cookie"] == "a=1; b=2"
    assert [name.lower() for name, _ in seen].count("x-forwarded-for") == 1
    assert response.headers["x-end-to-end"] == ["kept"]
    assert not {"connection", "x-hop", "keep-alive"} & set(response.headers), response.headers
    server.line(r"h3 peer=\S+ stream=\d+ method=GET target=/headers backend=\S+ status=200 ")
    server.stop()


def test_quic_go_bodies_streamed_both_ways(
    front_door: Callable[..., FrontDoor],
    http_backend: Callable[..., HttpBackend],
    quicgo_binaries: dict[str, Path],
) -> None:
    backend = http_backend()
    server = front_door(
        "--quic", "--proxy-to", f"http://127.0.0.1:{backend.port}", "--validation", "hrr"
    )
    size = 3 << 20
    expected = pattern_sha256(size)
    # Unknown length (chunked to the backend), echoed back as it comes: both ways at once.
    echo = h3_fetch(
        quicgo_binaries, server.port, "-method", "POST", "-path", "/echo", "-body", str(size),
        "-unknown-length",
    )  # fmt: skip
    response = echo.response
    assert echo.returncode == 0 and response.status == 200, echo.output
    assert (response.sent, response.sent_sha256) == (size, expected)
    assert (response.received, response.received_sha256) == (size, expected)
    # With content-length; the backend tells what it got.
    sha = h3_fetch(
        quicgo_binaries, server.port, "-method", "POST", "-path", "/sha", "-body", str(size)
    )
    assert sha.returncode == 0 and sha.response.status == 200, sha.output
    assert sha.response.body == f"length {size} sha256 {expected}\n".encode()
    # A download larger than every buffer on the way.
    big = h3_fetch(quicgo_binaries, server.port, "-path", f"/big?n={8 << 20}")
    assert big.returncode == 0 and big.response.status == 200, big.output
    assert big.response.received_sha256 == pattern_sha256(8 << 20)
    assert [(r.method, r.body_length) for r in backend.requests] == [
        ("POST", size), ("POST", size), ("GET", 0),
    ]  # fmt: skip
    server.line(QUIC_HRR_LINE, count=3)
    server.stop()


def test_chromium_get_and_post_through_the_stateless_hrr(
    front_door: Callable[..., FrontDoor],
    http_backend: Callable[..., HttpBackend],
    tmp_path: Path,
) -> None:
    backend = http_backend()
    server = front_door(
        "--quic", "--proxy-to", f"http://127.0.0.1:{backend.port}", "--validation", "hrr"
    )
    origin = f"https://localhost:{server.port}"
    dom, sessions = chromium_h3(server.port, server.spki, f"{origin}/", tmp_path, "get")
    assert BACKEND_PAGE in dom, dom
    assert any(s.hrr_seen and s.hrr_cookie and s.handshake_complete for s in sessions), sessions
    assert any("200" in s.statuses for s in sessions), sessions
    # A form posted by the page (1 MB of text), through the front door to the backend.
    size = 1_000_000
    dom, sessions = chromium_h3(
        server.port, server.spki, f"{origin}/form?n={size}", tmp_path, "post"
    )
    body = b"a=" + b"x" * (size - 4) + b"\r\n"
    assert f"length {len(body)} sha256 {hashlib.sha256(body).hexdigest()}" in dom, dom[:2000]
    assert any(s.hrr_seen and s.handshake_complete for s in sessions), sessions
    posts = [r for r in backend.requests if r.method == "POST"]
    assert [(r.path, r.body_length) for r in posts] == [("/sha", len(body))], backend.requests
    server.line(QUIC_HRR_LINE)
    server.line(r"h3 peer=\S+ stream=\d+ method=POST target=/sha backend=\S+ status=200 ")
    server.stop()


def test_backend_down_gets_502(
    front_door: Callable[..., FrontDoor], quicgo_binaries: dict[str, Path]
) -> None:
    port = closed_port()
    server = front_door("--quic", "--proxy-to", f"http://127.0.0.1:{port}", "--validation", "hrr")
    got = h3_fetch(quicgo_binaries, server.port)
    assert got.returncode == 0 and got.response.status == 502, got.output
    assert got.response.body == b"502 Bad Gateway\n"
    line = server.line(r"h3 peer=\S+ stream=0 method=GET target=/ backend=\S+ status=502 .*")
    assert line[0].endswith(f"error='backend 127.0.0.1:{port}: connect: Connection refused'")
    server.line(rf"backend 127\.0\.0\.1:{port} unreachable")
    server.line(QUIC_HRR_LINE)
    server.stop()  # no traceback


def test_backend_timeouts_get_504(
    front_door: Callable[..., FrontDoor],
    http_backend: Callable[..., HttpBackend],
    quicgo_binaries: dict[str, Path],
) -> None:
    backend = http_backend()
    server = front_door(
        "--quic", "--proxy-to", f"http://127.0.0.1:{backend.port}", "--proxy-timeout", "1"
    )
    started = time.monotonic()
    slow = h3_fetch(quicgo_binaries, server.port, "-path", "/slow?s=4")
    assert slow.returncode == 0 and slow.response.status == 504, slow.output
    assert time.monotonic() - started < 3.5
    server.line(r"status=504 .* error='backend_timeout \(1s\): the backend sent nothing'")
    listener, filler, port = unanswered_port()
    try:
        hanging = front_door(
            "--quic", "--proxy-to", f"http://127.0.0.1:{port}", "--proxy-connect-timeout", "0.5"
        )
        got = h3_fetch(quicgo_binaries, hanging.port)
        assert got.returncode == 0 and got.response.status == 504, got.output
        hanging.line(r"status=504 .* error='backend \S+: connect timeout \(0\.5s\)'")
        hanging.stop()
    finally:
        filler.close()
        listener.close()
    server.stop()


def test_limits(
    front_door: Callable[..., FrontDoor],
    http_backend: Callable[..., HttpBackend],
    quicgo_binaries: dict[str, Path],
) -> None:
    backend = http_backend()
    server = front_door(
        "--quic", "--proxy-to", f"http://127.0.0.1:{backend.port}", "--validation", "hrr",
        "--proxy-max-body", "100000", "--proxy-timeout", "1", "--proxy-max-streams", "2",
    )  # fmt: skip

    def fetch(*args: str) -> Response:
        got = h3_fetch(quicgo_binaries, server.port, *args)
        assert got.returncode == 0, got.output
        return got.response

    post = ("-method", "POST", "-path", "/sha")
    # The body: within the limit, over it as content-length says, over it as it streams.
    assert fetch(*post, "-body", "100000").status == 200
    assert fetch(*post, "-body", "100001").status == 413
    assert fetch(*post, "-body", "300000", "-unknown-length").status == 413
    # The header fields (16 KiB, counted as RFC 9114 §4.2.2 counts them).
    assert fetch("-header", f"X-Big: {'a' * 17000}").status == 431
    assert fetch("-header", f"X-Big: {'a' * 15000}").status == 200
    # A client that stops sending its body (--proxy-timeout: 1 s).
    assert fetch(*post, "-body", "50000", "-send-delay", "1500ms").status == 408
    # Six requests at once; two reach the backend at a time (QUIC MAX_STREAMS), all are answered.
    many = h3_fetch(quicgo_binaries, server.port, "-n", "6", "-path", "/slow?s=0.3")
    assert many.returncode == 0 and [r.status for r in many.responses] == [200] * 6, many.output
    assert backend.most_running == 2
    for error in (
        r"status=413 .* error='content-length 100001 over max_body_size \(100000 bytes\)'",
        r"status=413 .* error='request body over max_body_size \(100000 bytes\)'",
        r"status=431 .* error='request header fields of \d+ bytes \(max_header_size 16384\)'",
        r"status=408 .* error='client_timeout \(1s\): the request body stopped'",
    ):
        server.line(error)
    # Only the requests within the limits reached the backend (the streamed one in part).
    assert [r.path for r in backend.requests].count("/slow?s=0.3") == 6
    server.stop()


# ---------------------------------------------------------------------------------------------
# HTTP/3: backpressure, measured by the server's own reports (in this process)


@dataclass
class H3Front:
    port: int
    server: QuicServer
    requests: list[RequestReport] = field(default_factory=list)
    connections: list[ConnectionReport] = field(default_factory=list)

    def wait_requests(self, count: int) -> list[RequestReport]:
        deadline = time.monotonic() + 20
        while len(self.requests) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(self.requests) >= count, self.requests
        return self.requests


@pytest.fixture
def h3_front() -> Iterator[Callable[..., H3Front]]:
    running: list[tuple[asyncio.AbstractEventLoop, threading.Thread, asyncio.Event]] = []

    def start(backend_port: int, limits: H3ProxyLimits) -> H3Front:
        credential = Credential.self_signed("localhost")
        config = ServerConfig(credentials=(credential,), alpn_protocols=(b"h3",))
        loop = asyncio.new_event_loop()
        ready, stop = threading.Event(), asyncio.Event()
        holder: list[H3Front] = []

        async def main() -> None:
            server = await serve_quic(
                config, "127.0.0.1", 0, validation="hrr",
                create_protocol=h3_proxy(
                    Backend("127.0.0.1", backend_port), limits,
                    on_request=lambda r: holder[0].requests.append(r),
                ),
                on_report=lambda r: holder[0].connections.append(r),
            )  # fmt: skip
            holder.append(H3Front(server.address[1], server))
            ready.set()
            async with server:
                await stop.wait()

        thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
        thread.start()
        assert ready.wait(10), "the front door did not start"
        running.append((loop, thread, stop))
        return holder[0]

    yield start
    for loop, thread, stop in running:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()


def test_request_body_backpressure(
    h3_front: Callable[..., H3Front],
    http_backend: Callable[..., HttpBackend],
    quicgo_binaries: dict[str, Path],
) -> None:
    # A backend that takes 64 KiB every 20 ms, a client with 4 MiB to send: the client waits on
    # QUIC flow control, and no more than buffer_size of its body waits here at any time.
    backend = http_backend()
    buffer_size = 128 << 10
    front = h3_front(backend.port, H3ProxyLimits(buffer_size=buffer_size))
    size = 4 << 20
    got = h3_fetch(
        quicgo_binaries, front.port, "-method", "POST", "-path", "/sha?delay=0.02",
        "-body", str(size),
    )  # fmt: skip
    assert got.returncode == 0 and got.response.status == 200, got.output
    assert got.response.body == f"length {size} sha256 {pattern_sha256(size)}\n".encode()
    (report,) = front.wait_requests(1)
    assert report.bytes_up == size and report.error is None, report
    assert 0 < report.buffered_peak <= buffer_size, report
    assert all(c.error is None for c in front.connections), front.connections


def test_response_body_backpressure(
    h3_front: Callable[..., H3Front],
    http_backend: Callable[..., HttpBackend],
    quicgo_binaries: dict[str, Path],
) -> None:
    # A client that reads 16 KiB every 2 ms: what it has not acknowledged stays within
    # buffer_size (plus one read from the backend); the backend waits on TCP meanwhile.
    backend = http_backend()
    limits = H3ProxyLimits(buffer_size=256 << 10)
    front = h3_front(backend.port, limits)
    size = 6 << 20
    got = h3_fetch(quicgo_binaries, front.port, "-path", f"/big?n={size}", "-read-delay", "2ms")
    assert got.returncode == 0 and got.response.status == 200, got.output
    assert got.response.received_sha256 == pattern_sha256(size)
    (report,) = front.wait_requests(1)
    assert report.bytes_down == size and report.error is None, report
    # DATA frames add a few bytes each to what the stream carries.
    assert limits.buffer_size < report.unacked_peak <= limits.buffer_size + limits.read_size + 64
