"""QUIC 0-RTT with real clients (RFC 9001 §4.6): a returning client's request in its first flight.

quic-go (``quicgoclient -connections 2 -resume``: one session cache, the second GET as
``http3.MethodGet0RTT``), ngtcp2's gtlsclient (``--session-file`` and ``--tp-file``: its second
run sends its request in 0-RTT packets) and headless Chromium (a second navigation, on a new
connection since the first one's GOAWAY) resume a ticket of their first connection.  The proof
is the server's reports (``HandshakeComplete.early_data``: ``resumed=0rtt`` on the log line),
with the clients' own word (quic-go's ``Used0RTT``, Chromium's NetLog): with ``early_data`` on
the 0-RTT is accepted; with it off the tickets promise none and the client resumes in 1-RTT.
While the server makes new clients prove their address (``hrr``, ``both``, ``adaptive`` under
load), a ClientHello1 offering 0-RTT gets a Retry where the others get the stateless HRR, which
would refuse it (RFC 8446 §4.1.2; quic-go and gtlsclient then fail, each for a bug of its own,
and Chromium stalls 4 s): each client comes back with the Retry's token and its 0-RTT, and the
report says ``validation=retry`` and ``resumed=0rtt``.  Only an HRR the key shares need (inside
the connection, after the Retry) still refuses it, and quic-go's bug shows there.
``serve --quic --early-data`` turns it on from the command line.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
from aioquic.buffer import encode_uint_var
from aioquic.h3.connection import FrameType, encode_frame

from stateless13 import NamedGroup
from stateless13.transports.common import ConnectionReport
from stateless13.transports.quic_front import QuicOptions, Validation
from stateless13.transports.quic_server import H3PageProtocol
from tests.peers.test_cli import Serve
from tests.peers.test_cli import serve as serve  # the fixture: `serve(args)` starts the CLI
from tests.peers.test_quic_peers import (
    PeerRun,
    QuicServerFactory,
    QuicTestServer,
    load_netlog,
    run_chromium,
    run_gtlsclient,
    run_quicgo,
)
from tests.peers.test_quic_peers import quic_server as quic_server  # the fixtures
from tests.peers.test_quic_peers import quicgoclient as quicgoclient

#: What quicgoclient -resume prints for each connection once its handshake is complete.
QUICGO_RESUMED = re.compile(r"RESUMED (true|false) EARLY_DATA (true|false)")
#: gtlsclient's 0-RTT packets, as its log shows them.
GTLS_0RTT = re.compile(r"pkt tx pkn=\d+ .* type=0RTT ")


def quicgo_connections(output: str) -> list[tuple[bool, bool]]:
    """(resumed, 0-RTT used) of each connection, as quic-go says."""
    return [(r == "true", e == "true") for r, e in QUICGO_RESUMED.findall(output)]


def resumption(report: ConnectionReport) -> tuple[bool, bool]:
    """(resumed, 0-RTT accepted), as the server says."""
    assert report.handshake is not None and report.error is None, report
    return report.handshake.resumed, report.handshake.early_data


def in_order(reports: list[ConnectionReport]) -> list[ConnectionReport]:
    """The reports in the order the connections came (a connection is reported when it ends,
    and aioquic drains a closed one for 3 PTOs: the first may end after the second)."""
    return sorted(reports, key=lambda report: report.validation == "token")


# ---------------------------------------------------------------------------------------------
# quic-go


def test_quic_go_sends_its_request_in_0rtt_when_it_returns(
    quic_server: QuicServerFactory, quicgoclient: Path
) -> None:
    """The first connection goes through the stateless HRR; the second, with the NEW_TOKEN
    token and a ticket of the first, needs no validation and sends its GET in 0-RTT."""
    server = quic_server(early_data=1)
    run = run_quicgo(quicgoclient, server.port, "-connections", "2", "-resume")
    assert run.ok, run.output
    assert quicgo_connections(run.output) == [(False, False), (True, True)], run.output
    first, second = in_order(server.handshakes(2))
    assert first.validation == "cookie" and resumption(first) == (False, False), first
    assert second.validation == "token" and resumption(second) == (True, True), second
    assert "resumed=0rtt" in second.log_line()
    assert "early data (0-RTT): yes" in run.output  # the page of the second connection


def test_quic_go_resumes_in_1rtt_through_the_stateless_hrr_when_early_data_is_off(
    quic_server: QuicServerFactory, quicgoclient: Path
) -> None:
    """Tickets that promise no early data (``early_data=0``); no NEW_TOKEN, so the second
    connection goes through the stateless HRR too, and its binder is checked after it."""
    server = quic_server(options=QuicOptions(new_token_lifetime=0))
    run = run_quicgo(quicgoclient, server.port, "-connections", "2", "-resume")
    assert run.ok, run.output
    assert quicgo_connections(run.output) == [(False, False), (True, False)], run.output
    assert "EARLY_DATA_REJECTED" not in run.output  # none was sent
    reports = server.handshakes(2)
    assert all(r.validation == "cookie" and r.hello_retry for r in reports), reports
    assert sorted(resumption(r) for r in reports) == [(False, False), (True, False)], reports
    assert "resumed=yes" in max(reports, key=resumption).log_line()


@pytest.mark.parametrize("validation", [Validation.HRR, Validation.BOTH])
def test_quic_go_keeps_its_0rtt_through_a_retry_where_the_hrr_would_go(
    quic_server: QuicServerFactory, quicgoclient: Path, validation: Validation
) -> None:
    """No NEW_TOKEN: the second connection must prove its address too.  Its ClientHello1 offers
    0-RTT, so it gets a Retry (with ``both`` the Retry it always gets, and no HRR after it),
    sends its Initial again with the token and its GET in 0-RTT, and the server accepts it.
    The stateless HRR would have refused it, and quic-go 0.29 would have kept early_data in
    its ClientHello2 (below): that connection failed."""
    server = quic_server(validation, early_data=1, options=QuicOptions(new_token_lifetime=0))
    run = run_quicgo(quicgoclient, server.port, "-connections", "2", "-resume")
    assert run.ok and "EARLY_DATA_REJECTED" not in run.output, run.output
    assert quicgo_connections(run.output) == [(False, False), (True, True)], run.output
    first, second = sorted(server.handshakes(2), key=resumption)
    assert first.validation == ("cookie" if validation is Validation.HRR else "retry+cookie")
    assert first.hello_retry and resumption(first) == (False, False), first
    assert second.validation == "retry" and not second.hello_retry, second
    assert resumption(second) == (True, True) and "resumed=0rtt" in second.log_line(), second
    assert "early data (0-RTT): yes" in run.output  # the page of the second connection
    stats = server.stats
    assert stats.hrr_sent == 1 and stats.accepted == 2, stats
    assert stats.retry_for_0rtt == (1 if validation is Validation.HRR else 0), stats


def test_quic_go_keeps_early_data_in_its_client_hello2(
    quic_server: QuicServerFactory, quicgoclient: Path
) -> None:
    """An HRR the 0-RTT cannot escape: the key share does not fit (P-384 only, quic-go shares
    X25519), so after the Retry the core's own HRR inside the connection refuses the early data.
    quic-go 0.29 (qtls-go1-19) drops its 0-RTT (``Rejected0RTT``) but keeps the early_data
    extension in ClientHello2, which RFC 8446 §4.1.2 forbids: the server refuses it with
    illegal_parameter (as Go's and BoringSSL's servers do), and that connection fails; so it
    did after the stateless HRR."""
    server = quic_server(
        early_data=1, groups=(NamedGroup.secp384r1,), options=QuicOptions(new_token_lifetime=0)
    )
    run = run_quicgo(quicgoclient, server.port, "-connections", "2", "-resume")
    assert not run.ok and "EARLY_DATA_REJECTED" in run.output, run.output
    assert quicgo_connections(run.output) == [(False, False)], run.output
    reports = server.wait_reports(2)
    refused = [r for r in reports if r.handshake is None]
    assert len(reports) == 2 and len(refused) == 1, reports
    assert refused[0].validation == "retry", refused
    assert refused[0].error == "illegal_parameter: early_data in ClientHello2", refused
    assert server.stats.retry_for_0rtt == 1, server.stats


# ---------------------------------------------------------------------------------------------
# gtlsclient


def gtlsclient_twice(port: int, tmp_path: Path) -> str:
    """Two runs sharing a session file and a transport parameters file; the second's output."""
    files = (f"--session-file={tmp_path / 'session.pem'}", f"--tp-file={tmp_path / 'tp.pem'}")
    first = run_gtlsclient(port, *files)
    assert first.ok, first.output
    assert (tmp_path / "session.pem").exists() and (tmp_path / "tp.pem").exists()
    second = run_gtlsclient(port, *files)
    assert second.ok, second.output
    return second.output


def test_gtlsclient_sends_its_request_in_0rtt_after_a_retry(
    quic_server: QuicServerFactory, tmp_path: Path
) -> None:
    """A Retry does not refuse 0-RTT (RFC 9000 §17.2.5.3): the client sends it again, under
    the same keys, after its second Initial (gtlsclient never sends our NEW_TOKEN back)."""
    server = quic_server(Validation.RETRY, early_data=1)
    output = gtlsclient_twice(server.port, tmp_path)
    assert GTLS_0RTT.search(output), output
    first, second = server.handshakes(2)
    assert {first.validation, second.validation} == {"retry"}
    assert sorted([resumption(first), resumption(second)]) == [(False, False), (True, True)]


def test_gtlsclient_resumes_in_1rtt_when_early_data_is_off(
    quic_server: QuicServerFactory, tmp_path: Path
) -> None:
    """The ticket promises no early data, yet gtlsclient sends its request in 0-RTT packets
    (RFC 8446 §4.2.10 forbids it): refused, they are dropped for want of a key, and the request
    goes again in 1-RTT."""
    server = quic_server(Validation.NONE)  # through an HRR it aborts (below)
    output = gtlsclient_twice(server.port, tmp_path)
    assert GTLS_0RTT.search(output), output
    reports = server.handshakes(2)
    assert sorted(resumption(r) for r in reports) == [(False, False), (True, False)], reports


def test_gtlsclient_keeps_its_0rtt_through_a_retry_where_the_hrr_would_go(
    quic_server: QuicServerFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``adaptive`` while it validates (held there: more handshakes in progress than its
    threshold, as a loaded server has): the first run gets the stateless HRR, the second, whose
    ClientHello1 offers 0-RTT, a Retry, and its request in 0-RTT is accepted.  Through the
    stateless HRR gtlsclient (ngtcp2 0.12.1, GnuTLS 3.7.9) aborts whenever it resumes
    ("ngtcp2_conn_install_early_key: Assertion ... failed": GnuTLS hands it an early key again
    for ClientHello2), with 0-RTT or without (tickets without early data,
    --disable-early-data alike).  The stat line counts that Retry."""
    server = quic_server(Validation.ADAPTIVE, early_data=1, retry_names_a_group=True)
    server.server.front.handshakes_in_progress = lambda: 10**6  # over adaptive_handshakes
    files = (f"--session-file={tmp_path / 'session.pem'}", f"--tp-file={tmp_path / 'tp.pem'}")
    first_run = run_gtlsclient(server.port, *files)
    assert first_run.ok and first_run.hrr_seen, first_run.output
    second = run_gtlsclient(server.port, *files)
    assert second.ok and not second.hrr_seen, second.output
    assert GTLS_0RTT.search(second.output), second.output
    first, second_report = sorted(server.handshakes(2), key=resumption)
    assert first.validation == "cookie" and resumption(first) == (False, False), first
    assert second_report.validation == "retry" and not second_report.hello_retry, second_report
    assert resumption(second_report) == (True, True), second_report
    assert "resumed=0rtt" in second_report.log_line()
    stats = server.stats
    assert stats.hrr_sent == 1 and stats.retry_for_0rtt == 1 == stats.retry_sent, stats
    assert server.server.front.adaptive_level is Validation.HRR
    with caplog.at_level(logging.INFO, logger="stateless13.stats"):
        server.server.log_stats()
    (line,) = [r.getMessage() for r in caplog.records if r.name == "stateless13.stats"]
    assert "hrr_sent=1 retry_sent=1 retry_for_0rtt=1 " in line and " validating=1" in line, line


def test_serve_quic_early_data_turns_0rtt_on(serve: Serve, tmp_path: Path) -> None:
    """``stateless13 serve --quic --early-data 1``: the log line of gtlsclient's second run
    says ``resumed=0rtt``."""
    server = serve(["--quic", "--early-data", "1", "--validation", "none"])
    output = gtlsclient_twice(server.port, tmp_path)
    assert GTLS_0RTT.search(output), output
    server.wait_for(server.stderr, r"peer=\S+ quic validation=none .* resumed=no ")
    server.wait_for(server.stderr, r"peer=\S+ quic validation=none .* resumed=0rtt ")
    server.stop()


# ---------------------------------------------------------------------------------------------
# Chromium: a second navigation on a new connection.

SECOND_PATH = "/second"
# An icon of its own (no /favicon.ico request), and on to /second at once; --virtual-time-budget
# lets headless Chromium follow the refresh before --dump-dom.
FIRST_PAGE = (
    b'<!doctype html><title>first</title><link rel="icon" href="data:,">'
    b'<meta http-equiv="refresh" content="0; url=/second"><p>On to the second page</p>\n'
)
# Chromium's "Preload pages" setting at "never": no spare connection opened before the first
# one has its tickets (tests/peers/test_chromium_resumption.py).
NO_PRECONNECT_PREFERENCES = {"net": {"network_prediction_options": 2}}


class FirstPageThenGoaway(H3PageProtocol):
    """``/``: a page that navigates on to /second, then GOAWAY (RFC 9114 §5.2): no request
    after this one on this connection, so /second opens a new one, which can resume.  (HTTP/3
    would otherwise carry it on the first connection; a CONNECTION_CLOSE instead makes Chromium
    retry ``/``.)  aioquic's H3Connection has no GOAWAY of its own: the frame goes on its
    control stream."""

    def _respond(self, stream_id: int, path: str) -> None:
        if path != "/" or self._h3 is None:
            super()._respond(stream_id, path)
            return
        self._h3.send_headers(
            stream_id,
            [
                (b":status", b"200"),
                (b"content-type", b"text/html; charset=utf-8"),
                (b"content-length", str(len(FIRST_PAGE)).encode()),
            ],
        )
        self._h3.send_data(stream_id, FIRST_PAGE, end_stream=True)
        control = self._h3._local_control_stream_id
        assert control is not None
        goaway = encode_frame(FrameType.GOAWAY, encode_uint_var(stream_id + 4))
        self._quic.send_stream_data(control, goaway)
        self.transmit()


def chromium_two_navigations(server: QuicTestServer, tmp_path: Path) -> tuple[PeerRun, list[str]]:
    """Chromium fetching / then /second, and each of its QUIC sessions' 0-RTT outcome from its
    NetLog (QUIC_SESSION_ZERO_RTT_STATE's state, or QUIC_SESSION_ZERO_RTT_REJECTED's reason)."""
    preferences = tmp_path / f"profile-{server.port}" / "Default" / "Preferences"
    preferences.parent.mkdir(parents=True)
    preferences.write_text(json.dumps(NO_PRECONNECT_PREFERENCES))
    run, _ = run_chromium(server.port, server.spki, tmp_path, "--virtual-time-budget=5000")
    log = load_netlog(tmp_path / f"netlog-{server.port}.json")
    names = {number: name for name, number in log["constants"]["logEventTypes"].items()}
    outcomes = []
    for event in log["events"]:
        name, params = names.get(event["type"]), event.get("params", {})
        if name == "QUIC_SESSION_ZERO_RTT_STATE":
            outcomes.append(params["state"])
        elif name == "QUIC_SESSION_ZERO_RTT_REJECTED":
            outcomes.append(f"rejected: {params['reason']}")
    return run, outcomes


def test_chromium_sends_its_second_navigation_in_0rtt(
    quic_server: QuicServerFactory, tmp_path: Path
) -> None:
    server = quic_server(Validation.NONE, create_protocol=FirstPageThenGoaway, early_data=1)
    run, outcomes = chromium_two_navigations(server, tmp_path)
    assert run.ok and "HTTP/3 /second" in run.output, run.output
    assert "early data (0-RTT): yes" in run.output, run.output
    assert outcomes[:2] == ["NotAttempted", "AttemptedAndSucceeded"], outcomes
    first, second = sorted(server.handshakes(2), key=resumption)
    assert resumption(first) == (False, False) and resumption(second) == (True, True)
    assert "resumed=0rtt" in second.log_line()


def test_chromium_keeps_its_0rtt_through_a_retry_where_the_hrr_would_go(
    quic_server: QuicServerFactory, tmp_path: Path
) -> None:
    """Chromium sends no NEW_TOKEN token back, so its second connection must prove its address
    too (``hrr``): its ClientHello1 (over two datagrams, held until whole) offers 0-RTT and
    gets a Retry, and the second navigation goes in 0-RTT.  Through the stateless HRR Chromium
    156 sent no ClientHello2 (NetLog: ZERO_RTT_REJECTED "hello_retry_request"), that attempt
    idled out after 4 s, and a third connection resumed through the HRR in 1-RTT."""
    server = quic_server(create_protocol=FirstPageThenGoaway, early_data=1)
    run, outcomes = chromium_two_navigations(server, tmp_path)
    assert run.ok and "HTTP/3 /second" in run.output, run.output
    assert "early data (0-RTT): yes" in run.output, run.output
    assert outcomes[:2] == ["NotAttempted", "AttemptedAndSucceeded"], outcomes
    first, second = sorted(server.handshakes(2), key=resumption)
    assert first.validation == "cookie" and resumption(first) == (False, False), first
    assert second.validation == "retry" and resumption(second) == (True, True), second
    stats = server.stats
    assert stats.hrr_sent == 1 and stats.retry_for_0rtt == 1 and stats.accepted == 2, stats
