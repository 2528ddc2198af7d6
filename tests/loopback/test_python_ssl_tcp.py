"""Python's ssl (OpenSSL) over real sockets: blocking and asyncio clients against our server."""

from __future__ import annotations

import asyncio
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
    context = client_context(server, compat)
    with (
        socket.create_connection((server.host, server.port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(REQUEST)
        reply = b""
        while chunk := tls.recv(65536):
            reply += chunk
        return reply, str(tls.version())


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
