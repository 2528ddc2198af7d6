"""An HTTP/3 front door: ``stateless13 serve --quic --proxy-to http://HOST:PORT``.

Each HTTP/3 request (behind the stateless front, like any connection of
:func:`~stateless13.transports.quic_server.serve_quic`) goes to an HTTP/1.1 backend over a
TCP connection of its own, spoken with h11, and its response comes back on the request's
stream::

    server = await serve_quic(config, "0.0.0.0", 443,
                              create_protocol=h3_proxy(Backend("127.0.0.1", 8080)))

**One backend connection per request**, closed after its response (``Connection: close``): no
pool, so no idle connection the backend may close under a request (the race every pool must
retry around, which a request whose body was already streamed cannot), and one request's
failure stays its own.  The price is a TCP connect per request on the backend's side,
measured by ``python -m bench proxy``.

What goes to the backend: the method and ``:path``; ``Host`` from ``:authority``; the
request's fields, less the hop-by-hop ones (RFC 9110 §7.6.1: aioquic already refuses a request
carrying them, but ``te: trailers``) and ``expect`` (no 100-continue is relayed); HTTP/3's
cookie crumbs joined into one ``cookie`` (RFC 9114 §4.2.1); ``Forwarded`` (RFC 7239:
``for="IP:port";proto=https;host="authority"``), ``X-Forwarded-For``, ``X-Forwarded-Proto``
and ``X-Forwarded-Host``, *replacing* any the client sent (a front door is where the client's
own claims stop); ``Connection: close``.  A body of unknown length goes as chunked.  What comes
back: the status and the fields, less the hop-by-hop ones and those the backend's
``Connection`` names; 1xx responses are dropped; chunked trailers become HTTP/3 trailers.

Both bodies are streamed, with backpressure each way:

* **Request body**: aioquic grants a stream more credit whenever the client has used half of it,
  whatever the application has read; here a request stream's credit is held to what the backend
  has taken plus ``buffer_size``, so a fast client in front of a slow backend waits on QUIC flow
  control, and at most ``buffer_size`` bytes of its body wait in this process.
* **Response body**: nothing more is read from the backend while more than ``buffer_size`` bytes
  of the response are unacknowledged by the client; the backend then waits on TCP.

A request body goes to the backend by 16 KiB (``COALESCE``), or 1 ms after its first bytes came
when it trickles: a QUIC packet's worth at a time would cost a write and a wakeup each.

Limits (:class:`H3ProxyLimits`), each answered with its status, or a stream reset when the
response has begun (its status is gone), and one log line:

=====================  ==========  ===================================================
limit                  default     over it
=====================  ==========  ===================================================
``max_header_size``    16 KiB      431 (request fields, counted as RFC 9114 §4.2.2:
                                   name + value + 32 per field); a backend's response
                                   head over it: 502
``max_body_size``      100 MiB     413, before connecting if ``content-length`` says
                                   so, else when the body goes over (the rest refused
                                   with STOP_SENDING H3_NO_ERROR, RFC 9114 §4.1)
``max_streams``        100         requests at once per connection: QUIC's MAX_STREAMS,
                                   so a client queues the next until one ends
``connect_timeout``    5 s         504; a refused connect (the backend is down): 502
``backend_timeout``    60 s        504: the backend sent nothing for that long once the
                                   request was sent, or took no request bytes
``client_timeout``     60 s        408: the client paused its request body that long;
                                   or took no response bytes that long (stream reset)
``buffer_size``        1 MiB       per stream and direction (see above)
=====================  ==========  ===================================================

A backend that is down or too slow never costs a traceback: its request gets 502 or 504 and the
log line says why (``error='backend 127.0.0.1:8080: connect: Connection refused'``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import h11
from aioquic.h3.connection import H3_ALPN, ErrorCode, H3Connection, ProtocolError
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic import events
from aioquic.quic.connection import (
    MAX_STREAM_DATA_FRAME_CAPACITY,
    stream_is_client_initiated,
    stream_is_unidirectional,
)
from aioquic.quic.packet import QuicErrorCode, QuicFrameType
from aioquic.quic.packet_builder import QuicPacketBuilder
from aioquic.quic.stream import QuicStream

from .common import RateLimitedWarning, _loggable
from .proxy import CONNECT_TIMEOUT, Backend, _reason, logger
from .quic_server import ProtocolFactory, StatelessQuicProtocol
from .quic_tls import StatelessQuicConnection

Headers = list[tuple[bytes, bytes]]
#: A request body goes to the backend by this many bytes, or this many seconds after its first
#: bytes came (the latency a trickle of small writes gets; a stream's end goes at once).
COALESCE = 16 << 10
COALESCE_DELAY = 0.001

#: RFC 9110 §7.6.1: meaningful for one connection only; never forwarded either way.
HOP_BY_HOP = frozenset(
    (b"connection", b"proxy-connection", b"keep-alive", b"te", b"transfer-encoding", b"upgrade")
)
#: What the front door sets itself; the client's own are dropped.
FORWARDING = frozenset(
    (b"forwarded", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host")
)


@dataclass(frozen=True)
class H3ProxyLimits:
    """Every limit of the HTTP/3 front door (the module's docstring says what each answers)."""

    connect_timeout: float = CONNECT_TIMEOUT
    backend_timeout: float = 60.0
    client_timeout: float = 60.0
    max_header_size: int = 16 << 10
    max_body_size: int | None = 100 << 20  # None: no limit
    max_streams: int = 100
    buffer_size: int = 1 << 20
    #: The most read from the backend at a time (and so the largest DATA frame sent).
    read_size: int = 64 << 10

    def __post_init__(self) -> None:
        if min(self.connect_timeout, self.backend_timeout, self.client_timeout) <= 0:
            raise ValueError("timeouts must be positive")
        if min(self.max_header_size, self.max_streams, self.buffer_size, self.read_size) < 1:
            raise ValueError("limits must be positive")
        if self.max_body_size is not None and self.max_body_size < 0:
            raise ValueError("max_body_size must be positive (or None)")
        if self.buffer_size < self.max_header_size:
            raise ValueError("buffer_size must hold a request's header fields")


@dataclass(frozen=True)
class RequestReport:
    """One request through the front door."""

    peer: tuple[str, int]
    stream_id: int
    method: str
    target: str
    backend: Backend
    status: int | None  # what the client got; None: the stream was reset (or never answered)
    bytes_up: int  # request body bytes the backend took
    bytes_down: int  # response body bytes sent to the client
    duration: float
    error: str | None = None
    #: The most request-body bytes that waited here at once, and the most response bytes
    #: sent but not yet acknowledged: what the backpressure held them to.
    buffered_peak: int = 0
    unacked_peak: int = 0

    def log_line(self) -> str:
        parts = [
            f"h3 peer={self.peer[0]}:{self.peer[1]}",
            f"stream={self.stream_id}",
            f"method={_loggable(self.method)}",
            f"target={_loggable(self.target)}",
            f"backend={self.backend}",
            f"status={self.status if self.status is not None else 'reset'}",
            f"up={self.bytes_up}B",
            f"down={self.bytes_down}B",
            f"duration={self.duration * 1000:.1f}ms",
        ]
        if self.error is not None:
            parts.append(f"error={self.error!r}")
        return " ".join(parts)


RequestCallback = Callable[[RequestReport], None]


def h3_proxy(
    backend: Backend,
    limits: H3ProxyLimits | None = None,
    on_request: RequestCallback | None = None,
) -> ProtocolFactory:
    """``create_protocol`` for :func:`~.quic_server.serve_quic`: every HTTP/3 request goes to
    ``backend`` (HTTP/1.1); ``on_request`` gets a :class:`RequestReport` per request (also
    logged on ``stateless13.proxy``)."""
    limits = limits or H3ProxyLimits()
    down = RateLimitedWarning(f"backend {backend} unreachable")

    def create(quic: StatelessQuicConnection) -> StatelessQuicProtocol:
        return H3ProxyProtocol(
            quic, backend=backend, limits=limits, on_request=on_request, down_warning=down
        )

    return create


class _Failure(Exception):
    """Why a request ends early: the status to answer with if the response has not begun (None:
    no answer, the stream is reset), the reason for the log, the reset's code otherwise."""

    def __init__(
        self, status: int | None, reason: str, code: int = ErrorCode.H3_INTERNAL_ERROR
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.code = code


class H3ProxyProtocol(StatelessQuicProtocol):
    """HTTP/3: every request is forwarded to an HTTP/1.1 backend (the module's docstring)."""

    def __init__(
        self,
        quic: StatelessQuicConnection,
        *,
        backend: Backend,
        limits: H3ProxyLimits | None = None,
        on_request: RequestCallback | None = None,
        down_warning: RateLimitedWarning | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(quic, **kwargs)
        self.backend = backend
        self.limits = limits or H3ProxyLimits()
        self.on_request = on_request
        self._down_warning = down_warning or RateLimitedWarning(f"backend {backend} unreachable")
        self._h3: H3Connection | None = None
        self._exchanges: dict[int, _Exchange] = {}
        _AioquicFlow.install(quic, self)

    # -- QUIC and HTTP/3 events ------------------------------------------------------------------

    def quic_event_received(self, event: events.QuicEvent) -> None:
        if isinstance(event, events.ProtocolNegotiated) and event.alpn_protocol in H3_ALPN:
            self._h3 = H3Connection(self._quic)
        elif isinstance(event, events.StreamReset | events.StopSendingReceived):
            exchange = self._exchanges.get(event.stream_id)
            if exchange is not None:
                exchange.client_reset(event.error_code, isinstance(event, events.StreamReset))
        if self._h3 is not None:
            for h3_event in self._h3.handle_event(event):
                self._h3_event_received(h3_event)
        if isinstance(event, events.ConnectionTerminated):
            self._cancel_all()

    def _h3_event_received(self, event: H3Event) -> None:
        if isinstance(event, HeadersReceived):
            exchange = self._exchanges.get(event.stream_id)
            if exchange is not None:  # trailers: not forwarded (HTTP/1.1 backends rarely take them)
                exchange.receive(b"", event.stream_ended)
            else:
                self._start(event)
        elif isinstance(event, DataReceived):
            exchange = self._exchanges.get(event.stream_id)
            if exchange is not None:
                exchange.receive(event.data, event.stream_ended)

    def _start(self, event: HeadersReceived) -> None:
        if len(self._exchanges) >= self.limits.max_streams:
            # QUIC's MAX_STREAMS keeps a client below this; should aioquic let one through all
            # the same, it is refused in a way the client may retry (RFC 9114 §4.1.1).
            self._reject(event.stream_id)
            return
        exchange = _Exchange(self, event.stream_id, event.headers, event.stream_ended)
        self._exchanges[event.stream_id] = exchange
        exchange.task = asyncio.create_task(exchange.run())

    def _reject(self, stream_id: int) -> None:
        with contextlib.suppress(ValueError, RuntimeError):
            self._quic.stop_stream(stream_id, ErrorCode.H3_REQUEST_REJECTED)
            self._quic.reset_stream(stream_id, ErrorCode.H3_REQUEST_REJECTED)
        self._transmit_soon()

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        super().datagram_received(data, addr)
        # Acknowledgements came: a response held back by its unacknowledged bytes may go on.
        for exchange in self._exchanges.values():
            if exchange.waiting_for_acks and self.unacked(exchange.stream_id) <= (
                self.limits.buffer_size
            ):
                exchange.writable.set()

    def close(self, error_code: int = QuicErrorCode.NO_ERROR, reason_phrase: str = "") -> None:
        self._cancel_all()  # no request outlives its connection (the server may be stopping)
        super().close(error_code, reason_phrase)

    def _cancel_all(self) -> None:
        for exchange in list(self._exchanges.values()):
            exchange.cancel()

    def _forget(self, exchange: _Exchange) -> None:
        if self._exchanges.get(exchange.stream_id) is exchange:
            del self._exchanges[exchange.stream_id]

    # -- what the exchanges use ------------------------------------------------------------------

    @property
    def h3(self) -> H3Connection:
        assert self._h3 is not None  # requests come only once HTTP/3 is on
        return self._h3

    def unacked(self, stream_id: int) -> int:
        return _AioquicFlow.unacked(self._quic, stream_id)

    def credit(self, stream_id: int, stream: QuicStream) -> int:
        """The receive credit a request stream may have now: what HTTP/3 and the backend have
        taken of it, plus ``buffer_size`` (0: none beyond what it has)."""
        exchange = self._exchanges.get(stream_id)
        if exchange is None or exchange.done or exchange.request_ended:
            return 0
        partial = _AioquicFlow.h3_buffered(self.h3, stream_id)
        taken = stream.receiver.starting_offset() - partial - exchange.buffered
        return taken + self.limits.buffer_size

    def credit_taken(self, stream_id: int) -> None:
        """The backend took request bytes: the client may have more credit.  Sent at once if
        the client has less than half of ``buffer_size`` left (it may be waiting for it), else
        with the next packet (an acknowledgement goes soon anyway): a transmit per backend
        write would cost a tenth of an upload's CPU time."""
        if _AioquicFlow.credit_left(self._quic, stream_id) < self.limits.buffer_size // 2:
            self._transmit_soon()

    def backend_down(self, reason: str) -> None:
        """A connect failed: a warning at most every 10 s, with the count since the last."""
        self._down_warning(reason)

    def report(self, report: RequestReport) -> None:
        if logger.isEnabledFor(logging.INFO):
            logger.info("%s", report.log_line())
        if self.on_request is not None:
            self.on_request(report)


class _AioquicFlow:
    """What backpressure needs of aioquic's internals (aioquic 1.2 to 1.7, QUIC_REQUIREMENT):
    aioquic has no API for receive credit or for what a stream has not yet had acknowledged."""

    @staticmethod
    def install(quic: StatelessQuicConnection, protocol: H3ProxyProtocol) -> None:
        """Before the handshake, which sends them as transport parameters: ``max_streams``
        request streams at once, ``buffer_size`` of credit on each; then the credit held by
        ``protocol.credit`` instead of aioquic's doubling."""
        limits = protocol.limits
        streams = quic._local_max_streams_bidi
        streams.value = streams.sent = limits.max_streams  # "sent": in the transport parameters
        quic._local_max_stream_data_bidi_remote = limits.buffer_size
        original = quic._write_stream_limits

        def write_stream_limits(builder: QuicPacketBuilder, space: Any, stream: QuicStream) -> None:
            stream_id = stream.stream_id
            if (
                stream_id is None
                or stream_is_unidirectional(stream_id)
                or not stream_is_client_initiated(stream_id)
            ):
                original(builder=builder, space=space, stream=stream)
                return
            # aioquic's own, without its doubling (connection.py, _write_stream_limits); the
            # credit is looked at once the client has used half of ``buffer_size`` of it.
            left = stream.max_stream_data_local - stream.receiver.highest_offset
            if left < limits.buffer_size // 2:
                stream.max_stream_data_local = max(
                    stream.max_stream_data_local, protocol.credit(stream_id, stream)
                )
            if stream.max_stream_data_local_sent != stream.max_stream_data_local:
                buf = builder.start_frame(
                    QuicFrameType.MAX_STREAM_DATA,
                    capacity=MAX_STREAM_DATA_FRAME_CAPACITY,
                    handler=quic._on_max_stream_data_delivery,
                    handler_args=(stream,),
                )
                buf.push_uint_var(stream_id)
                buf.push_uint_var(stream.max_stream_data_local)
                stream.max_stream_data_local_sent = stream.max_stream_data_local

        quic._write_stream_limits = write_stream_limits  # type: ignore[method-assign]

    @staticmethod
    def credit_left(quic: StatelessQuicConnection, stream_id: int) -> int:
        """Bytes the client may still send on the stream under the credit it was sent."""
        stream = quic._streams.get(stream_id)
        if stream is None:
            return 0
        return stream.max_stream_data_local_sent - stream.receiver.highest_offset

    @staticmethod
    def unacked(quic: StatelessQuicConnection, stream_id: int) -> int:
        """Bytes written to the stream and not yet acknowledged by the client."""
        stream = quic._streams.get(stream_id)
        if stream is None:
            return 0
        return stream.sender._buffer_stop - stream.sender._buffer_start

    @staticmethod
    def h3_buffered(h3: H3Connection, stream_id: int) -> int:
        """Bytes of the stream HTTP/3 holds in an incomplete frame."""
        stream = h3._stream.get(stream_id)
        return 0 if stream is None else len(stream.buffer)


class _Exchange:
    """One request and its response: the client's side (events from the protocol) and the
    backend's (a task)."""

    def __init__(
        self, protocol: H3ProxyProtocol, stream_id: int, headers: Headers, ended: bool
    ) -> None:
        self.protocol = protocol
        self.limits = protocol.limits
        self.stream_id = stream_id
        self.headers = headers
        self.started = time.monotonic()
        self.method = "-"
        self.target = "-"
        self.status: int | None = None
        self.error: str | None = None
        self.task: asyncio.Task[None] | None = None
        self.done = False
        # the request body: what came and waits for the backend
        self.body: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.buffered_peak = 0
        self.received = 0
        self.request_ended = ended  # the client's FIN (or its reset)
        self.request_sent = False  # the whole request went to the backend
        self.body_arrived = asyncio.Event()
        self.bytes_up = 0
        # the response
        self.response_started = False
        self.response_ended = False
        self.writable = asyncio.Event()
        self.waiting_for_acks = False
        self.unacked_peak = 0
        self.bytes_down = 0
        self._failure: _Failure | None = None
        self._coalescing: asyncio.TimerHandle | None = None

    # -- from the protocol -----------------------------------------------------------------------

    def receive(self, data: bytes, ended: bool) -> None:
        if ended:
            self.request_ended = True
        if not self.done:
            self.received += len(data)
            limit = self.limits.max_body_size
            if limit is not None and self.received > limit:
                self.abort(_Failure(413, f"request body over max_body_size ({limit} bytes)"))
                return
            if data:
                self.body.append(data)
                self.buffered += len(data)
                self.buffered_peak = max(self.buffered_peak, self.buffered)
            # A packet's worth at a time would cost a backend write and a wakeup each: the body
            # goes on by COALESCE bytes, or COALESCE_DELAY after its first bytes came.
            if ended or self.buffered >= COALESCE:
                self.body_arrived.set()
            elif self._coalescing is None:
                loop = asyncio.get_running_loop()
                self._coalescing = loop.call_later(COALESCE_DELAY, self._coalesced)
        elif self.request_ended:
            self.protocol._forget(self)

    def _coalesced(self) -> None:
        self._coalescing = None
        self.body_arrived.set()

    def client_reset(self, code: int, stream_reset: bool) -> None:
        """The client reset its request (StreamReset) or refused the response (STOP_SENDING)."""
        if stream_reset:
            self.request_ended = True
        what = "reset the request" if stream_reset else "stopped the response"
        self.abort(_Failure(None, f"client {what} (0x{code:x})", ErrorCode.H3_REQUEST_CANCELLED))
        if self.done and self.request_ended:
            self.protocol._forget(self)

    def abort(self, failure: _Failure) -> None:
        """End the exchange with ``failure`` (the task answers it, or resets the stream); not
        once the response is whole (the backend answered before the request body ended)."""
        if self.done or self.task is None or self._failure is not None or self.response_ended:
            return
        self._failure = failure
        self.task.cancel()

    def cancel(self) -> None:
        """The connection is gone: end without a word to the client."""
        if self.task is not None and not self.done:
            self.error = self.error or "connection closed"
            self.task.cancel()

    # -- the task --------------------------------------------------------------------------------

    async def run(self) -> None:
        writer: asyncio.StreamWriter | None = None
        try:
            request = self._request()
            reader, writer = await self._connect()
            await self._relay(request, reader, writer)
        except asyncio.CancelledError:
            if self._failure is None:  # the connection is closing
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            self._fail(self._failure)
        except _Failure as failure:
            self._fail(failure)
        except Exception as error:  # a bug of ours: shown, and this request only ends
            logger.exception("h3 stream %d: proxy error", self.stream_id)
            self._fail(_Failure(502, f"proxy error: {error!r}"))
        finally:
            self.done = True
            if self._coalescing is not None:
                self._coalescing.cancel()
            if writer is not None:
                writer.transport.abort()
            if not self.request_ended:  # the rest of the body is not wanted (RFC 9114 §4.1)
                code = (
                    ErrorCode.H3_NO_ERROR
                    if self.status is not None
                    else ErrorCode.H3_REQUEST_CANCELLED
                )
                with contextlib.suppress(ValueError, RuntimeError):
                    self.protocol._quic.stop_stream(self.stream_id, code)
                self.protocol._transmit_soon()
            else:
                self.protocol._forget(self)
            self._report()

    def _report(self) -> None:
        protocol = self.protocol
        protocol.report(
            RequestReport(
                peer=protocol.quic.peer,
                stream_id=self.stream_id,
                method=self.method,
                target=self.target,
                backend=protocol.backend,
                status=self.status,
                bytes_up=self.bytes_up,
                bytes_down=self.bytes_down,
                duration=time.monotonic() - self.started,
                error=self.error,
                buffered_peak=self.buffered_peak,
                unacked_peak=self.unacked_peak,
            )
        )

    def _fail(self, failure: _Failure) -> None:
        self.error = failure.reason
        if failure.status is not None and not self.response_started:
            self._respond(failure.status)
        else:
            with contextlib.suppress(ValueError, RuntimeError):
                self.protocol._quic.reset_stream(self.stream_id, failure.code)
            self.status = None
        self.protocol._transmit_soon()

    def _respond(self, status: int) -> None:
        """A response of our own: ``502 Bad Gateway`` and the like, as text."""
        body = f"{status} {HTTPStatus(status).phrase}\n".encode()
        headers = [
            (b":status", str(status).encode()),
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),  # HEAD too: what GET would get
        ]
        try:
            self.protocol.h3.send_headers(self.stream_id, headers)
            data = body if self.method != "HEAD" else b""
            self.protocol.h3.send_data(self.stream_id, data, end_stream=True)
        except (ProtocolError, RuntimeError, ValueError):  # the client reset it meanwhile
            self.status = None
            return
        self.status = status

    # -- the request -----------------------------------------------------------------------------

    def _request(self) -> h11.Request:
        """The request as the backend gets it; _Failure if it cannot or may not go."""
        pseudo: dict[bytes, bytes] = {}
        fields: Headers = []
        size = 0
        for name, value in self.headers:
            size += len(name) + len(value) + 32  # RFC 9114 §4.2.2
            if name.startswith(b":"):
                pseudo[name] = value
            else:
                fields.append((name, value))
        self.method = pseudo.get(b":method", b"-").decode("ascii", "replace")
        self.target = pseudo.get(b":path", b"-").decode("ascii", "replace")
        if size > self.limits.max_header_size:
            raise _Failure(
                431,
                f"request header fields of {size} bytes"
                f" (max_header_size {self.limits.max_header_size})",
            )
        if self.method == "CONNECT" or b":protocol" in pseudo:
            raise _Failure(501, f"{self.method} is not forwarded (HTTP/1.1 backends only)")
        path = pseudo.get(b":path")
        authority = pseudo.get(b":authority")
        if not path or not authority:
            raise _Failure(400, "no :path or :authority", ErrorCode.H3_MESSAGE_ERROR)
        length = _content_length(fields)
        limit = self.limits.max_body_size
        if length is not None and limit is not None and length > limit:
            raise _Failure(413, f"content-length {length} over max_body_size ({limit} bytes)")
        headers: Headers = [(b"host", authority)]
        cookies = []
        for name, value in fields:
            if name == b"cookie":
                cookies.append(value)
            elif (
                name not in HOP_BY_HOP
                and name not in FORWARDING
                and name not in (b"host", b"expect")
            ):
                headers.append((name, value))
        if cookies:
            headers.append((b"cookie", b"; ".join(cookies)))
        headers += self._forwarding(authority)
        headers.append((b"connection", b"close"))
        try:
            return h11.Request(method=pseudo[b":method"], target=path, headers=headers)
        except h11.LocalProtocolError as error:
            raise _Failure(
                400, f"cannot be sent as HTTP/1.1: {error}", ErrorCode.H3_MESSAGE_ERROR
            ) from None

    def _forwarding(self, authority: bytes) -> Headers:
        host, port = self.protocol.quic.peer
        node = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        quoted = authority.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
        return [
            (b"forwarded", f'for="{node}";proto=https;host="'.encode() + quoted + b'"'),
            (b"x-forwarded-for", host.encode()),
            (b"x-forwarded-proto", b"https"),
            (b"x-forwarded-host", authority),
        ]

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        backend = self.protocol.backend
        timeout = self.limits.connect_timeout
        try:
            return await asyncio.wait_for(
                asyncio.open_connection(backend.host, backend.port), timeout
            )
        except TimeoutError:
            failure = _Failure(504, f"backend {backend}: connect timeout ({timeout:g}s)")
        except OSError as error:
            failure = _Failure(502, f"backend {backend}: connect: {_reason(error)}")
        self.protocol.backend_down(failure.reason)
        raise failure

    async def _relay(
        self, request: h11.Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        http = h11.Connection(h11.CLIENT, max_incomplete_event_size=self.limits.max_header_size)
        if self.request_ended and not self.body:  # no body: the request goes whole, at once
            writer.write(http.send(request) + http.send(h11.EndOfMessage()))
            self.request_sent = True
            await self._receive(http, reader)
            return
        sending = asyncio.create_task(self._send(http, request, writer))
        try:
            await self._receive(http, reader)
        finally:
            sending.cancel()
            await asyncio.gather(sending, return_exceptions=True)

    async def _send(
        self, http: h11.Connection, request: h11.Request, writer: asyncio.StreamWriter
    ) -> None:
        """The request to the backend, its body as it comes."""
        try:
            chunk: bytes | None = b""
            if _content_length(request.headers) is None:
                # Whether a body follows decides the framing: wait for its first bytes or end.
                chunk = await self._next_chunk()
                if chunk is not None:
                    request = h11.Request(
                        method=request.method,
                        target=request.target,
                        headers=[*request.headers, (b"transfer-encoding", b"chunked")],
                    )
            writer.write(http.send(request))
            while chunk is not None:
                if chunk:
                    writer.write(http.send(h11.Data(data=chunk)))
                    await self._drain(writer)
                    self.bytes_up += len(chunk)
                    self.buffered -= len(chunk)
                    self.protocol.credit_taken(self.stream_id)
                chunk = await self._next_chunk()
            writer.write(http.send(h11.EndOfMessage()))
            await self._drain(writer)
            self.request_sent = True
        except _Failure as failure:
            self.abort(failure)
        except h11.LocalProtocolError as error:  # more or less body than its content-length
            self.abort(_Failure(400, f"request body: {error}", ErrorCode.H3_MESSAGE_ERROR))

    async def _next_chunk(self) -> bytes | None:
        """The body bytes that came (joined up to ``read_size``), or None at its end."""
        while not self.body and not self.request_ended:
            self.body_arrived.clear()
            try:
                await asyncio.wait_for(self.body_arrived.wait(), self.limits.client_timeout)
            except TimeoutError:
                raise _Failure(
                    408,
                    f"client_timeout ({self.limits.client_timeout:g}s): the request body stopped",
                    ErrorCode.H3_REQUEST_INCOMPLETE,
                ) from None
        if not self.body:
            return None
        chunks = [self.body.popleft()]
        size = len(chunks[0])
        while self.body and size + len(self.body[0]) <= self.limits.read_size:
            chunks.append(self.body.popleft())
            size += len(chunks[-1])
        return b"".join(chunks)

    async def _drain(self, writer: asyncio.StreamWriter) -> None:
        """What asyncio's drain() does, bounded by ``backend_timeout``."""
        if (
            writer.transport.get_write_buffer_size()
            <= writer.transport.get_write_buffer_limits()[1]
        ):
            return  # drain() would not wait (a timer and a task each write, spared)
        timeout = self.limits.backend_timeout
        try:
            await asyncio.wait_for(writer.drain(), timeout)
        except TimeoutError:
            raise _Failure(
                504, f"backend_timeout ({timeout:g}s): the backend stopped reading"
            ) from None
        except OSError as error:
            raise _Failure(502, f"backend {self.protocol.backend}: {_reason(error)}") from None

    # -- the response ----------------------------------------------------------------------------

    async def _receive(self, http: h11.Connection, reader: asyncio.StreamReader) -> None:
        backend = self.protocol.backend
        while True:
            try:
                event = http.next_event()
            except h11.RemoteProtocolError as error:
                raise _Failure(502, f"backend {backend}: invalid HTTP/1.1: {error}") from None
            if event is h11.NEED_DATA:
                http.receive_data(await self._read(reader))
            elif isinstance(event, h11.Response):
                self._send_head(event)
            elif isinstance(event, h11.Data):
                await self._send_body(bytes(event.data))  # h11 hands out bytearrays
            elif isinstance(event, h11.EndOfMessage):
                self._end(list(event.headers))
                return
            elif isinstance(event, h11.ConnectionClosed):
                raise _Failure(502, f"backend {backend}: closed before its response ended")
            # h11.InformationalResponse (1xx): not relayed

    async def _read(self, reader: asyncio.StreamReader) -> bytes:
        timeout = self.limits.backend_timeout
        while True:
            try:
                return await asyncio.wait_for(reader.read(self.limits.read_size), timeout)
            except TimeoutError:
                if not self.request_sent:
                    continue  # the request is still coming: client_timeout watches that side
                status = 504 if not self.response_started else None
                raise _Failure(
                    status, f"backend_timeout ({timeout:g}s): the backend sent nothing"
                ) from None
            except OSError as error:
                raise _Failure(502, f"backend {self.protocol.backend}: {_reason(error)}") from None

    def _send_head(self, response: h11.Response) -> None:
        named = {
            token.strip().lower()
            for name, value in response.headers
            if name == b"connection"
            for token in value.split(b",")
        }
        headers = [(b":status", str(response.status_code).encode())]
        headers += [
            (name, value)
            for name, value in response.headers
            if name not in HOP_BY_HOP and name not in named
        ]
        self.protocol.h3.send_headers(self.stream_id, headers)
        self.response_started = True
        self.status = response.status_code
        self.protocol._transmit_soon()

    async def _send_body(self, data: bytes) -> None:
        self.protocol.h3.send_data(self.stream_id, data, end_stream=False)
        self.bytes_down += len(data)
        self.protocol._transmit_soon()
        unacked = self.protocol.unacked(self.stream_id)
        self.unacked_peak = max(self.unacked_peak, unacked)
        timeout = self.limits.client_timeout
        while self.protocol.unacked(self.stream_id) > self.limits.buffer_size:
            self.writable.clear()
            self.waiting_for_acks = True
            try:
                await asyncio.wait_for(self.writable.wait(), timeout)
            except TimeoutError:
                raise _Failure(
                    None,
                    f"client_timeout ({timeout:g}s): the client took no response bytes",
                    ErrorCode.H3_REQUEST_CANCELLED,
                ) from None
            finally:
                self.waiting_for_acks = False

    def _end(self, trailers: Headers) -> None:
        fields = [(n, v) for n, v in trailers if n not in HOP_BY_HOP]
        if fields:
            self.protocol.h3.send_headers(self.stream_id, fields, end_stream=True)
        else:
            self.protocol.h3.send_data(self.stream_id, b"", end_stream=True)
        self.response_ended = True
        self.protocol._transmit_soon()


def _content_length(fields: Any) -> int | None:
    for name, value in fields:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


__all__ = ["H3ProxyLimits", "H3ProxyProtocol", "RequestReport", "h3_proxy"]
