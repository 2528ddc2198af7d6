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


AcceptResult = HelloRetry | Accepted | NeedMoreData | Rejected | AlertReceived


class _ClientAlert(Exception):
    """The client sent an alert where a ClientHello belongs: reported, never answered."""

    def __init__(self, description: int) -> None:
        super().__init__(description)
        self.description = description


_NEED_MORE_DATA = NeedMoreData()


def stateless_accept(
    config: ServerConfig,
    data: bytes,
    *,
    peer: tuple[str, int] | None,
    now: float,
    cookie_payload: bytes = b"",
    after_retry: bool = False,
) -> AcceptResult:
    """Answer the ClientHello at the start of ``data`` without keeping any state.

    ``peer`` is the client's address (the cookie is bound to its IP; None binds nothing).
    ``now`` is the current time in seconds (the cookie's clock).  ``cookie_payload`` (at most 64
    bytes) rides in the cookie and comes back, authenticated, in ``Accepted.cookie_payload``.
    Pass ``after_retry=True`` when this transport already sent this peer an HRR: a ClientHello
    without a cookie is then refused (missing_extension) instead of getting a second HRR.

    A client that sends an alert instead (it refused our HRR, say) gets ``AlertReceived`` with
    its alert: close, and send nothing (§6: an alert is not answered).
    """
    if len(cookie_payload) > MAX_APP_PAYLOAD:
        raise LocalProtocolError(f"cookie_payload is limited to {MAX_APP_PAYLOAD} bytes")
    try:
        # After our HRR the client's refused 0-RTT records may come first (RFC 8446 §4.2.10).
        skippable = config.max_early_data_skipped if after_retry else 0
        extracted = _extract_client_hello(data, config.max_client_hello_size, skippable)
        if extracted is None:
            return _NEED_MORE_DATA
        message, end = extracted
        answer = answer_client_hello(
            config,
            message,
            peer=peer,
            now=now,
            cookie_payload=cookie_payload,
            after_retry=after_retry,
            # _extract_client_hello checked the message's type and size on either path
            hello=pull_client_hello(message[4:]),
        )
        if isinstance(answer, RetryRequest):
            # What may follow ClientHello1 before our answer: the compatibility CCS, and the
            # early data of a client that offered it.  Wait for whole records, then drop them
            # all with the HRR (the transport keeps nothing after a HelloRetry).
            if end != len(data):
                early_data = config.max_early_data_skipped if answer.hello.early_data else 0
                skipped = _skip_records(data, end, early_data, skipped_change_cipher_spec=False)
                if skipped is None:
                    return _NEED_MORE_DATA
                if skipped[0] != len(data):
                    raise UnexpectedMessage("data after ClientHello1, before our HelloRetryRequest")
            records = frame_plaintext(ContentType.handshake, answer.hello_retry_request)
            if answer.hello.legacy_session_id:  # the client asked for middlebox compatibility
                records += CHANGE_CIPHER_SPEC_RECORD  # (§D.4)
            return HelloRetry(records)
        handshake = ServerHandshake.resume_from_cookie(config, answer, peer=peer)
    except _ClientAlert as received:  # e.g. it refused our HRR: nothing to answer (§6)
        return AlertReceived(alert_description(received.description), fatal=True)
    except AlertError as error:
        alert = frame_plaintext(ContentType.alert, bytes((AlertLevel.fatal, error.description)))
        return Rejected(error, alert)

    rest = data[end:]
    connection = ServerConnection._from_resumed_handshake(handshake)
    flight = connection.data_to_send()
    if rest:
        connection.receive_data(rest)  # e.g. the client's Finished arrived in the same read
    summary = handshake.summary
    assert summary is not None and summary.cookie_payload is not None
    return Accepted(connection, flight, summary.cookie_payload)


def _extract_client_hello(data: bytes, max_size: int, early_data: int) -> tuple[bytes, int] | None:
    """(ClientHello message, offset after its last record), or None if it is not all here yet.

    Before the ClientHello, skips one change_cipher_spec record (§4.2.2: a stateless server MUST
    ignore the CCS that a compatibility-mode client sends before ClientHello2) and up to
    ``early_data`` bytes of application_data records (0-RTT the client sent after ClientHello1).
    Reassembles a ClientHello spread over several records.  Refuses as soon as the bytes so far
    show a wrong message type or announce a message over ``max_size``, even inside an incomplete
    record: nothing is buffered in vain.
    """
    # The common case first: the whole ClientHello in the first record (a handshake record
    # holding exactly one ClientHello), sliced without copying it through a bytearray.
    if len(data) >= 9 and data[0] == _HANDSHAKE and data[1] == 3 and data[5] == _CLIENT_HELLO:
        whole = 4 + ((data[6] << 16) | (data[7] << 8) | data[8])
        if (
            ((data[3] << 8) | data[4]) == whole  # the record holds exactly the message
            and whole <= max_size
            and whole <= MAX_PLAINTEXT
            and len(data) >= 5 + whole
        ):
            return data[5 : 5 + whole], 5 + whole
    offset = 0
    message = bytearray()
    skipped_change_cipher_spec = False
    while True:
        if not message:
            skipped = _skip_records(data, offset, early_data, skipped_change_cipher_spec)
            if skipped is None:
                return None
            offset, early_data, skipped_change_cipher_spec = skipped
        framed = split_record(data, offset)
        if framed is None:
            if len(data) >= offset + 5:
                _check_plaintext_length(int.from_bytes(data[offset + 3 : offset + 5], "big"))
            if len(data) > offset + 5 and data[offset] == ContentType.handshake:
                client_hello_size(message + data[offset + 5 :], max_size)
            return None
        content_type, length, total = framed
        _check_plaintext_length(length)
        payload = data[offset + 5 : offset + total]
        offset += total
        if content_type == ContentType.alert and len(payload) == 2:
            raise _ClientAlert(payload[1])
        if content_type != ContentType.handshake:
            raise UnexpectedMessage(f"{content_type.name} record where a ClientHello belongs")
        if not payload:
            raise UnexpectedMessage("empty handshake record")
        message += payload
        size = client_hello_size(message, max_size)
        if size is not None and len(message) >= size:
            if len(message) > size:
                raise UnexpectedMessage("handshake data after the ClientHello in its record")
            return bytes(message), offset


def _skip_records(
    data: bytes, offset: int, early_data: int, skipped_change_cipher_spec: bool
) -> tuple[int, int, bool] | None:
    """Skip what a client may send around ClientHello1 that the stateless front ignores.

    That is one change_cipher_spec of value 1 (compatibility mode, §D.4) and up to
    ``early_data`` bytes of application_data records (refused 0-RTT, §4.2.10).  Returns (offset of
    the first other record or the end, early data bytes left, whether a CCS was skipped), or None
    when a record that may be skipped is not complete yet.
    """
    while offset < len(data):
        content_type = data[offset]
        if content_type == ContentType.change_cipher_spec and not skipped_change_cipher_spec:
            if len(data) >= offset + 5 and data[offset + 3 : offset + 5] != b"\x00\x01":
                break  # not the compatibility CCS: the caller refuses it
            framed = split_record(data, offset)  # refuses a record that is not TLS at all
            if framed is None:
                return None
            if data[offset + 5] != 1:
                break
            skipped_change_cipher_spec = True
            offset += framed[2]
        elif content_type == ContentType.application_data and early_data:
            if len(data) >= offset + 5:
                size = 5 + int.from_bytes(data[offset + 3 : offset + 5], "big")
                if size > early_data:
                    raise UnexpectedMessage(f"early data over the limit of {early_data} bytes")
            framed = split_record(data, offset)
            if framed is None:
                return None
            early_data -= framed[2]
            offset += framed[2]
        else:
            break
    return offset, early_data, skipped_change_cipher_spec


_HANDSHAKE = int(ContentType.handshake)  # plain ints: compared on every ClientHello1
_CLIENT_HELLO = int(HandshakeType.client_hello)


def _check_plaintext_length(length: int) -> None:
    """§5.1: a plaintext record carries at most 2^14 bytes (split_record allows 2^14 + 256)."""
    if length > MAX_PLAINTEXT:
        raise RecordOverflow(f"plaintext record of {length} bytes")
