"""Every byte a client sends before its ClientHello is complete is read once (issue 20).

A ClientHello delivered as 1-byte TLS records, one record per read, used to be re-read from its
first record on every read: work quadratic in its size (24 KB cost 8 CPU-seconds).  Counted here
as records framed (``split_record`` calls), not timed, so the test cannot flake.
"""

from __future__ import annotations

import pytest

from stateless13 import ServerConfig
from stateless13 import stateless as stateless_module
from stateless13.messages import push_client_hello
from stateless13.record import split_record
from stateless13.transports.memory import MemoryServer
from tests.helpers import PythonSSLClient, handshake_bytes
from tests.memory.test_bad_input import padded_to, parse

CONFIG = ServerConfig.self_signed()


def one_byte_records(message: bytes) -> list[bytes]:
    return [b"\x16\x03\x01\x00\x01" + message[i : i + 1] for i in range(len(message))]


@pytest.fixture
def framed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]

    def counting(buffer: bytes | bytearray, offset: int = 0) -> object:
        calls[0] += 1
        return split_record(buffer, offset)

    monkeypatch.setattr(stateless_module, "split_record", counting)
    return calls


@pytest.mark.parametrize("size", [2000, 8000])
def test_a_clienthello_in_one_byte_records_is_read_in_linear_time(
    framed: list[int], size: int
) -> None:
    hello = push_client_hello(padded_to(parse(PythonSSLClient().step()), size))
    assert len(hello) == size
    server = MemoryServer(CONFIG)
    records = one_byte_records(hello)
    for record in records[:-1]:
        assert server.receive(record) == [] and server.data_to_send() == b""
    server.receive(records[-1])
    assert server.hello_retry and not server.closed, server.error
    assert framed[0] <= 3 * size, f"{framed[0]} records framed for {size} records"


def test_the_same_answer_however_the_bytes_are_split() -> None:
    """The incremental reading answers exactly as the whole buffer is answered."""
    client = PythonSSLClient()
    ch1 = client.step()
    server = MemoryServer(CONFIG)
    for record in one_byte_records(handshake_bytes(ch1)):
        server.receive(record)
    retry = server.data_to_send()
    whole = MemoryServer(CONFIG)
    whole.receive(ch1)
    assert len(retry) == len(whole.data_to_send())  # same HRR (its cookie's nonce differs)
    # and the client carries on from the byte-wise one
    ch2 = client.step(retry)
    for byte in range(len(ch2)):
        server.receive(ch2[byte : byte + 1])
    assert server.connection is not None and server.cookie_verified


def test_early_data_after_clienthello1_in_later_reads_is_dropped_with_the_hrr() -> None:
    """The buffer's second phase (what follows ClientHello1) resumes as the first does."""
    from stateless13.messages import ExtensionType
    from tests.memory.test_bad_input import encode, with_ext

    ch1 = encode(with_ext(parse(PythonSSLClient().step()), ExtensionType.early_data, b""))
    early = b"\x17\x03\x03\x00\x40" + bytes(64)
    server = MemoryServer(CONFIG)
    server.receive(ch1 + early[:3])  # the early data record is not complete: wait
    assert server.data_to_send() == b"" and not server.closed
    server.receive(early[3:])
    assert server.hello_retry and not server.closed, server.error
    server.receive(early)  # more early data, now before ClientHello2: skipped too
    assert not server.closed, server.error
