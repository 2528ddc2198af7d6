"""Validation.ADAPTIVE against real peers: no HelloRetryRequest while the server is calm, the
stateless HRR while many handshakes are in progress, and back, over TCP and QUIC.

The pressure is made the way a flood makes it: connections (TCP) or Initials (QUIC) that start a
handshake and never finish it.  The threshold is lowered (``adaptive_handshakes``) so a few do.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from stateless13 import CipherSuite, NamedGroup
from stateless13.transports.common import Limits, PressureGauge, Validation
from stateless13.transports.quic_front import QuicOptions
from tests.memory.test_quic import aioquic_client
from tests.peers.test_cli_peers import openssl_get
from tests.peers.test_quic_peers import (  # noqa: F401 (fixtures)
    QuicServerFactory,
    quic_server,
    quicgoclient,
    run_gtlsclient,
    run_quicgo,
)
from tests.servers import RunningServer, ServerFactory

THRESHOLD = 4
HOLD = PressureGauge(THRESHOLD).hold


@contextmanager
def stalled_tcp(server: RunningServer, count: int) -> Iterator[None]:
    """``count`` connections that connect and send nothing: handshakes in progress."""
    socks = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(count)]
    try:
        time.sleep(0.3)  # accepted by the server
        yield
    finally:
        for sock in socks:
            sock.close()


def wait_for_reports(server: RunningServer, count: int) -> None:
    assert len(server.wait_reports(count)) >= count, server.reports


def test_tcp_openssl_calm_then_flooded_then_calm(tls_server: ServerFactory) -> None:
    server = tls_server(validation="adaptive", limits=Limits(adaptive_handshakes=THRESHOLD))
    calm = openssl_get(server)
    assert calm.returncode == 0, calm.log
    report = server.only_report()
    assert report.validation == "none" and not report.hello_retry, report
    assert report.handshake is not None and report.handshake.group == NamedGroup.x25519

    with stalled_tcp(server, THRESHOLD):  # with s_client's own connection: above the threshold
        flooded = openssl_get(server)
        assert flooded.returncode == 0, flooded.log
        report = server.only_report()
        assert report.validation == "hrr" and report.cookie_verified, report
        assert report.handshake is not None
        assert report.handshake.cipher_suite == CipherSuite.TLS_AES_128_GCM_SHA256
        assert report.handshake.group == NamedGroup.secp256r1, report  # named by the HRR
    wait_for_reports(server, 2 + THRESHOLD)  # the stalled connections are closed and reported
    time.sleep(HOLD)  # the gauge holds for 5 s after the load was last above half
    again = openssl_get(server)
    assert again.returncode == 0, again.log
    assert server.only_report().validation == "none", server.reports[-1]


def quic_stall(port: int, count: int) -> socket.socket:
    """``count`` first Initials from one UDP socket that never answers: each starts a
    connection (the server is calm) that stays in its handshake until its timeout."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(count):
        sock.sendto(aioquic_client()[1][0], ("127.0.0.1", port))
    time.sleep(0.3)
    return sock


def test_quic_gtlsclient_calm_then_flooded(quic_server: QuicServerFactory) -> None:  # noqa: F811
    server = quic_server(Validation.ADAPTIVE, QuicOptions(adaptive_handshakes=THRESHOLD))
    calm = run_gtlsclient(server.port)
    assert calm.ok and calm.hrr_seen is False, calm.output
    (report,) = server.handshakes(1)
    assert report.validation == "none" and not report.hello_retry, report

    stall = quic_stall(server.port, THRESHOLD + 1)
    try:
        assert server.server.handshakes_in_progress == THRESHOLD + 1
        flooded = run_gtlsclient(server.port)
        assert flooded.ok and flooded.hrr_seen, flooded.output  # gtlsclient saw the HRR
        report = server.handshakes(2)[-1]
        assert report.validation == "cookie" and report.cookie_verified, report
        assert report.handshake is not None
        assert report.handshake.group == NamedGroup.secp384r1, report  # GnuTLS: named, P-384
        assert server.stats.hrr_sent >= 1
    finally:
        stall.close()


def test_quic_go_calm_server_no_round_trip(
    quic_server: QuicServerFactory,  # noqa: F811
    quicgoclient: Path,  # noqa: F811
) -> None:
    server = quic_server(Validation.ADAPTIVE)
    run = run_quicgo(quicgoclient, server.port)
    assert run.ok, run.output
    (report,) = server.handshakes(1)
    assert report.validation == "none" and not report.hello_retry, report
    assert server.stats.hrr_sent == 0 and server.stats.retry_sent == 0
