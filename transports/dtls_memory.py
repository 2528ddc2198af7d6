"""A DTLS 1.3 server over memory: datagrams in and out with their addresses, time passed in.

It is the whole server but the socket: the stateless listener for addresses without an
association, the associations (``DtlsConnection``) for the others, their deadlines (handshake,
idle) and retransmission timers, the limit on associations, and one ``ConnectionReport`` per
association.  ``dtls_server`` moves datagrams between it and a UDP socket; a test drives it
directly::

    server = DtlsMemoryServer(config)
    for peer, event in server.receive(datagram, ("192.0.2.1", 5000), now=time.time()):
        ...                                  # HandshakeComplete, ApplicationData, ...
    for datagram, peer in server.datagrams_to_send():
        ...                                  # deliver them
    server.handle_timers(now)                # at server.next_timer(), or later

It never raises for what a client does: a client that breaks the protocol ends its association
(our alert goes out) and its report says why.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable
from dataclasses import dataclass

from stateless13 import (
    AlertError,
    AlertReceived,
    DtlsAccept,
    DtlsConnection,
    DtlsListener,
    DtlsListenerLimits,
    DtlsReply,
    Event,
    HandshakeComplete,
    LocalProtocolError,
    ServerConfig,
)

from .common import ConnectionReport

Peer = tuple[str, int]


@dataclass(frozen=True)
class DtlsOptions:
    """The server's limits beyond the listener's (``DtlsListenerLimits``): docs/SECURITY.md."""

    #: Seconds from ClientHello2 (the association's creation) to a completed handshake.
    handshake_timeout: float = 10.0
    #: Seconds without a datagram from the client once the handshake is done.
    idle_timeout: float = 300.0
    #: Associations at once; a ClientHello2 over the limit is dropped (the client retransmits).
    max_connections: int = 4096

    def __post_init__(self) -> None:
        if min(self.handshake_timeout, self.idle_timeout) <= 0 or self.max_connections < 1:
            raise LocalProtocolError("DtlsOptions: timeouts and max_connections must be positive")


class _Association:
    __slots__ = (
        "connection",
        "deadline",
        "deadline_reason",
        "error",
        "handshake_time",
        "scheduled",
        "started",
    )

    def __init__(self, connection: DtlsConnection, now: float, handshake_timeout: float) -> None:
        self.connection = connection
        self.started = now
        self.handshake_time: float | None = None
        self.deadline = now + handshake_timeout
        self.deadline_reason = "handshake timeout"
        self.error: str | None = None
        self.scheduled: float | None = None  # its entry in the server's timer heap

    def wake(self) -> float:
        retransmit = self.connection.next_timer()
        return self.deadline if retransmit is None else min(retransmit, self.deadline)


class DtlsMemoryServer:
    """Every association of one DTLS server, and the listener for the rest (see the module)."""

    def __init__(
        self,
        config: ServerConfig,
        *,
        limits: DtlsListenerLimits | None = None,
        options: DtlsOptions | None = None,
        on_report: Callable[[ConnectionReport], None] | None = None,
    ) -> None:
        self.config = config
        self.listener = DtlsListener(config, limits)
        self.options = options or DtlsOptions()
        self.on_report = on_report
        self._associations: dict[Peer, _Association] = {}
        self._outgoing: list[tuple[bytes, Peer]] = []
        # A heap of (time, address): an association's entry is the one at its ``scheduled``
        # time; any other is stale, skipped when it comes up.  An association has one entry,
        # plus one per time its wake-up moved earlier: the heap is bounded by the associations.
        self._timers: list[tuple[float, Peer]] = []
        #: ClientHello2s with a valid cookie dropped because max_connections associations exist.
        self.refused = 0

    @property
    def connections(self) -> int:
        return len(self._associations)

    @property
    def handshakes_in_progress(self) -> int:
        return sum(1 for a in self._associations.values() if a.handshake_time is None)

    def connection(self, peer: Peer) -> DtlsConnection | None:
        association = self._associations.get(peer)
        return None if association is None else association.connection

    # -- input -----------------------------------------------------------------------------------

    def receive(self, datagram: bytes, peer: Peer, now: float) -> list[tuple[Peer, Event]]:
        """One datagram from ``peer`` at ``now`` (seconds since the epoch: the cookie's clock,
        and the timers'); the events it caused, for the application."""
        association = self._associations.get(peer)
        if association is not None and not _new_client_hello(datagram, association.connection):
            try:
                association.connection.receive_datagram(datagram, now)
            except AlertError as error:
                association.error = str(error)
            if association.handshake_time is not None:  # idle: from the client's datagrams
                association.deadline = now + self.options.idle_timeout
            return self._flush(association, now)
        result = self.listener.receive(datagram, peer, now)
        if isinstance(result, DtlsReply):
            self._outgoing.append((result.datagram, peer))
        elif isinstance(result, DtlsAccept):
            if association is not None:
                # RFC 9147 §5.11: a client that lost its association starts again from the
                # same address; the old one goes once the new one's cookie verified.
                self._end(association, "replaced by a new association (RFC 9147 §5.11)", now)
            if len(self._associations) >= self.options.max_connections:
                self.refused += 1
                return []
            association = _Association(result.connection, now, self.options.handshake_timeout)
            self._associations[peer] = association
            return self._flush(association, now)
        return []

    def handle_timers(self, now: float) -> list[tuple[Peer, Event]]:
        """Retransmit, or end what timed out, for every timer due by ``now``."""
        events: list[tuple[Peer, Event]] = []
        while self._timers and self._timers[0][0] <= now:
            when, peer = heapq.heappop(self._timers)
            association = self._associations.get(peer)
            if association is None or association.scheduled != when:
                continue
            association.scheduled = None
            if association.deadline <= now:
                self._end(association, association.deadline_reason, now)
                continue
            association.connection.handle_timer(now)
            events += self._flush(association, now)
        return events

    def next_timer(self) -> float | None:
        """When :meth:`handle_timers` should run next; None: no timer."""
        timers = self._timers
        while timers:
            when, peer = timers[0]
            association = self._associations.get(peer)
            if association is not None and association.scheduled == when:
                return when
            heapq.heappop(timers)
        return None

    # -- the application's side -----------------------------------------------------------------

    def send(self, peer: Peer, data: bytes, now: float) -> None:
        """One datagram of application data to ``peer``'s association (``DtlsConnection.send``:
        one record, at most 2^14 bytes)."""
        association = self._associations.get(peer)
        if association is None:
            raise LocalProtocolError(f"no association with {peer[0]}:{peer[1]}")
        association.connection.send(data)
        self._flush(association, now)

    def close(self, peer: Peer, now: float, reason: str | None = None) -> None:
        """close_notify to ``peer``, and its report (``reason``: why, if not a clean end)."""
        association = self._associations.get(peer)
        if association is not None:
            if reason is not None and association.error is None:
                association.error = reason
            self._end(association, None, now)

    def close_all(self, now: float, reason: str = "server closing") -> None:
        for association in list(self._associations.values()):
            self._end(association, reason, now)

    def datagrams_to_send(self) -> list[tuple[bytes, Peer]]:
        """(datagram, address) pairs to send, in order; each call returns what was queued."""
        outgoing, self._outgoing = self._outgoing, []
        return outgoing

    # -- associations ----------------------------------------------------------------------------

    def _flush(self, association: _Association, now: float) -> list[tuple[Peer, Event]]:
        connection = association.connection
        peer = connection.peer
        events = [(peer, event) for event in connection.events()]
        for _, event in events:
            if isinstance(event, HandshakeComplete):
                association.handshake_time = now - association.started
                association.deadline = now + self.options.idle_timeout
                association.deadline_reason = "idle timeout"
            elif isinstance(event, AlertReceived) and event.fatal and association.error is None:
                association.error = f"client sent {event.name}"
        self._outgoing += [(datagram, peer) for datagram in connection.datagrams_to_send()]
        if connection.closed:
            self._report(association, now)
            return events
        wake = association.wake()
        if association.scheduled is None or wake < association.scheduled:
            association.scheduled = wake
            heapq.heappush(self._timers, (wake, peer))
        return events

    def _end(self, association: _Association, reason: str | None, now: float) -> None:
        if reason is not None and association.error is None:
            association.error = reason
        connection = association.connection
        connection.close()
        self._outgoing += [(d, connection.peer) for d in connection.datagrams_to_send()]
        self._report(association, now)

    def _report(self, association: _Association, now: float) -> None:
        connection = association.connection
        if self._associations.get(connection.peer) is not association:
            return
        del self._associations[connection.peer]
        error = association.error or connection.failure
        if connection.error is not None:
            error = str(connection.error)
        if error is None and connection.handshake is None:
            error = "closed before the handshake completed"
        if self.on_report is not None:
            self.on_report(
                ConnectionReport(
                    peer=connection.peer,
                    transport="dtls",
                    validation="hrr",
                    hello_retry=True,
                    cookie_verified=True,
                    handshake=connection.handshake,
                    duration=now - association.started,
                    error=error,
                    handshake_time=association.handshake_time,
                    datagrams_in=connection.datagrams_in,
                    bytes_in=connection.bytes_in,
                    datagrams_out=connection.datagrams_out,
                    bytes_out=connection.bytes_out,
                    retransmissions=connection.retransmissions,
                    client_certificate=connection.client_certificate,
                )
            )


def _new_client_hello(datagram: bytes, connection: DtlsConnection) -> bool:
    """Whether ``datagram`` starts a new association from an address that has one: it opens
    with a DTLSPlaintext handshake record whose first fragment is a ClientHello with another
    random than the association's (its own ClientHellos, resent, go to the association)."""
    if len(datagram) < 13 + 12 + 34 or datagram[0] != 22 or datagram[3:5] != b"\x00\x00":
        return False
    fragment = datagram[13:]
    if fragment[0] != 1 or fragment[6:9] != b"\x00\x00\x00":  # a ClientHello, from offset 0
        return False
    return fragment[12 + 2 : 12 + 34] != connection.client_random


def wall_clock() -> float:
    """The clock both the cookies (shared by a fleet) and the timers run on."""
    return time.time()


__all__ = ["DtlsMemoryServer", "DtlsOptions", "Peer", "wall_clock"]
