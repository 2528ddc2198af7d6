"""``ServerConnection``: a TLS 1.3 server over a byte stream, h11-style.

``receive_data`` only buffers; ``next_event`` does the work and returns one event or None when it
needs more bytes; ``data_to_send`` returns what to write.  The connection owns a record layer and
a :class:`~stateless13.handshake.ServerHandshake` and moves bytes between them; it does no I/O.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from .alerts import (
    AlertDescription,
    AlertError,
    AlertLevel,
    LocalProtocolError,
    UnexpectedMessage,
)
from .client_auth import ClientAuth, ClientCertificate
from .config import ServerConfig
from .events import (
    AlertReceived,
    ApplicationData,
    ClientAuthenticated,
    ConnectionClosed,
    EarlyData,
    Event,
    HandshakeComplete,
    alert_event,
)
from .handshake import (
    AcceptEarlyData,
    Action,
    Direction,
    Entropy,
    Epoch,
    HandshakeDone,
    InstallSecret,
    LimitRecordSize,
    PostHandshakeAuthDone,
    SendChangeCipherSpec,
    SendHandshake,
    ServerHandshake,
    SkipEarlyData,
)
from .record import CHANGE_CIPHER_SPEC_RECORD, ContentType, Record, RecordLayer


class ServerConnection:
    """One TLS 1.3 server connection.

    ``ServerConnection(config)`` runs an ordinary handshake (a HelloRetryRequest only if the
    client's key shares do not fit).  :func:`~stateless13.stateless_accept` hands out connections
    that were resumed from a stateless cookie instead.
    """

    def __init__(
        self,
        config: ServerConfig,
        *,
        peer: tuple[str, int] | None = None,
        entropy: Entropy | None = None,
        clock: Callable[[], float] | None = None,
        _handshake: ServerHandshake | None = None,
    ) -> None:
        # clock: seconds since the epoch (time.time by default), for the tickets' times.
        # _handshake: one made elsewhere (resumed from a cookie by stateless_accept, or with a
        # test's own options); what it has already done is applied at once.
        handshake = _handshake or ServerHandshake(config, peer=peer, entropy=entropy, clock=clock)
        self._handshake = handshake
        self.peer = handshake.peer
        self._records = RecordLayer()
        self._outgoing: list[bytes] = []  # records to send, joined once in data_to_send()
        self._events: deque[Event] = deque()
        self._eof = False
        self._peer_closed = False
        self._we_closed = False
        self._error: AlertError | None = None
        # Accepted 0-RTT data the client may still send (AcceptEarlyData), in bytes.
        self._early_data_left = 0
        #: The HandshakeComplete event's contents, once the handshake is done.
        self.handshake: HandshakeComplete | None = None
        #: The client's certificate: from the handshake, then from the latest post-handshake
        #: authentication (request_client_certificate) that got one.
        self.client_certificate: ClientCertificate | None = None
        self._apply(handshake.take_actions())

    @classmethod
    def _from_resumed_handshake(cls, handshake: ServerHandshake) -> ServerConnection:
        """Wrap a handshake already resumed from a cookie (used by ``stateless_accept``)."""
        return cls(handshake.config, _handshake=handshake)

    # -- input -----------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Buffer bytes from the peer; ``b""`` means the peer closed its end of the stream."""
        if data:
            self._records.feed(data)
        else:
            self._eof = True

    def next_event(self) -> Event | None:
        """Process buffered bytes until one event is ready; None means "send more data".

        Raises an :class:`AlertError` subclass when the peer broke the protocol: the alert is then
        waiting in ``data_to_send()`` and the connection is dead.
        """
        if self._error is not None:
            raise LocalProtocolError(f"connection already failed: {self._error}")
        try:
            while not self._events and not self._peer_closed:
                record = self._records.next_record()
                if record is None:
                    if self._eof:
                        self._peer_closed = True
                        self._events.append(ConnectionClosed(clean=False))
                    break
                self._handle_record(record)
        except AlertError as error:
            self._fail(error)
            raise
        return self._events.popleft() if self._events else None

    def events(self) -> list[Event]:
        """All the events the buffered bytes yield (a convenience over ``next_event``)."""
        events = []
        while (event := self.next_event()) is not None:
            events.append(event)
        return events

    def _handle_record(self, record: Record) -> None:
        if record.content_type == ContentType.handshake:
            epoch = self._records.read_epoch
            self._apply(self._handshake.receive(epoch, record.data))
            return
        if self._handshake.partial_message:  # §5.1: no record between a message's fragments
            raise UnexpectedMessage(
                f"{record.content_type.name} record inside a fragmented handshake message"
            )
        if record.content_type == ContentType.application_data:
            epoch = self._records.read_epoch
            if epoch == Epoch.ZERO_RTT:
                self._receive_early_data(record.data)
                return
            if epoch != Epoch.ONE_RTT:
                raise UnexpectedMessage("application data before the handshake completed")
            if record.data:
                self._events.append(ApplicationData(record.data))
        elif record.content_type == ContentType.alert:
            self._handle_alert(record.data)
        else:
            self._handle_change_cipher_spec(record)

    def _receive_early_data(self, data: bytes) -> None:
        """Accepted 0-RTT data, up to the limit we announced (§4.2.10: more is unexpected)."""
        if len(data) > self._early_data_left:
            raise UnexpectedMessage("more early data than max_early_data_size")
        self._early_data_left -= len(data)
        if data:
            self._events.append(EarlyData(data))

    def _handle_change_cipher_spec(self, record: Record) -> None:
        # §5: between the first ClientHello and the client's Finished, drop a CCS of value 1.
        if (
            record.protected
            or record.data != b"\x01"
            or self._handshake.client_random is None
            or self._handshake.complete
        ):
            raise UnexpectedMessage("change_cipher_spec outside the handshake")

    def _handle_alert(self, data: bytes) -> None:
        event = alert_event(data)
        # §6.1: user_canceled (a warning) is followed by close_notify; the rest end it all.
        self._peer_closed = not (isinstance(event, AlertReceived) and not event.fatal)
        self._events.append(event)

    def _apply(self, actions: list[Action]) -> None:
        """Carry out the handshake's actions: coalesce its messages per epoch into records."""
        pending: list[bytes] = []  # handshake messages of one epoch, not yet in a record
        pending_epoch = Epoch.INITIAL
        for action in actions:
            if isinstance(action, SendHandshake) and action.epoch == pending_epoch:
                pending.append(action.data)
                continue
            if pending:  # anything else ends the record: a key change applies after it
                self._send_handshake_record(pending, pending_epoch)
            if isinstance(action, SendHandshake):
                pending_epoch = action.epoch
                pending.append(action.data)
            elif isinstance(action, SendChangeCipherSpec):
                self._outgoing.append(CHANGE_CIPHER_SPEC_RECORD)
            elif isinstance(action, InstallSecret):
                self._records.install(
                    action.direction == Direction.DECRYPT, action.epoch, action.suite, action.secret
                )
            elif isinstance(action, LimitRecordSize):
                self._records.limit_record_size(action.limit)
            elif isinstance(action, SkipEarlyData):
                self._records.skip_early_data(action.limit)
            elif isinstance(action, AcceptEarlyData):
                self._early_data_left = action.limit
            elif isinstance(action, HandshakeDone):
                self.handshake = action.summary.event()
                self.client_certificate = self.handshake.client_certificate
                self._events.append(self.handshake)
            elif isinstance(action, PostHandshakeAuthDone):
                if action.certificate is not None:
                    self.client_certificate = action.certificate
                self._events.append(ClientAuthenticated(action.certificate))
        if pending:
            self._send_handshake_record(pending, pending_epoch)

    def _send_handshake_record(self, messages: list[bytes], epoch: Epoch) -> None:
        """One record of handshake messages (a flight's messages of one epoch share it)."""
        self._outgoing.append(
            self._records.protect(ContentType.handshake, b"".join(messages), epoch)
        )
        messages.clear()

    def _fail(self, error: AlertError) -> None:
        self._error = error
        self._outgoing.append(
            self._records.protect(ContentType.alert, bytes((AlertLevel.fatal, error.description)))
        )

    # -- output ------------------------------------------------------------------------------------

    @property
    def handshake_complete(self) -> bool:
        return self.handshake is not None

    @property
    def hello_retry(self) -> bool:
        """This connection sent a HelloRetryRequest (known before the handshake ends, and if it
        fails: HandshakeComplete.hello_retry says it too, once complete)."""
        return self._handshake.hello_retry_sent

    def send(self, data: bytes) -> None:
        """Queue application data (allowed once our Finished is out: §4.4.4's 0.5-RTT data)."""
        if self._error is not None or self._we_closed:
            raise LocalProtocolError("cannot send on a closed or failed connection")
        if self._records.write_epoch != Epoch.ONE_RTT:
            raise LocalProtocolError("cannot send application data before the handshake")
        if data:
            self._outgoing.append(self._records.protect(ContentType.application_data, data))

    def close(self) -> None:
        """Queue a close_notify alert; nothing can be sent after it."""
        if self._we_closed or self._error is not None:
            return
        self._we_closed = True
        self._outgoing.append(
            self._records.protect(
                ContentType.alert, bytes((AlertLevel.warning, AlertDescription.close_notify))
            )
        )

    def update_key(self, request_peer_update: bool = False) -> None:
        """Send a KeyUpdate (§4.6.3) and switch to the next sending key."""
        self._apply(self._handshake.request_key_update(request_peer_update))

    def request_client_certificate(self, client_auth: ClientAuth | None = None) -> None:
        """Ask the client for a certificate now (RFC 8446 §4.6.2; only if it offered
        post_handshake_auth), judged by ``client_auth`` (default: ``ServerConfig.client_auth``).
        The answer comes as a ClientAuthenticated event; application data may come before it."""
        if self._error is not None or self._we_closed:
            raise LocalProtocolError("cannot request a certificate on a closed connection")
        self._apply(self._handshake.request_client_certificate(client_auth))

    @property
    def post_handshake_auth(self) -> bool:
        """The client offered post-handshake authentication (request_client_certificate)."""
        return self._handshake.post_handshake_auth

    def export_keying_material(self, label: bytes, context: bytes, length: int) -> bytes:
        """RFC 8446 §7.5 exporter (e.g. for channel binding)."""
        return self._handshake.export_keying_material(label, context, length)

    def data_to_send(self) -> bytes:
        """Bytes to write to the peer; each call returns what was queued since the last one."""
        data = b"".join(self._outgoing)
        self._outgoing.clear()
        return data
