"""Validation.ADAPTIVE without sockets: the stateless HelloRetryRequest only under pressure.

TCP decides per connection at accept (``Admission.stateless``, from the handshakes in progress);
QUIC per new client's Initial (``InitialFront``, from the handshakes in progress and the rate of
new clients), and a client already on a path stays on it whatever the pressure does meanwhile.
The same thing over real sockets and under a flood: tests/loopback/test_adaptive.py, and
``python -m bench.flood``.
"""

from __future__ import annotations

import pytest

from stateless13 import LocalProtocolError
from stateless13.transports.common import (
    TCP_VALIDATIONS,
    Admission,
    Limits,
    PressureGauge,
    Validation,
)
from stateless13.transports.quic_front import (
    Accept,
    InitialFront,
    QuicOptions,
    Reply,
    ReplyKind,
)
from tests.memory.test_quic import (
    CLIENT,
    CONFIG,
    NOW,
    aioquic_client,
    first_exchange,
    run_in_memory,
)


def test_pressure_gauge_goes_on_above_the_threshold_and_off_after_a_calm_hold() -> None:
    gauge = PressureGauge(10, hold=5.0)
    readings = [(0, 0.0), (10, 1.0), (11, 2.0), (3, 3.0), (9, 4.0), (3, 8.5), (3, 9.0)]
    assert [gauge(load, now) for load, now in readings] == [
        False,  # calm
        False,  # at the threshold: not above it
        True,  # above: on
        True,  # a dip (a fast stateless front drains what it is measured by): still on
        True,  # above half again, at 4.0: the hold starts over
        True,  # 4.5 s since
        False,  # 5 s since the load was last above half: off
    ]


def test_pressure_gauge_after_a_flood_the_next_client_is_calm() -> None:
    """Readings come only with new clients: a minute after a flood the first one is answered
    without validation (the last busy reading was long ago)."""
    gauge = PressureGauge(10, hold=5.0)
    assert gauge(50, 100.0)
    assert not gauge(1, 160.0)


def test_tcp_admission_validates_while_many_handshakes_are_in_progress() -> None:
    admission = Admission(Limits(adaptive_handshakes=4), 1000, Validation.ADAPTIVE)
    clock = [0.0]
    admission.clock = lambda: clock[0]
    decisions = []
    for _ in range(6):  # six clients connect and stay in their handshakes
        assert admission.admit("10.0.0.1/32") is None
        decisions.append(admission.stateless())
    # The connection just admitted counts: the fifth is the first above 4.
    assert decisions == [False, False, False, False, True, True]
    assert admission.validating
    for _ in range(6):
        admission.handshake_over("10.0.0.1/32")
    clock[0] = 1.0
    assert admission.admit("10.0.0.1/32") is None  # 1 in progress, within the hold: still on
    assert admission.stateless() and admission.validating
    admission.handshake_over("10.0.0.1/32")
    clock[0] = 6.0  # 6 s after the count was last above half (2)
    assert admission.admit("10.0.0.1/32") is None
    assert admission.stateless() is False and not admission.validating


@pytest.mark.parametrize(
    ("validation", "expected"),
    [(Validation.HRR, [True, True]), (Validation.NONE, [False, False])],
)
def test_tcp_fixed_validations_ignore_the_load(
    validation: Validation, expected: list[bool]
) -> None:
    admission = Admission(Limits(adaptive_handshakes=1), 1000, validation)
    decisions = []
    for _ in range(2):
        admission.admit("10.0.0.1/32")
        decisions.append(admission.stateless())
    assert decisions == expected


def test_tcp_refuses_quic_only_validations() -> None:
    assert Validation.RETRY not in TCP_VALIDATIONS
    with pytest.raises(LocalProtocolError, match="validation must be one of adaptive, hrr, none"):
        Admission(Limits(), 10, Validation.RETRY)
    with pytest.raises(LocalProtocolError):
        Validation.parse("sometimes", TCP_VALIDATIONS)
    assert Validation.parse("adaptive", TCP_VALIDATIONS) is Validation.ADAPTIVE


def adaptive_front(in_progress: list[int], **options: float) -> InitialFront:
    return InitialFront(
        CONFIG,
        QuicOptions(**options),  # type: ignore[arg-type]
        validation=Validation.ADAPTIVE,
        handshakes_in_progress=lambda: in_progress[0],
    )


def level(front: InitialFront) -> Validation:
    """What the front answers a new client with now (a call: mypy keeps no narrowing)."""
    return front.adaptive_level


def test_quic_calm_server_answers_the_first_initial_directly() -> None:
    front = adaptive_front([0])
    client, first = aioquic_client()
    outcome = run_in_memory(front, client, first)
    assert outcome["completed"] and outcome["replies"] == [], outcome
    assert outcome["connection"].start.validation == "none"
    assert front.adaptive_level is Validation.NONE


def test_quic_many_handshakes_in_progress_bring_the_stateless_hrr() -> None:
    in_progress = [33]  # over QuicOptions.adaptive_handshakes (32)
    front = adaptive_front(in_progress)
    exchange = first_exchange(front)  # asserts the HRR
    assert front.adaptive_level is Validation.HRR
    # The load falls before ClientHello2 comes: it still goes through the cookie, as it must
    # (a connection made from it without the HRR's state could not complete).
    in_progress[0] = 0
    accepted = exchange.client_hello2()
    assert isinstance(accepted, Accept) and accepted.start.validation == "cookie", accepted
    # ... and a new client is answered directly again once it has been calm for 5 s.
    _, other = aioquic_client()
    hrr = front.receive(other[0], ("198.51.100.8", 40000), NOW + 1)
    assert isinstance(hrr, Reply) and hrr.kind is ReplyKind.HRR  # within the hold
    _, other = aioquic_client()
    assert isinstance(front.receive(other[0], ("198.51.100.8", 40001), NOW + 6), Accept)


def test_quic_a_flood_of_new_clients_gets_retries_and_back() -> None:
    front = adaptive_front([0], adaptive_retry_rate=20)
    kinds = []
    for index in range(30):  # 30 new clients within one second
        _, first = aioquic_client()
        result = front.receive(first[0], ("198.51.100.9", 1000 + index), NOW + index / 100)
        kinds.append(result.kind if isinstance(result, Reply) else type(result).__name__)
    assert kinds[:20] == ["Accept"] * 20 and kinds[20:] == [ReplyKind.RETRY] * 10, kinds
    assert level(front) is Validation.RETRY
    # A retried client comes back with its token: an ordinary handshake, the address proven.
    client, first = aioquic_client()
    retry = front.receive(first[0], CLIENT, NOW + 0.5)
    assert isinstance(retry, Reply) and retry.kind is ReplyKind.RETRY
    client.receive_datagram(retry.datagram, ("192.0.2.1", 443), NOW + 0.5)
    (second, _), *_ = client.datagrams_to_send(NOW + 0.5)
    accepted = front.receive(second, CLIENT, NOW + 0.5)
    assert isinstance(accepted, Accept) and accepted.start.validation == "retry"
    # Once the rate has been low for 5 s, new clients are answered directly.
    _, first = aioquic_client()
    assert isinstance(front.receive(first[0], CLIENT, NOW + 10), Accept)
    assert level(front) is Validation.NONE


def test_quic_multi_datagram_client_hello_stays_on_its_path() -> None:
    """A ClientHello in two Initials (ML-KEM): its first half went to the reassembly table under
    pressure; the second half must join it, not start a connection, once the pressure is gone."""
    in_progress = [65]
    front = adaptive_front(in_progress)
    _, first = aioquic_client(big=True)
    assert len(first) == 2
    pending = front.receive(first[0], CLIENT, NOW)
    assert not isinstance(pending, (Accept, Reply)), pending
    in_progress[0] = 0
    hrr = front.receive(first[1], CLIENT, NOW)
    assert isinstance(hrr, Reply) and hrr.kind is ReplyKind.HRR
