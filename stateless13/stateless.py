"""``stateless_accept``: the stateless front door (RFC 8446 §4.2.2, "operating statelessly").

Give it the bytes a transport has buffered from one peer.  It keeps nothing: a ClientHello without
a cookie gets a HelloRetryRequest whose cookie carries all the server needs; a ClientHello with a
valid cookie becomes a :class:`ServerConnection` that carries on.  It never consumes input it
cannot use yet: on ``NeedMoreData`` the caller keeps every byte and calls again with more.
"""

from __future__ import annotations

from dataclasses import dataclass

from .alerts import (
    AlertError,
    AlertLevel,
    LocalProtocolError,
    RecordOverflow,
    UnexpectedMessage,
    alert_description,
)
from .config import ServerConfig
from .connection import ServerConnection
from .cookie import MAX_APP_PAYLOAD
from .events import AlertReceived
from .handshake import ServerHandshake
from .messages import HandshakeType, pull_client_hello
from .record import (
    CHANGE_CIPHER_SPEC_RECORD,
    MAX_PLAINTEXT,
    ContentType,
    frame_plaintext,
    split_record,
)
from .retry import RetryRequest, answer_client_hello, client_hello_size


@dataclass(frozen=True, slots=True)
class HelloRetry:
    """Send ``data_to_send`` (the HRR, plus a CCS in compatibility mode), then forget the client."""

    data_to_send: bytes


@dataclass(frozen=True, slots=True)
class Accepted:
    """The cookie was valid: send ``data_to_send`` (ServerHello … Finished); use ``connection``."""

    connection: ServerConnection
    data_to_send: bytes
    cookie_payload: bytes  # the bytes given as ``cookie_payload`` when the HRR was made


@dataclass(frozen=True, slots=True)
class NeedMoreData:
    """The ClientHello is not complete: keep the bytes, call again when more arrive."""


@dataclass(frozen=True, slots=True)
class Rejected:
    """Send ``data_to_send`` (our alert record) and close; ``error`` says which alert and why."""

    error: AlertError
    data_to_send: bytes
    #: The ClientHello2's cookie was ours and verified; what failed came after it (its PSK
    #: binder, its key share, a rule ClientHello2 broke).
    cookie_verified: bool = False


AcceptResult = HelloRetry | Accepted | NeedMoreData | Rejected | AlertReceived


class _ClientAlert(Exception):
    """The client sent an alert where a ClientHello belongs: reported, never answered."""

    def __init__(self, description: int) -> None:
        super().__init__(description)
        self.description = description


_NEED_MORE_DATA = NeedMoreData()


class ClientHelloBuffer:
    """What a byte-stream transport received toward one ClientHello, and how far it was read.

    Give it to ``stateless_accept`` in place of the bytes and ``feed`` it what arrives: every
    byte is then read once, however the client splits its records (a ClientHello in 1-byte
    records costs time linear in its size, not quadratic).  Keep one per connection until
    ``stateless_accept`` answers anything but NeedMoreData; after a HelloRetry, start a new one.
    """

    __slots__ = ("_reader", "data")

    def __init__(self) -> None:
        # The first read as it came (a whole ClientHello is read from it without a copy), then a
        # bytearray when more arrives.
        self.data: bytes | bytearray = b""
        self._reader: _Reader | None = None  # made when the ClientHello is not one whole record

    def feed(self, data: bytes) -> None:
        if not self.data:
            self.data = data
        else:
            if isinstance(self.data, bytes):
                self.data = bytearray(self.data)
            self.data += data


def stateless_accept(
    config: ServerConfig,
    data: bytes | ClientHelloBuffer,
    *,
    peer: tuple[str, int] | None,
    now: float,
    cookie_payload: bytes = b"",
    after_retry: bool = False,
) -> AcceptResult:
    """Answer the ClientHello at the start of ``data`` without keeping any state.

    ``data`` is what the transport buffered from the peer: bytes, or a :class:`ClientHelloBuffer`
    that remembers how far earlier calls read it.  ``peer`` is the client's address (the cookie is
    bound to its IP; None binds nothing).  ``now`` is the current time in seconds (the cookie's
    clock).  ``cookie_payload`` (at most 64 bytes) rides in the cookie and comes back,
    authenticated, in ``Accepted.cookie_payload``.  Pass ``after_retry=True`` when this transport
    already sent this peer an HRR: a ClientHello without a cookie is then refused
    (missing_extension) instead of getting a second HRR.

    A client that sends an alert instead (it refused our HRR, say) gets ``AlertReceived`` with
    its alert: close, and send nothing (§6: an alert is not answered).
    """
    if len(cookie_payload) > MAX_APP_PAYLOAD:
        raise LocalProtocolError(f"cookie_payload is limited to {MAX_APP_PAYLOAD} bytes")
    # After our HRR the client's refused 0-RTT records may come first (RFC 8446 §4.2.10).
    skippable = config.max_early_data_skipped if after_retry else 0
    cookie_verified = False
    try:
        buffer: ClientHelloBuffer | None
        raw: bytes | bytearray
        if isinstance(data, ClientHelloBuffer):
            buffer, raw, reader = data, data.data, data._reader
        else:
            buffer, raw, reader = None, data, None
        if reader is not None:  # a buffer read before: resume
            found = reader.read_client_hello(raw)
        else:
            found = (
                _whole_client_hello_record(raw, config.max_client_hello_size)
                if isinstance(raw, bytes)
                else None
            )
            if found is None:  # not the common case: the general reading
                reader = _Reader(config.max_client_hello_size, skippable)
                if buffer is not None:
                    buffer._reader = reader
                found = reader.read_client_hello(raw)
        if found is None:
            return _NEED_MORE_DATA
        message, end = found
        hello = pull_client_hello(message[4:])  # its type and size were checked on either path
        if hello.cookie is None and end != len(raw):
            # What may follow ClientHello1 before our answer: the compatibility CCS, and the
            # early data of a client that offered it.  Wait for whole records, then drop them
            # all with the HRR (the transport keeps nothing after a HelloRetry).
            if reader is None:  # the ClientHello was one whole record: read on after it
                reader = _Reader(config.max_client_hello_size, 0)
                reader._found = found
                if buffer is not None:
                    buffer._reader = reader
            early_data = config.max_early_data_skipped if hello.early_data else 0
            if not reader.skip_after_client_hello(raw, end, early_data):
                return _NEED_MORE_DATA
        answer = answer_client_hello(
            config,
            message,
            peer=peer,
            now=now,
            cookie_payload=cookie_payload,
            after_retry=after_retry,
            hello=hello,
        )
        if isinstance(answer, RetryRequest):
            records = frame_plaintext(ContentType.handshake, answer.hello_retry_request)
            if hello.legacy_session_id:  # the client asked for middlebox compatibility (§D.4)
                records += CHANGE_CIPHER_SPEC_RECORD
            return HelloRetry(records)
        cookie_verified = True
        handshake = ServerHandshake.resume_from_cookie(config, answer, peer=peer)
    except _ClientAlert as received:  # e.g. it refused our HRR: nothing to answer (§6)
        return AlertReceived(alert_description(received.description), fatal=True)
    except AlertError as error:
        alert = frame_plaintext(ContentType.alert, bytes((AlertLevel.fatal, error.description)))
        return Rejected(error, alert, cookie_verified)

    rest = bytes(raw[end:])
    connection = ServerConnection._from_resumed_handshake(handshake)
    flight = connection.data_to_send()
    if rest:
        connection.receive_data(rest)  # e.g. the client's Finished arrived in the same read
    summary = handshake.summary
    assert summary is not None and summary.cookie_payload is not None
    return Accepted(connection, flight, summary.cookie_payload)


def _whole_client_hello_record(data: bytes, max_size: int) -> tuple[bytes, int] | None:
    """The common case, without copying: one handshake record holding exactly one ClientHello."""
    if len(data) >= 9 and data[0] == _HANDSHAKE and data[1] == 3 and data[5] == _CLIENT_HELLO:
        whole = 4 + ((data[6] << 16) | (data[7] << 8) | data[8])
        if (
            ((data[3] << 8) | data[4]) == whole  # the record holds exactly the message
            and whole <= max_size
            and whole <= MAX_PLAINTEXT
            and len(data) >= 5 + whole
        ):
            return data[5 : 5 + whole], 5 + whole
    return None


class _Reader:
    """Reads the records around one ClientHello, resuming where the last call stopped.

    Before the ClientHello it skips one change_cipher_spec record (§4.2.2: a stateless server
    MUST ignore the CCS that a compatibility-mode client sends before ClientHello2) and up to
    ``early_data`` bytes of application_data records (0-RTT sent after ClientHello1).  It
    reassembles a ClientHello spread over several records, and refuses as soon as the bytes so
    far show a wrong message type or announce a message over ``max_size``, even inside an
    incomplete record: nothing is buffered in vain.
    """

    __slots__ = (
        "_after_client_hello",
        "_early_data",
        "_found",
        "_max_size",
        "_message",
        "_offset",
        "_skipped_ccs",
    )

    def __init__(self, max_size: int, early_data: int) -> None:
        self._max_size = max_size
        self._early_data = early_data  # bytes of records that may still be skipped
        self._offset = 0  # where the next unread record starts
        self._message = bytearray()  # the ClientHello's bytes so far
        self._skipped_ccs = False
        self._after_client_hello = False  # reading what follows ClientHello1
        self._found: tuple[bytes, int] | None = None  # the ClientHello, once read

    def read_client_hello(self, data: bytes | bytearray) -> tuple[bytes, int] | None:
        """(ClientHello message, offset after its last record), or None if not all here yet."""
        if self._found is not None:  # read already; what follows it is being read now
            return self._found
        message = self._message
        while True:
            if not message and not self._skip(data):
                return None
            offset = self._offset
            framed = split_record(data, offset)
            if framed is None:
                if len(data) >= offset + 5:
                    _check_plaintext_length(int.from_bytes(data[offset + 3 : offset + 5], "big"))
                if len(data) > offset + 5 and data[offset] == ContentType.handshake:
                    # Only the message's 4-byte header matters, whatever the record's size.
                    header = bytes(message[:4]) + data[offset + 5 : offset + 9]
                    client_hello_size(header[:4], self._max_size)
                return None
            content_type, length, total = framed
            _check_plaintext_length(length)
            payload = data[offset + 5 : offset + total]
            self._offset = offset + total
            if content_type == ContentType.alert and len(payload) == 2:
                raise _ClientAlert(payload[1])
            if content_type != ContentType.handshake:
                raise UnexpectedMessage(f"{content_type.name} record where a ClientHello belongs")
            if not payload:
                raise UnexpectedMessage("empty handshake record")
            message += payload
            size = client_hello_size(message, self._max_size)
            if size is not None and len(message) >= size:
                if len(message) > size:
                    raise UnexpectedMessage("handshake data after the ClientHello in its record")
                self._found = bytes(message), self._offset
                return self._found

    def skip_after_client_hello(self, data: bytes | bytearray, end: int, early_data: int) -> bool:
        """Whether everything after ClientHello1 (from ``end``) may be dropped with the HRR: one
        CCS, and early data if the client offered it; False while such a record is incomplete."""
        if not self._after_client_hello:  # the first call: start after the ClientHello
            self._after_client_hello = True
            self._offset, self._early_data, self._skipped_ccs = end, early_data, False
        if not self._skip(data):
            return False
        if self._offset != len(data):
            raise UnexpectedMessage("data after ClientHello1, before our HelloRetryRequest")
        return True

    def _skip(self, data: bytes | bytearray) -> bool:
        """Skip what a client may send around ClientHello1 that the stateless front ignores: one
        change_cipher_spec of value 1 (compatibility mode, §D.4) and application_data records
        within the early data limit (refused 0-RTT, §4.2.10).  False while a record that may be
        skipped is not complete yet; True at the first other record, or the end."""
        offset = self._offset
        complete = True
        while offset < len(data):
            content_type = data[offset]
            if content_type == ContentType.change_cipher_spec and not self._skipped_ccs:
                if len(data) >= offset + 5 and data[offset + 3 : offset + 5] != b"\x00\x01":
                    break  # not the compatibility CCS: the caller refuses it
                framed = split_record(data, offset)  # refuses a record that is not TLS at all
                if framed is None:
                    complete = False
                    break
                if data[offset + 5] != 1:
                    break
                self._skipped_ccs = True
            elif content_type == ContentType.application_data and self._early_data:
                if len(data) >= offset + 5:
                    size = 5 + int.from_bytes(data[offset + 3 : offset + 5], "big")
                    if size > self._early_data:
                        raise UnexpectedMessage(
                            f"early data over the limit of {self._early_data} bytes"
                        )
                framed = split_record(data, offset)
                if framed is None:
                    complete = False
                    break
                self._early_data -= framed[2]
            else:
                break
            offset += framed[2]
        self._offset = offset
        return complete


_HANDSHAKE = int(ContentType.handshake)  # plain ints: compared on every ClientHello1
_CLIENT_HELLO = int(HandshakeType.client_hello)


def _check_plaintext_length(length: int) -> None:
    """§5.1: a plaintext record carries at most 2^14 bytes (split_record allows 2^14 + 256)."""
    if length > MAX_PLAINTEXT:
        raise RecordOverflow(f"plaintext record of {length} bytes")
