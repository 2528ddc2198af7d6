"""The small applications ``stateless13 serve`` runs over a :class:`TLSStream`: an HTTP/1.1 page
saying what was negotiated (``--mode http``), and echo (``--mode echo``).  The tests serve them
too, so a real client has something to talk to."""

from __future__ import annotations

import html
from email.utils import formatdate
from http import HTTPStatus

import h11

from .asyncio_tcp import TLSStream
from .common import NoClientCertificate

PAGE_TEXT = "Hello from stateless13"
PAGE_PATHS = (b"/", b"/keyupdate", b"/secret")
ALLOWED_METHODS = b"GET, HEAD"


async def http_page(stream: TLSStream) -> None:
    """Serve HTTP/1.1 (h11) until the client closes, says ``Connection: close`` (or speaks
    HTTP/1.0, which h11 never keeps alive), goes idle or sends a request that cannot be parsed;
    then send close_notify.

    ``GET /`` is a page saying what was negotiated; ``GET /keyupdate`` is the same page after a
    KeyUpdate that asks the client to update too (the convention of tlsfuzzer's
    test-tls13-keyupdate-from-server.py; OpenSSL s_server's ``K``); ``GET /secret`` is the page
    once the client has presented a certificate, after the handshake if need be (post-handshake
    authentication: tlsfuzzer's test-tls13-post-handshake-auth.py ``--pha-as-reply``), or 403 if
    it cannot (it did not offer that, or the server has no ``ClientAuth``).  HEAD gets GET's
    headers; any other path 404; any other method on those three 405.  A malformed request gets
    400; a request head still incomplete after h11's limit, 16 KiB
    (``h11.DEFAULT_MAX_INCOMPLETE_EVENT_SIZE``), gets 431; both then close, as the next request
    cannot be found in what follows.
    """
    http = h11.Connection(h11.SERVER)
    request: h11.Request | None = None
    while True:
        try:
            event = http.next_event()
        except h11.RemoteProtocolError as error:
            method = request.method if request is not None else b"GET"
            status, headers, body = _error(error.error_status_hint)
            await _respond(stream, http, method, status, headers, body)
            break
        if event is h11.NEED_DATA:
            # b"": close_notify, EOF, idle timeout or the server stopping.  A request cut
            # short by it gets no answer: the client is gone or has stopped sending.
            data = await stream.read()
            if not data:
                break
            http.receive_data(data)
        elif isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.EndOfMessage):
            # The whole request is in (a body is read and dropped: no page takes one), so
            # the connection can carry the next request once this one is answered.
            assert request is not None  # h11 gives a Request before its EndOfMessage
            try:
                await _answer(stream, http, request)
            except NoClientCertificate:  # refused (our alert is sent) or gone: nothing to say
                return
            if http.our_state is h11.MUST_CLOSE:
                break
            http.start_next_cycle()
            request = None
        elif not isinstance(event, h11.Data):
            break  # ConnectionClosed or PAUSED: neither comes, as no EOF is fed to h11
    await stream.close()


async def _answer(stream: TLSStream, http: h11.Connection, request: h11.Request) -> None:
    path = request.target.partition(b"?")[0]
    if path not in PAGE_PATHS:  # before the method: 405 would say the resource exists
        status, headers, body = _text(HTTPStatus.NOT_FOUND)
    elif request.method not in (b"GET", b"HEAD"):
        status, headers, body = _text(HTTPStatus.METHOD_NOT_ALLOWED)
        headers.append((b"Allow", ALLOWED_METHODS))
    else:
        if request.method == b"GET" and path == b"/keyupdate":
            stream.update_key(request_peer_update=True)
        if path == b"/secret" and not await _authenticated(stream):
            status, headers, body = _text(HTTPStatus.FORBIDDEN)
        else:
            status, headers, body = _page(stream)
    await _respond(stream, http, request.method, status, headers, body)


Headers = list[tuple[bytes, bytes]]


def _page(stream: TLSStream) -> tuple[HTTPStatus, Headers, bytes]:
    info = stream.handshake
    body = (
        f"<!doctype html><title>stateless13</title><h1>{PAGE_TEXT}</h1>\n"
        f"<p>TLS 1.3, {info.cipher_suite.name}, {info.key_exchange}, "
        f"HelloRetryRequest: {'yes' if info.hello_retry else 'no'}, "
        f"cookie verified: {'yes' if info.cookie_verified else 'no'}, "
        f"session resumed: {'yes' if info.resumed else 'no'}, "
        f"early data (0-RTT): {'yes' if info.early_data else 'no'}, "
        f"client certificate: {_client(stream)}</p>\n"
    ).encode()
    return HTTPStatus.OK, [(b"Content-Type", b"text/html; charset=utf-8")], body


async def _authenticated(stream: TLSStream) -> bool:
    """The client's certificate, asked for now if it has not shown one (§4.6.2)."""
    if stream.client_certificate is not None:
        return True
    if not stream.post_handshake_auth or stream.config.client_auth is None:
        return False
    return await stream.request_client_certificate() is not None


def _client(stream: TLSStream) -> str:
    if stream.client_certificate is None:
        return "none"
    return html.escape(stream.client_certificate.subject)


def _text(status: HTTPStatus) -> tuple[HTTPStatus, Headers, bytes]:
    body = f"{status.value} {status.phrase}\n".encode()
    return status, [(b"Content-Type", b"text/plain; charset=utf-8")], body


def _error(status_hint: int) -> tuple[HTTPStatus, Headers, bytes]:
    status, headers, body = _text(HTTPStatus(status_hint))
    # h11 does not mark a connection whose request failed to parse as closing: say it here
    headers.append((b"Connection", b"close"))
    return status, headers, body


async def _respond(
    stream: TLSStream,
    http: h11.Connection,
    method: bytes,
    status: HTTPStatus,
    headers: Headers,
    body: bytes,
) -> None:
    """Send one response; HEAD gets the headers GET would, Content-Length included."""
    headers = [
        *headers,
        (b"Content-Length", str(len(body)).encode()),
        (b"Date", formatdate(usegmt=True).encode()),
        (b"Server", b"stateless13"),
    ]
    response = h11.Response(status_code=status.value, reason=status.phrase, headers=headers)
    data = http.send(response)
    if method != b"HEAD":
        data += http.send(h11.Data(data=body))
    data += http.send(h11.EndOfMessage())
    # One write, so one TLS record for a small response: tlsfuzzer expects the page whole.
    stream.write(data)
    await stream.drain()


async def echo(stream: TLSStream) -> None:
    """Send back every byte until the client closes."""
    while data := await stream.read():
        stream.write(data)
        await stream.drain()
    await stream.close()
