"""Python's ssl (OpenSSL) over real sockets: blocking and asyncio clients against our server."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import ssl

import pytest

from stateless13 import NamedGroup
from tests.servers import PAGE_TEXT, RunningServer, ServerFactory

REQUEST = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


def client_context(server: RunningServer, compat: bool = True) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(server.cert_path))
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    if not compat:
        context.options &= ~ssl.OP_ENABLE_MIDDLEBOX_COMPAT
    return context


def blocking_get(server: RunningServer, compat: bool = True) -> tuple[bytes, str]:
    fetched = fetch(server, client_context(server, compat))
    return fetched.reply, fetched.version


@dataclasses.dataclass
class Fetched:
    reply: bytes
    version: str
    session: ssl.SSLSession | None  # with the tickets the server sent
    reused: bool  # the session offered was resumed


def fetch(
    server: RunningServer, context: ssl.SSLContext, session: ssl.SSLSession | None = None
) -> Fetched:
    """One request over a new connection (offering ``session`` if given), and what the client
    knew of its session before closing."""
    with (
        socket.create_connection((server.host, server.port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost", session=session) as tls,
    ):
        tls.sendall(REQUEST)
        reply = b""
        while chunk := tls.recv(65536):
            reply += chunk
        return Fetched(reply, str(tls.version()), tls.session, bool(tls.session_reused))


def assert_stateless_success(server: RunningServer) -> None:
    report = server.only_report()
    assert report.error is None, report
    assert report.hello_retry and report.cookie_verified, report
    assert report.handshake is not None


@pytest.mark.parametrize("compat", [True, False], ids=["compat", "no-compat"])
def test_blocking_python_ssl_client(tls_server: ServerFactory, compat: bool) -> None:
    server = tls_server()
    reply, version = blocking_get(server, compat)
    assert version == "TLSv1.3" and PAGE_TEXT.encode() in reply
    assert_stateless_success(server)


def test_asyncio_python_ssl_client(tls_server: ServerFactory) -> None:
    server = tls_server(groups=(NamedGroup.secp384r1,))

    async def get() -> bytes:
        reader, writer = await asyncio.open_connection(
            server.host, server.port, ssl=client_context(server), server_hostname="localhost"
        )
        writer.write(REQUEST)
        reply = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        return reply

    assert PAGE_TEXT.encode() in asyncio.run(get())
    assert_stateless_success(server)
    assert server.only_report().handshake.group == NamedGroup.secp384r1  # type: ignore[union-attr]


def test_no_stateless_mode_sends_no_hrr_when_the_share_fits(tls_server: ServerFactory) -> None:
    server = tls_server(validation="none", groups=(NamedGroup.x25519,))
    reply, _ = blocking_get(server)
    assert PAGE_TEXT.encode() in reply
    report = server.only_report()
    assert report.error is None and not report.hello_retry and not report.cookie_verified


@pytest.mark.parametrize("validation", ["hrr", "none"])
def test_python_ssl_resumes_with_sslsocket_session(
    tls_server: ServerFactory, validation: str
) -> None:
    """``SSLSocket.session`` over TCP (issue 15): the second connection offers the session the
    first one took (our tickets) and resumes, through the stateless HRR and without it; the
    server's reports say so."""
    server = tls_server(validation=validation)
    context = client_context(server)
    first = fetch(server, context)
    assert PAGE_TEXT.encode() in first.reply and first.session is not None
    second = fetch(server, context, first.session)
    assert PAGE_TEXT.encode() in second.reply and second.reused
    reports = server.wait_reports(2)
    assert [r.handshake is not None and r.handshake.resumed for r in reports] == [False, True]
    assert all(r.hello_retry is (validation == "hrr") and r.error is None for r in reports)
