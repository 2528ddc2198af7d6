"""DTLS 1.3 against the one independent DTLS 1.3 stack there is: wolfSSL 5.8.4's client, built
from ../shared/peers/wolfssl-dtls13 (a missing compiler fails these tests, never skips them).

Each handshake counts only when wolfSSL completed it, the message it sent came back, and our
server's report confirms the stateless HelloRetryRequest, the verified cookie and the group.
wolfSSL's own DTLS 1.3 server, with its own stateless HRR cookie, is the reference: the same
client completes with both.  Through a lossy relay (tests/udp_relay.py: loss, reordering,
duplication, seeded) handshakes still complete, by retransmission.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bench.common import private_key_pem
from stateless13 import Credential, NamedGroup
from stateless13.transports.dtls_server import DtlsServer
from tests.dtls_messages import datagrams_of, wolfssl_client_hello
from tests.servers import RunningServer, build_wolfssl_dtls_peer, dtls_server, free_udp_port
from tests.udp_relay import UdpRelay


@pytest.fixture(scope="module")
def wolfssl() -> Path:
    return build_wolfssl_dtls_peer()


def run_client(
    wolfssl: Path, port: int, *args: str, message: str = "over DTLS 1.3", timeout: float = 20
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(wolfssl), "client", "127.0.0.1", str(port), *args, "--message", message],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_echoed(done: subprocess.CompletedProcess[str], message: str) -> None:
    assert done.returncode == 0, f"wolfSSL client failed:\n{done.stdout}{done.stderr}"
    assert "DTLSv1.3" in done.stdout
    assert f"client got: {message}" in done.stdout


def only_report(server: RunningServer) -> object:
    reports = server.wait_reports(1)
    assert len(reports) == 1, reports
    report = reports[0]
    assert report.transport == "dtls" and report.validation == "hrr"
    assert report.hello_retry and report.cookie_verified, report
    assert report.handshake is not None and report.error is None, report
    return report


@pytest.mark.parametrize(
    ("group", "expected"),
    [
        # A share in our first tier: the HRR names another group of that tier (as for GnuTLS),
        # so the group changes; with no share at all, our first choice.
        ("x25519", NamedGroup.secp256r1),
        ("secp256r1", NamedGroup.x25519),
        ("secp384r1", NamedGroup.x25519),
        ("none", NamedGroup.x25519),
    ],
)
def test_wolfssl_completes_through_the_stateless_hello_retry_request(
    wolfssl: Path, group: str, expected: NamedGroup
) -> None:
    with dtls_server() as server:
        done = run_client(wolfssl, server.port, "--group", group, message=f"hello {group}")
        assert_echoed(done, f"hello {group}")
        report = only_report(server)
    assert report.handshake.group == expected  # type: ignore[attr-defined]
    assert report.datagrams_in >= 3 and report.bytes_out > 0  # type: ignore[attr-defined]


def test_wolfssl_default_client_and_several_in_a_row(wolfssl: Path) -> None:
    with dtls_server() as server:
        for number in range(3):
            assert_echoed(run_client(wolfssl, server.port, message=f"#{number}"), f"#{number}")
        reports = server.wait_reports(3)
    assert len(reports) == 3 and all(r.error is None and r.cookie_verified for r in reports)
    assert len({r.peer for r in reports}) == 3
    stats = server.server.listener.stats  # type: ignore[union-attr]
    assert stats.hello_retries == 3 and stats.accepted == 3
    assert stats.largest_ratio <= 1.0  # no HRR larger than the ClientHello it answered


def test_the_same_client_completes_with_wolfssls_own_stateless_server(
    wolfssl: Path, tmp_path: Path
) -> None:
    """The reference: wolfSSL's server answers ClientHello1 with its own stateless HRR cookie
    (wolfSSL_send_hrr_cookie); the client that completes with ours completes with it."""
    credential = Credential.self_signed("localhost")
    (tmp_path / "cert.pem").write_bytes(credential.certificate_pem())
    (tmp_path / "key.pem").write_bytes(private_key_pem(credential.private_key))
    port = free_udp_port()
    reference = subprocess.Popen(
        [str(wolfssl), "server", str(port), str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        time.sleep(0.3)
        done = run_client(wolfssl, port, "--group", "x25519", message="to wolfSSL")
        assert_echoed(done, "to wolfSSL")
        out, _ = reference.communicate(timeout=10)
        assert reference.returncode == 0 and "DTLSv1.3" in out, out
    finally:
        reference.kill()
        reference.wait()
    with dtls_server() as server:
        assert_echoed(run_client(wolfssl, server.port, "--group", "x25519"), "over DTLS 1.3")
        only_report(server)


def handshake_datagram(datagram: bytes) -> bool:
    """Whether a datagram starts with a record of the handshake: DTLSPlaintext (epoch 0) or the
    handshake epoch (2).  Application traffic (epoch 3: our tickets and ACKs, the message and
    its echo) passes unharmed: the peer program sends its message once and waits for the echo
    forever, as a datagram application without its own retransmission does."""
    first = datagram[0]
    return not (first & 0xE0 == 0x20 and first & 0x03 == 3)


@pytest.mark.parametrize(
    ("drop", "reorder", "duplicate", "seed"),
    [(0.1, 0.2, 0.1, 1), (0.2, 0.2, 0.2, 2), (0.3, 0.1, 0.1, 3)],
)
def test_handshakes_complete_through_loss_reordering_and_duplication(
    wolfssl: Path, drop: float, reorder: float, duplicate: float, seed: int
) -> None:
    with (
        dtls_server() as server,
        UdpRelay(
            (server.host, server.port),
            drop=drop,
            reorder=reorder,
            duplicate=duplicate,
            seed=seed,
            impair=handshake_datagram,
        ) as relay,
    ):
        started = time.monotonic()
        done = run_client(wolfssl, relay.address[1], "--group", "none", message="lossy", timeout=60)
        elapsed = time.monotonic() - started
        assert_echoed(done, "lossy")
        report = only_report(server)
    lost = relay.counts["up", "dropped"] + relay.counts["down", "dropped"]
    print(
        f"drop={drop} reorder={reorder} duplicate={duplicate}: completed in {elapsed:.2f} s, "
        f"{lost} datagrams lost, relay {dict(relay.counts)}, our retransmissions "
        f"{report.retransmissions}"  # type: ignore[attr-defined]
    )


#: The flood, in a process of its own (in ours it would take the server's GIL): ClientHello1 from
#: 500 source ports (each port an address to the cookie) at RATE a second for SECONDS.
FLOOD = """
import socket, sys, time
hello, host, port, rate, seconds = bytes.fromhex(sys.argv[1]), sys.argv[2], int(sys.argv[3]), \\
    int(sys.argv[4]), float(sys.argv[5])
sockets = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(500)]
sent, started = 0, time.monotonic()
while time.monotonic() - started < seconds:
    for sock in sockets:
        sock.sendto(hello, (host, port))
    sent += len(sockets)
    time.sleep(max(0.0, started + sent / rate - time.monotonic()))
print(sent)
"""


def test_honest_clients_complete_during_a_client_hello_flood(wolfssl: Path) -> None:
    """ClientHello1s from 500 source ports, 10,000 a second for 4 seconds, while wolfSSL
    clients connect: every honest client completes, no flood datagram got more than its own
    size back, and the flood made no association."""
    message, _ = wolfssl_client_hello("x25519")
    (hello,) = datagrams_of(message)
    with dtls_server() as server:
        assert server.server is not None
        flood = subprocess.Popen(
            [sys.executable, "-c", FLOOD, hello.hex(), server.host, str(server.port), "10000", "4"],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            time.sleep(0.5)
            completed = []
            for number in range(3):
                done = run_client(wolfssl, server.port, "--group", "none", message=f"#{number}")
                assert_echoed(done, f"#{number}")
                completed.append(time.monotonic())
            assert flood.poll() is None, "the flood ended before the honest clients did"
            sent = int(flood.communicate(timeout=30)[0])
        finally:
            flood.kill()
            flood.wait()
        reports = server.wait_reports(3)
        stats = server.server.listener.stats
        assert stats.hello_retries >= 10_000 and stats.largest_ratio <= 1.0
        assert server.server.connections == 0
    assert len(reports) == 3 and all(r.error is None for r in reports)
    print(f"flood: {sent} sent, {stats.hello_retries} HRRs answered; 3 honest clients completed")


def test_serve_dtls_from_the_command_line(wolfssl: Path) -> None:
    """``stateless13 serve --dtls``: its banner, a wolfSSL client through the stateless HRR,
    the log line and the stat line saying so, and a clean stop at SIGTERM."""
    port = free_udp_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "stateless13", "serve", "--dtls", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert server.stdout is not None
        banner = [server.stdout.readline() for _ in range(4)]
        assert "serving DTLS 1.3 echo" in banner[0] and banner[3].startswith("try: dtls13_peer")
        assert_echoed(run_client(wolfssl, port, "--group", "none", message="cli"), "cli")
    finally:
        server.terminate()
        output = server.communicate(timeout=20)[0]
    assert server.returncode == 0, output
    assert " dtls validation=hrr hrr=yes cookie=verified " in output
    assert "stats dtls: completed=1 " in output and " hrr_sent=1 " in output


def test_a_handler_that_answers_later(wolfssl: Path) -> None:
    """``send`` works whenever the application calls it, not only during the call: here from a
    timer 50 ms later, as an application waiting on its own I/O would; the datagram leaves at
    once (nothing stays queued for the next datagram or timer to flush)."""
    servers: list[DtlsServer] = []
    queued_after_send: list[int] = []

    def later(data: bytes, send: Callable[[bytes], None]) -> None:
        def answer() -> None:
            send(data.upper())
            queued_after_send.append(len(servers[0].endpoint.datagrams_to_send()))

        asyncio.get_running_loop().call_later(0.05, answer)

    with dtls_server(handler=later) as server:
        assert server.server is not None
        servers.append(server.server)
        assert_echoed(run_client(wolfssl, server.port, message="answered later"), "ANSWERED LATER")
        only_report(server)
    assert queued_after_send == [0]
