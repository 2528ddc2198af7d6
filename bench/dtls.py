"""DTLS 1.3: our stateless listener against wolfSSL's own stateless DTLS 1.3 server.

    python -m bench.dtls [--seconds S] [--rounds N] [--json]

The anchor is the one DTLS 1.3 server there is: wolfSSL 5.8.4's (``dtls13_peer server``, built
from ../shared/peers/wolfssl-dtls13), which answers every ClientHello1 with a HelloRetryRequest
carrying its own stateless cookie (``wolfSSL_send_hrr_cookie``).  Ours is
``stateless13 serve --dtls`` in each build of the core (bench/builds.py).  Measured in the same
rounds, alternating:

  * HRRs: one UDP socket sends wolfSSL's captured ClientHello1 (x25519, 213 bytes) with 32
    datagrams outstanding and counts the HelloRetryRequests that come back: per second of wall
    time, and per second of the server's CPU (/proc/PID/stat), which a shared machine disturbs
    less.  wolfSSL's server answers the one address it first heard from: so does the load.
  * sizes: the HRR datagram against the ClientHello1 datagram it answers, ours and wolfSSL's,
    for each captured ClientHello (the anti-amplification ratio; at most 1 for ours).
  * loss: handshakes of wolfSSL's client with ours through tests/udp_relay.py at 10, 20 and 30%
    loss (with reordering and duplication), spared datagrams of the application: completion,
    time to complete, and our retransmissions (from our reports).
  * flood: FLOOD spoofed ClientHello1s (500 source ports, each an address to the cookie) at
    FLOOD_RATE a second against ``serve --dtls`` (compiled), wolfSSL clients connecting all the
    while: the server's resident memory before, during and after, the HRRs it sent (its stat
    line), and how the honest clients fared.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from stateless13 import Credential
from tests.servers import build_wolfssl_dtls_peer  # the tests' peer and relay, the same
from tests.udp_relay import UdpRelay

from .builds import BUILDS, builds, worker_env
from .common import (
    ROOT,
    Progress,
    Report,
    Row,
    Table,
    alternate,
    cpu_seconds,
    emit,
    parser,
    private_key_pem,
    stop_process,
)

HOST = "127.0.0.1"
HELLOS = {
    name: ROOT / "tests" / "data" / "dtls" / f"ch1_{name}.bin"
    for name in ("x25519", "none", "secp384r1")
}
WINDOW = 32  # datagrams outstanding
LOSSES = ((0.1, 0.2, 0.1), (0.2, 0.2, 0.2), (0.3, 0.1, 0.1))  # drop, reorder, duplicate
FLOOD = 100_000
FLOOD_RATE = 20_000


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


class Process:
    """A server process on a UDP port, stopped by its PID."""

    def __init__(
        self, argv: list[str], port: int, log: Path | None = None, **popen: object
    ) -> None:
        self.port = port
        if log is None:
            self.process = subprocess.Popen(  # type: ignore[call-overload]
                argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **popen
            )
            return
        with log.open("w") as stderr:  # the child has its own descriptor
            self.process = subprocess.Popen(  # type: ignore[call-overload]
                argv, stdout=subprocess.DEVNULL, stderr=stderr, **popen
            )

    def cpu(self) -> float:
        return cpu_seconds(self.process.pid)

    def stop(self) -> None:
        stop_process(self.process)


def ours(
    tree: Path, cert: Path, key: Path, log: Path | None = None, stats_interval: float = 0
) -> Process:
    """``serve --dtls`` in the build ``tree``; its log lines (one per association, and the stat
    line every ``stats_interval`` seconds and at the end, if not 0) go to ``log``, if given."""
    port = free_udp_port()
    argv = [sys.executable, "-m", "stateless13", "serve", "--dtls"]
    argv += ["--host", HOST, "--port", str(port), "--cert", str(cert), "--key", str(key)]
    argv += ["--stats-interval", str(stats_interval), *(["--quiet"] if log is None else [])]
    return Process(argv, port, log, cwd=tree, env=worker_env(tree))


def wolfssl(binary: Path, cert: Path, key: Path) -> Process:
    port = free_udp_port()
    return Process([str(binary), "server", str(port), str(cert), str(key)], port)


def first_answer(sock: socket.socket, hello: bytes, timeout: float = 20.0) -> bytes:
    """The answer to ``hello`` on the connected ``sock``, sent again until the server is up
    (wolfSSL's server then serves this socket's address, and only it)."""
    deadline = time.monotonic() + timeout
    sock.settimeout(0.2)
    while time.monotonic() < deadline:
        with contextlib.suppress(ConnectionRefusedError):  # not bound yet
            sock.send(hello)
        with contextlib.suppress(TimeoutError, ConnectionRefusedError):
            return sock.recv(4096)
    raise SystemExit(f"no HRR from the server at {sock.getpeername()}")


def hrr_rate(server: Process, seconds: float) -> tuple[float, float]:
    """(HRRs per wall second, HRRs per server CPU-second) with WINDOW datagrams outstanding."""
    hello = HELLOS["x25519"].read_bytes()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((HOST, server.port))
        first_answer(sock, hello)
        sock.settimeout(0.05)
        answered = outstanding = 0
        cpu_before = server.cpu()
        started = time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds:
            while outstanding < WINDOW:
                sock.send(hello)
                outstanding += 1
            try:
                sock.recv(4096)
                answered += 1
                outstanding -= 1
            except TimeoutError:
                outstanding = 0  # lost on the way (a full socket buffer): send a new window
        cpu = server.cpu() - cpu_before
        with contextlib.suppress(OSError):  # the rest of the window, not counted
            while True:
                sock.recv(4096)
    return answered / elapsed, answered / cpu if cpu > 0 else 0.0


def hrr_size(port: int, hello: bytes) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((HOST, port))
        return len(first_answer(sock, hello))


def lossy_handshakes(
    binary: Path, tree: Path, cert: Path, key: Path, count: int
) -> list[list[object]]:
    rows: list[list[object]] = []
    log = tree / "lossy.log"
    server = ours(tree, cert, key, log)
    retransmitted = 0  # ours so far, from the associations' log lines
    try:
        for drop, reorder, duplicate in LOSSES:
            times: list[float] = []
            completed = lost = 0
            for seed in range(count):
                with UdpRelay(
                    (HOST, server.port),
                    drop=drop,
                    reorder=reorder,
                    duplicate=duplicate,
                    seed=seed,
                    impair=_handshake_datagram,
                ) as relay:
                    started = time.monotonic()
                    done = subprocess.run(
                        [str(binary), "client", HOST, str(relay.address[1]), "--group", "none"],
                        capture_output=True,
                        text=True,
                        timeout=90,
                    )
                    if done.returncode == 0:
                        completed += 1
                        times.append(time.monotonic() - started)
                    lost += relay.counts["up", "dropped"] + relay.counts["down", "dropped"]
            time.sleep(0.5)  # the last association's log line
            total = sum(map(int, re.findall(r" retransmissions=(\d+)", log.read_text())))
            ours_now, retransmitted = total - retransmitted, total
            rows.append(
                [
                    f"{drop:.0%} lost, {reorder:.0%} reordered, {duplicate:.0%} duplicated",
                    f"{completed}/{count}",
                    f"{statistics.median(times):.2f}" if times else "-",
                    f"{max(times):.2f}" if times else "-",
                    lost,
                    ours_now,
                ]
            )
    finally:
        server.stop()
    return rows


def resident_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def flood(binary: Path, tree: Path, cert: Path, key: Path, count: int) -> list[list[object]]:
    """``count`` spoofed ClientHello1s at FLOOD_RATE a second, honest clients meanwhile."""
    hello = HELLOS["x25519"].read_bytes()
    log = tree / "flood.log"
    server = ours(tree, cert, key, log, stats_interval=3600)  # its stat line at the end
    port, pid = server.port, server.process.pid
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((HOST, port))
            first_answer(probe, hello)
        before = resident_bytes(pid)
        sockets = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(500)]
        honest: list[float] = []
        failed = 0
        peak = before
        started = time.monotonic()
        sent = 0
        next_client = started + 0.5
        while sent < count:
            for sock in sockets:
                sock.sendto(hello, (HOST, port))
            sent += len(sockets)
            now = time.monotonic()
            if now >= next_client:  # an honest client, while the flood goes on
                client_started = time.monotonic()
                done = subprocess.run(
                    [str(binary), "client", HOST, str(port), "--group", "none"],
                    capture_output=True,
                    timeout=60,
                    check=False,
                )
                if done.returncode == 0:
                    honest.append(time.monotonic() - client_started)
                else:
                    failed += 1
                peak = max(peak, resident_bytes(pid))
                next_client = time.monotonic() + 0.5
            time.sleep(max(0.0, started + sent / FLOOD_RATE - time.monotonic()))
        elapsed = time.monotonic() - started
        for sock in sockets:
            sock.close()
        time.sleep(1)
        after = resident_bytes(pid)
    finally:
        server.stop()
    hrrs = re.search(r"hrr_sent=(\d+)", log.read_text())
    return [
        [
            f"{sent:,} in {elapsed:.1f} s",
            hrrs.group(1) if hrrs else "?",
            f"{before / 2**20:.1f}",
            f"{peak / 2**20:.1f}",
            f"{after / 2**20:.1f}",
            f"{len(honest)}/{len(honest) + failed}",
            f"{statistics.median(honest) * 1000:.0f}" if honest else "-",
            f"{max(honest) * 1000:.0f}" if honest else "-",
        ]
    ]


def _handshake_datagram(datagram: bytes) -> bool:
    first = datagram[0]  # spare epoch 3 (tickets, ACKs, the message and its echo)
    return not (first & 0xE0 == 0x20 and first & 0x03 == 3)


@contextlib.contextmanager
def credentials() -> Iterator[tuple[Path, Path]]:
    credential = Credential.self_signed("localhost")
    with tempfile.TemporaryDirectory(prefix="bench-dtls-") as scratch:
        cert, key = Path(scratch) / "cert.pem", Path(scratch) / "key.pem"
        cert.write_bytes(credential.certificate_pem())
        key.write_bytes(private_key_pem(credential.private_key))
        yield cert, key


def run(seconds: float, rounds: int, handshakes: int, progress: bool = True) -> Report:
    report = Report(
        "dtls",
        "DTLS 1.3: HRRs from our stateless listener vs wolfSSL 5.8.4's stateless server",
        {"seconds": seconds, "rounds": rounds, "window": WINDOW, "lossy_handshakes": handshakes},
    )
    with builds() as trees, credentials() as (cert, key):
        binary = build_wolfssl_dtls_peer()
        bar = Progress("dtls", rounds * (len(BUILDS) + 1), enabled=progress)
        per_cpu: dict[str, list[float]] = {name: [] for name in [*BUILDS, "wolfssl"]}

        def runner(name: str) -> float:
            server = (
                wolfssl(binary, cert, key) if name == "wolfssl" else ours(trees[name], cert, key)
            )
            try:
                wall, cpu = hrr_rate(server, seconds)
            finally:
                server.stop()
            per_cpu[name].append(cpu)
            return wall

        runners = {name: functools.partial(runner, name) for name in [*BUILDS, "wolfssl"]}
        results = alternate(runners, rounds, bar)
        bar.close()
        for build in BUILDS:
            report.rows.append(
                Row(
                    f"HRR datagrams/s, {build}",
                    "HRR/s",
                    results[build],
                    "wolfSSL",
                    results["wolfssl"],
                )
            )
            report.rows.append(
                Row(
                    f"HRRs per server CPU-second, {build}",
                    "HRR/cpu-s",
                    per_cpu[build],
                    "wolfSSL",
                    per_cpu["wolfssl"],
                )
            )

        sizes: list[list[object]] = []
        server = ours(trees["compiled"], cert, key)
        try:
            for name, path in HELLOS.items():
                hello = path.read_bytes()
                anchor = wolfssl(binary, cert, key)
                try:
                    theirs = hrr_size(anchor.port, hello)
                finally:
                    anchor.stop()
                mine = hrr_size(server.port, hello)
                sizes.append(
                    [
                        name,
                        len(hello),
                        mine,
                        f"{mine / len(hello):.2f}",
                        theirs,
                        f"{theirs / len(hello):.2f}",
                    ]
                )
        finally:
            server.stop()
        report.tables.append(
            Table(
                "HRR datagram / ClientHello1 datagram (bytes), per captured wolfSSL ClientHello",
                ["ClientHello1", "CH1 B", "ours B", "ours ratio", "wolfSSL B", "wolfSSL ratio"],
                sizes,
            )
        )
        if handshakes:
            report.tables.append(
                Table(
                    f"wolfSSL's client with ours through a lossy relay ({handshakes} handshakes"
                    " each, seeds 0..; application datagrams spared)",
                    [
                        "path",
                        "completed",
                        "median s",
                        "max s",
                        "datagrams lost",
                        "our retransmissions",
                    ],
                    lossy_handshakes(binary, trees["compiled"], cert, key, handshakes),
                )
            )
        report.tables.append(
            Table(
                f"a spoofed ClientHello1 flood at {FLOOD_RATE:,}/s from 500 ports against serve"
                " --dtls (compiled), wolfSSL clients every 0.5 s meanwhile",
                ["flood", "HRRs sent", "RSS MiB before", "peak", "after", "honest completed",
                 "median ms", "max ms"],
                flood(binary, trees["compiled"], cert, key, max(5_000, round(FLOOD * seconds / 2))),
            )
        )  # fmt: skip
    report.notes.append(
        "One load socket, as wolfSSL's server serves the first address it hears from; ours binds"
        " each cookie to that address and port too.  The machine is shared: the per-CPU-second"
        " rows are the steadier ones."
    )
    return report


def main(argv: list[str] | None = None) -> int:
    options = parser("dtls", __doc__ or "")
    options.add_argument(
        "--handshakes", type=int, help="lossy handshakes per path (default: 2.5 per --seconds)"
    )
    args = options.parse_args(argv)
    handshakes = args.handshakes
    if handshakes is None:
        handshakes = max(1, round(2.5 * args.seconds))
    emit(run(args.seconds, args.rounds, handshakes, not args.json and not args.quiet), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
