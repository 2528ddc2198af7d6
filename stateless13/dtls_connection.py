"""One DTLS 1.3 server association (RFC 9147), sans-I/O: datagrams in, events and datagrams out.

The stateless listener (``dtls_listener``) makes one only when ClientHello2's cookie verified: the
client proved it receives at its address.  From there the handshake engine (``ServerHandshake``
in DTLS mode, which speaks TLS-format messages) runs over three pieces:

* ``dtls_record.DtlsRecordLayer``: epochs, record protection, record number encryption, replay;
* ``dtls_flight.HandshakeReassembler``: the client's handshake fragments to whole messages;
* ``dtls_flight.FlightSender``: our flights, retransmitted until acknowledged (§5.8, §7).

The engine's epochs map to DTLS's (§6.1): INITIAL is 0, HANDSHAKE 2, ONE_RTT 3 and each KeyUpdate
one more.  Time is passed in (``now``, seconds on any monotonic clock); :meth:`next_timer` says
when the connection next needs :meth:`handle_timer`.

Bad input: records that do not authenticate, replays and unknown epochs are dropped and counted
(§4.5.2); what authenticates and breaks the protocol fails the connection with its alert, which
waits in :meth:`datagrams_to_send`, and raises the ``AlertError``.
"""

from __future__ import annotations

from collections import deque

from .alerts import (
    AlertDescription,
    AlertError,
    AlertLevel,
    LocalProtocolError,
    UnexpectedMessage,
)
from .client_auth import ClientAuth, ClientCertificate
from .dtls_flight import (
    FlightMessage,
    FlightSender,
    FragmentStatus,
    HandshakeReassembler,
    encode_ack,
    parse_ack,
    parse_fragments,
)
from .dtls_record import MAX_PLAINTEXT, DtlsContentType, DtlsRecordLayer, InboundRecord
from .events import (
    AlertReceived,
    ApplicationData,
    ClientAuthenticated,
    Event,
    HandshakeComplete,
    alert_event,
)
from .handshake import (
    Action,
    HandshakeDone,
    InstallSecret,
    PostHandshakeAuthDone,
    SendHandshake,
    ServerHandshake,
)
from .key_schedule import Direction, Epoch

#: Datagrams held for a read key that has not come yet (each at most 64 KiB).
MAX_WAITING_FOR_KEYS = 4

#: The first DTLS epoch of each of the engine's epochs (§6.1); ONE_RTT grows with KeyUpdates.
_DTLS_EPOCH = {Epoch.INITIAL: 0, Epoch.ZERO_RTT: 1, Epoch.HANDSHAKE: 2, Epoch.ONE_RTT: 3}


class DtlsConnection:
    """One DTLS 1.3 association, from ClientHello2 on.  Made by the listener; see the module."""

    def __init__(
        self,
        handshake: ServerHandshake,
        *,
        peer: tuple[str, int],
        now: float,
        client_record_seq: int,
        client_hello_bytes: int,
        max_datagram_size: int,
    ) -> None:
        """``handshake``: resumed from the cookie, its first flight waiting in its actions.
        ``client_record_seq``: ClientHello2's record sequence number, which our first record
        repeats (our epoch-0 numbers then only grow, as the HRR's repeated ClientHello1's).
        ``client_hello_bytes``: the size of the datagrams that carried ClientHello2."""
        self._handshake = handshake
        self.peer = peer
        self._records = DtlsRecordLayer(
            max_datagram_size=max_datagram_size, first_plaintext_seq=client_record_seq
        )
        # ClientHello1 was message 0 and ClientHello2 message 1; our HRR was our message 0.
        self._reassembler = HandshakeReassembler(next_message_seq=2)
        self._next_message_seq = 1
        self._flight = FlightSender(self._records)
        self._flight_messages: list[FlightMessage] = []
        self._write_epoch = 0
        self._read_epoch = 0
        # A write key the engine installed after a KeyUpdate of ours: §8 uses it only once the
        # KeyUpdate is acknowledged.
        self._deferred_write: InstallSecret | None = None
        # Datagrams that came before the keys of their epoch (the client's first data sent with
        # its Finished and overtaking it): opened again when a read key comes (§4.2.1 allows it).
        self._waiting_for_keys: list[bytes] = []
        self._events: deque[Event] = deque()
        self._outgoing: list[bytes] = []
        self._error: AlertError | None = None
        self._closed = False  # close_notify sent, or the peer's alert received
        #: Why the connection ended without an alert of ours, if it did (a timeout).
        self.failure: str | None = None
        self.handshake: HandshakeComplete | None = None
        self.client_certificate: ClientCertificate | None = None
        #: Counters for reports: datagrams and bytes each way, flight (re)transmissions.
        self.datagrams_in = 1  # ClientHello2's
        self.bytes_in = client_hello_bytes
        self.datagrams_out = 0
        self.bytes_out = 0
        self.retransmissions = 0
        self._apply(handshake.take_actions(), now)

    # -- input -----------------------------------------------------------------------------------

    def receive_datagram(self, datagram: bytes, now: float) -> None:
        """One datagram from the peer.  Raises the AlertError that failed the connection, if
        one did (its alert then waits in :meth:`datagrams_to_send`)."""
        if self._error is not None or self._closed:
            return
        self.datagrams_in += 1
        self.bytes_in += len(datagram)
        try:
            acknowledge: list[tuple[int, int]] = []
            read_epoch = self._read_epoch
            self._open(datagram, now, acknowledge, plaintext=True)
            if self._waiting_for_keys and self._read_epoch > read_epoch:  # a key came: again
                for kept in self._take_waiting():
                    self._open(kept, now, acknowledge, plaintext=False)
            if self._reassembler.take_peer_retransmission():
                self._send_datagrams(self._flight.on_peer_retransmission(now), retransmission=True)
            if acknowledge and self._write_epoch >= 3:
                # §7.1: the client's last handshake flight, and each post-handshake message,
                # is acknowledged (again, if the client resends it: our ACK was lost).
                self._send_record(DtlsContentType.ack, encode_ack(acknowledge))
        except AlertError as error:
            self._fail(error)
            raise

    def _open(
        self, datagram: bytes, now: float, acknowledge: list[tuple[int, int]], plaintext: bool
    ) -> None:
        """Handle the records of ``datagram`` (its plaintext ones only the first time: opened
        again, its protected records already handled are replays, dropped as such); hold it if
        some record's key has not come yet: at most MAX_WAITING_FOR_KEYS, during the handshake only
        (after it, such records are forged or of an epoch we dropped)."""
        unknown = self._records.stats.unknown_epoch
        for record in self._records.open_datagram(datagram):
            if plaintext or record.epoch:
                self._handle_record(record, now, acknowledge)
        if (
            self._records.stats.unknown_epoch > unknown
            and self.handshake is None
            and len(self._waiting_for_keys) < MAX_WAITING_FOR_KEYS
        ):
            self._waiting_for_keys.append(datagram)

    def _take_waiting(self) -> list[bytes]:
        kept, self._waiting_for_keys = self._waiting_for_keys, []
        return kept

    def _handle_record(
        self, record: InboundRecord, now: float, acknowledge: list[tuple[int, int]]
    ) -> None:
        content_type = record.content_type
        if content_type == DtlsContentType.handshake:
            kept = True
            for fragment in parse_fragments(record.data):
                kept &= self._reassembler.feed(fragment, record.epoch) != FragmentStatus.DROPPED
            # §7: a record is acknowledged once all of it is kept (an ACKed fragment is never
            # sent again); a dropped fragment's record waits for its retransmission.
            if record.epoch >= 2 and kept:
                acknowledge.append(record.record_number)
            for _seq, epoch, message in self._reassembler.pop_messages():
                if self.handshake is None:  # its next flight: ours arrived (§7.2); after the
                    self._flight.acknowledge_all(now)  # handshake only an ACK says so (§5.8.4)
                self._apply(self._handshake.receive(_engine_epoch(epoch), message), now)
        elif content_type == DtlsContentType.ack:
            if record.epoch == 0:
                return  # anyone can forge a plaintext ACK; the client's protected ones do
            self._send_datagrams(self._flight.on_ack(parse_ack(record.data), now), True)
            self._install_deferred_write()
        elif content_type == DtlsContentType.application_data:
            if record.epoch < 3 or self.handshake is None:
                raise UnexpectedMessage("application data before the handshake completed")
            if record.data:
                self._events.append(ApplicationData(record.data))
        elif content_type == DtlsContentType.alert:
            self._handle_alert(record)
        else:  # change_cipher_spec and the rest: DTLS 1.3 has no use for them (§5)
            raise UnexpectedMessage(f"{content_type.name} record")

    def _handle_alert(self, record: InboundRecord) -> None:
        if record.epoch == 0 and self.handshake is not None:
            return  # §4.5.2: anyone can forge a plaintext alert; after the handshake, ignored
        event = alert_event(record.data)
        # RFC 8446 §6.1: user_canceled (a warning) is followed by close_notify.
        self._closed = not (isinstance(event, AlertReceived) and not event.fatal)
        self._events.append(event)

    # -- the engine's actions --------------------------------------------------------------------

    def _apply(self, actions: list[Action], now: float) -> None:
        for action in actions:
            if isinstance(action, SendHandshake):
                self._flight_messages.append(
                    FlightMessage(
                        self._dtls_write_epoch(action.epoch), self._take_seq(), action.data
                    )
                )
            elif isinstance(action, InstallSecret):
                self._install(action)
            elif isinstance(action, HandshakeDone):
                self.handshake = action.summary.event()
                self.client_certificate = self.handshake.client_certificate
                self._events.append(self.handshake)
                # §5.6: no early data in DTLS here, and the handshake epoch's records the client
                # may still resend are acknowledged from epoch 3: keep epoch 2's read keys.
            elif isinstance(action, PostHandshakeAuthDone):
                if action.certificate is not None:
                    self.client_certificate = action.certificate
                self._events.append(ClientAuthenticated(action.certificate))
            # SkipEarlyData: a DTLS client's refused 0-RTT (epoch 1) finds no keys and is dropped.
            # LimitRecordSize: RFC 8449 over DTLS bounds records, which max_datagram_size
            # (1200 by default) keeps far below any limit a client may ask (at least 64).
            # AcceptEarlyData, SendChangeCipherSpec: never in DTLS mode.
        if self._flight_messages:
            messages, self._flight_messages = self._flight_messages, []
            self._send_datagrams(self._flight.send(messages, now), retransmission=False)

    def _dtls_write_epoch(self, epoch: Epoch) -> int:
        if epoch == Epoch.ONE_RTT:
            return self._write_epoch  # after the handshake: the current one (KeyUpdate: §8)
        return _DTLS_EPOCH[epoch]

    def _take_seq(self) -> int:
        seq = self._next_message_seq
        if seq > 0xFFFF:
            raise LocalProtocolError("message_seq exhausted: no more handshake messages")
        self._next_message_seq = seq + 1
        return seq

    def _install(self, action: InstallSecret) -> None:
        if action.direction == Direction.DECRYPT:
            epoch = _DTLS_EPOCH[action.epoch]
            if action.epoch == Epoch.ONE_RTT and self._read_epoch >= 3:
                epoch = self._read_epoch + 1  # the client's KeyUpdate
            self._records.install_read(epoch, action.suite, action.secret)
            self._read_epoch = epoch
            if epoch >= 5:  # §8: the epoch before stays for reordered records; older ones go,
                self._records.drop_read_epoch(epoch - 2)  # so KeyUpdates cannot pile up keys
            return
        if action.epoch == Epoch.ONE_RTT and self._write_epoch >= 3:
            self._deferred_write = action  # our KeyUpdate: §8, once it is acknowledged
            return
        self._write_epoch = _DTLS_EPOCH[action.epoch]
        self._records.install_write(self._write_epoch, action.suite, action.secret)

    def _install_deferred_write(self) -> None:
        action = self._deferred_write
        if action is not None and not self._flight.waiting:
            self._deferred_write = None
            self._write_epoch += 1
            self._records.install_write(self._write_epoch, action.suite, action.secret)

    # -- timers ----------------------------------------------------------------------------------

    def next_timer(self) -> float | None:
        """When :meth:`handle_timer` should run (a flight's retransmission), None: never."""
        if self._error is not None or self._closed:
            return None
        return self._flight.next_timeout()

    def handle_timer(self, now: float) -> None:
        """Resend what the peer has not acknowledged, or give up (``failure`` says so)."""
        if self._error is not None or self._closed:
            return
        self._send_datagrams(self._flight.on_timeout(now), retransmission=True)
        if self._flight.failed:
            self._closed = True
            self.failure = f"flight unacknowledged after {self._flight.transmissions} transmissions"

    # -- output ----------------------------------------------------------------------------------

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def events(self) -> list[Event]:
        events = list(self._events)
        self._events.clear()
        return events

    @property
    def client_random(self) -> bytes | None:
        """ClientHello.random of this association's client (its retransmissions carry it)."""
        return self._handshake.client_random

    @property
    def handshake_complete(self) -> bool:
        return self.handshake is not None

    @property
    def closed(self) -> bool:
        """Nothing more will come or go: closed by either side, failed, or timed out."""
        return self._closed or self._error is not None

    @property
    def error(self) -> AlertError | None:
        return self._error

    @property
    def record_stats(self) -> object:
        """What the record layer dropped (``dtls_record.DtlsRecordStats``)."""
        return self._records.stats

    def send(self, data: bytes) -> None:
        """One record of application data (DTLS keeps the boundaries: one record, one message
        for the peer); at most 2^14 bytes."""
        if self._error is not None or self._closed:
            raise LocalProtocolError("cannot send on a closed or failed connection")
        if self.handshake is None:
            raise LocalProtocolError("cannot send application data before the handshake")
        if len(data) > MAX_PLAINTEXT:
            raise LocalProtocolError(f"{len(data)} bytes do not fit one DTLS record (2^14)")
        self._send_record(DtlsContentType.application_data, data)

    def close(self) -> None:
        """Send close_notify; nothing can be sent after it."""
        if self._error is not None or self._closed:
            return
        self._closed = True
        self._send_record(
            DtlsContentType.alert, bytes((AlertLevel.warning, AlertDescription.close_notify))
        )

    def request_client_certificate(self, now: float, client_auth: ClientAuth | None = None) -> None:
        """Post-handshake authentication (RFC 8446 §4.6.2), as over TCP: a ClientAuthenticated
        event answers it."""
        if self._error is not None or self._closed:
            raise LocalProtocolError("cannot request a certificate on a closed connection")
        self._apply(self._handshake.request_client_certificate(client_auth), now)

    def export_keying_material(self, label: bytes, context: bytes, length: int) -> bytes:
        return self._handshake.export_keying_material(label, context, length)

    def datagrams_to_send(self) -> list[bytes]:
        """Datagrams to send to the peer, each as it is; each call returns what was queued."""
        datagrams, self._outgoing = self._outgoing, []
        return datagrams

    def _send_record(self, content_type: int, data: bytes) -> None:
        self._send_datagrams([self._records.seal(content_type, data)], retransmission=False)

    def _send_datagrams(self, datagrams: list[bytes], retransmission: bool) -> None:
        if datagrams and retransmission:
            self.retransmissions += 1
        for datagram in datagrams:
            self.datagrams_out += 1
            self.bytes_out += len(datagram)
        self._outgoing.extend(datagrams)

    def _fail(self, error: AlertError) -> None:
        self._error = error
        alert = bytes((AlertLevel.fatal, error.description))
        self._outgoing.append(self._records.seal(DtlsContentType.alert, alert))


def _engine_epoch(epoch: int) -> Epoch:
    """The engine's epoch of a DTLS epoch (§6.1)."""
    if epoch >= 3:
        return Epoch.ONE_RTT
    return (Epoch.INITIAL, Epoch.ZERO_RTT, Epoch.HANDSHAKE)[epoch]
