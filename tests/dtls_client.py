"""A DTLS 1.3 client for the memory tests, built on the server's key log.

Test scaffolding, not a DTLS client: it takes its traffic secrets from the server's NSS key log
(``ServerConfig.keylog``) instead of deriving them, computes only its Finished, and speaks
through the same record and flight modules as the server (so it cannot catch a mistake they
share: wolfSSL, in tests/peers/test_dtls_peers.py, is the proof of interoperability).  What it
is for is the association's own logic, which wolfSSL's test program never reaches: ACKs, the
tickets' flight, KeyUpdates, alerts after the handshake, application data both ways, in memory
with the clock in the test's hands.
"""

from __future__ import annotations

import dataclasses

from stateless13 import Event, ServerConfig
from stateless13 import key_schedule as ks
from stateless13.dtls_flight import (
    HandshakeReassembler,
    encode_ack,
    fragment_message,
    parse_ack,
    parse_fragments,
)
from stateless13.dtls_record import DtlsContentType, DtlsRecordLayer, InboundRecord
from stateless13.messages import (
    Finished,
    KeyUpdate,
    pull_server_hello,
    push_finished,
    push_key_update,
)
from stateless13.primitives import DTLS_SUITES
from stateless13.transcript import rebuild_after_retry
from stateless13.transports.dtls_memory import DtlsMemoryServer
from tests.dtls_messages import client_hello_2, datagrams_of, wolfssl_client_hello

Peer = tuple[str, int]


class KeyLog:
    """The server's key log lines, as secrets by label."""

    def __init__(self) -> None:
        self.secrets: dict[str, bytes] = {}

    def __call__(self, line: str) -> None:
        label, _random, secret = line.split()
        self.secrets[label] = bytes.fromhex(secret)


def keylogged(config: ServerConfig) -> tuple[ServerConfig, KeyLog]:
    log = KeyLog()
    return dataclasses.replace(config, keylog=log), log


class MemoryDtlsClient:
    """One client of a :class:`DtlsMemoryServer`, from ClientHello1 to application data."""

    def __init__(self, server: DtlsMemoryServer, log: KeyLog, peer: Peer, now: float) -> None:
        self.server, self.log, self.peer, self.now = server, log, peer, now
        self.suite = DTLS_SUITES[0x1301]
        self.records = DtlsRecordLayer()
        self.reassembler = HandshakeReassembler(next_message_seq=0)
        self.received: list[InboundRecord] = []
        self.acks: list[tuple[int, int]] = []  # record numbers the server acknowledged
        self.handshake_messages: list[bytes] = []
        self.server_events: list[Event] = []  # what the server's application was told
        self.next_seq = 2  # ClientHello1 was 0, ClientHello2 1
        self.read_epoch = self.write_epoch = 0

    def send(self, datagram: bytes) -> None:
        self.server_events += [e for _, e in self.server.receive(datagram, self.peer, self.now)]
        self.take()

    def take(self) -> list[bytes]:
        """The server's datagrams to us, opened: handshake messages reassembled, ACKs kept."""
        datagrams = [d for d, peer in self.server.datagrams_to_send() if peer == self.peer]
        for datagram in datagrams:
            for record in self.records.open_datagram(datagram):
                self.received.append(record)
                if record.content_type == DtlsContentType.handshake:
                    for fragment in parse_fragments(record.data):
                        self.reassembler.feed(fragment, record.epoch)
                elif record.content_type == DtlsContentType.ack:
                    self.acks += parse_ack(record.data)
            self.handshake_messages += [m for _, _, m in self.reassembler.pop_messages()]
        return datagrams

    def handshake(self, data_first: bytes | None = None) -> None:
        """ClientHello1, the HRR, ClientHello2 (x25519), the server's flight, our Finished;
        ``data_first``: application data that reaches the server before our Finished."""
        message, _ = wolfssl_client_hello("none")
        self.server.receive(datagrams_of(message)[0], self.peer, self.now)
        ((hrr_datagram, _),) = self.server.datagrams_to_send()
        fragment = hrr_datagram[13:]
        hrr = fragment[:4] + fragment[12:]
        ch2, self.key = client_hello_2(message, hrr)
        # ClientHello2: the server logs its secrets as it answers, before we read the answer.
        self.server.receive(datagrams_of(ch2, message_seq=1)[0], self.peer, self.now)
        secrets = self.log.secrets
        self.records.install_read(2, self.suite, secrets["SERVER_HANDSHAKE_TRAFFIC_SECRET"])
        self.read_epoch = 2
        self.reassembler = HandshakeReassembler(next_message_seq=1)
        self.take()
        server_flight = self.handshake_messages
        assert [m[0] for m in server_flight] == [2, 8, 11, 15, 20], [m[0] for m in server_flight]
        assert pull_server_hello(server_flight[0][4:]).cipher_suite == 0x1301
        transcript = rebuild_after_retry(self.suite, self.suite.digest(message), hrr)
        transcript.update(ch2)
        for flight_message in server_flight:
            transcript.update(flight_message)
        verify = ks.finished_verify_data(
            self.suite, secrets["CLIENT_HANDSHAKE_TRAFFIC_SECRET"], transcript.digest()
        )
        self.records.install_write(2, self.suite, secrets["CLIENT_HANDSHAKE_TRAFFIC_SECRET"])
        self.write_epoch = 2
        self.finished_message = push_finished(Finished(verify))
        # The server's answer to our Finished (its ACK, its tickets) comes in epoch 3.
        self.records.install_read(3, self.suite, secrets["SERVER_TRAFFIC_SECRET_0"])
        self.read_epoch = 3
        self.records.install_write(3, self.suite, secrets["CLIENT_TRAFFIC_SECRET_0"])
        if data_first is not None:  # our first data, overtaking our Finished on the way
            self.send(self.records.seal(DtlsContentType.application_data, data_first, 3))
        self.finished_record = self.send_handshake(self.finished_message)
        self.write_epoch = 3
        self.server_secret = secrets["SERVER_TRAFFIC_SECRET_0"]
        self.client_secret = secrets["CLIENT_TRAFFIC_SECRET_0"]
        self.take()

    def send_handshake(self, message: bytes) -> tuple[int, int]:
        """One handshake message of ours in the current write epoch; its record number."""
        number = self.records.next_record_number(self.write_epoch)
        (fragment,) = fragment_message(message, self.next_seq, 1000)
        self.next_seq += 1
        self.send(self.records.seal(DtlsContentType.handshake, fragment, self.write_epoch))
        return number

    def send_data(self, data: bytes) -> None:
        self.send(self.records.seal(DtlsContentType.application_data, data, self.write_epoch))

    def ack(self, numbers: list[tuple[int, int]]) -> None:
        self.send(self.records.seal(DtlsContentType.ack, encode_ack(numbers), self.write_epoch))

    def key_update(self, request_update: bool) -> tuple[int, int]:
        """Our KeyUpdate, then our next write epoch (RFC 9147 §8: once it is acknowledged; the
        tests ask the server for the ACK first)."""
        return self.send_handshake(push_key_update(KeyUpdate(request_update)))

    def next_write_epoch(self) -> None:
        self.client_secret = ks.next_traffic_secret(self.suite, self.client_secret)
        self.write_epoch += 1
        self.records.install_write(self.write_epoch, self.suite, self.client_secret)

    def next_read_epoch(self) -> None:
        self.server_secret = ks.next_traffic_secret(self.suite, self.server_secret)
        self.read_epoch += 1
        self.records.install_read(self.read_epoch, self.suite, self.server_secret)

    def application_data(self) -> list[bytes]:
        return [r.data for r in self.received if r.content_type == DtlsContentType.application_data]
