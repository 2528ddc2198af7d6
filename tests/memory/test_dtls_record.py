"""The DTLS 1.3 record layer (stateless13/dtls_record.py, RFC 9147 §4).

* Records captured from wolfSSL 5.8.4 (an independent DTLS 1.3 implementation: its sources are
  in ../shared/peers/wolfssl-dtls13), with the traffic secrets its key log gave: we open them,
  and sealing the same content under the same secret gives the same bytes, for each suite.
* Round trips for each suite and epoch; record number encryption checked against a sealer
  written here from the RFC's text (8- and 16-bit sequence numbers, with and without length).
* §4.2.2's reconstruction across the wrap of the 8- and 16-bit fields; §4.5.1's window.
* What is dropped (and counted) and what raises: tampering, replays, unknown epochs, framing
  errors, §4.5.3's integrity limit; arbitrary bytes never raise.
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from stateless13.alerts import LocalProtocolError, RecordOverflow, UnexpectedMessage
from stateless13.dtls_flight import HandshakeReassembler, parse_ack, parse_fragments
from stateless13.dtls_record import (
    DEFAULT_MAX_DATAGRAM_SIZE,
    MAX_PLAINTEXT,
    MAX_SEQUENCE,
    CiphertextRecord,
    DtlsContentType,
    DtlsRecordLayer,
    PlaintextRecord,
    ReplayWindow,
    pack_datagrams,
    reconstruct_sequence_number,
    split_datagram,
)
from stateless13.key_schedule import hkdf_expand_label, traffic_key_and_iv
from stateless13.messages import CipherSuite
from stateless13.primitives import DTLS_SUITES, SUITES, SuiteParams

SUITE_PARAMS = list(DTLS_SUITES.values())
SUITE_IDS = [suite.code.name for suite in SUITE_PARAMS]
HANDSHAKE = DtlsContentType.handshake
APPLICATION_DATA = DtlsContentType.application_data


def pair(
    suite: SuiteParams, *epochs: int, secret: bytes = b""
) -> tuple[DtlsRecordLayer, DtlsRecordLayer]:
    """A sender and a receiver sharing ``secret`` (default: the epoch's number) per epoch."""
    sender, receiver = DtlsRecordLayer(), DtlsRecordLayer()
    for epoch in epochs:
        key = secret or bytes([epoch % 256]) * suite.hash_len
        sender.install_write(epoch, suite, key)
        receiver.install_read(epoch, suite, key)
    return sender, receiver


# ---------------------------------------------------------------------------------------------
# wolfSSL's records (one in-memory handshake per suite, HelloRetryRequest included)

WOLFSSL: dict[int, dict[str, str]] = {
    CipherSuite.TLS_AES_128_GCM_SHA256: {
        "s_hs": "453eb6360a59bf221555345f02a47594f0470ee00a9485adc8407ddacfb0563b",
        "s_ap": "3d49cd319b60b4becbfa4580d6e576dcad174727c9dce06d98d17306b95fe5ec",
        "c_ap": "91994da1d116364ea888d1f5d2991f75472e3010437d3191a981209360df632d",
        "ee": "2ef638001f773238f5e264531321ba9f8313404a465975aa79cd5a627d594eb1922f1de5",
        "ack": "2f138100239e8a32a54779ddd11c0b9277de8c413b0f2768ca875cb82d93a9cd612f96156fc7b541",
        "app": "2ff7b9002a5078f4ebaf3b1dbe70a7173277e1083fe93ad253c8f9be4f2e602b224f88be0ddcc43d"
        "8b58f87ae28630",
        "cack": "2f2bd300236c8bcd7a4bbeca0a7a7e6ab5a1951e0d5b979193a13fe1de9728cb4147dea565c75310",
    },
    CipherSuite.TLS_AES_256_GCM_SHA384: {
        "s_hs": "cde05e1603b21372f58e1ef7b440009587a90a25b7dd1ad095745707878fba86ee6c88553da4331f"
        "ac91d23a2921c6d0",
        "s_ap": "cd4946b2e5d7b8b361e62ab1209ad7784db54e4b5fae2d5f79645dae2d63f35dcdf4ec49db1f6aeb"
        "f4a2eb3af6bffec1",
        "c_ap": "0e92880d878ab39c21641ca34638dc9d9e38dd8fa192ecd78d24eaed969f1a57fa84690570c0e47c"
        "0baebb1570796c5f",
        "ee": "2ec2ad001f104d428abe502eb055e152bc73b056091f11c700cd0c82c6fe045180b91066",
        "ack": "2f60f000235c97893c5fad9634254d45a164de433f1af0c1ee926c472aa5b6ae73edf837b28abc7c",
        "app": "2f0f7c002a4a31c3257fd02a0cd607b8f3a109d7db919ba0c3cee2477de84ad72064f7c566022add"
        "46c2087dc0063f",
        "cack": "2fab070023594292a8e76e978d816431c3cce12b0848dbbdd1377251e7cbed925d8806dc68637779",
    },
    CipherSuite.TLS_CHACHA20_POLY1305_SHA256: {
        "s_hs": "bffdc4d5671d72c187cc1a3546fd0db00191bc74bed1600b636d9aaab677c762",
        "s_ap": "dbff3caa9a2985110cc90a1f944bc120238572ab41e87f780b5fd3ea6395436e",
        "c_ap": "0543c6113338922ce9c4d7fbfe1049dec265b56e819b2404d783b112b6ded089",
        "ee": "2ebb19001f9e9c180bd5342af3bb9333260db7a85dc7f70e3f8a184ec5ae8dc46cb1e3a8",
        "ack": "2f90020023420f85d16c38fae2f48c6dab58574a39b436a126b531fc5804dc8e5b670eeb749134c2",
        "app": "2fd45c002a75a59b562b8936e1decd3be664e47e1546cdc6d0b5242c46007616fe12e846c11c11fc"
        "08ef7d1c055641",
        "cack": "2f33810023f2d9ac81d3f1e89689768ae59d4b28e81e13bfcec36ed1f1eea139c0f9ad74de877e47",
    },
}
#: wolfSSL's first ClientHello (AES-128-GCM run): one DTLSPlaintext record, one fragment.
WOLFSSL_CLIENT_HELLO = bytes.fromhex(
    "16fefd000000000000000000c5010000b900000000000000b9fefd4884d1d68ba8cfddc4d987de6c077f4a9c0fe0"
    "ec1c48c05252839826ad867a110000000213010100008d002d000302000100330047004500170041046fc75627bc"
    "3974b1fb94f263155d3830b4c3e6bc73dba27fa8935d755a8790e662d6218fa66c349fb284d830da6a8ac37bba76"
    "5a5debc85a329950319a40efca002b000302fefc000d001c001a06030503040308070806080b0805080a08040809"
    "060105010401000a000c000a001900180017001d001500160000"
)
ENCRYPTED_EXTENSIONS = bytes.fromhex("080000020002000000000002") + b"\x00\x00"  # message_seq 2


@pytest.mark.parametrize("code", list(WOLFSSL), ids=lambda code: CipherSuite(code).name)
def test_wolfssl_records_open(code: int) -> None:
    vector = {name: bytes.fromhex(value) for name, value in WOLFSSL[code].items()}
    suite = DTLS_SUITES[code]
    client = DtlsRecordLayer()  # reads what the server sent
    client.install_read(2, suite, vector["s_hs"])
    client.install_read(3, suite, vector["s_ap"])
    [ee] = client.open_datagram(vector["ee"])
    assert (ee.record_number, ee.content_type, ee.data) == ((2, 0), HANDSHAKE, ENCRYPTED_EXTENSIONS)
    [ack] = client.open_datagram(vector["ack"])
    assert (ack.record_number, ack.content_type) == ((3, 0), DtlsContentType.ack)
    assert parse_ack(ack.data) == [(2, 0)]  # the client's Finished
    [app] = client.open_datagram(vector["app"])
    assert (app.record_number, app.data) == ((3, 2), b"hello from wolfSSL server")
    server = DtlsRecordLayer()
    server.install_read(3, suite, vector["c_ap"])
    [client_ack] = server.open_datagram(vector["cack"])
    assert client_ack.record_number == (3, 1) and parse_ack(client_ack.data) == [(3, 1)]
    assert client.stats.records == 3 and client.stats.failed_authentication == 0


@pytest.mark.parametrize("code", list(WOLFSSL), ids=lambda code: CipherSuite(code).name)
def test_sealing_wolfssls_content_gives_wolfssls_bytes(code: int) -> None:
    """AEAD and record number encryption are deterministic: same secret, sequence number and
    content, same record (wolfSSL's header is ours: 16-bit sequence number, length)."""
    vector = {name: bytes.fromhex(value) for name, value in WOLFSSL[code].items()}
    suite = DTLS_SUITES[code]
    server = DtlsRecordLayer()
    server.install_write(2, suite, vector["s_hs"])
    assert server.seal(HANDSHAKE, ENCRYPTED_EXTENSIONS) == vector["ee"]
    server.install_write(3, suite, vector["s_ap"])
    ack_body = b"\x00\x10" + (2).to_bytes(8, "big") + (0).to_bytes(8, "big")
    assert server.seal(DtlsContentType.ack, ack_body) == vector["ack"]
    server.seal(HANDSHAKE, b"NewSessionTicket")  # sequence number 1
    assert server.seal(APPLICATION_DATA, b"hello from wolfSSL server") == vector["app"]


def test_wolfssl_client_hello_frames_and_reassembles() -> None:
    split = split_datagram(WOLFSSL_CLIENT_HELLO)
    assert split.dropped_bytes == 0
    [record] = split.records
    assert isinstance(record, PlaintextRecord)
    assert (record.content_type, record.epoch, record.sequence_number) == (HANDSHAKE, 0, 0)
    [fragment] = parse_fragments(record.fragment)
    assert (fragment.msg_type, fragment.message_seq, fragment.fragment_offset) == (1, 0, 0)
    assert fragment.fragment_length == fragment.length == 0xB9
    reassembler = HandshakeReassembler()
    reassembler.feed(fragment)
    [(seq, epoch, message)] = reassembler.pop_messages()
    assert (seq, epoch) == (0, 0)
    assert message == record.fragment[:4] + record.fragment[12:]  # the TLS-format ClientHello
    [opened] = DtlsRecordLayer().open_datagram(WOLFSSL_CLIENT_HELLO)
    assert (opened.record_number, opened.data) == ((0, 0), record.fragment)


# ---------------------------------------------------------------------------------------------
# A sealer written from the RFC's text, for headers our layer never sends


def sn_mask(suite: SuiteParams, sn_key: bytes, sample: bytes) -> bytes:
    """§4.2.3: AES-ECB(sn_key, sample), or ChaCha20 with counter sample[0:4] (little-endian)
    and nonce sample[4:16]."""
    if suite.code == CipherSuite.TLS_CHACHA20_POLY1305_SHA256:
        nonce = int.from_bytes(sample[:4], "little").to_bytes(4, "little") + sample[4:16]
        return Cipher(algorithms.ChaCha20(sn_key, nonce), None).encryptor().update(bytes(16))
    return Cipher(algorithms.AES(sn_key), modes.ECB()).encryptor().update(sample[:16])


def hand_seal(
    suite: SuiteParams,
    secret: bytes,
    epoch: int,
    seq: int,
    inner: bytes,
    *,
    seq_bytes: int = 2,
    with_length: bool = True,
) -> bytes:
    """A DTLSCiphertext record (§4): AAD = the header with the sequence number in clear, nonce =
    iv XOR the 64-bit sequence number, then the sequence number masked.  ``inner`` is the
    whole DTLSInnerPlaintext (content, type, padding)."""
    key, iv = traffic_key_and_iv(suite, secret)
    sn_key = hkdf_expand_label(suite, secret, b"sn", b"", suite.key_len)
    flags = 0x20 | (0x08 if seq_bytes == 2 else 0) | (0x04 if with_length else 0) | (epoch & 3)
    low = (seq & ((1 << (8 * seq_bytes)) - 1)).to_bytes(seq_bytes, "big")
    length = (len(inner) + 16).to_bytes(2, "big") if with_length else b""
    header = bytes([flags]) + low + length
    nonce = (int.from_bytes(iv, "big") ^ seq).to_bytes(12, "big")
    encrypted = suite.aead(key).encrypt(nonce, inner, header)
    mask = sn_mask(suite, sn_key, encrypted[:16])
    wire = bytes(a ^ b for a, b in zip(low, mask, strict=False))
    return bytes([flags]) + wire + length + encrypted


@pytest.mark.parametrize("suite", SUITE_PARAMS, ids=SUITE_IDS)
@pytest.mark.parametrize("epoch", [1, 2, 3, 4, 7, 1 << 40])
def test_round_trip_each_suite_and_epoch(suite: SuiteParams, epoch: int) -> None:
    sender, receiver = pair(suite, epoch)
    contents = [
        (HANDSHAKE, b"\x14" + bytes(40)),
        (APPLICATION_DATA, b""),
        (APPLICATION_DATA, bytes(range(256)) * 64),  # 2^14: the largest
        (DtlsContentType.alert, b"\x01\x00"),
        (DtlsContentType.ack, b"\x00\x00"),
    ]
    records = [sender.seal(content_type, data) for content_type, data in contents]
    for (_, data), record in zip(contents, records, strict=True):
        assert len(record) == sender.record_overhead(epoch) + len(data)
        assert record[0] & 0xE3 == 0x20 | (epoch & 3)
    opened = receiver.open_datagram(b"".join(records[:2]))
    opened += receiver.open_datagram(records[2])
    opened += receiver.open_datagram(b"".join(records[3:]))
    assert [(r.content_type, r.data) for r in opened] == contents
    assert [r.record_number for r in opened] == [(epoch, seq) for seq in range(5)]


@pytest.mark.parametrize("suite", SUITE_PARAMS, ids=SUITE_IDS)
def test_record_number_encryption(suite: SuiteParams) -> None:
    """The wire sequence number is the plain one XOR the mask of §4.2.3 (computed here), so it
    differs from it; unmasking gives it back."""
    secret = bytes(range(suite.hash_len))
    sender, _ = pair(suite, 3, secret=secret)
    sn_key = hkdf_expand_label(suite, secret, b"sn", b"", suite.key_len)
    differ = 0
    for seq in range(64):
        record = sender.seal(APPLICATION_DATA, b"data %d" % seq)
        wire = int.from_bytes(record[1:3], "big")
        mask = int.from_bytes(sn_mask(suite, sn_key, record[5:21])[:2], "big")
        assert wire ^ mask == seq
        differ += wire != seq
    assert differ == 64


@pytest.mark.parametrize("suite", SUITE_PARAMS, ids=SUITE_IDS)
@pytest.mark.parametrize(("seq_bytes", "with_length"), [(1, False), (1, True), (2, False)])
def test_headers_we_do_not_send_open(suite: SuiteParams, seq_bytes: int, with_length: bool) -> None:
    secret = bytes([9]) * suite.hash_len
    _, receiver = pair(suite, 2, secret=secret)
    record = hand_seal(suite, secret, 2, 5, b"fragment\x16", seq_bytes=seq_bytes, with_length=True)
    last = hand_seal(
        suite, secret, 2, 6, b"last\x16\x00\x00", seq_bytes=seq_bytes, with_length=with_length
    )
    opened = receiver.open_datagram(record + last)
    assert [(r.record_number, r.data) for r in opened] == [((2, 5), b"fragment"), ((2, 6), b"last")]


def test_eight_bit_sequence_numbers_across_their_wrap() -> None:
    suite = DTLS_SUITES[CipherSuite.TLS_AES_128_GCM_SHA256]
    secret = bytes(32)
    _, receiver = pair(suite, 3, secret=secret)
    for seq in (250, 255, 256, 260, 300, 420, 511, 512, 600, 700, 827):  # each within 128
        [record] = receiver.open_datagram(
            hand_seal(suite, secret, 3, seq, b"x\x17", seq_bytes=1, with_length=False)
        )
        assert record.seq == seq
    # More than half the field past what is expected (828), the number is taken for a nearer
    # one (701): it does not authenticate (§4.2.2 makes that a loss, not an error).
    assert not receiver.open_datagram(hand_seal(suite, secret, 3, 828 + 129, b"x\x17", seq_bytes=1))
    assert receiver.stats.failed_authentication == 1
    assert receiver.open_datagram(hand_seal(suite, secret, 3, 828 + 127, b"x\x17", seq_bytes=1))


def test_sixteen_bit_sequence_numbers_across_their_wrap() -> None:
    suite = DTLS_SUITES[CipherSuite.TLS_CHACHA20_POLY1305_SHA256]
    secret = bytes(32)
    _, receiver = pair(suite, 2, secret=secret)
    for seq in (65534, 65535, 65537, 65536, 70000, 100000, 131071, 131072):
        [record] = receiver.open_datagram(hand_seal(suite, secret, 2, seq, b"m\x16"))
        assert record.seq == seq


@pytest.mark.parametrize(
    ("low", "bits", "expected", "full"),
    [
        (0x00, 8, 0xFF, 0x100),
        (0xFF, 8, 0x100, 0xFF),
        (0xFF, 8, 0, 0xFF),  # never negative
        (0x80, 8, 0, 0x80),
        (0x81, 8, 0x100, 0x81),
        (0x7F, 8, 0x100, 0x17F),
        (0x0000, 16, 0xFFFF, 0x10000),
        (0xFFFF, 16, 0x10000, 0xFFFF),
        (0x0001, 16, 0x2_FFFE, 0x3_0001),
        (0xFFFF, 16, MAX_SEQUENCE, MAX_SEQUENCE),
        (0x0000, 16, MAX_SEQUENCE, MAX_SEQUENCE + 1 - 0x10000),  # 2^48 is out of range
    ],
)
def test_reconstruction_edges(low: int, bits: int, expected: int, full: int) -> None:
    assert reconstruct_sequence_number(low, bits, expected) == full


@settings(max_examples=300, deadline=None)
@given(
    bits=st.sampled_from([8, 16]),
    expected=st.integers(0, MAX_SEQUENCE),
    delta=st.integers(-(1 << 15) + 1, (1 << 15) - 1),
)
def test_reconstruction_recovers_any_number_within_half_the_field(
    bits: int, expected: int, delta: int
) -> None:
    half = 1 << (bits - 1)
    seq = expected + delta % half if delta >= 0 else expected - (-delta % half)
    if 0 <= seq <= MAX_SEQUENCE:
        assert reconstruct_sequence_number(seq & ((1 << bits) - 1), bits, expected) == seq


# ---------------------------------------------------------------------------------------------
# Anti-replay (§4.5.1)


def test_replay_window() -> None:
    window = ReplayWindow()
    assert window.next_expected == 0
    for seq in (5, 3, 4, 70):
        assert window.check(seq)
        window.mark(seq)
    assert not window.check(70) and not window.check(5) and not window.check(4)
    assert window.check(69) and window.check(7)  # out of order, within the window
    assert not window.check(6)  # 64 behind 70: left of the window
    assert window.next_expected == 71
    window.mark(1 << 47)  # a jump clears the window, without a 2^47-bit integer
    assert not window.check(70) and window.check((1 << 47) - 1)
    assert window._seen.bit_length() <= 64


def test_replays_are_dropped_after_authentication() -> None:
    sender, receiver = pair(DTLS_SUITES[CipherSuite.TLS_AES_256_GCM_SHA384], 3)
    records = [sender.seal(APPLICATION_DATA, b"%d" % i) for i in range(70)]
    assert len(receiver.open_datagram(records[69])) == 1
    assert receiver.open_datagram(records[69]) == []  # duplicate
    assert receiver.open_datagram(records[5]) == []  # too old
    assert [r.seq for r in receiver.open_datagram(records[6] + records[40])] == [6, 40]
    assert receiver.open_datagram(records[40]) == []
    assert receiver.stats.replayed == 3 and receiver.stats.failed_authentication == 0


def test_plaintext_records_have_no_replay_window() -> None:
    """Their numbers are anyone's claim: a forged 2^48-1 must not shut out the real ones."""
    sender, receiver = DtlsRecordLayer(), DtlsRecordLayer()
    forged = bytes.fromhex("16fefd0000ffffffffffff0001") + b"\x01"
    record = sender.seal(HANDSHAKE, b"\x01" + bytes(11))
    assert [r.seq for r in receiver.open_datagram(forged + record + record)] == [MAX_SEQUENCE, 0, 0]


# ---------------------------------------------------------------------------------------------
# Dropped and counted, or raised


def test_tampering_anywhere_drops_the_record_and_is_counted() -> None:
    suite = DTLS_SUITES[CipherSuite.TLS_AES_128_GCM_SHA256]
    sender, receiver = pair(suite, 2)
    record = sender.seal(HANDSHAKE, b"\x08\x00\x00\x02" + bytes(10))
    for position in range(len(record)):
        tampered = bytearray(record)
        tampered[position] ^= 0x01
        assert receiver.open_datagram(bytes(tampered)) == []
    stats = receiver.stats
    assert stats.records == 0
    # The low epoch bit: epoch 3, which has no keys.  The length's high byte: past the
    # datagram.  Its low byte (one shorter): a record that fails authentication, and a byte
    # that does not frame.  Any other bit: a record that fails authentication.
    assert stats.unknown_epoch == 1 and stats.malformed == 2
    assert stats.failed_authentication == len(record) - 2 == receiver.auth_failures(2)
    assert [r.seq for r in receiver.open_datagram(record)] == [0]  # the window did not move


def test_integrity_limit_closes_the_key() -> None:
    suite = DTLS_SUITES[CipherSuite.TLS_CHACHA20_POLY1305_SHA256]
    sender = DtlsRecordLayer()
    sender.install_write(3, suite, bytes(32))
    receiver = DtlsRecordLayer(integrity_limit=3)
    receiver.install_read(3, suite, bytes(32))
    good = sender.seal(APPLICATION_DATA, b"ok")
    forged = good[:-1] + bytes([good[-1] ^ 1])
    for _ in range(3):
        assert not receiver.integrity_limit_reached
        receiver.open_datagram(forged)
    assert receiver.integrity_limit_reached and receiver.auth_failures(3) == 3
    assert receiver.open_datagram(good) == []  # the key is no longer tried
    receiver.drop_read_epoch(3)
    assert not receiver.integrity_limit_reached


def test_unknown_and_dropped_epochs() -> None:
    suite = DTLS_SUITES[CipherSuite.TLS_AES_128_GCM_SHA256]
    sender, receiver = pair(suite, 2, 3)
    handshake = sender.seal(HANDSHAKE, b"\x14" + bytes(35), epoch=2)
    application = sender.seal(APPLICATION_DATA, b"data")
    assert receiver.read_epochs == [2, 3]
    receiver.drop_read_epoch(2)
    assert receiver.open_datagram(handshake + application)[0].record_number == (3, 0)
    assert receiver.stats.unknown_epoch == 1
    with pytest.raises(LocalProtocolError):  # a dropped epoch does not come back
        receiver.install_read(2, suite, bytes(32))


def test_the_most_recent_epoch_with_matching_bits_is_used() -> None:
    """§4.2.2: epochs 1 and 5 share their low bits; records of 5 open, those of 1 then fail."""
    suite = DTLS_SUITES[CipherSuite.TLS_AES_128_GCM_SHA256]
    early, receiver = pair(suite, 1)
    later = DtlsRecordLayer()
    later.install_write(5, suite, bytes([5]) * 32)
    receiver.install_read(5, suite, bytes([5]) * 32)
    assert receiver.open_datagram(later.seal(APPLICATION_DATA, b"new"))[0].epoch == 5
    assert receiver.open_datagram(early.seal(APPLICATION_DATA, b"old")) == []
    assert receiver.auth_failures(5) == 1


def test_authenticated_but_malformed_records_raise() -> None:
    """The peer holds the keys: these are its protocol violations, not forgeries."""
    suite = DTLS_SUITES[CipherSuite.TLS_AES_128_GCM_SHA256]
    secret = bytes(32)
    for seq, inner, error in [
        (0, bytes(20), UnexpectedMessage),  # no content type
        (1, b"data\x18", UnexpectedMessage),  # heartbeat: not DTLS 1.3's
        (2, b"\x14", UnexpectedMessage),  # change_cipher_spec
        (3, b"\x16\x00\x00", UnexpectedMessage),  # empty handshake record
        (4, bytes(MAX_PLAINTEXT) + b"\x17\x00", RecordOverflow),  # inner plaintext over 2^14+1
    ]:
        _, receiver = pair(suite, 3, secret=secret)
        with pytest.raises(error):
            receiver.open_datagram(hand_seal(suite, secret, 3, seq, inner))
    _, receiver = pair(suite, 3, secret=secret)
    padded = bytes(MAX_PLAINTEXT - 10) + b"\x17" + bytes(10)  # 2^14 + 1 with padding: fine
    assert receiver.open_datagram(hand_seal(suite, secret, 3, 0, padded))[0].data == bytes(16374)


# ---------------------------------------------------------------------------------------------
# Framing (§4, §4.1)


def test_split_a_datagram_of_plaintext_and_ciphertext_records() -> None:
    suite = DTLS_SUITES[CipherSuite.TLS_AES_128_GCM_SHA256]
    sender, receiver = pair(suite, 2)
    hello = sender.seal(HANDSHAKE, b"\x02" + bytes(20), epoch=0)
    alert = sender.seal(DtlsContentType.alert, b"\x02\x28", epoch=0)
    encrypted = sender.seal(HANDSHAKE, b"\x08" + bytes(13))
    last = hand_seal(suite, bytes([2]) * 32, 2, 1, b"last\x16", with_length=False)
    split = split_datagram(hello + alert + encrypted + last)
    assert split.dropped_records == split.dropped_bytes == 0
    kinds = [(type(r).__name__, getattr(r, "content_type", None)) for r in split.records]
    assert kinds == [
        ("PlaintextRecord", HANDSHAKE),
        ("PlaintextRecord", DtlsContentType.alert),
        ("CiphertextRecord", None),
        ("CiphertextRecord", None),
    ]
    opened = receiver.open_datagram(hello + alert + encrypted + last)
    assert [r.record_number for r in opened] == [(0, 0), (0, 1), (2, 0), (2, 1)]
    assert opened[3].data == b"last"


def test_connection_ids_are_framed_when_their_length_is_known() -> None:
    record = bytes([0x3E]) + b"CID!" + b"\x12\x34" + (20).to_bytes(2, "big") + bytes(20)
    assert split_datagram(record).dropped_bytes == len(record)  # no CID length: cannot frame
    [framed] = split_datagram(record + record, cid_length=4).records[1:]
    assert isinstance(framed, CiphertextRecord)
    assert framed.connection_id == b"CID!" and framed.sequence_offset == 5
    assert framed.header == record[:9] and framed.epoch_bits == 2


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x17\xfe\xfd" + bytes(10),  # application_data (23): DTLS 1.2 and older
        b"\x14\xfe\xfd" + bytes(11),  # change_cipher_spec: not in DTLS 1.3
        b"\x40" + bytes(20),  # 0b010xxxxx: neither
        b"\x16\xfe\xfd" + bytes(8),  # a plaintext header cut short
        b"\x16\xfe\xfd" + bytes(8) + b"\x00\x05ab",  # a fragment past the datagram
        b"\x16\xfe\xfd" + bytes(8) + b"\x40\x01" + bytes(0x4001),  # over 2^14
        b"\x2c\x00",  # a unified header cut short
        b"\x2c\x00\x00\x00\x20" + bytes(31),  # a length past the datagram
        b"\x20\x00" + bytes(MAX_PLAINTEXT + 257),  # no length, over 2^14 + 256
    ],
    ids=lambda garbage: f"{garbage[:1].hex()}-{len(garbage)}",
)
def test_what_does_not_frame_ends_the_datagram(garbage: bytes) -> None:
    good = DtlsRecordLayer().seal(HANDSHAKE, b"\x01" + bytes(11), epoch=0)
    split = split_datagram(good + garbage)
    assert len(split.records) == 1
    assert (split.dropped_records, split.dropped_bytes) == (1, len(garbage))


def test_nothing_after_a_record_that_does_not_frame_is_read() -> None:
    good = DtlsRecordLayer().seal(HANDSHAKE, b"\x01" + bytes(11), epoch=0)
    split = split_datagram(good + b"\x17\xfe\xfd" + bytes(10) + good)
    assert len(split.records) == 1
    assert (split.dropped_records, split.dropped_bytes) == (1, 13 + len(good))


def test_records_with_less_than_16_bytes_of_ciphertext_are_dropped_alone() -> None:
    short = b"\x2e\x00\x00\x00\x0f" + bytes(15)
    good = DtlsRecordLayer().seal(HANDSHAKE, b"\x01" + bytes(11), epoch=0)
    split = split_datagram(short + good + b"\x22\x00" + bytes(15))  # no length: to the end
    assert len(split.records) == 1 and split.dropped_records == 2
    assert split.dropped_bytes == len(short) + 17


def test_plaintext_records_outside_epoch_0_and_empty_ones_are_dropped() -> None:
    layer = DtlsRecordLayer()
    other_epoch = bytes.fromhex("16fefd0002000000000000000101")
    empty = bytes.fromhex("15fefd00000000000000000000")
    assert layer.open_datagram(other_epoch + empty) == []
    assert layer.stats.malformed == 2


@settings(max_examples=500, deadline=None)
@given(datagram=st.binary(max_size=400), cid_length=st.integers(0, 8))
def test_split_accounts_for_every_byte(datagram: bytes, cid_length: int) -> None:
    split = split_datagram(datagram, cid_length)
    framed = sum(
        13 + len(r.fragment)
        if isinstance(r, PlaintextRecord)
        else len(r.header) + len(r.encrypted_record)
        for r in split.records
    )
    assert framed + split.dropped_bytes == len(datagram)


@settings(max_examples=300, deadline=None)
@given(
    datagram=st.one_of(
        st.binary(max_size=300),
        st.builds(lambda head, tail: head + tail, st.sampled_from([b"\x2c", b"\x2d", b"\x2e",
            b"\x2f", b"\x21", b"\x16\xfe\xfd\x00\x00"]), st.binary(max_size=300)),
    )
)  # fmt: skip
def test_open_datagram_never_raises_on_forgeries(datagram: bytes) -> None:
    layer = DtlsRecordLayer()
    for epoch in (1, 2, 3):
        layer.install_read(epoch, DTLS_SUITES[CipherSuite.TLS_AES_128_GCM_SHA256], bytes(32))
    for record in layer.open_datagram(datagram):
        assert record.epoch == 0  # only plaintext can come out of random bytes


# ---------------------------------------------------------------------------------------------
# Sizes, limits, misuse


def test_sizes_and_packing() -> None:
    layer = DtlsRecordLayer()
    assert layer.max_datagram_size == DEFAULT_MAX_DATAGRAM_SIZE == 1200
    assert layer.max_record_payload(0) == 1200 - 13
    assert layer.max_record_payload(2) == 1200 - 22
    assert DtlsRecordLayer(max_datagram_size=65000).max_record_payload(3) == MAX_PLAINTEXT
    records = [bytes(500), bytes(600), bytes(200), bytes(1500), bytes(10)]
    assert [len(d) for d in pack_datagrams(records, 1200)] == [1100, 200, 1500, 10]
    assert pack_datagrams([], 1200) == []


def test_the_first_plaintext_sequence_number_can_be_chosen() -> None:
    layer = DtlsRecordLayer(first_plaintext_seq=7)
    assert layer.next_record_number(0) == (0, 7)
    [record] = DtlsRecordLayer().open_datagram(layer.seal(HANDSHAKE, b"\x02" + bytes(11)))
    assert record.record_number == (0, 7) and layer.next_record_number() == (0, 8)
    with pytest.raises(LocalProtocolError):
        DtlsRecordLayer(first_plaintext_seq=MAX_SEQUENCE + 1)


def test_sequence_numbers_never_wrap() -> None:
    sender, _ = pair(DTLS_SUITES[CipherSuite.TLS_AES_128_GCM_SHA256], 3)
    sender._write[3].next_seq = MAX_SEQUENCE  # 2^48 records would take a while
    assert sender.next_record_number() == (3, MAX_SEQUENCE)
    sender.seal(APPLICATION_DATA, b"last")
    with pytest.raises(LocalProtocolError):
        sender.seal(APPLICATION_DATA, b"one too many")


def test_key_update_is_due_at_the_aes_gcm_limit() -> None:
    sender, _ = pair(DTLS_SUITES[CipherSuite.TLS_AES_128_GCM_SHA256], 3)
    assert not sender.key_update_due
    sender._write[3].next_seq = 23_726_566  # 2^24.5 (RFC 8446 §5.5)
    assert sender.key_update_due
    chacha, _ = pair(DTLS_SUITES[CipherSuite.TLS_CHACHA20_POLY1305_SHA256], 3)
    chacha._write[3].next_seq = 1 << 40
    assert not chacha.key_update_due


def test_retransmissions_go_out_in_the_epoch_asked_for() -> None:
    suite = DTLS_SUITES[CipherSuite.TLS_AES_128_GCM_SHA256]
    sender, receiver = pair(suite, 2, 3)
    assert sender.write_epoch == 3
    assert sender.next_record_number(2) == (2, 0)
    records = [sender.seal(HANDSHAKE, b"\x14" + bytes(35), 2), sender.seal(APPLICATION_DATA, b"")]
    records.append(sender.seal(HANDSHAKE, b"\x02" + bytes(40), 0))
    opened = receiver.open_datagram(b"".join(records))
    assert [r.record_number for r in opened] == [(2, 0), (3, 0), (0, 0)]
    sender.drop_write_epoch(2)
    with pytest.raises(LocalProtocolError):
        sender.seal(HANDSHAKE, b"\x14", 2)


def test_misuse_raises_local_protocol_error() -> None:
    suite = DTLS_SUITES[CipherSuite.TLS_AES_128_GCM_SHA256]
    layer = DtlsRecordLayer()
    with pytest.raises(LocalProtocolError):  # TLS's "tls13 " labels would derive other keys
        layer.install_write(2, SUITES[CipherSuite.TLS_AES_128_GCM_SHA256], bytes(32))
    with pytest.raises(LocalProtocolError):
        layer.install_read(0, suite, bytes(32))
    layer.install_write(3, suite, bytes(32))
    for epoch in (2, 3):  # reusing an epoch would reuse its nonces
        with pytest.raises(LocalProtocolError):
            layer.install_write(epoch, suite, bytes(32))
    with pytest.raises(LocalProtocolError):
        layer.drop_write_epoch(3)
    with pytest.raises(LocalProtocolError):
        layer.seal(APPLICATION_DATA, bytes(MAX_PLAINTEXT + 1))
    with pytest.raises(LocalProtocolError):  # first byte 23 is no DTLS 1.3 plaintext record
        layer.seal(APPLICATION_DATA, b"x", epoch=0)
    with pytest.raises(LocalProtocolError):
        layer.seal(24, b"x")
    with pytest.raises(LocalProtocolError):
        layer.seal(HANDSHAKE, b"x", epoch=4)
    with pytest.raises(LocalProtocolError):
        DtlsRecordLayer(max_datagram_size=40)
