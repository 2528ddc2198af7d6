"""The TLS record layer (RFC 8446 §5): framing, limits and AEAD protection, nothing else.

The handshake never sees records; it hands over handshake bytes per epoch and traffic secrets,
and this layer turns them into records (and back).  QUIC does not use this module at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from cryptography.exceptions import InvalidTag

from .alerts import AlertError, BadRecordMac, DecodeError, RecordOverflow, UnexpectedMessage
from .key_schedule import Epoch, traffic_key_and_iv
from .primitives import SuiteParams

MAX_PLAINTEXT = 1 << 14  # §5.1
MAX_CIPHERTEXT = MAX_PLAINTEXT + 256  # §5.2
HEADER_SIZE = 5
LEGACY_RECORD_VERSION = b"\x03\x03"


class ContentType(IntEnum):
    change_cipher_spec = 20
    alert = 21
    handshake = 22
    application_data = 23


_CONTENT_TYPES = {int(t): t for t in ContentType}
_PLAINTEXT_HEADERS = {t: bytes((t,)) + LEGACY_RECORD_VERSION for t in ContentType}


@dataclass(slots=True)  # one per record received: not frozen, which would cost per field
class Record:
    content_type: ContentType
    data: bytes
    protected: bool  # arrived encrypted (and authenticated)


def split_record(buffer: bytes | bytearray, offset: int = 0) -> tuple[ContentType, int, int] | None:
    """(content type, payload length, total length) of the record at ``offset``, None if incomplete.

    Checks only what the header alone can tell: the content type, the legacy version's major
    byte (so an HTTP request or other garbage is refused at once, not buffered), and the length.
    """
    available = len(buffer) - offset
    if available < 1:
        return None
    content_type = _CONTENT_TYPES.get(buffer[offset])  # a dict: Enum() costs a call per record
    if content_type is None:
        raise UnexpectedMessage(f"not a TLS record: content type {buffer[offset]}")
    if available >= 2 and buffer[offset + 1] != 3:
        raise DecodeError(f"not a TLS record: version major {buffer[offset + 1]}")
    if available < HEADER_SIZE:
        return None
    length = int.from_bytes(buffer[offset + 3 : offset + 5], "big")
    if length > MAX_CIPHERTEXT:
        raise RecordOverflow(f"record of {length} bytes")
    if available < HEADER_SIZE + length:
        return None
    return content_type, length, HEADER_SIZE + length


def frame_plaintext(content_type: ContentType, data: bytes) -> bytes:
    """Unprotected records (ClientHello/ServerHello/HRR, CCS, early alerts), fragmented at 2^14."""
    if 0 < len(data) <= MAX_PLAINTEXT:  # every HRR: one record
        return _PLAINTEXT_HEADERS[content_type] + len(data).to_bytes(2, "big") + data
    out = bytearray()
    for start in range(0, max(len(data), 1), MAX_PLAINTEXT):
        fragment = data[start : start + MAX_PLAINTEXT]
        out += bytes((content_type,)) + LEGACY_RECORD_VERSION + len(fragment).to_bytes(2, "big")
        out += fragment
    return bytes(out)


CHANGE_CIPHER_SPEC_RECORD = frame_plaintext(ContentType.change_cipher_spec, b"\x01")


def inner_content(inner: bytes) -> tuple[int, int]:
    """§5.2, §5.4: (content type byte, content length) of a decrypted TLSInnerPlaintext (DTLS's
    too).  Zeros may pad it after the type: found without copying 16 KiB (rstrip would), since
    records are almost never padded."""
    if len(inner) > MAX_PLAINTEXT + 1:
        raise RecordOverflow(f"inner plaintext of {len(inner)} bytes")
    end = len(inner) - 1
    while end >= 0 and inner[end] == 0:
        end -= 1
    if end < 0:
        raise UnexpectedMessage("protected record with no content type")
    return inner[end], end


class RecordProtection:
    """AEAD protection of one direction in one epoch (§5.2, §5.3): key, IV, sequence number."""

    __slots__ = ("_aead", "_iv", "_seq")

    def __init__(self, suite: SuiteParams, traffic_secret: bytes) -> None:
        key, iv = traffic_key_and_iv(suite, traffic_secret)
        self._aead = suite.aead(key)
        self._iv = int.from_bytes(iv, "big")
        self._seq = 0

    def _next_nonce(self) -> bytes:
        return (self._iv ^ self._seq).to_bytes(12, "big")

    def seal(
        self, content_type: ContentType, data: bytes, max_fragment: int = MAX_PLAINTEXT
    ) -> bytes:
        type_byte = bytes((content_type,))
        records = []
        for start in range(0, max(len(data), 1), max_fragment):
            inner = data[start : start + max_fragment] + type_byte
            header = b"\x17\x03\x03" + (len(inner) + 16).to_bytes(2, "big")
            records.append(header)
            records.append(self._aead.encrypt(self._next_nonce(), inner, header))
            self._seq += 1
        return b"".join(records)

    def open(self, header: bytes, payload: bytes | memoryview) -> tuple[ContentType, bytes]:
        try:
            inner = self._aead.decrypt(self._next_nonce(), payload, header)
        except InvalidTag:
            # The sequence number stays: a skipped 0-RTT record (§4.2.10) is not one of ours.
            raise BadRecordMac("record does not authenticate") from None
        self._seq += 1
        type_byte, end = inner_content(inner)
        content_type = _CONTENT_TYPES.get(type_byte)
        if content_type is None:
            raise UnexpectedMessage(f"unknown inner content type {type_byte}")
        return content_type, inner[:end]


class RecordLayer:
    """Reassembles records from a byte stream and (un)protects them per epoch."""

    def __init__(self) -> None:
        self._buffer = b""
        self._offset = 0  # where the next record starts: consumed bytes are dropped in bulk
        self._read: RecordProtection | None = None
        self.read_epoch = Epoch.INITIAL
        self._write: dict[Epoch, RecordProtection] = {}
        self.write_epoch = Epoch.INITIAL
        # Refused 0-RTT records (skip_early_data): bytes we may still skip, None when not skipping.
        self._early_data_left: int | None = None
        self._early_data_skipped = 0
        self._max_fragment = MAX_PLAINTEXT  # content bytes per protected record we send

    @property
    def buffered(self) -> int:
        return len(self._buffer) - self._offset

    def feed(self, data: bytes) -> None:
        if self._offset >= len(self._buffer):  # all consumed: take the new bytes as they are
            self._buffer = bytes(data)
        else:  # keep the unread rest (part of a record) and append, dropping what was read
            self._buffer = self._buffer[self._offset :] + data
        self._offset = 0

    def install(self, decrypt: bool, epoch: Epoch, suite: SuiteParams, secret: bytes) -> None:
        protection = RecordProtection(suite, secret)
        if decrypt:
            self._read, self.read_epoch = protection, epoch
        else:
            self._write[epoch] = protection
            self.write_epoch = max(self.write_epoch, epoch)

    def limit_record_size(self, limit: int) -> None:
        """The peer's record_size_limit (RFC 8449): its TLSInnerPlaintext, so content + 1 byte."""
        self._max_fragment = min(limit - 1, MAX_PLAINTEXT)

    def skip_early_data(self, limit: int) -> None:
        """Skip the client's refused 0-RTT records (RFC 8446 §4.2.10), ``limit`` bytes at most.

        With a read key installed (after our ServerHello): records that do not open, until the
        first that does.  Without one (after a HelloRetryRequest): application_data records,
        until the next handshake record (ClientHello2).  Each record counts with its header.
        """
        self._early_data_left = limit
        self._early_data_skipped = 0

    def _skip_early_data_record(self, size: int, error: AlertError) -> None:
        """Skip a record that ``error`` would otherwise refuse, if it may be refused early data."""
        left = self._early_data_left
        if left is None:
            raise error
        if size > left:
            raise type(error)(
                f"{error.reason}, after {self._early_data_skipped} bytes of early data"
            )
        self._early_data_left = left - size
        self._early_data_skipped += size

    def _open(self, read: RecordProtection, start: int, end: int) -> Record | None:
        """The protected record ``buffer[start:end]``, opened; None if it was skipped as early
        data.  The AEAD reads the payload in place, through a view of the received bytes."""
        buffer = self._buffer
        try:
            with memoryview(buffer)[start + HEADER_SIZE : end] as sealed:
                inner_type, data = read.open(buffer[start : start + HEADER_SIZE], sealed)
        except BadRecordMac as error:
            self._skip_early_data_record(end - start, error)
            return None
        self._early_data_left = None
        if not data and inner_type != ContentType.application_data:
            raise UnexpectedMessage(f"empty {inner_type.name} record")
        return Record(inner_type, data, protected=True)

    def next_record(self) -> Record | None:
        """The next complete record, decrypted if a read key is installed; None if incomplete."""
        while True:  # only skipped early data records go round again
            start = self._offset
            buffer = self._buffer
            if (  # bulk data: a whole protected record, the header checks split_record would make
                self._read is not None
                and len(buffer) - start > HEADER_SIZE
                and buffer[start] == ContentType.application_data
                and buffer[start + 1] == 3
            ):
                end = start + HEADER_SIZE + ((buffer[start + 3] << 8) | buffer[start + 4])
                if end - start <= HEADER_SIZE + MAX_CIPHERTEXT and end <= len(buffer):
                    self._offset = end
                    record = self._open(self._read, start, end)
                    if record is None:
                        continue
                    return record
            framed = split_record(self._buffer, start)
            if framed is None:
                return None
            content_type, length, total = framed
            self._offset = start + total
            if self._read is not None and content_type == ContentType.application_data:
                record = self._open(self._read, start, start + total)
                if record is None:
                    continue
                return record
            if self._read is None and content_type == ContentType.application_data:
                if self._early_data_left is not None:
                    self._skip_early_data_record(
                        total, UnexpectedMessage("application data before the handshake")
                    )
                    continue
            elif content_type == ContentType.handshake:
                self._early_data_left = None  # ClientHello2 ends the early data
            payload = bytes(self._buffer[start + HEADER_SIZE : start + total])
            if self._read is None or content_type in (
                ContentType.change_cipher_spec,
                ContentType.alert,
            ):
                # Unprotected: before keys, the compatibility CCS, and a peer's plaintext alert
                # (a client that cannot read our ServerHello has no keys to encrypt it with).
                if length > MAX_PLAINTEXT:
                    raise RecordOverflow(f"plaintext record of {length} bytes")
                if length == 0 and content_type != ContentType.application_data:
                    raise UnexpectedMessage(f"empty {content_type.name} record")
                if self._read is not None and content_type == ContentType.alert and length != 2:
                    raise UnexpectedMessage("malformed plaintext alert after keys were installed")
                return Record(content_type, payload, protected=False)
            raise UnexpectedMessage(f"unprotected {content_type.name} record after keys were set")

    def protect(self, content_type: ContentType, data: bytes, epoch: Epoch | None = None) -> bytes:
        """Records carrying ``data`` in ``epoch`` (default: the newest write epoch)."""
        epoch = self.write_epoch if epoch is None else epoch
        protection = self._write.get(epoch)
        if protection is None:
            return frame_plaintext(content_type, data)
        return protection.seal(content_type, data, self._max_fragment)
