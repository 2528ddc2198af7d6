"""StatelessSSLContext (transports/ssl_context.py) as asyncio's ``ssl=``, and under uvicorn and
hypercorn, fetched by real clients: Python's ssl, curl, tlslite-ng (X25519MLKEM768 with kyber-py)
and headless Chromium (X25519MLKEM768, HTTP/1.1 and h2).

Each server runs in a thread with its own event loop, on a socket bound here.  The server's side
of every handshake is the HandshakeReport the context hands ``on_handshake``: every client went
through the stateless HelloRetryRequest (``hello_retry``) and came back with the cookie
(``cookie_verified``), which only our TLS can report.
"""

from __future__ import annotations

import _ssl
import asyncio
import contextlib
import datetime
import ipaddress
import logging
import socket
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import hypercorn.asyncio
import hypercorn.config
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from stateless13 import (
    AlertDescription,
    ClientAuth,
    Credential,
    LocalProtocolError,
    NamedGroup,
    ServerConfig,
)
from stateless13.transports.ssl_context import (
    HandshakeReport,
    StatelessSSLContext,
    StatelessSSLError,
    StatelessSSLObject,
)
from tests.peers.test_chromium import ChromiumRun, chromium_get
from tests.peers.test_cli_peers import AES128, P256, assert_curl_ok, curl_get, run_peer, tlslite_get
from tests.servers import PAGE_TEXT, RunningServer, require_peer

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ServeFunction = Callable[["Served", socket.socket, asyncio.Event], Awaitable[None]]
MLKEM = NamedGroup.X25519MLKEM768


@dataclass
class Served:
    """A server running with our context: its port, certificate and the handshakes it saw."""

    port: int
    cert_path: Path
    credential: Credential
    context: StatelessSSLContext
    reports: list[HandshakeReport] = field(default_factory=list)
    #: What the asyncio handler saw of each connection: its transport's extra info.
    seen: list[dict[str, Any]] = field(default_factory=list)

    @property
    def running(self) -> RunningServer:
        """As the other peer tests' helpers (curl_get, chromium_get) take a server."""
        return RunningServer("127.0.0.1", self.port, self.cert_path, self.credential)

    def completed(self, count: int, timeout: float = 10.0) -> list[HandshakeReport]:
        """The reports of completed handshakes, once there are ``count`` (or the timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            done = [r for r in self.reports if r.handshake is not None]
            if len(done) >= count or time.monotonic() > deadline:
                return done
            time.sleep(0.01)

    def only_report(self) -> HandshakeReport:
        deadline = time.monotonic() + 10
        while not self.reports and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(self.reports) == 1, self.reports
        return self.reports[0]


@contextlib.contextmanager
def serving(
    serve: ServeFunction,
    tmp_path: Path,
    *,
    debug: bool = False,
    client_auth: ClientAuth | None = None,
    alpn_protocols: tuple[bytes, ...] = (),
) -> Iterator[Served]:
    """Run ``serve(served, listening_socket, stop)`` in a thread with its own event loop."""
    credential = Credential.self_signed("localhost")
    cert_path = tmp_path / "cert.pem"
    cert_path.write_bytes(credential.certificate_pem())
    config = ServerConfig(
        credentials=(credential,), client_auth=client_auth, alpn_protocols=alpn_protocols
    )
    reports: list[HandshakeReport] = []
    context = StatelessSSLContext(config, on_handshake=reports.append)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    served = Served(sock.getsockname()[1], cert_path, credential, context, reports)
    loop = asyncio.new_event_loop()
    loop.set_debug(debug)
    stops: list[asyncio.Event] = []
    started = threading.Event()
    failure: list[BaseException] = []

    async def main() -> None:
        stops.append(asyncio.Event())
        started.set()
        try:
            await serve(served, sock, stops[0])
        except BaseException as error:  # shown by the test, not lost in the thread
            failure.append(error)
            raise

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert started.wait(10), "the server's loop did not start"
    try:
        yield served
    finally:
        loop.call_soon_threadsafe(stops[0].set)
        thread.join(20)
        assert not thread.is_alive(), "the server did not stop"
        loop.close()
        sock.close()
        assert not failure, failure


# --- the servers ---------------------------------------------------------------------------------


def page(server: str, detail: str) -> bytes:
    return f"<html><body><p>{PAGE_TEXT}</p><p>{server}: {detail}</p></body></html>".encode()


async def asyncio_server(served: Served, sock: socket.socket, stop: asyncio.Event) -> None:
    """``asyncio.start_server(handle, sock=..., ssl=context)``: an echo server that answers an
    HTTP GET with a page instead, and notes what asyncio's transport says of TLS."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        task.add_done_callback(handlers.discard)
        names = ("ssl_object", "sslcontext", "peercert", "cipher", "compression")
        served.seen.append({name: writer.get_extra_info(name) for name in names})
        try:
            data = await reader.read(65536)
            if data.startswith(b"GET "):
                while b"\r\n\r\n" not in data and (more := await reader.read(65536)):
                    data += more
                body = page("asyncio", "echo or GET")
                head = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n"
                writer.write(head + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            else:
                while data:
                    writer.write(data)
                    await writer.drain()
                    data = await reader.read(65536)
            await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 5)

    handlers: set[asyncio.Task[None]] = set()
    server = await asyncio.start_server(handle, sock=sock, ssl=served.context)
    async with server:
        await stop.wait()
    if handlers:  # let them end (the close_notify exchange), then stop the rest
        await asyncio.wait(set(handlers), timeout=5)
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)


async def asgi_app(scope: Scope, receive: Receive, send: Send) -> None:
    """The smallest ASGI app: a page naming the server, the scheme and the HTTP version."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    body = page(scope["server_name"], f"{scope['scheme']} HTTP/{scope['http_version']}")
    headers = [(b"content-type", b"text/html"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def uvicorn_app(scope: Scope, receive: Receive, send: Send) -> None:
    await asgi_app({**scope, "server_name": "uvicorn"}, receive, send)


async def hypercorn_app(scope: Scope, receive: Receive, send: Send) -> None:
    await asgi_app({**scope, "server_name": "hypercorn"}, receive, send)


async def uvicorn_server(served: Served, sock: socket.socket, stop: asyncio.Event) -> None:
    """uvicorn with our context: ``Config(ssl_context_factory=...)`` returns it."""
    config = uvicorn.Config(
        uvicorn_app,
        http="h11",
        lifespan="on",
        log_level="warning",
        ssl_context_factory=lambda config, default: served.context,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    await stop.wait()
    server.should_exit = True
    await task


class StatelessHypercornConfig(hypercorn.config.Config):
    """hypercorn's Config with our TLS: ``create_ssl_context`` returns our context (hypercorn
    otherwise builds one from ``certfile`` and ``keyfile``, whose presence ``ssl_enabled``
    checks)."""

    def __init__(self, context: StatelessSSLContext) -> None:
        super().__init__()
        self._context = context

    @property
    def ssl_enabled(self) -> bool:
        return True

    def create_ssl_context(self) -> ssl.SSLContext:
        return self._context


async def hypercorn_server(served: Served, sock: socket.socket, stop: asyncio.Event) -> None:
    config = StatelessHypercornConfig(served.context)
    config.bind = [f"fd://{sock.detach()}"]  # hypercorn's socket now
    config.accesslog = None
    app = cast(Any, hypercorn_app)  # hypercorn types its scopes as TypedDicts; ours are dicts
    await hypercorn.asyncio.serve(app, config, shutdown_trigger=stop.wait)


# --- what the server says ------------------------------------------------------------------------


def assert_through_the_cookie(report: HandshakeReport, group: NamedGroup) -> None:
    """Our TLS ran, through the stateless HRR: the report says so, and what was agreed."""
    assert report.error is None, report
    assert report.validation == "hrr", report
    assert report.hello_retry and report.cookie_verified, report
    h = report.handshake
    assert h is not None, report
    assert h.hello_retry and h.cookie_verified, report
    assert h.group == group, report
    assert h.server_name == "localhost", report


def assert_chromium_through_the_cookie(served: Served, run: ChromiumRun, alpn: str) -> None:
    """Every TLS connection Chromium made: TLS 1.3, X25519MLKEM768, an HRR and two
    ClientHellos (its NetLog); and on our side as many handshakes through the cookie."""
    detail = f"DOM: {run.dom[:500]!r}\nstderr: {run.stderr[-2000:]}\nreports: {served.reports}"
    assert PAGE_TEXT in run.dom, detail
    completed = [c for c in run.connections if c.version is not None]
    assert completed, f"no TLS connection in the NetLog: {run.connections}\n{detail}"
    for connection in completed:
        assert connection.version == "TLS 1.3", connection
        assert connection.group == MLKEM, connection
        assert connection.hrr_received and connection.client_hellos == 2, connection
    reports = served.completed(len(completed))
    assert len(reports) == len(completed), f"{len(completed)} in the NetLog, {detail}"
    for report in served.reports:
        assert report.error is None, report
    for report in reports:
        assert_through_the_cookie(report, MLKEM)
        assert report.handshake is not None and report.handshake.alpn_protocol == alpn, report


def client_context(cert_path: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(cert_path))
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    return context


# --- asyncio.start_server(ssl=StatelessSSLContext(...)) -----------------------------------------


def test_asyncio_python_ssl_client_echo(tmp_path: Path) -> None:
    with serving(asyncio_server, tmp_path) as served:
        raw = socket.create_connection(("127.0.0.1", served.port), timeout=10)
        with client_context(served.cert_path).wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.version() == "TLSv1.3"
            for message in (b"ping", b"x" * 100_000):
                tls.sendall(message)
                echoed = b""
                while len(echoed) < len(message):
                    echoed += tls.recv(65536)
                assert echoed == message
        report = served.only_report()
        assert_through_the_cookie(report, P256)
        # What asyncio's transport tells the application, from our object.
        (seen,) = served.seen
        ssl_object = seen["ssl_object"]
        assert isinstance(ssl_object, StatelessSSLObject)
        assert ssl_object.handshake == report.handshake and ssl_object.report == report
        assert seen["sslcontext"] is served.context
        assert seen["peercert"] is None and seen["compression"] is None
        assert seen["cipher"] == ("TLS_AES_128_GCM_SHA256", "TLSv1.3", 128)
        assert ssl_object.version() == "TLSv1.3" and ssl_object.group() == "secp256r1"


def test_asyncio_curl(tmp_path: Path) -> None:
    with serving(asyncio_server, tmp_path) as served:
        run = curl_get(served.running)
        assert_curl_ok(run, AES128)
        assert "asyncio: echo or GET" in run.output, run.log
        assert_through_the_cookie(served.only_report(), P256)


def test_asyncio_tlslite_x25519mlkem768(tmp_path: Path) -> None:
    """tlslite-ng with kyber-py leads with an X25519MLKEM768 share: our first preference, so the
    HRR carries only the cookie and the group stays."""
    with serving(asyncio_server, tmp_path) as served:
        run = tlslite_get(served.running)
        assert run.returncode == 0, run.log
        assert "Group used for key exchange: x25519mlkem768\n" in run.output, run.log
        report = served.only_report()
        assert_through_the_cookie(report, MLKEM)
        assert served.seen[0]["ssl_object"].group() == "X25519MLKEM768"


def make_client_certificate(directory: Path) -> tuple[Path, Path, bytes]:
    """A self-signed client certificate with every field ssl's dict form has (a subject of
    several attributes, DNS/IP/email/URI names, OCSP and CA issuer URIs, a CRL point): its
    PEM, its key's PEM and its DER."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "Ile-de-France"),
            x509.NameAttribute(NameOID.LOCALITY_NAME, "Paris"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "stateless13 tests"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "ssl_context"),
            x509.NameAttribute(NameOID.COMMON_NAME, "alice"),
            x509.NameAttribute(NameOID.EMAIL_ADDRESS, "alice@example.com"),
        ]
    )
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    uri = x509.UniformResourceIdentifier
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(0x0123456789ABCDEF)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
        )
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("alice.example.com"),
                    x509.IPAddress(ipaddress.ip_address("192.0.2.7")),
                    x509.IPAddress(ipaddress.ip_address("2001:db8::7")),
                    x509.RFC822Name("alice@example.com"),
                    uri("https://example.com/alice"),
                ]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityInformationAccess(
                [
                    x509.AccessDescription(
                        AuthorityInformationAccessOID.OCSP, uri("http://ocsp.example.com")
                    ),
                    x509.AccessDescription(
                        AuthorityInformationAccessOID.CA_ISSUERS, uri("http://ca.example.com/c")
                    ),
                ]
            ),
            critical=False,
        )
        .add_extension(
            x509.CRLDistributionPoints(
                [x509.DistributionPoint([uri("http://crl.example.com/c.crl")], None, None, None)]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "alice.pem", directory / "alice.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path, certificate.public_bytes(serialization.Encoding.DER)


def test_asyncio_client_certificate_in_ssl_dict_form(tmp_path: Path) -> None:
    """Python's ssl client presents a certificate (through the HRR); asyncio's ``peercert`` and
    our ``getpeercert()`` give it as ssl itself decodes it, field for field."""
    cert_path, key_path, der = make_client_certificate(tmp_path)
    client_auth = ClientAuth(trust_anchors=(der,))
    with serving(asyncio_server, tmp_path, client_auth=client_auth) as served:
        assert served.context.verify_mode == ssl.CERT_REQUIRED
        context = client_context(served.cert_path)
        context.load_cert_chain(cert_path, key_path)
        raw = socket.create_connection(("127.0.0.1", served.port), timeout=10)
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"who am I")
            assert tls.recv(100) == b"who am I"
        report = served.only_report()
        assert_through_the_cookie(report, P256)
        assert report.handshake is not None and report.handshake.client_certificate is not None
        (seen,) = served.seen
        expected = cast(Any, _ssl)._test_decode_cert(str(cert_path))  # ssl's own decoding
        assert seen["peercert"] == expected
        ssl_object = seen["ssl_object"]
        assert ssl_object.getpeercert() == expected
        assert ssl_object.getpeercert(binary_form=True) == der
        assert ssl_object.get_verified_chain() == [der]


def test_asyncio_refusal_sends_the_alert_then_raises_ssl_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A TLS 1.2 client is refused with protocol_version.  With OpenSSL asyncio drops the alert
    (curl sees the connection close: SSL_ERROR_SYSCALL); ours goes out first (curl names it),
    and the StatelessSSLError, an ssl.SSLError, reaches asyncio at the client's next bytes: it
    handles it as ssl's ("SSL handshake failed", logged in debug mode only)."""
    caplog.set_level(logging.DEBUG, logger="asyncio")
    with serving(asyncio_server, tmp_path, debug=True) as served:
        url = f"https://127.0.0.1:{served.port}/"
        run = run_peer(
            [require_peer("curl"), "-sS", "-k", "--tls-max", "1.2", "--max-time", "5", url]
        )
        assert run.returncode == 35 and "alert protocol version" in run.output, run.log
        report = served.only_report()
        assert report.handshake is None and report.error is not None, report
        assert report.error.startswith("protocol_version: "), report

        # A client that goes on after our alert: asyncio gets the error itself.
        client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client.maximum_version = ssl.TLSVersion.TLSv1_2
        client.check_hostname, client.verify_mode = False, ssl.CERT_NONE
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        client_object = client.wrap_bio(incoming, outgoing, server_hostname="localhost")
        with contextlib.suppress(ssl.SSLWantReadError):
            client_object.do_handshake()
        with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
            sock.sendall(outgoing.read())
            alert = sock.recv(7)
            assert alert == bytes((21, 3, 3, 0, 2, 2, AlertDescription.protocol_version))
            sock.sendall(b"\x16\x03\x03")
            assert sock.recv(100) == b""  # asyncio closed the connection
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            errors = [r.exc_info[1] for r in caplog.records if r.exc_info]
            if any(isinstance(e, StatelessSSLError) for e in errors):
                break
            time.sleep(0.01)
        failed = [r for r in caplog.records if r.exc_info and "SSL handshake failed" in r.message]
        assert failed, [r.message for r in caplog.records]
        error = failed[-1].exc_info[1] if failed[-1].exc_info else None
        assert isinstance(error, StatelessSSLError) and isinstance(error, ssl.SSLError)
        assert error.alert == AlertDescription.protocol_version and not error.received
        assert error.reason == "PROTOCOL_VERSION" and error.library == "stateless13"


# --- the object over memory BIOs, as asyncio drives it -------------------------------------------


def pump(
    client: ssl.SSLObject,
    c_in: ssl.MemoryBIO,
    c_out: ssl.MemoryBIO,
    server: StatelessSSLObject,
    s_in: ssl.MemoryBIO,
    s_out: ssl.MemoryBIO,
) -> bool:
    """Handshake both to the end; whether the server's completed."""
    done = False
    for _ in range(10):
        with contextlib.suppress(ssl.SSLWantReadError):
            client.do_handshake()
        s_in.write(c_out.read())
        try:
            server.do_handshake()
            done = True
        except ssl.SSLWantReadError:
            pass
        c_in.write(s_out.read())
    return done


def test_ssl_object_contract_over_memory_bios() -> None:
    """What asyncio relies on, step by step, with Python's ssl client: "want read" until the
    client's Finished, reads into buffers and by size, pending(), close_notify as b"", unwrap."""
    reports: list[HandshakeReport] = []
    config = ServerConfig.self_signed("localhost", alpn_protocols=(b"http/1.1",))
    context = StatelessSSLContext(config, on_handshake=reports.append)
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    server = context.wrap_bio(s_in, s_out, server_side=True)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname, client_ctx.verify_mode = False, ssl.CERT_NONE
    client_ctx.set_alpn_protocols(["h2", "http/1.1"])
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        server.do_handshake()  # nothing yet
    with pytest.raises(ValueError, match="handshake not done"):
        server.getpeercert()
    assert server.version() is None and server.cipher() is None
    assert pump(client, c_in, c_out, server, s_in, s_out)
    (report,) = reports
    assert report.hello_retry and report.cookie_verified and report.error is None
    assert server.selected_alpn_protocol() == "http/1.1" == client.selected_alpn_protocol()
    assert server.getpeercert() is None and server.session_reused is False
    assert server.get_channel_binding() is None  # tls-unique: not in TLS 1.3
    exporter = server.get_channel_binding("tls-exporter")
    assert exporter is not None and len(exporter) == 32

    with pytest.raises(ssl.SSLWantReadError):
        server.read(1024)
    client.write(b"hello, world")
    s_in.write(c_out.read())
    buffer = bytearray(5)
    assert server.read(5, memoryview(buffer)) == 5 and buffer == b"hello"
    assert server.pending() == 7
    assert server.read(1024) == b", world" and server.pending() == 0
    assert server.write(b"x" * 40_000) == 40_000
    c_in.write(s_out.read())
    received = b""
    with contextlib.suppress(ssl.SSLWantReadError):
        while chunk := client.read(65536):
            received += chunk
    assert received == b"x" * 40_000

    with pytest.raises(ssl.SSLWantReadError):
        client.unwrap()  # close_notify sent, waiting for ours
    s_in.write(c_out.read())
    assert server.read(1024) == b""  # the client's close_notify
    server.unwrap()  # returns: the client's close_notify came
    c_in.write(s_out.read())
    client.unwrap()
    with pytest.raises(ssl.SSLError):
        server.write(b"late")


def test_ssl_object_alert_first_then_the_error() -> None:
    """A refused client: the first call says "want read" with our alert in the outgoing buffer
    (asyncio sends it on that), the next one raises StatelessSSLError."""
    reports: list[HandshakeReport] = []
    context = StatelessSSLContext(
        ServerConfig.self_signed("localhost"), on_handshake=reports.append
    )
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    server = context.wrap_bio(s_in, s_out, server_side=True)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname, client_ctx.verify_mode = False, ssl.CERT_NONE
    client_ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="localhost")
    with contextlib.suppress(ssl.SSLWantReadError):
        client.do_handshake()
    s_in.write(c_out.read())
    with pytest.raises(ssl.SSLWantReadError):
        server.do_handshake()
    (report,) = reports
    assert report.error is not None and report.error.startswith("protocol_version"), report
    assert report.bytes_out == 7  # the alert record, counted though still in the buffer
    c_in.write(s_out.read())  # what asyncio does on "want read": the alert goes out
    with pytest.raises(ssl.SSLError, match="protocol version"):
        client.do_handshake()
    with pytest.raises(StatelessSSLError) as raised:
        server.do_handshake()
    assert isinstance(raised.value, ssl.SSLError) and isinstance(raised.value, OSError)
    assert raised.value.alert == AlertDescription.protocol_version
    assert str(raised.value).startswith("[stateless13: PROTOCOL_VERSION] protocol_version: ")
    with pytest.raises(StatelessSSLError):
        server.read(10)


def test_ssl_context_refuses_what_it_would_ignore(tmp_path: Path) -> None:
    """OpenSSL's settings on our context raise instead of doing nothing; what the ServerConfig
    says is readable the ssl way."""
    context = StatelessSSLContext(ServerConfig.self_signed("localhost"))
    sock = socket.socket()
    assert isinstance(context, ssl.SSLContext) and context
    assert context.verify_mode == ssl.CERT_NONE and not context.check_hostname
    assert context.minimum_version == context.maximum_version == ssl.TLSVersion.TLSv1_3
    for call in (
        lambda: context.load_cert_chain("cert.pem"),
        lambda: context.set_alpn_protocols(["h2"]),
        lambda: context.set_ciphers("ALL"),
        lambda: context.wrap_socket(sock),
        lambda: context.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO()),  # a client's
        lambda: setattr(context, "verify_mode", ssl.CERT_REQUIRED),
        lambda: setattr(context, "minimum_version", ssl.TLSVersion.TLSv1_2),
        lambda: setattr(context, "keylog_filename", str(tmp_path / "keys.log")),
        lambda: setattr(context, "sni_callback", lambda *args: None),
        lambda: StatelessSSLContext(ServerConfig.self_signed("localhost", early_data=1024)),
        lambda: StatelessSSLContext(ServerConfig.self_signed("localhost"), validation="adaptive"),
    ):
        with pytest.raises(LocalProtocolError):
            call()
    sock.close()


# --- uvicorn -------------------------------------------------------------------------------------


def test_uvicorn_curl(tmp_path: Path) -> None:
    with serving(uvicorn_server, tmp_path, alpn_protocols=(b"http/1.1",)) as served:
        run = curl_get(served.running)
        assert_curl_ok(run, AES128)
        assert "uvicorn: https HTTP/1.1" in run.output, run.log
        report = served.only_report()
        assert_through_the_cookie(report, P256)
        assert report.handshake is not None and report.handshake.alpn_protocol == "http/1.1"


def test_uvicorn_chromium(tmp_path: Path) -> None:
    with serving(uvicorn_server, tmp_path, alpn_protocols=(b"http/1.1",)) as served:
        run = chromium_get(served.running, tmp_path)
        assert "uvicorn: https HTTP/1.1" in run.dom, run.dom
        assert_chromium_through_the_cookie(served, run, "http/1.1")


# --- hypercorn -----------------------------------------------------------------------------------


def test_hypercorn_curl_h2(tmp_path: Path) -> None:
    with serving(hypercorn_server, tmp_path, alpn_protocols=(b"h2", b"http/1.1")) as served:
        run = curl_get(served.running)
        assert_curl_ok(run, AES128)
        assert "ALPN: server accepted h2" in run.output, run.log
        assert "hypercorn: https HTTP/2" in run.output, run.log
        report = served.only_report()
        assert_through_the_cookie(report, P256)
        assert report.handshake is not None and report.handshake.alpn_protocol == "h2"


def test_hypercorn_chromium_h2(tmp_path: Path) -> None:
    with serving(hypercorn_server, tmp_path, alpn_protocols=(b"h2", b"http/1.1")) as served:
        run = chromium_get(served.running, tmp_path)
        assert "hypercorn: https HTTP/2" in run.dom, run.dom
        assert_chromium_through_the_cookie(served, run, "h2")


def test_ssl_object_resumption_and_post_handshake_certificate(tmp_path: Path) -> None:
    """``verify_client_post_handshake`` asks Python's client for its certificate, which
    ``getpeercert()`` then gives; ``session_reused`` for a client resuming our ticket (with
    client_auth unset: a ticket issued before the client authenticated does not resume)."""
    cert_path, key_path, der = make_client_certificate(tmp_path)
    client_auth = ClientAuth(trust_anchors=(der,), post_handshake_only=True)
    with_auth = StatelessSSLContext(ServerConfig.self_signed("localhost", client_auth=client_auth))
    without_auth = StatelessSSLContext(ServerConfig.self_signed("localhost"))
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname, client_ctx.verify_mode = False, ssl.CERT_NONE
    client_ctx.load_cert_chain(cert_path, key_path)
    client_ctx.post_handshake_auth = True

    def connect(
        context: StatelessSSLContext, session: ssl.SSLSession | None
    ) -> tuple[ssl.SSLObject, StatelessSSLObject, list[ssl.MemoryBIO]]:
        bios = [ssl.MemoryBIO() for _ in range(4)]
        s_in, s_out, c_in, c_out = bios
        server = context.wrap_bio(s_in, s_out, server_side=True)
        client = client_ctx.wrap_bio(c_in, c_out, server_hostname="localhost", session=session)
        assert pump(client, c_in, c_out, server, s_in, s_out)
        with contextlib.suppress(ssl.SSLWantReadError):
            client.read(1)  # the tickets
        return client, server, bios

    client, server, (s_in, s_out, c_in, c_out) = connect(with_auth, None)
    assert server.getpeercert() is None and not server.session_reused
    server.verify_client_post_handshake()
    c_in.write(s_out.read())
    with pytest.raises(ssl.SSLWantReadError):
        client.read(1)  # answers the request
    s_in.write(c_out.read())
    with pytest.raises(ssl.SSLWantReadError):
        server.read(1)
    assert server.getpeercert(binary_form=True) == der
    assert server.getpeercert() == cast(Any, _ssl)._test_decode_cert(str(cert_path))

    client, server, _ = connect(without_auth, None)
    session = client.session
    assert session is not None and session.has_ticket
    client, server, _ = connect(without_auth, session)
    assert server.session_reused and client.session_reused
    assert server.handshake is not None and server.handshake.resumed
