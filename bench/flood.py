"""Adaptive validation: the round trip an idle server saves, and a flood shed as before.

    python -m bench.flood [--seconds S] [--rounds N] [--json]

Three ``python -m stateless13 serve`` processes on loopback, the same certificate, differing
only in ``--validation``: ``hrr`` (the stateless HelloRetryRequest for every client: the
anchor), ``adaptive`` (the default: the HRR only while more than 32 connections are
handshaking) and ``none`` (never).  Measured in the same rounds, alternating the order:

  * idle: one honest client at a time (Python ``ssl``) through a relay that delays every
    segment by 10 ms each way (a 20 ms round trip, a nearby client), handshake time in ms.
    The stateless HRR costs one more round trip; an idle adaptive server should not.
  * flood: ``--workers`` processes x ``--threads`` threads each send a captured ClientHello1,
    read the server's first record and reset the connection, over and over (a client that takes
    the HRR and leaves, which is what a flood of abandoned handshakes looks like).  Answers per
    second of wall time and per second of the server's CPU: with enough connections at once
    (the default 2 x 48 = 96 > 32) the adaptive server goes stateless and sheds like ``hrr``.
  * QUIC: first Initials of distinct new clients sent as fast as one process can
    (``serve --quic``), never answered (spoofed sources behave so): replies per second and per
    server CPU-second, and the connections each server created.  ``adaptive`` answers the
    first 33 with connections, then the HRR, and Retries once new clients come faster than
    3,000 a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import re
import socket
import ssl
import statistics
import sys
import threading
import time
from collections.abc import Iterator

from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

from stateless13 import ServerConfig

from .common import (
    Progress,
    Report,
    Row,
    captured_client_hellos,
    emit,
    parser,
    pem_files,
    private_key_pem,
    python_ssl_client_context,
)
from .sockets import HOST, Server, _load_worker

VALIDATIONS = ("hrr", "adaptive", "none")
DELAY = 0.010  # seconds each way through the relay
QUIC_INITIALS_PER_SECOND = 3000  # distinct first Initials per QUIC round, per --seconds


@contextlib.contextmanager
def servers(cert: str, key: str, *extra: str) -> Iterator[dict[str, Server]]:
    base = [sys.executable, "-m", "stateless13", "serve", "--host", HOST, "--port", "0"]
    base += ["--mode", "echo", "--quiet", "--cert", cert, "--key", key, *extra]
    started: dict[str, Server] = {}
    try:
        for validation in VALIDATIONS:
            started[validation] = Server(validation, [*base, "--validation", validation])
        yield started
    finally:
        for server in started.values():
            server.stop()


# ---------------------------------------------------------------------------------------------
# Idle: one client at a time through a delaying relay


async def _relay(port: int, ready: threading.Event, holder: list[int]) -> None:
    """Forward every chunk after DELAY seconds, each direction in order (a round trip of
    2 x DELAY on top of loopback's)."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                if not data:
                    writer.close()
                    return
                writer.write(data)

        task = asyncio.ensure_future(deliver())
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                queue.put_nowait((time.monotonic() + DELAY, data))
        queue.put_nowait((time.monotonic() + DELAY, b""))
        with contextlib.suppress(OSError):
            await task

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(HOST, port)
        except OSError:
            writer.close()
            return
        for sock in (writer, up_writer):
            sock.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(accept, HOST, 0)
    holder.append(server.sockets[0].getsockname()[1])
    ready.set()
    async with server:
        await server.serve_forever()


def relay(port: int) -> int:
    """A delaying relay to ``port`` in a daemon thread; its own port."""
    ready, holder = threading.Event(), list[int]()

    def run() -> None:
        asyncio.run(_relay(port, ready, holder))

    threading.Thread(target=run, daemon=True).start()
    if not ready.wait(10):
        raise SystemExit("the relay did not start")
    return holder[0]


def idle_handshake_ms(port: int, context: ssl.SSLContext, count: int) -> float:
    """Median milliseconds from connect to a completed client handshake, one at a time."""
    times = []
    for _ in range(count):
        started = time.perf_counter()
        raw = socket.create_connection((HOST, port), timeout=10)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            tls = context.wrap_socket(raw, server_hostname="localhost")
            times.append((time.perf_counter() - started) * 1000)
            tls.close()
        finally:
            raw.close()
        time.sleep(0.02)  # idle between clients: nothing in progress when the next arrives
    return statistics.median(times)


# ---------------------------------------------------------------------------------------------
# QUIC: first Initials from many new clients


def first_initials(count: int) -> list[bytes]:
    """Distinct clients' first Initial datagrams (aioquic's client, each its own DCID)."""
    configuration = QuicConfiguration(
        is_client=True, alpn_protocols=["h3"], verify_mode=ssl.CERT_NONE, server_name="localhost"
    )
    initials = []
    for _ in range(count):
        client = QuicConnection(configuration=configuration)
        client.connect((HOST, 443), now=0.0)
        initials.append(client.datagrams_to_send(now=0.0)[0][0])
    return initials


def quic_flood(port: int, initials: list[bytes]) -> tuple[int, float]:
    """Send every Initial once, as fast as possible, from one socket; (replies, seconds from
    the first Initial sent to the last reply received)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.setblocking(False)
    replies = 0
    started = last = time.perf_counter()
    for datagram in initials:
        sock.sendto(datagram, (HOST, port))
        with contextlib.suppress(BlockingIOError):
            while sock.recv(65536):
                replies, last = replies + 1, time.perf_counter()
    while time.perf_counter() - last < 0.5:  # the answers still on their way
        try:
            sock.recv(65536)
            replies, last = replies + 1, time.perf_counter()
        except BlockingIOError:
            time.sleep(0.002)
    sock.close()
    return replies, last - started


def _quic_connections(stderr: str) -> int:
    """Connections the server created, from its stat lines (the last one)."""
    found = re.findall(r"stats quic:.* open=(\d+)", stderr)
    return int(found[-1]) if found else -1


# ---------------------------------------------------------------------------------------------


def run(
    seconds: float, rounds: int, workers: int, threads: int, *, progress: bool = True
) -> Report:
    config = ServerConfig.self_signed("localhost")
    credential = config.credentials[0]
    hellos = list(captured_client_hellos().values())
    context = python_ssl_client_context()
    idle: dict[str, list[float]] = {v: [] for v in VALIDATIONS}
    flood_wall: dict[str, list[float]] = {v: [] for v in ("hrr", "adaptive")}
    flood_cpu: dict[str, list[float]] = {v: [] for v in ("hrr", "adaptive")}
    quic_rate: dict[str, list[float]] = {v: [] for v in ("hrr", "adaptive")}
    quic_cpu: dict[str, list[float]] = {v: [] for v in ("hrr", "adaptive")}
    idle_count = max(5, int(seconds * 20))
    per_round = max(300, int(seconds * QUIC_INITIALS_PER_SECOND))
    bar = Progress("flood", rounds * 7, enabled=progress)
    initials = first_initials(per_round * 2 * rounds)
    with (
        pem_files(credential.certificate_pem(), private_key_pem(credential.private_key)) as (
            cert,
            key,
        ),
        servers(cert, key, "--max-handshakes", "4096") as tcp,
        multiprocessing.get_context("spawn").Pool(workers) as pool,
    ):
        relays = {name: relay(server.port) for name, server in tcp.items()}
        for name in VALIDATIONS:  # warm-up: imports, caches
            idle_handshake_ms(relays[name], context, 2)
        # Every idle round first: after a flood the adaptive server stays stateless for
        # PressureGauge.hold (5 s), which is the point, but would not be an idle server.
        for index in range(rounds):
            order = VALIDATIONS[index % 3 :] + VALIDATIONS[: index % 3]
            for name in order:
                idle[name].append(idle_handshake_ms(relays[name], context, idle_count))
                bar.step(f"round {index + 1}/{rounds} idle {name}")
        for index in range(rounds):
            for name in ("hrr", "adaptive")[:: 1 if index % 2 == 0 else -1]:
                server = tcp[name]
                cpu_before = server.cpu()
                jobs = [("first answers", server.port, seconds, threads, hellos)] * workers
                results = pool.map(_load_worker, jobs)
                cpu = server.cpu() - cpu_before
                done = sum(r[0] for r in results)
                flood_wall[name].append(sum(r[0] / r[2] for r in results))
                flood_cpu[name].append(done / cpu if cpu > 0 else 0.0)
                bar.step(f"round {index + 1}/{rounds} flood {name}")
    quic_connections: dict[str, int] = {}
    quic_extra = ("--quic", "--stats-interval", "0.5")
    with (
        pem_files(credential.certificate_pem(), private_key_pem(credential.private_key)) as (
            cert,
            key,
        ),
        contextlib.ExitStack() as stack,
    ):
        base = [sys.executable, "-m", "stateless13", "serve", "--host", HOST, "--port", "0"]
        base += ["--cert", cert, "--key", key, *quic_extra]
        quic = {
            name: stack.enter_context(_served([*base, "--validation", name]))
            for name in ("hrr", "adaptive")
        }
        position = 0
        for index in range(rounds):
            for name in ("hrr", "adaptive")[:: 1 if index % 2 == 0 else -1]:
                server = quic[name]
                batch = initials[position : position + per_round]
                position += per_round
                cpu_before = server.cpu()
                replies, elapsed = quic_flood(server.port, batch)
                cpu = server.cpu() - cpu_before
                quic_rate[name].append(replies / elapsed)
                quic_cpu[name].append(replies / cpu if cpu > 0 else 0.0)
                bar.step(f"round {index + 1}/{rounds} quic {name}")
        time.sleep(1.0)  # one more stat line
        for name, server in quic.items():
            server.stop()
            quic_connections[name] = _quic_connections("".join(server.log))
    bar.close()

    report = Report(
        "flood",
        "Adaptive validation: an idle server's handshake, and floods, vs the HRR always",
        {
            "seconds_per_round": seconds,
            "rounds": rounds,
            "workers": workers,
            "threads": threads,
            "relay_delay_ms_each_way": DELAY * 1000,
            "quic_initials_per_round": per_round,
        },
    )
    anchor = "--validation hrr"
    for name in ("adaptive", "none"):
        row = Row(f"idle handshake: {name}", "ms", idle[name], anchor, idle["hrr"])
        row.higher_is_better = False
        report.rows.append(row)
    report.rows.append(
        Row("TCP flood: adaptive", "answers/s", flood_wall["adaptive"], anchor, flood_wall["hrr"])
    )
    report.rows.append(
        Row(
            "TCP flood: adaptive, per server CPU-second",
            "answers/CPU-s",
            flood_cpu["adaptive"],
            anchor,
            flood_cpu["hrr"],
        )
    )
    report.rows.append(
        Row("QUIC flood: adaptive", "replies/s", quic_rate["adaptive"], anchor, quic_rate["hrr"])
    )
    report.rows.append(
        Row(
            "QUIC flood: adaptive, per server CPU-second",
            "replies/CPU-s",
            quic_cpu["adaptive"],
            anchor,
            quic_cpu["hrr"],
        )
    )
    report.notes.append(
        f"idle: {idle_count} handshakes per round, one at a time, through a relay adding "
        f"{DELAY * 1000:g} ms each way; the HRR adds one round trip ({2 * DELAY * 1000:g} ms)."
    )
    report.notes.append(
        f"TCP flood: {workers} x {threads} connections at once sending a captured ClientHello1 "
        "and resetting after the first record."
    )
    report.notes.append(
        "QUIC flood: connections the servers held at the end (stat line): "
        + ", ".join(f"{name} {count}" for name, count in quic_connections.items())
    )
    return report


@contextlib.contextmanager
def _served(argv: list[str]) -> Iterator[Server]:
    server = Server(argv[-1], argv)
    try:
        yield server
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    options = parser("flood", __doc__.splitlines()[0])
    options.add_argument("--workers", type=int, default=2, help="flood processes")
    options.add_argument("--threads", type=int, default=48, help="connections at once per process")
    args = options.parse_args(argv)
    report = run(args.seconds, args.rounds, args.workers, args.threads, progress=not args.quiet)
    emit(report, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
