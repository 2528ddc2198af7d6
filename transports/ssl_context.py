"""An ``ssl.SSLContext`` running stateless13: ``ssl=`` for asyncio, uvicorn and hypercorn.

    context = StatelessSSLContext(ServerConfig.from_pem_files("cert.pem", "key.pem"))
    server = await asyncio.start_server(handler, "127.0.0.1", 8443, ssl=context)

asyncio (and uvloop, whose TLS is a port of asyncio's) runs TLS by calling the context's
``wrap_bio(incoming, outgoing, server_side=True)`` and driving the object it returns over two
``ssl.MemoryBIO`` buffers: ``do_handshake``, ``read``, ``write``, ``unwrap``, ``getpeercert``,
``cipher``, ``ssl.SSLWantReadError`` for "feed me more".  :meth:`StatelessSSLContext.wrap_bio`
returns a :class:`StatelessSSLObject`, which keeps that contract over one
:class:`~stateless13.transports.memory.MemoryServer`: the stateless front (ClientHello1 answered
with a HelloRetryRequest carrying the cookie), then a ServerConnection.  Nothing of OpenSSL runs;
the class is an ``ssl.SSLContext`` only because asyncio's ``start_tls``, uvloop and uvicorn check
for one, and its OpenSSL settings are refused rather than silently ignored.

What the asyncio contract forces, and so differs from ``transports.asyncio_tcp``:

* Per-connection objects from accept: asyncio creates the SSLObject (and its own two BIOs and a
  256 KiB read buffer) before the first byte, and keeps them through the HelloRetryRequest.  What
  this object adds between the HRR and ClientHello2 is MemoryServer's one bit and the unread bytes;
  the handshake's state is in the cookie.
* No peer address: ``wrap_bio`` is not given the transport, so the cookie binds the ClientHello
  (its random and offer, and the cookie's 30 s lifetime), not the client's IP.  TCP's handshake
  has already shown the client receives at its address, and ClientHello2 comes on the same
  connection.
* No word of the connection's end: the object is never told of EOF or a reset, so there is one
  report per handshake (completed or refused), not per connection; a client that leaves after
  the HRR makes none, and ``validation="adaptive"`` (which counts handshakes in progress) is not
  offered.  Timeouts are asyncio's: ``ssl_handshake_timeout`` (60 s by default) and
  ``ssl_shutdown_timeout``.
* An alert costs one more call: asyncio drops what is in the outgoing buffer when
  ``do_handshake``/``read`` raise an ``ssl.SSLError`` (with OpenSSL a refused client sees the
  connection close without the alert).  So the call that refuses raises ``ssl.SSLWantReadError``,
  asyncio sends our alert, and the next call (the client's next bytes) raises the
  :class:`StatelessSSLError`.  A client that closes after our alert ends the connection as any EOF
  in a handshake does (asyncio: ``ConnectionResetError``).
* No 0-RTT: ``ssl`` has no early data, so ``ServerConfig.early_data`` is refused.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import re
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, NoReturn, overload

from cryptography import x509
from cryptography.x509.oid import AuthorityInformationAccessOID

from stateless13 import (
    AlertReceived,
    ApplicationData,
    CipherSuite,
    ClientCertificate,
    ConnectionClosed,
    Event,
    HandshakeComplete,
    LocalProtocolError,
    ServerConfig,
)

from .common import Limits, Validation
from .memory import MemoryServer

if TYPE_CHECKING:
    from ssl import _PeerCertRetDictType, _PeerCertRetType

    from _typeshed import ReadableBuffer, WriteableBuffer

logger = logging.getLogger("stateless13.server")

#: What a StatelessSSLContext takes for ``validation``: the stateless HRR always, or never.
SSL_CONTEXT_VALIDATIONS = (Validation.HRR, Validation.NONE)
#: Bytes taken from asyncio's incoming buffer at a time: after the handshake, only as many as
#: the application reads, so the rest stays where asyncio's read flow control counts it.
_CHUNK = 65536
_SECRET_BITS = {
    CipherSuite.TLS_AES_128_GCM_SHA256: 128,
    CipherSuite.TLS_AES_256_GCM_SHA384: 256,
    CipherSuite.TLS_CHACHA20_POLY1305_SHA256: 256,
}


class StatelessSSLError(ssl.SSLError):
    """A connection refused or failed, reported as ``ssl`` reports one: an ``ssl.SSLError`` (so
    an ``OSError``), which asyncio, uvicorn and hypercorn handle as they handle OpenSSL's.

    ``alert``: the alert we sent (``received`` False) or the client's fatal one (True); None
    when there was none (a limit; the client closed in the handshake).  ``library`` and
    ``reason`` as ssl's (``"stateless13"``, ``"ILLEGAL_PARAMETER"``); ``str()`` says why."""

    def __init__(
        self, reason: str, message: str, *, alert: int | None = None, received: bool = False
    ) -> None:
        super().__init__(ssl.SSL_ERROR_SSL, f"[stateless13: {reason}] {message}")
        self.library = "stateless13"
        self.reason = reason
        self.alert = alert
        self.received = received


@dataclass(frozen=True)
class HandshakeReport:
    """How one handshake ended, completed or refused, told when it ends (``on_handshake``, and a
    line on the ``stateless13.server`` logger).  No peer: asyncio does not tell ``wrap_bio``."""

    validation: str  #: "hrr" (the stateless HelloRetryRequest for every client) or "none"
    hello_retry: bool  #: a HelloRetryRequest went out
    cookie_verified: bool  #: ClientHello2's cookie was accepted: the stateless front ran
    handshake: HandshakeComplete | None  #: what was agreed, if it completed
    error: str | None  #: why it was refused (our alert and its reason, a client's alert, a limit)
    handshake_time: float  #: seconds from wrap_bio (the accept) to the end of the handshake
    bytes_in: int
    bytes_out: int

    def log_line(self) -> str:
        parts = [
            "ssl_context",
            f"validation={self.validation}",
            f"hrr={'yes' if self.hello_retry else 'no'}",
            f"cookie={'verified' if self.cookie_verified else 'none'}",
        ]
        h = self.handshake
        if h is not None:
            parts += [
                f"suite={h.cipher_suite.name}",
                f"group={h.group.name if h.group is not None else '-'}",
                f"alpn={_shown(h.alpn_protocol)}",
                f"sni={_shown(h.server_name)}",
                f"resumed={'yes' if h.resumed else 'no'}",
            ]
            if h.client_certificate is not None:
                parts.append(f"client={_shown(h.client_certificate.subject)}")
        parts.append(f"handshake={self.handshake_time * 1000:.1f}ms")
        parts.append(f"in={self.bytes_in}B out={self.bytes_out}B")
        if self.error is not None:
            parts.append(f"error={self.error!r}")
        return " ".join(parts)


_HARMLESS = re.compile(r"[A-Za-z0-9._:/=,-]+")


def _shown(value: str | None) -> str:
    """A client's string in a log line: plain if harmless, else escaped (no forged lines)."""
    if value is None:
        return "-"
    return value if _HARMLESS.fullmatch(value) else repr(value)


def _refuse(what: str) -> NoReturn:
    raise LocalProtocolError(
        f"StatelessSSLContext runs stateless13, not OpenSSL: {what} belongs in its ServerConfig"
    )


class StatelessSSLContext(ssl.SSLContext):
    """An ``ssl.SSLContext`` for asyncio's ``ssl=`` (``start_server``, ``create_server``,
    ``start_tls``), uvicorn's ``ssl_context_factory`` and hypercorn's ``create_ssl_context``,
    whose connections are stateless13's (see the module's docstring for what that implies).

    ``config`` says everything TLS does (certificates, ALPN, groups, client certificates,
    tickets, the key log); the ``SSLContext`` settings that would change it
    (``load_cert_chain``, ``set_alpn_protocols``, ``verify_mode = ...``, ``minimum_version``,
    ``sni_callback``, ``keylog_filename``...) raise ``LocalProtocolError`` instead of being
    ignored, and read back what ``config`` says where ssl has a word for it.
    ``validation``: ``"hrr"`` (the default: every client proves itself with the stateless
    HelloRetryRequest) or ``"none"`` (an ordinary handshake; an HRR only if the key shares do not
    fit).  ``on_handshake`` is called with a :class:`HandshakeReport` when each handshake ends.
    ``max_handshake_buffer``: bytes buffered from a client before the stateless front answers.
    Only memory BIOs: ``wrap_socket`` refuses (``transports.blocking`` serves sockets)."""

    config: ServerConfig
    validation: Validation
    on_handshake: Callable[[HandshakeReport], None] | None
    max_handshake_buffer: int

    def __new__(cls, config: ServerConfig, *args: object, **kwargs: object) -> StatelessSSLContext:
        return super().__new__(cls, ssl.PROTOCOL_TLS_SERVER)

    def __init__(
        self,
        config: ServerConfig,
        *,
        validation: Validation | str = Validation.HRR,
        on_handshake: Callable[[HandshakeReport], None] | None = None,
        max_handshake_buffer: int = Limits.max_handshake_buffer,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if config.early_data:
            raise LocalProtocolError("ssl has no 0-RTT: set ServerConfig.early_data to 0")
        self.config = config
        self.validation = Validation.parse(validation, SSL_CONTEXT_VALIDATIONS)
        self.on_handshake = on_handshake
        self.max_handshake_buffer = max_handshake_buffer
        self._clock = clock

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> StatelessSSLObject:
        """One server connection over asyncio's two buffers: it reads what the client sent
        from ``incoming`` and writes what goes to the client into ``outgoing``."""
        if not server_side:
            raise LocalProtocolError("StatelessSSLContext is for servers (server_side=True)")
        return StatelessSSLObject(self, incoming, outgoing)

    def _report(self, report: HandshakeReport) -> None:
        if logger.isEnabledFor(logging.INFO):
            logger.info("%s", report.log_line())
        if self.on_handshake is not None:
            self.on_handshake(report)

    # -- what the ServerConfig says, read as ssl's settings --------------------------------------

    @property
    def verify_mode(self) -> ssl.VerifyMode:
        """From ``ServerConfig.client_auth``: CERT_REQUIRED, CERT_OPTIONAL or CERT_NONE."""
        auth = self.config.client_auth
        if auth is None:
            return ssl.CERT_NONE
        return ssl.CERT_REQUIRED if auth.required else ssl.CERT_OPTIONAL

    @verify_mode.setter
    def verify_mode(self, value: object) -> None:
        _refuse("verify_mode (ServerConfig.client_auth)")

    @property
    def minimum_version(self) -> ssl.TLSVersion:
        return ssl.TLSVersion.TLSv1_3

    @minimum_version.setter
    def minimum_version(self, value: object) -> None:
        _refuse("minimum_version (TLS 1.3 only)")

    @property
    def maximum_version(self) -> ssl.TLSVersion:
        return ssl.TLSVersion.TLSv1_3

    @maximum_version.setter
    def maximum_version(self, value: object) -> None:
        _refuse("maximum_version (TLS 1.3 only)")

    @property
    def num_tickets(self) -> int:
        return self.config.tickets

    @num_tickets.setter
    def num_tickets(self, value: object) -> None:
        _refuse("num_tickets (ServerConfig.tickets)")

    @property
    def sni_callback(self) -> None:
        return None

    @sni_callback.setter
    def sni_callback(self, value: object) -> None:
        _refuse("the server name callback (ServerConfig.sni_callback)")

    @property  # type: ignore[override]  # typeshed says str; ssl's is None when unset too
    def keylog_filename(self) -> None:
        return None

    @keylog_filename.setter
    def keylog_filename(self, value: object) -> None:
        _refuse("the key log (ServerConfig.keylog: keylog_to_file(path))")

    # -- OpenSSL's settings: refused ---------------------------------------------------------------

    def wrap_socket(self, *args: object, **kwargs: object) -> NoReturn:
        raise LocalProtocolError(
            "StatelessSSLContext wraps memory BIOs only (asyncio's ssl=); for sockets use "
            "stateless13.transports.blocking or asyncio_tcp"
        )

    def load_cert_chain(self, *args: object, **kwargs: object) -> NoReturn:
        _refuse("the certificate (ServerConfig.credentials)")

    def load_verify_locations(self, *args: object, **kwargs: object) -> NoReturn:
        _refuse("client certificate trust anchors (ServerConfig.client_auth)")

    def load_default_certs(self, *args: object, **kwargs: object) -> NoReturn:
        _refuse("client certificate trust anchors (ServerConfig.client_auth)")

    def set_default_verify_paths(self, *args: object, **kwargs: object) -> NoReturn:
        _refuse("client certificate trust anchors (ServerConfig.client_auth)")

    def set_ciphers(self, *args: object, **kwargs: object) -> NoReturn:
        _refuse("the cipher suites (ServerConfig.cipher_suites)")

    def set_alpn_protocols(self, *args: object, **kwargs: object) -> NoReturn:
        _refuse("ALPN (ServerConfig.alpn_protocols)")

    def set_npn_protocols(self, *args: object, **kwargs: object) -> NoReturn:
        _refuse("NPN (gone from TLS 1.3; ServerConfig.alpn_protocols)")

    def set_servername_callback(self, *args: object, **kwargs: object) -> NoReturn:
        _refuse("the server name callback (ServerConfig.sni_callback)")

    def set_ecdh_curve(self, *args: object, **kwargs: object) -> NoReturn:
        _refuse("the key exchange groups (ServerConfig.groups)")

    def load_dh_params(self, *args: object, **kwargs: object) -> NoReturn:
        _refuse("the key exchange groups (ServerConfig.groups)")


class StatelessSSLObject(ssl.SSLObject):
    """What ``StatelessSSLContext.wrap_bio`` returns: ``ssl.SSLObject``'s interface over one
    :class:`~stateless13.transports.memory.MemoryServer` (``server``), for asyncio to drive.

    Beyond ssl's: ``handshake`` (the HandshakeComplete: ``hello_retry``, ``cookie_verified``,
    ``group``...), ``report`` (the HandshakeReport, once the handshake ended), ``group()``,
    ``export_keying_material``, and the ``"tls-exporter"`` channel binding (RFC 9266)."""

    def __init__(
        self, context: StatelessSSLContext, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO
    ) -> None:
        # ssl.SSLObject.__init__ refuses to run (no public constructor): not called.
        self._context = context
        self._incoming = incoming
        self._outgoing = outgoing
        self._started = time.monotonic()
        self.server = MemoryServer(
            context.config,
            stateless=context.validation == Validation.HRR,
            peer=None,  # wrap_bio is not told the peer: the cookie binds no address
            clock=context._clock,
            max_handshake_buffer=context.max_handshake_buffer,
        )
        self._plain = bytearray()  # application data decrypted, not yet read
        self._failure: StatelessSSLError | None = None
        self._peer_closed = False  # the client's close_notify came
        self._we_closed = False  # ours went out (unwrap)
        #: How the handshake ended, once it did.
        self.report: HandshakeReport | None = None

    # -- the bytes ---------------------------------------------------------------------------------

    def _pump(self, want: int | None) -> None:
        """Feed the server from the incoming buffer: while the handshake runs, everything there;
        after it, until ``want`` bytes of application data wait (None: nothing more)."""
        server = self.server
        while not server.closed and self._failure is None:
            if server.handshake is not None and (want is None or len(self._plain) >= want):
                break
            data = self._incoming.read(_CHUNK)
            if not data:
                break
            self._take(server.receive(data))
        self._flush()

    def _take(self, events: list[Event]) -> None:
        received: AlertReceived | None = None
        for event in events:
            if isinstance(event, ApplicationData):
                if not self._we_closed:  # after our close_notify, ssl drops it too
                    self._plain += event.data
            elif isinstance(event, HandshakeComplete):
                self._ended()
            elif isinstance(event, ConnectionClosed):
                self._peer_closed = self._peer_closed or event.clean
            elif isinstance(event, AlertReceived) and event.fatal:
                received = event
        server = self.server
        if received is not None:
            self._fail(
                StatelessSSLError(
                    f"ALERT_RECEIVED_{received.name.upper()}",
                    f"the client sent a fatal {received.name} alert",
                    alert=received.description,
                    received=True,
                )
            )
        elif server.closed and server.error is not None:
            alert = server.alert
            reason = alert.name if alert is not None else re.sub(r"\W+", "_", server.error)
            self._fail(StatelessSSLError(reason.upper(), server.error, alert=alert))

    def _fail(self, failure: StatelessSSLError) -> None:
        self._failure = failure
        if self.report is None:
            self._ended()

    def _ended(self) -> None:
        """The handshake is over, completed or refused: report it, once."""
        self._flush()  # counted in bytes_out: our last flight, or our alert
        server = self.server
        self.report = HandshakeReport(
            validation=self._context.validation.value,
            hello_retry=server.hello_retry,
            cookie_verified=server.cookie_verified,
            handshake=server.handshake,
            error=None if self._failure is None else server.error or str(self._failure),
            handshake_time=time.monotonic() - self._started,
            bytes_in=server.bytes_in,
            bytes_out=server.bytes_out,
        )
        self._context._report(self.report)

    def _flush(self) -> None:
        data = self.server.data_to_send()
        if data:
            self._outgoing.write(data)

    def _raise_failure(self) -> None:
        """Raise the failure, once asyncio has taken our alert from the outgoing buffer (it drops
        that buffer when it gets an SSLError): until then, "want read", which makes it send."""
        if self._failure is not None:
            if self._outgoing.pending:
                raise ssl.SSLWantReadError("the alert goes out first")
            raise self._failure.with_traceback(None)

    # -- ssl.SSLObject ---------------------------------------------------------------------------

    def do_handshake(self) -> None:
        """Return once the handshake is complete (the client's Finished verified); until then
        ``ssl.SSLWantReadError``; a refused client: :class:`StatelessSSLError` (after the alert
        went out: see the module's docstring)."""
        if self.server.handshake is None and self._failure is None:
            self._pump(None)
        self._raise_failure()
        if self.server.handshake is None:
            raise ssl.SSLWantReadError("The operation did not complete (read)")

    def read(  # type: ignore[override]
        self, len: int = 1024, buffer: WriteableBuffer | None = None
    ) -> bytes | int:
        """Up to ``len`` bytes of application data (into ``buffer``: their count); ``b""`` (0)
        once the client sent close_notify; ``ssl.SSLWantReadError`` while none is buffered."""
        size = len  # (ssl names it len, the builtin this method does not need)
        if buffer is not None:
            room = memoryview(buffer).nbytes
            if size <= 0 or size > room:
                size = room
        elif size < 0:
            raise ValueError("size should not be negative")
        if self.server.handshake is None:
            self.do_handshake()
        if self.pending() < size:
            self._pump(size)
        count = min(size, self.pending())
        if count > 0:
            data = bytes(self._plain[:count])
            del self._plain[:count]
            if buffer is None:
                return data
            memoryview(buffer).cast("B")[:count] = data
            return count
        self._raise_failure()
        if self._peer_closed or size == 0:
            return b"" if buffer is None else 0
        raise ssl.SSLWantReadError("The operation did not complete (read)")

    def write(self, data: ReadableBuffer) -> int:
        """Encrypt all of ``data`` into the outgoing buffer; its length."""
        self._raise_failure()
        if self.server.handshake is None:
            self.do_handshake()
        if self._we_closed:
            raise ssl.SSLError(
                ssl.SSL_ERROR_SSL, "[SSL: PROTOCOL_IS_SHUTDOWN] protocol is shutdown"
            )
        view = memoryview(data)
        self.server.send(view.tobytes())
        self._flush()
        return view.nbytes

    def unwrap(self) -> None:
        """Send close_notify (once), then ``ssl.SSLWantReadError`` until the client's comes
        (application data before it is dropped, as ssl drops it)."""
        self._raise_failure()
        if self.server.handshake is None:
            raise ssl.SSLError(ssl.SSL_ERROR_SSL, "[SSL: SHUTDOWN_WHILE_IN_INIT] in the handshake")
        if not self._we_closed:
            self._we_closed = True
            self._plain.clear()
            self.server.close()
        while not self._peer_closed and not self.server.closed and self._failure is None:
            data = self._incoming.read(_CHUNK)
            if not data:
                break
            self._take(self.server.receive(data))
        self._flush()
        self._raise_failure()
        if not self._peer_closed:
            raise ssl.SSLWantReadError("The operation did not complete (read)")

    def pending(self) -> int:
        return len(self._plain)

    @overload
    def getpeercert(self, binary_form: Literal[False] = False) -> _PeerCertRetDictType | None: ...
    @overload
    def getpeercert(self, binary_form: Literal[True]) -> bytes | None: ...
    @overload
    def getpeercert(self, binary_form: bool) -> _PeerCertRetType: ...
    def getpeercert(self, binary_form: bool = False) -> _PeerCertRetType:
        """The client's certificate, if it sent one and ``ServerConfig.client_auth`` accepted it
        (by its chain or its callback): in ssl's dict form, or DER; else None."""
        certificate = self._client_certificate()
        if certificate is None:
            return None
        return certificate.chain[0] if binary_form else certificate_dict(certificate.chain[0])

    def get_verified_chain(self) -> list[bytes]:
        """DER, from the client's leaf to the trust anchor (empty: none validated here)."""
        certificate = self._client_certificate()
        return [] if certificate is None else list(certificate.verified_chain)

    def get_unverified_chain(self) -> list[bytes]:
        """DER, the client's chain as it sent it."""
        certificate = self._client_certificate()
        return [] if certificate is None else list(certificate.chain)

    def _client_certificate(self) -> ClientCertificate | None:
        if self.server.handshake is None or self.server.connection is None:
            raise ValueError("handshake not done yet")
        return self.server.connection.client_certificate

    def cipher(self) -> tuple[str, str, int] | None:
        h = self.server.handshake
        if h is None:
            return None
        return (h.cipher_suite.name, "TLSv1.3", _SECRET_BITS[h.cipher_suite])

    def shared_ciphers(self) -> list[tuple[str, str, int]] | None:
        """None: the client's offer is not kept (the cookie carries only what the handshake
        needs)."""
        return None

    def compression(self) -> str | None:
        return None

    def selected_alpn_protocol(self) -> str | None:
        h = self.server.handshake
        return None if h is None else h.alpn_protocol

    def selected_npn_protocol(self) -> str | None:
        return None

    def version(self) -> str | None:
        return None if self.server.handshake is None else "TLSv1.3"

    def group(self) -> str | None:
        """The key exchange group's name (``X25519MLKEM768``, ``x25519``...), as Python 3.15's
        ``SSLObject.group()``; None before the handshake or without one (psk_ke)."""
        h = self.server.handshake
        return None if h is None or h.group is None else h.group.name

    def get_channel_binding(self, cb_type: str = "tls-unique") -> bytes | None:
        """``"tls-exporter"`` (RFC 9266); ``"tls-unique"`` is None: TLS 1.3 does not define it
        (RFC 8446 §C.5)."""
        if cb_type not in ("tls-unique", "tls-exporter"):
            raise ValueError(f"{cb_type} channel binding type not implemented")
        if cb_type == "tls-unique" or self.server.handshake is None:
            return None
        return self.export_keying_material(b"EXPORTER-Channel-Binding", b"", 32)

    def export_keying_material(self, label: bytes, context: bytes, length: int) -> bytes:
        """RFC 8446 §7.5's exporter."""
        if self.server.connection is None or self.server.handshake is None:
            raise ValueError("handshake not done yet")
        return self.server.connection.export_keying_material(label, context, length)

    def verify_client_post_handshake(self) -> None:
        """Ask for a client certificate now (RFC 8446 §4.6.2), judged by
        ``ServerConfig.client_auth``; the request goes out with the next bytes asyncio sends,
        and ``getpeercert()`` has the certificate once the client's answer was read."""
        try:
            self.server.request_client_certificate(None)
        except LocalProtocolError as error:
            raise ssl.SSLError(
                ssl.SSL_ERROR_SSL, f"[stateless13: POST_HANDSHAKE] {error}"
            ) from None
        self._flush()

    @property
    def handshake(self) -> HandshakeComplete | None:
        """What was agreed (``hello_retry``, ``cookie_verified``, ``group``...), once complete."""
        return self.server.handshake

    @property
    def context(self) -> StatelessSSLContext:
        return self._context

    @context.setter
    def context(self, value: object) -> None:
        raise LocalProtocolError("a StatelessSSLObject keeps its context")

    @property
    def session(self) -> ssl.SSLSession | None:
        """None: sessions are resumed with our tickets (ServerConfig.tickets), by the client."""
        return None

    @session.setter
    def session(self, value: object) -> None:
        raise ValueError("Cannot set session for server-side SSLObject")

    @property
    def session_reused(self) -> bool:
        h = self.server.handshake
        return h is not None and h.resumed

    @property
    def server_side(self) -> bool:
        return True

    @property
    def server_hostname(self) -> str | None:
        """None, as for any server-side SSLObject (the client's SNI: ``handshake.server_name``)."""
        return None


# -- the client certificate in ssl's dict form ----------------------------------------------------

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_Name = tuple[tuple[tuple[str, str], ...], ...]


def certificate_dict(der: bytes) -> _PeerCertRetDictType:
    """A DER certificate as ``ssl``'s ``getpeercert()`` gives it (OpenSSL's names for the
    attributes, its time format): subject, issuer, version, serialNumber, notBefore, notAfter,
    and subjectAltName, OCSP, caIssuers, crlDistributionPoints when present."""
    certificate = x509.load_der_x509_certificate(der)
    serial = f"{certificate.serial_number:X}"
    result: dict[str, object] = {
        "subject": _name(certificate.subject),
        "issuer": _name(certificate.issuer),
        "version": certificate.version.value + 1,
        "serialNumber": serial if len(serial) % 2 == 0 else "0" + serial,
        "notBefore": _asn1_time(certificate.not_valid_before_utc),
        "notAfter": _asn1_time(certificate.not_valid_after_utc),
    }
    extensions = certificate.extensions
    try:
        names = extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        pass
    else:
        result["subjectAltName"] = tuple(_general_name(n) for n in names)
    try:
        access = extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        pass
    else:
        for key, method in (
            ("OCSP", AuthorityInformationAccessOID.OCSP),
            ("caIssuers", AuthorityInformationAccessOID.CA_ISSUERS),
        ):
            uris = tuple(
                d.access_location.value
                for d in access
                if d.access_method == method
                and isinstance(d.access_location, x509.UniformResourceIdentifier)
            )
            if uris:
                result[key] = uris
    try:
        points = extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        pass
    else:
        uris = tuple(
            n.value
            for point in points
            for n in point.full_name or ()
            if isinstance(n, x509.UniformResourceIdentifier)
        )
        if uris:
            result["crlDistributionPoints"] = uris
    return result  # type: ignore[return-value]  # ssl's own type is looser than its values


def _asn1_time(moment: datetime.datetime) -> str:
    """OpenSSL's ASN1_TIME_print: ``Jan  5 09:34:43 2018 GMT``."""
    return f"{_MONTHS[moment.month - 1]} {moment.day:2d} {moment:%H:%M:%S} {moment.year} GMT"


def _oid_name(oid: x509.ObjectIdentifier) -> str:
    """OpenSSL's long name for ``oid`` (ssl names attributes so), else the dotted number."""
    try:
        return ssl._ASN1Object(oid.dotted_string).longname
    except ValueError:
        return oid.dotted_string


def _name(name: x509.Name) -> _Name:
    return tuple(
        tuple(
            (_oid_name(a.oid), a.value if isinstance(a.value, str) else a.value.hex()) for a in rdn
        )
        for rdn in name.rdns
    )


def _general_name(name: x509.GeneralName) -> tuple[str, object]:
    if isinstance(name, x509.DNSName):
        return ("DNS", name.value)
    if isinstance(name, x509.RFC822Name):
        return ("email", name.value)
    if isinstance(name, x509.UniformResourceIdentifier):
        return ("URI", name.value)
    if isinstance(name, x509.IPAddress):
        if not isinstance(name.value, ipaddress.IPv4Address | ipaddress.IPv6Address):
            return ("IP Address", "<invalid>")  # a network: name constraints only, not a SAN
        packed = name.value.packed
        if len(packed) == 4:
            return ("IP Address", ".".join(str(b) for b in packed))
        words = (int.from_bytes(packed[i : i + 2], "big") for i in range(0, 16, 2))
        return ("IP Address", ":".join(f"{w:X}" for w in words))
    if isinstance(name, x509.DirectoryName):
        return ("DirName", _name(name.value))
    if isinstance(name, x509.RegisteredID):
        return ("Registered ID", _oid_name(name.value))
    return ("othername", "<unsupported>")
