"""The DTLS 1.3 record layer (RFC 9147 §4): datagrams in, authenticated records out, and back.

Three pieces, each usable alone:

* :func:`split_datagram` frames one UDP datagram into records (§4, §4.1), keyless: DTLSPlaintext
  and DTLSCiphertext with the unified header.  What does not frame is dropped and counted.
* :class:`ReplayWindow`, the per-epoch sliding window of §4.5.1.
* :class:`DtlsRecordLayer`, one connection's keys per epoch (§6.1 numbering: 0 plaintext, 1 early
  data, 2 handshake, 3 application traffic 0, 4+ after KeyUpdates): record number encryption
  (§4.2.3), sequence number and epoch reconstruction (§4.2.2), AEAD protection (§4.5, RFC 8446
  §5.2-5.3), replay and AEAD-limit bookkeeping (§4.5.1, §4.5.3).

Invalid records are dropped silently, as §4.5.2 says a datagram protocol should (UDP forgery is
free; an alert per bad record would be a reflector): bad framing, unknown epochs, records that do
not authenticate, replays.  They are counted in :class:`DtlsRecordStats`.  Only a record that
*authenticates* and still breaks the protocol (no content type, an unknown one, an empty
handshake record, an oversized plaintext) raises: the peer holds the keys, so it is the peer.

Handshake messages, fragments, flights and ACK contents are ``dtls_flight``'s; this module only
moves opaque payloads of a content type.  Connection IDs (§9, RFC 9146) are parsed by
:func:`split_datagram` (``cid_length``) but not negotiated nor sent: :class:`DtlsRecordLayer`
works without them, and the AAD would need no change to add them (it is the header as sent).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

from .alerts import LocalProtocolError, UnexpectedMessage
from .key_schedule import KeyedHmac, expand_label, traffic_key_and_iv
from .messages import CipherSuite
from .primitives import AEAD, SuiteParams
from .record import inner_content

DTLS_LEGACY_VERSION = 0xFEFD  # DTLSPlaintext.legacy_record_version, ServerHello.legacy_version
DTLS13_VERSION = 0xFEFC  # supported_versions

MAX_PLAINTEXT = 1 << 14  # DTLSInnerPlaintext content, and a DTLSPlaintext fragment (§4)
MAX_CIPHERTEXT = MAX_PLAINTEXT + 256  # an encrypted_record (RFC 8446 §5.2)
MAX_SEQUENCE = (1 << 48) - 1  # §4: sequence numbers never exceed 2^48-1 (senders rekey first)
MAX_EPOCH = (1 << 64) - 1  # §6.1: epochs do not wrap
PLAINTEXT_HEADER_SIZE = 13  # type, version, epoch, 48-bit sequence number, length
CIPHERTEXT_HEADER_SIZE = 5  # the unified header we send: flags, 16-bit sequence, length
AEAD_TAG_SIZE = 16  # every suite here (AES-GCM, ChaCha20-Poly1305)
MIN_ENCRYPTED_RECORD = 16  # §4.2.3: the record number mask samples 16 bytes of ciphertext
#: What a UDP datagram we send may hold by default: fits the IPv6 minimum MTU (1280) minus the
#: IPv6 and UDP headers, with room for extension headers (QUIC's choice, RFC 9000 §14).
DEFAULT_MAX_DATAGRAM_SIZE = 1200

#: §4.5.3: records that may fail authentication under one key before the connection closes.
INTEGRITY_LIMIT = 1 << 36
#: RFC 8446 §5.5: records one AES-GCM key may protect (2^24.5); ChaCha20-Poly1305's limit is
#: beyond the 48-bit sequence space.
AES_GCM_CONFIDENTIALITY_LIMIT = 23_726_566

_FIXED_BITS = 0x20  # 0b001xxxxx: a DTLSCiphertext unified header (§4)
_FIXED_MASK = 0xE0
_CID_BIT = 0x10
_SEQ16_BIT = 0x08
_LENGTH_BIT = 0x04
_EPOCH_BITS = 0x03
#: Our unified header: no CID, 16-bit sequence number, length present (so records can follow).
_OUR_FLAGS = _FIXED_BITS | _SEQ16_BIT | _LENGTH_BIT


class DtlsContentType(IntEnum):
    """The content types of DTLS 1.3 (§4.1, §7).  Equal, as integers, to ``record.ContentType``'s
    members of the same name; kept apart so that TLS's record layer does not learn ack(26)."""

    alert = 21
    handshake = 22
    application_data = 23
    ack = 26


_CONTENT_TYPES = {int(t): t for t in DtlsContentType}
#: §4.1: a first byte of alert, handshake or ack is a DTLSPlaintext record; 20 (change_cipher_spec),
#: 23-25 (DTLS 1.2 and older) are rejected as records that fail deprotection.
_PLAINTEXT_TYPES = frozenset((21, 22, 26))


# ---------------------------------------------------------------------------------------------
# Framing (§4): no keys needed


@dataclass(slots=True)  # one per record received: not frozen, which would cost per field
class PlaintextRecord:
    """A DTLSPlaintext record as framed: nothing is authenticated."""

    content_type: DtlsContentType  # alert, handshake or ack (§4.1)
    epoch: int  # the 16-bit epoch field; DTLS 1.3 sends only 0 here
    sequence_number: int  # 48 bits, in the clear
    fragment: bytes


@dataclass(slots=True)
class CiphertextRecord:
    """A DTLSCiphertext record as framed: its sequence number is still encrypted."""

    header: bytes  # the unified header as received
    epoch_bits: int  # the low two bits of the epoch
    connection_id: bytes  # empty when the C bit is clear
    sequence_length: int  # 1 or 2 (the S bit)
    sequence_offset: int  # where the encrypted sequence number starts in ``header``
    encrypted_record: bytes  # at least MIN_ENCRYPTED_RECORD bytes


RawRecord = PlaintextRecord | CiphertextRecord


@dataclass(slots=True)
class SplitDatagram:
    """The records of one datagram, and what could not be framed."""

    records: list[RawRecord]
    dropped_records: int  # records, or undecodable tails, discarded (§4.5.2)
    dropped_bytes: int


def split_datagram(datagram: bytes, cid_length: int = 0) -> SplitDatagram:
    """Frame a datagram into records (§4, §4.1, §4.3); never raises on any input.

    ``cid_length``: the length of the connection IDs we issued, which a unified header with the
    C bit carries (§4: "length as negotiated"); with 0, such a record cannot be framed.
    A record that cannot be framed (a first byte that is no DTLS 1.3 record, a header cut short,
    a length past the datagram's end or over the limits) ends the datagram: nothing after it can
    be trusted to start a record, so the rest is dropped.  A DTLSCiphertext record with fewer than
    16 bytes of ciphertext (§4.2.3) is dropped alone, as its length is known.
    """
    records: list[RawRecord] = []
    dropped_records = 0
    dropped_bytes = 0
    pos = 0
    end = len(datagram)
    while pos < end:
        first = datagram[pos]
        if first in _PLAINTEXT_TYPES:
            if end - pos < PLAINTEXT_HEADER_SIZE:
                break
            length = (datagram[pos + 11] << 8) | datagram[pos + 12]
            start = pos + PLAINTEXT_HEADER_SIZE
            if length > MAX_PLAINTEXT or start + length > end:
                break
            records.append(
                PlaintextRecord(
                    _CONTENT_TYPES[first],
                    (datagram[pos + 3] << 8) | datagram[pos + 4],
                    int.from_bytes(datagram[pos + 5 : pos + 11], "big"),
                    datagram[start : start + length],
                )
            )
            pos = start + length
        elif first & _FIXED_MASK == _FIXED_BITS:
            header_end = pos + 1
            connection_id = b""
            if first & _CID_BIT:
                if cid_length == 0:
                    break
                connection_id = datagram[header_end : header_end + cid_length]
                header_end += cid_length
            sequence_offset = header_end - pos
            sequence_length = 2 if first & _SEQ16_BIT else 1
            header_end += sequence_length
            if first & _LENGTH_BIT:
                header_end += 2
                if header_end > end:
                    break
                length = (datagram[header_end - 2] << 8) | datagram[header_end - 1]
            else:  # §4: the record runs to the end of the datagram
                if header_end > end:
                    break
                length = end - header_end
            if length > MAX_CIPHERTEXT or header_end + length > end:
                break
            if length < MIN_ENCRYPTED_RECORD:
                dropped_records += 1
                dropped_bytes += header_end + length - pos
                pos = header_end + length
                continue
            records.append(
                CiphertextRecord(
                    datagram[pos:header_end],
                    first & _EPOCH_BITS,
                    connection_id,
                    sequence_length,
                    sequence_offset,
                    datagram[header_end : header_end + length],
                )
            )
            pos = header_end + length
        else:
            break
    if pos < end:
        dropped_records += 1
        dropped_bytes += end - pos
    return SplitDatagram(records, dropped_records, dropped_bytes)


def plaintext_record(content_type: int, seq: int, fragment: bytes) -> bytes:
    """A DTLSPlaintext record (§4) in epoch 0, numbered ``seq``."""
    return (
        bytes((content_type,))
        + DTLS_LEGACY_VERSION.to_bytes(2, "big")
        + b"\x00\x00"
        + seq.to_bytes(6, "big")
        + len(fragment).to_bytes(2, "big")
        + fragment
    )


def pack_datagrams(records: list[bytes], max_datagram_size: int) -> list[bytes]:
    """Records, in order, packed greedily into datagrams of at most ``max_datagram_size`` bytes
    (§4.3: records never span datagrams).  A record larger than that travels alone."""
    datagrams: list[bytes] = []
    current = b""
    for record in records:
        if current and len(current) + len(record) > max_datagram_size:
            datagrams.append(current)
            current = b""
        current += record
    if current:
        datagrams.append(current)
    return datagrams


# ---------------------------------------------------------------------------------------------
# Sequence numbers (§4.2.2) and anti-replay (§4.5.1)


def reconstruct_sequence_number(low_bits: int, bit_count: int, expected: int) -> int:
    """§4.2.2: the full sequence number ending in ``low_bits`` (its low ``bit_count`` bits, 8 or
    16) numerically closest to ``expected`` (one plus the highest deprotected so far), within
    0..2^48-1; on a tie, the lower."""
    span = 1 << bit_count
    candidate = (expected & ~(span - 1)) | low_bits
    best = -1
    for value in (candidate - span, candidate, candidate + span):
        if 0 <= value <= MAX_SEQUENCE and (
            best < 0 or abs(value - expected) < abs(best - expected)
        ):
            best = value
    return best


class ReplayWindow:
    """§4.5.1: the sliding window of RFC 4303 §3.4.3 over one epoch's sequence numbers.

    ``check`` says whether a number is new (to the right of the window, or inside it and not yet
    seen); ``mark`` records one, and must be called only once its record authenticated.
    """

    __slots__ = ("_seen", "highest", "size")

    def __init__(self, size: int = 64) -> None:
        if size < 1:
            raise LocalProtocolError("a replay window holds at least one record")
        self.size = size
        self.highest = -1  # the right edge: the highest authenticated sequence number
        self._seen = 0  # bit i: highest - i was received

    @property
    def next_expected(self) -> int:
        """One plus the highest authenticated sequence number: §4.2.2's reference."""
        return self.highest + 1

    def check(self, seq: int) -> bool:
        if seq > self.highest:
            return True
        offset = self.highest - seq
        return offset < self.size and not (self._seen >> offset) & 1

    def mark(self, seq: int) -> None:
        if seq > self.highest:
            shift = seq - self.highest
            # a jump past the window clears it; never shift by the jump (up to 2^48 bits)
            seen = (self._seen << shift) | 1 if shift < self.size else 1
            self._seen = seen & ((1 << self.size) - 1)
            self.highest = seq
        elif self.highest - seq < self.size:
            self._seen |= 1 << (self.highest - seq)


# ---------------------------------------------------------------------------------------------
# Keys of one epoch and direction (§4.2.3, §4.5)


class _SequenceNumberMask:
    """§4.2.3: the mask XORed over the wire sequence number, from the first 16 ciphertext bytes."""

    __slots__ = ("_ecb", "_key")

    def __init__(self, suite: SuiteParams, sn_key: bytes) -> None:
        self._key = sn_key
        self._ecb: CipherContext | None = None
        if suite.code != CipherSuite.TLS_CHACHA20_POLY1305_SHA256:
            # AES-ECB on one block is stateless: one context serves every record.
            self._ecb = Cipher(algorithms.AES(sn_key), modes.ECB()).encryptor()

    def mask(self, sample: bytes) -> bytes:
        """Two mask bytes (enough for a 16-bit sequence number) for a 16-byte sample."""
        if self._ecb is not None:
            return self._ecb.update(sample)[:2]
        # ChaCha20 block function with counter = sample[0:4] (little-endian) and nonce =
        # sample[4:16]: cryptography's ChaCha20 "nonce" is exactly counter || nonce.
        chacha = Cipher(algorithms.ChaCha20(self._key, sample), mode=None).encryptor()
        return chacha.update(b"\x00\x00")


def _check_suite(suite: SuiteParams) -> None:
    if suite.label_prefix != b"dtls13":
        raise LocalProtocolError("DTLS keys come from DTLS_SUITES (the 'dtls13' label prefix)")
    if suite.code not in (
        CipherSuite.TLS_AES_128_GCM_SHA256,
        CipherSuite.TLS_AES_256_GCM_SHA384,
        CipherSuite.TLS_CHACHA20_POLY1305_SHA256,
    ):
        raise LocalProtocolError(f"no record number encryption for suite {suite.code}")


class _Keys:
    """AEAD key, IV and sequence number key of one direction in one epoch."""

    __slots__ = ("aead", "iv", "sn_mask", "suite")

    def __init__(self, suite: SuiteParams, secret: bytes) -> None:
        _check_suite(suite)
        key, iv = traffic_key_and_iv(suite, secret)
        self.suite = suite
        self.aead: AEAD = suite.aead(key)
        self.iv = int.from_bytes(iv, "big")
        sn_key = expand_label(KeyedHmac(suite, secret), b"sn", b"", suite.key_len)
        self.sn_mask = _SequenceNumberMask(suite, sn_key)

    def nonce(self, seq: int) -> bytes:
        """§4: the 64-bit record sequence number (the epoch is not in it), as RFC 8446 §5.3."""
        return (self.iv ^ seq).to_bytes(12, "big")


class _ReadEpoch:
    __slots__ = ("failures", "integrity_limit", "keys", "window")

    def __init__(self, keys: _Keys, integrity_limit: int, window_size: int) -> None:
        self.keys = keys
        self.window = ReplayWindow(window_size)
        self.failures = 0  # records that failed authentication under this key (§4.5.3)
        self.integrity_limit = integrity_limit


class _WriteEpoch:
    __slots__ = ("keys", "next_seq")

    def __init__(self, keys: _Keys) -> None:
        self.keys = keys
        self.next_seq = 0


# ---------------------------------------------------------------------------------------------
# One connection's record layer


@dataclass(slots=True)
class InboundRecord:
    """A record that framed, authenticated (unless epoch 0) and was not a replay."""

    epoch: int  # 0: a DTLSPlaintext record, not authenticated by anything
    seq: int
    content_type: DtlsContentType
    data: bytes

    @property
    def record_number(self) -> tuple[int, int]:
        """§4: the RecordNumber (epoch, sequence_number) an ACK names this record by (§7)."""
        return (self.epoch, self.seq)


@dataclass(slots=True)
class DtlsRecordStats:
    """What :meth:`DtlsRecordLayer.open_datagram` saw and dropped, for logs and limits."""

    datagrams: int = 0
    records: int = 0  # delivered
    malformed: int = 0  # did not frame (§4.1, §4.2.3's 16 bytes), or a DTLSPlaintext not in epoch 0
    malformed_bytes: int = 0
    unknown_epoch: int = 0  # no read keys for the epoch (§6.1: handled as failed deprotection)
    failed_authentication: int = 0  # §4.5.3: all epochs; per key, see auth_failures()
    replayed: int = 0  # authenticated, but a duplicate or left of the window (§4.5.1)


class DtlsRecordLayer:
    """One DTLS 1.3 association's record protection, both directions, every live epoch.

    Writes: :meth:`install_write` per epoch (in increasing order), :meth:`seal` one record in the
    newest epoch or an older one still installed (§4.2.1: retransmissions use the keys of the
    original transmission).  Sequence numbers run per epoch from 0 and never wrap (past 2^48-1,
    ``seal`` raises: rekey first).  Epoch 0 is DTLSPlaintext, always available.

    Reads: :meth:`install_read` per epoch; keep an old epoch while the peer may still retransmit
    in it, then :meth:`drop_read_epoch`.  :meth:`open_datagram` returns the records that are
    valid, authenticated and new; everything else is dropped and counted in ``stats``.  Epoch-0
    records are delivered as they come (no replay window: their sequence numbers are the
    sender's claim, and a forged high number must not shut out the real ones), so the handshake
    layer must tolerate duplicates, as it must anyway.

    ``max_datagram_size`` is the PMTU budget of a datagram we send (default 1200 bytes);
    :meth:`max_record_payload` tells fragmenting callers how much content a record may carry.
    ``seal`` itself only enforces the 2^14 content limit.  ``first_plaintext_seq``: the sequence
    number of our first DTLSPlaintext record.
    """

    def __init__(
        self,
        *,
        max_datagram_size: int = DEFAULT_MAX_DATAGRAM_SIZE,
        replay_window: int = 64,
        integrity_limit: int = INTEGRITY_LIMIT,
        first_plaintext_seq: int = 0,
    ) -> None:
        if max_datagram_size < 64:
            raise LocalProtocolError(f"max_datagram_size of {max_datagram_size} bytes")
        if not 0 <= first_plaintext_seq <= MAX_SEQUENCE:
            raise LocalProtocolError(f"epoch 0 sequence number {first_plaintext_seq}")
        self.max_datagram_size = max_datagram_size
        self._replay_window = replay_window
        self._integrity_limit = integrity_limit
        self._read: dict[int, _ReadEpoch] = {}
        self._max_dropped_read = -1  # a dropped epoch never comes back (its window is gone)
        self._write: dict[int, _WriteEpoch] = {}
        # Epoch 0's next sequence number: after a stateless HelloRetryRequest, where the listener
        # left off (it numbers its records as the client's, keeping nothing).
        self._plaintext_seq = first_plaintext_seq
        self.write_epoch = 0  # the newest write epoch, which seal uses by default
        self.stats = DtlsRecordStats()

    # -- keys ----------------------------------------------------------------------------------

    def install_read(self, epoch: int, suite: SuiteParams, secret: bytes) -> None:
        """Accept records of ``epoch`` protected under the peer's traffic ``secret`` (a suite of
        DTLS_SUITES: its key schedule's labels start "dtls13")."""
        if not 0 < epoch <= MAX_EPOCH:
            raise LocalProtocolError(f"no keys for epoch {epoch}")
        if epoch in self._read or epoch <= self._max_dropped_read:
            raise LocalProtocolError(f"read keys for epoch {epoch} were already installed")
        self._read[epoch] = _ReadEpoch(
            _Keys(suite, secret), self._integrity_limit, self._replay_window
        )

    def install_write(self, epoch: int, suite: SuiteParams, secret: bytes) -> None:
        """Protect records with our traffic ``secret`` in ``epoch``, from now on the default of
        :meth:`seal`.  Epochs only go up: reusing one would reuse its nonces."""
        if not 0 < epoch <= MAX_EPOCH:
            raise LocalProtocolError(f"no keys for epoch {epoch}")
        if epoch <= self.write_epoch:
            raise LocalProtocolError(f"write epoch {epoch} after epoch {self.write_epoch}")
        self._write[epoch] = _WriteEpoch(_Keys(suite, secret))
        self.write_epoch = epoch

    def drop_read_epoch(self, epoch: int) -> None:
        """Forget the read keys of ``epoch``: its records are then dropped as unknown."""
        if self._read.pop(epoch, None) is not None:
            self._max_dropped_read = max(self._max_dropped_read, epoch)

    def drop_write_epoch(self, epoch: int) -> None:
        """Forget the write keys of an epoch older than the newest (nothing to retransmit)."""
        if epoch == self.write_epoch:
            raise LocalProtocolError("the newest write epoch cannot be dropped")
        self._write.pop(epoch, None)

    @property
    def read_epochs(self) -> list[int]:
        return sorted(self._read)

    def auth_failures(self, epoch: int) -> int:
        """Records that failed authentication under the read keys of ``epoch`` (§4.5.3)."""
        state = self._read.get(epoch)
        return 0 if state is None else state.failures

    @property
    def integrity_limit_reached(self) -> bool:
        """§4.5.3: some read key saw more forgeries than its AEAD may: close the connection (or,
        if that epoch is an old one after a KeyUpdate, drop it).  The key is no longer tried."""
        return any(state.failures >= state.integrity_limit for state in self._read.values())

    @property
    def key_update_due(self) -> bool:
        """RFC 8446 §5.5 / §4.5.3: the newest write key has protected as many records as its
        AEAD should; send a KeyUpdate before going on."""
        state = self._write.get(self.write_epoch)
        if state is None or state.keys.suite.code == CipherSuite.TLS_CHACHA20_POLY1305_SHA256:
            return False
        return state.next_seq >= AES_GCM_CONFIDENTIALITY_LIMIT

    # -- sizes ---------------------------------------------------------------------------------

    def record_overhead(self, epoch: int) -> int:
        """Bytes a record of ``epoch`` adds to its content (header, content type, tag)."""
        if epoch == 0:
            return PLAINTEXT_HEADER_SIZE
        return CIPHERTEXT_HEADER_SIZE + 1 + AEAD_TAG_SIZE

    def max_record_payload(self, epoch: int) -> int:
        """The most content one record of ``epoch`` carries in a datagram of its own."""
        return min(MAX_PLAINTEXT, self.max_datagram_size - self.record_overhead(epoch))

    def next_record_number(self, epoch: int | None = None) -> tuple[int, int]:
        """The RecordNumber the next :meth:`seal` in ``epoch`` (default the newest) will use."""
        epoch = self.write_epoch if epoch is None else epoch
        if epoch == 0:
            return (0, self._plaintext_seq)
        state = self._write.get(epoch)
        if state is None:
            raise LocalProtocolError(f"no write keys for epoch {epoch}")
        return (epoch, state.next_seq)

    # -- sending -------------------------------------------------------------------------------

    def seal(self, content_type: int, data: bytes, epoch: int | None = None) -> bytes:
        """One record carrying ``data`` in ``epoch`` (default the newest write epoch; 0 is a
        DTLSPlaintext record, for handshake, alert and ack content only)."""
        if len(data) > MAX_PLAINTEXT:
            raise LocalProtocolError(f"{len(data)} bytes do not fit one record")
        epoch = self.write_epoch if epoch is None else epoch
        if epoch == 0:
            if content_type not in _PLAINTEXT_TYPES:
                raise LocalProtocolError(f"content type {content_type} cannot be sent in clear")
            seq = self._plaintext_seq
            if seq > MAX_SEQUENCE:
                raise LocalProtocolError("epoch 0 ran out of sequence numbers")
            self._plaintext_seq = seq + 1
            return plaintext_record(content_type, seq, data)
        if content_type not in _CONTENT_TYPES:
            raise LocalProtocolError(f"content type {content_type} is not DTLS 1.3's")
        state = self._write.get(epoch)
        if state is None:
            raise LocalProtocolError(f"no write keys for epoch {epoch}")
        seq = state.next_seq
        if seq > MAX_SEQUENCE:
            raise LocalProtocolError(f"epoch {epoch} ran out of sequence numbers: rekey")
        state.next_seq = seq + 1
        keys = state.keys
        # DTLSInnerPlaintext: content || type (no padding: 1 + 16 tag bytes already make the 16
        # bytes §4.2.3 samples).  The AAD is the header as sent, before its sequence number is
        # encrypted (§4).
        length = len(data) + 1 + AEAD_TAG_SIZE
        flags = _OUR_FLAGS | (epoch & _EPOCH_BITS)
        low = seq & 0xFFFF
        header = bytes((flags, low >> 8, low & 0xFF, length >> 8, length & 0xFF))
        encrypted = keys.aead.encrypt(keys.nonce(seq), data + bytes((content_type,)), header)
        mask = keys.sn_mask.mask(encrypted[:16])
        wire_low = low ^ ((mask[0] << 8) | mask[1])
        return (
            bytes((flags, wire_low >> 8, wire_low & 0xFF, length >> 8, length & 0xFF)) + encrypted
        )

    # -- receiving -----------------------------------------------------------------------------

    def open_datagram(self, datagram: bytes) -> list[InboundRecord]:
        """The valid, authenticated, new records of one datagram, in order.

        Raises (UnexpectedMessage, RecordOverflow) only for a record that authenticated and is
        still malformed: no content type, an unknown one, empty handshake/alert/ack content,
        content over 2^14 bytes.  Everything else that is wrong is dropped and counted.
        """
        stats = self.stats
        stats.datagrams += 1
        split = split_datagram(datagram)
        stats.malformed += split.dropped_records
        stats.malformed_bytes += split.dropped_bytes
        opened: list[InboundRecord] = []
        for raw in split.records:
            if isinstance(raw, PlaintextRecord):
                if raw.epoch != 0 or not raw.fragment:
                    stats.malformed += 1
                    continue
                opened.append(InboundRecord(0, raw.sequence_number, raw.content_type, raw.fragment))
            else:
                record = self._open_ciphertext(raw)
                if record is not None:
                    opened.append(record)
        stats.records += len(opened)
        return opened

    def _read_epoch_for(self, epoch_bits: int) -> int:
        """§4.2.2: the most recent read epoch whose low two bits match, -1 if none."""
        best = -1
        for epoch in self._read:
            if epoch & _EPOCH_BITS == epoch_bits and epoch > best:
                best = epoch
        return best

    def _open_ciphertext(self, raw: CiphertextRecord) -> InboundRecord | None:
        stats = self.stats
        epoch = self._read_epoch_for(raw.epoch_bits)
        if epoch < 0:
            stats.unknown_epoch += 1
            return None
        state = self._read[epoch]
        if state.failures >= state.integrity_limit:  # §4.5.3: this key is done
            stats.failed_authentication += 1
            return None
        keys = state.keys
        header = raw.header
        offset = raw.sequence_offset
        size = raw.sequence_length
        mask = keys.sn_mask.mask(raw.encrypted_record[:16])
        if size == 2:
            low = ((header[offset] ^ mask[0]) << 8) | (header[offset + 1] ^ mask[1])
            plain_field = bytes((low >> 8, low & 0xFF))
        else:
            low = header[offset] ^ mask[0]
            plain_field = bytes((low,))
        seq = reconstruct_sequence_number(low, 8 * size, state.window.next_expected)
        aad = header[:offset] + plain_field + header[offset + size :]
        try:
            inner = keys.aead.decrypt(keys.nonce(seq), raw.encrypted_record, aad)
        except InvalidTag:
            state.failures += 1
            stats.failed_authentication += 1
            return None
        # §4.5.1: the window is checked after deprotection (no timing channel) and moves only
        # for records that authenticated.
        if not state.window.check(seq):
            stats.replayed += 1
            return None
        state.window.mark(seq)
        type_byte, end = inner_content(inner)  # DTLSInnerPlaintext is TLSInnerPlaintext
        content_type = _CONTENT_TYPES.get(type_byte)
        if content_type is None:
            raise UnexpectedMessage(f"unknown inner content type {type_byte}")
        if end == 0 and content_type != DtlsContentType.application_data:
            raise UnexpectedMessage(f"empty {content_type.name} record")
        return InboundRecord(epoch, seq, content_type, inner[:end])
