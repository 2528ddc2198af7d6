"""A DTLS association from ClientHello2 to its end, in memory: what wolfSSL's test program never
reaches (it sends one message and closes).  The client is tests/dtls_client.py (scaffolding on
the server's key log); the clock is the test's.

Proven here: the client's Finished is acknowledged (§7.1) and its resent Finished acknowledged
again; our tickets' flight is retransmitted until an ACK names it, and only an ACK stops it
(§5.8.4); application data both ways, one record each; a client KeyUpdate moves its epoch
(§8), and the one it asks of us switches our epoch only once the client acknowledged it; old
read epochs are dropped as KeyUpdates go on; plaintext alerts after the handshake are ignored
(§4.5.2), a protected close_notify closes; what the report says.
"""

from __future__ import annotations

import pytest

from stateless13 import (
    ApplicationData,
    ConnectionClosed,
    Credential,
    HandshakeComplete,
    ServerConfig,
)
from stateless13.dtls_flight import fragment_message
from stateless13.dtls_record import DtlsContentType
from stateless13.transports.common import ConnectionReport
from stateless13.transports.dtls_memory import DtlsMemoryServer
from tests.dtls_client import MemoryDtlsClient, keylogged
from tests.dtls_messages import plaintext_record

PEER = ("192.0.2.20", 40000)
NOW = 1_800_000_000.0


@pytest.fixture
def pair() -> tuple[DtlsMemoryServer, MemoryDtlsClient, list[ConnectionReport]]:
    config, log = keylogged(ServerConfig(credentials=(Credential.self_signed("localhost"),)))
    reports: list[ConnectionReport] = []
    server = DtlsMemoryServer(config, on_report=reports.append)
    client = MemoryDtlsClient(server, log, PEER, NOW)
    client.handshake()
    return server, client, reports


def test_the_handshake_completes_and_the_finished_is_acknowledged(
    pair: tuple[DtlsMemoryServer, MemoryDtlsClient, list[ConnectionReport]],
) -> None:
    server, client, _ = pair
    connection = server.connection(PEER)
    assert connection is not None and connection.handshake is not None
    assert connection.handshake.cookie_verified and connection.handshake.hello_retry
    assert client.finished_record in client.acks  # §7.1, in epoch 3
    tickets = [m for m in client.handshake_messages if m[0] == 4]
    assert len(tickets) == 2  # two NewSessionTickets, in epoch 3
    # Our ACK lost on its way back? The client resends its Finished (the same record content,
    # a new record number, epoch 2): it is acknowledged again, nothing else happens.
    client.acks.clear()
    number = client.records.next_record_number(2)
    (fragment,) = fragment_message(client.finished_message, 2, 1000)
    client.send(client.records.seal(DtlsContentType.handshake, fragment, 2))
    assert number in client.acks
    assert connection.handshake is not None and server.connection(PEER) is connection


def test_our_tickets_flight_is_resent_until_an_ack_names_it(
    pair: tuple[DtlsMemoryServer, MemoryDtlsClient, list[ConnectionReport]],
) -> None:
    server, client, _ = pair
    ticket_records = [
        r.record_number for r in client.received if r.epoch == 3 and r.content_type == 22
    ]
    assert ticket_records
    # No ACK: the flight comes again at its timer (and application data does not stop it).
    client.send_data(b"not an ACK")
    when = server.next_timer()
    assert when is not None and when <= client.now + 1.0
    server.handle_timers(when)
    client.now = when
    again = [d for d in client.take()]
    assert again, "the tickets' flight was not resent"
    resent = [r.record_number for r in client.received if r.epoch == 3 and r.content_type == 22]
    client.ack(resent)  # every record that carried them
    connection = server.connection(PEER)
    assert connection is not None and connection.next_timer() is None


def test_application_data_both_ways(
    pair: tuple[DtlsMemoryServer, MemoryDtlsClient, list[ConnectionReport]],
) -> None:
    server, client, _ = pair
    events = server.receive(
        client.records.seal(DtlsContentType.application_data, b"ping", 3), PEER, client.now
    )
    assert [e.data for _, e in events if hasattr(e, "data")] == [b"ping"]
    server.send(PEER, b"pong", client.now)
    client.take()
    assert client.application_data() == [b"pong"]


def test_key_updates_move_both_epochs_and_drop_old_keys(
    pair: tuple[DtlsMemoryServer, MemoryDtlsClient, list[ConnectionReport]],
) -> None:
    server, client, _ = pair
    connection = server.connection(PEER)
    assert connection is not None
    for round_number in range(3):
        update = client.key_update(request_update=True)
        assert update in client.acks  # the server acknowledged our KeyUpdate
        client.next_write_epoch()  # §8: our new epoch once acknowledged
        # Its own KeyUpdate came in the old epoch; until we acknowledge it, it writes there.
        theirs = [
            r.record_number
            for r in client.received
            if r.content_type == 22 and r.epoch == client.read_epoch and r.data[0] == 24
        ]
        assert theirs, f"round {round_number}: no KeyUpdate from the server"
        server.send(PEER, b"before our ACK", client.now)
        client.take()
        assert client.received[-1].epoch == client.read_epoch
        client.ack(theirs)
        client.next_read_epoch()
        server.send(PEER, b"after our ACK", client.now)
        client.take()
        assert client.received[-1].epoch == client.read_epoch
        assert client.application_data()[-1] == b"after our ACK"
        # The server reads our new epoch.
        events = server.receive(
            client.records.seal(DtlsContentType.application_data, b"new epoch", client.write_epoch),
            PEER,
            client.now,
        )
        assert [e.data for _, e in events if hasattr(e, "data")] == [b"new epoch"]
    # Epochs 3, 4, 5, 6 were the client's: only the last two are kept for reading.
    assert connection._records.read_epochs == [2, 5, 6]


def test_after_the_handshake_a_plaintext_alert_is_ignored_and_close_notify_closes(
    pair: tuple[DtlsMemoryServer, MemoryDtlsClient, list[ConnectionReport]],
) -> None:
    server, client, reports = pair
    forged = plaintext_record(b"\x02\x28", content_type=21, seq=99)  # fatal handshake_failure
    assert server.receive(forged, PEER, client.now) == []
    assert server.connection(PEER) is not None
    close = client.records.seal(DtlsContentType.alert, b"\x01\x00", 3)
    events = server.receive(close, PEER, client.now)
    assert [e for _, e in events] == [ConnectionClosed(clean=True)]
    assert server.connection(PEER) is None
    (report,) = reports
    assert report.error is None and report.transport == "dtls"
    assert isinstance(report.handshake, HandshakeComplete)
    assert report.datagrams_in is not None and report.datagrams_in >= 4


def test_data_that_overtakes_the_finished_waits_for_its_key() -> None:
    """The client's first data, sent with its Finished, arrives first: its epoch-3 key comes
    only with the Finished, so the datagram waits (§4.2.1 allows it), then is read: the
    application gets it after HandshakeComplete, not never."""
    config, log = keylogged(ServerConfig(credentials=(Credential.self_signed("localhost"),)))
    server = DtlsMemoryServer(config)
    client = MemoryDtlsClient(server, log, PEER, NOW)
    client.handshake(data_first=b"sent with the Finished")
    kinds = [type(e).__name__ for e in client.server_events]
    assert kinds == ["HandshakeComplete", "ApplicationData"], kinds
    assert client.server_events[1] == ApplicationData(b"sent with the Finished")
