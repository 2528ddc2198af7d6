"""The operator's output without sockets: a connection's report as structured log fields, what
is logged at which level, and the stat line's counters (issue 13, item 4)."""

from __future__ import annotations

import dataclasses
import json
import logging
import time

import pytest

from stateless13 import NamedGroup, ServerConfig
from stateless13.transports.common import ConnectionReport, Reporter, ServerStats
from stateless13.transports.memory import MemoryServer
from tests.helpers import PythonSSLClient

Report = ConnectionReport
PEER = ("192.0.2.7", 1)


def handshake(client: PythonSSLClient, server: MemoryServer) -> None:
    """The client and the server through the stateless HRR to a completed handshake."""
    to_server = client.step()
    for _ in range(4):
        server.receive(to_server)
        to_server = client.step(server.data_to_send())
    server.receive(to_server)
    assert server.handshake is not None


def completed_report() -> ConnectionReport:
    client, server = PythonSSLClient(), MemoryServer(ServerConfig.self_signed())
    handshake(client, server)
    report = ConnectionReport.of(server, ("192.0.2.7", 50000), time.monotonic(), 0.004, None)
    return dataclasses.replace(report, duration=0.25)


def test_the_log_line_carries_its_fields_as_extra(caplog: pytest.LogCaptureFixture) -> None:
    report = completed_report()
    with caplog.at_level(logging.INFO, logger="stateless13.server"):
        report.log()
    (record,) = caplog.records
    assert record.levelno == logging.INFO and record.getMessage() == report.log_line()
    fields = report.fields()
    for name, value in fields.items():
        assert getattr(record, name) == value, name
    assert fields["outcome"] == "completed" and fields["hrr"] is True
    assert fields["group"] == "secp256r1" and fields["handshake_ms"] == 4.0
    assert fields["duration_ms"] == 250.0
    assert isinstance(fields["bytes_in"], int) and fields["bytes_in"] > 500
    assert isinstance(fields["bytes_out"], int) and fields["bytes_out"] > 500
    json.dumps(fields)  # what a JSON formatter would do with them
    assert "handshake=4.0ms duration=250.0ms in=" in record.getMessage()


@pytest.mark.parametrize(
    ("report", "outcome", "level"),
    [
        (
            Report(PEER, True, False, None, 0.1, "client closed during the handshake"),
            "left_after_hrr",
            logging.DEBUG,
        ),
        (
            Report(PEER, False, False, None, 0.1, "client closed during the handshake"),
            "client_left",
            logging.INFO,
        ),
        (
            Report(PEER, True, False, None, 10.0, "handshake_timeout (10s)"),
            "handshake_timeout",
            logging.INFO,
        ),
        (
            Report(PEER, False, False, None, 0.0, "illegal_parameter: x y"),
            "illegal_parameter",
            logging.INFO,
        ),
        (
            Report(PEER, True, False, None, 0.1, "client sent handshake_failure"),
            "client_alert_handshake_failure",
            logging.INFO,
        ),
    ],
    ids=["left-after-hrr", "left-before", "timeout", "alert", "client-alert"],
)  # fmt: skip
def test_outcomes_and_levels(
    report: ConnectionReport, outcome: str, level: int, caplog: pytest.LogCaptureFixture
) -> None:
    assert report.outcome == outcome
    with caplog.at_level(logging.DEBUG, logger="stateless13.server"):
        report.log()
    assert [r.levelno for r in caplog.records] == [level]


def test_the_stat_line_counts_what_is_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    reporter = Reporter(None)
    peer = PEER
    with caplog.at_level(logging.INFO):
        reporter(completed_report())
        for _ in range(3):
            reporter(ConnectionReport(peer, True, False, None, 0.1, "client closed during it"))
        for _ in range(50):  # refusals: one rate-limited warning, not fifty lines
            reporter(ConnectionReport.refused(peer, "max_handshakes_per_source"))
    lines = [r.getMessage() for r in caplog.records if r.name == "stateless13.server"]
    assert len(lines) == 2, lines  # the completed one, and one warning for the 50 refusals
    assert "refused at accept (1 times)" in lines[1], lines
    stats = reporter.stats
    snapshot = stats.snapshot(in_progress=2, open=5, validating=1)
    assert snapshot["completed"] == 1 and snapshot["hrr"] == 4
    assert snapshot["cookies_verified"] == 1 and snapshot["left_after_hrr"] == 3
    assert snapshot["refused"] == {"max_handshakes_per_source": 50}
    assert snapshot["failed"] == {}
    line = ServerStats.line(snapshot)
    assert line.startswith("stats tcp: completed=1 completed_per_s=")
    assert "refused=max_handshakes_per_source=50 failed=0" in line
    assert line.endswith("in_progress=2 open=5 validating=1")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="stateless13.stats"):
        stats.log_line(in_progress=0, open=0, validating=0)
    (record,) = caplog.records
    assert record.name == "stateless13.stats"
    assert record.stats["completed"] == 1 and record.stats["completed_per_s"] == 0.0  # type: ignore[attr-defined]


def test_a_stateful_hello_retry_is_reported_when_the_handshake_then_fails() -> None:
    """Without the stateless front the HRR is the connection's own: reported even when the
    handshake never completes (it used to come only from HandshakeComplete)."""
    config = ServerConfig.self_signed(groups=(NamedGroup.secp384r1,))
    client, server = PythonSSLClient(), MemoryServer(config, stateless=False)
    server.receive(client.step())
    assert server.data_to_send()  # the HelloRetryRequest
    server.receive(b"")  # the client goes away
    report = ConnectionReport.of(server, PEER, time.monotonic(), None, None)
    assert report.hello_retry and report.handshake is None and report.error is not None


def test_a_clienthello2_refused_after_its_cookie_verified_says_so() -> None:
    """A ClientHello2 whose cookie is good but whose PSK binder is not: cookie=verified, the
    error decrypt_error (not a client that never came back with a cookie)."""
    config = ServerConfig.self_signed()
    first, first_server = PythonSSLClient(), MemoryServer(config)
    handshake(first, first_server)
    first.take_tickets(first_server.data_to_send())
    client = PythonSSLClient(context=first.context, session=first.tls.session)
    server = MemoryServer(config)
    server.receive(client.step())
    second = bytearray(client.step(server.data_to_send()))
    second[-1] ^= 1  # the binder, last in ClientHello2
    server.receive(bytes(second))
    report = ConnectionReport.of(server, PEER, time.monotonic(), None, None)
    assert report.hello_retry and report.cookie_verified
    assert report.error is not None and report.error.startswith("decrypt_error"), report.error
