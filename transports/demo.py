"""The small applications ``stateless13 serve`` runs over a :class:`TLSStream`: an HTTP/1.x page
saying what was negotiated (``--mode http``), and echo (``--mode echo``).  The tests serve them
too, so a real client has something to talk to."""

from __future__ import annotations

from .asyncio_tcp import TLSStream

PAGE_TEXT = "Hello from stateless13"


async def http_page(stream: TLSStream) -> None:
    """Answer one HTTP/1.x request with a page saying what was negotiated, then close.

    ``GET /keyupdate`` first sends a KeyUpdate that asks the client to update too (the
    convention of tlsfuzzer's test-tls13-keyupdate-from-server.py; OpenSSL s_server's ``K``).
    """
    request = b""
    while b"\r\n\r\n" not in request and len(request) < 65536:
        data = await stream.read()
        if not data:
            return
        request += data
    if request.startswith(b"GET /keyupdate "):
        stream.update_key(request_peer_update=True)
    info = stream.handshake
    body = (
        f"<!doctype html><title>stateless13</title><h1>{PAGE_TEXT}</h1>\n"
        f"<p>TLS 1.3, {info.cipher_suite.name}, {info.group.name}, "
        f"HelloRetryRequest: {'yes' if info.hello_retry else 'no'}, "
        f"cookie verified: {'yes' if info.cookie_verified else 'no'}</p>\n"
    ).encode()
    stream.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n"
        b"Connection: close\r\n\r\n" + body
    )
    await stream.drain()
    await stream.close()


async def echo(stream: TLSStream) -> None:
    """Send back every byte until the client closes."""
    while data := await stream.read():
        stream.write(data)
        await stream.drain()
    await stream.close()
