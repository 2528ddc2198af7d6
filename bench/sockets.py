"""Over real sockets on 127.0.0.1: handshakes/s and HRRs/s of ``python -m stateless13 serve``.

    python -m bench.sockets [--seconds S] [--rounds N] [--workers N] [--threads N] [--json]

The servers run in their own processes, all on loopback, with the same ECDSA P-256 certificate:
  * ours: ``python -m stateless13 serve --mode echo --quiet --validation hrr`` (the stateless
    HRR for every client), and the same with ``--validation none`` (ordinary handshakes);
  * anchor: an asyncio echo server on Python's ``ssl`` (``asyncio.start_server(ssl=...)``, TLS 1.3,
    no session tickets), the way a Python service terminates TLS without stateless13.
The load generator is a pool of ``--workers`` processes with ``--threads`` threads each, every
connection bounded by a 5 s timeout, every run by ``--seconds`` and a count cap.  Two loads:
  * handshakes: Python ``ssl`` clients doing a full handshake, one byte echoed (so the server has
    finished too), then a close;
  * CH1 answers: raw sockets sending a captured ClientHello1 and reading the server's first
    record (ours: the HRR; the anchor has no stateless mode, so its answer is its ServerHello …
    Finished flight, after which it keeps the handshake until the client goes away).
The machine has 2 cores shared by server and load generator: besides connections per second of
wall time, each row gives connections per second of the server process's own CPU time
(/proc/PID/stat), which depends less on how much CPU the load generator took.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import re
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from stateless13 import ServerConfig
from stateless13.messages import HELLO_RETRY_REQUEST_RANDOM

from .common import (
    ROOT,
    Progress,
    Report,
    Row,
    captured_client_hellos,
    cpu_seconds,
    emit,
    parser,
    pem_files,
    private_key_pem,
    python_ssl_client_context,
    stop_process,
)

HOST = "127.0.0.1"  # loopback only, never anything else
MAX_PER_WORKER = 50_000
TIMEOUT = 5.0


# ---------------------------------------------------------------------------------------------
# The anchor server


async def _anchor_server(cert: str, key: str) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.num_tickets = 0
    context.load_cert_chain(cert, key)

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(
        echo, HOST, 0, ssl=context, backlog=4096, ssl_handshake_timeout=10
    )
    port = server.sockets[0].getsockname()[1]
    print(f"anchor serving echo on {HOST}:{port}", flush=True)
    async with server:
        await server.serve_forever()


# ---------------------------------------------------------------------------------------------
# Load generator (runs in the pool's processes)


def _linger_close(sock: socket.socket) -> None:
    # RST instead of FIN: no TIME_WAIT pile-up of client ports across tens of thousands of runs.
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _recv_exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError("server closed early")
        data += chunk
    return data


def _handshake(port: int, context: ssl.SSLContext, hello: bytes) -> bool:
    raw = socket.create_connection((HOST, port), timeout=TIMEOUT)
    try:
        # Finished and the byte would otherwise wait for a delayed ACK (Nagle): 40 ms each.
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        tls = context.wrap_socket(raw, server_hostname="localhost")
        tls.sendall(b"x")
        return tls.recv(1) == b"x"
    finally:
        _linger_close(raw)


def _first_answer(port: int, context: ssl.SSLContext, hello: bytes) -> bool:
    sock = socket.create_connection((HOST, port), timeout=TIMEOUT)
    try:
        sock.sendall(hello)
        header = _recv_exactly(sock, 5)
        body = _recv_exactly(sock, int.from_bytes(header[3:5], "big"))
        return header[0] == 22 and body[0] == 2  # a ServerHello (or HRR) record
    finally:
        _linger_close(sock)


def _is_hrr(port: int, hello: bytes) -> bool:
    sock = socket.create_connection((HOST, port), timeout=TIMEOUT)
    try:
        sock.sendall(hello)
        header = _recv_exactly(sock, 5)
        body = _recv_exactly(sock, int.from_bytes(header[3:5], "big"))
        return body[6:38] == HELLO_RETRY_REQUEST_RANDOM
    finally:
        _linger_close(sock)


def _load_worker(job: tuple[str, int, float, int, list[bytes]]) -> tuple[int, int, float]:
    """(successes, failures, seconds) of one worker process running ``threads`` threads."""
    mode, port, seconds, threads, hellos = job
    context = python_ssl_client_context()
    operation = _handshake if mode == "handshakes" else _first_answer
    counts = [[0, 0] for _ in range(threads)]
    start = time.perf_counter()
    deadline = start + seconds

    def loop(index: int) -> None:
        tally = counts[index]
        number = index
        while time.perf_counter() < deadline and tally[0] + tally[1] < MAX_PER_WORKER // threads:
            hello = hellos[number % len(hellos)]
            number += threads
            try:
                tally[0 if operation(port, context, hello) else 1] += 1
            except (OSError, ssl.SSLError):
                tally[1] += 1

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(c[0] for c in counts), sum(c[1] for c in counts), time.perf_counter() - start


# ---------------------------------------------------------------------------------------------
# Servers under test


class Server:
    """A server process on loopback; its port is read from the first line it prints, its
    stderr kept in ``log`` (read as it comes, so that the pipe never fills)."""

    def __init__(self, name: str, argv: list[str]) -> None:
        self.name = name
        self.process = subprocess.Popen(
            argv,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        assert self.process.stdout is not None and self.process.stderr is not None
        self.log: list[str] = []
        stderr = self.process.stderr
        self._log_reader = threading.Thread(target=lambda: self.log.extend(stderr), daemon=True)
        self._log_reader.start()
        line = self.process.stdout.readline()
        match = re.search(r"on 127\.0\.0\.1:(\d+)", line)
        if match is None:
            self.stop()
            raise SystemExit(f"{name}: could not read the port from {line!r}")
        self.port = int(match.group(1))

    def cpu(self) -> float:
        return cpu_seconds(self.process.pid)

    def stop(self) -> None:
        stop_process(self.process)
        self._log_reader.join(5)


@contextlib.contextmanager
def servers(cert: str, key: str) -> Iterator[dict[str, Server]]:
    ours = [sys.executable, "-m", "stateless13", "serve", "--host", HOST, "--port", "0"]
    ours += ["--mode", "echo", "--quiet", "--cert", cert, "--key", key, "--max-handshakes", "4096"]
    ours += ["--stats-interval", "0"]
    started: dict[str, Server] = {}
    try:
        started["ours"] = Server("ours", [*ours, "--validation", "hrr"])
        started["ours, no stateless"] = Server(
            "ours, no stateless", [*ours, "--validation", "none"]
        )
        anchor = [sys.executable, "-m", "bench.sockets", "--anchor-server"]
        started["anchor"] = Server("anchor", [*anchor, "--cert", cert, "--key", key])
        yield started
    finally:
        for server in started.values():
            server.stop()


def measure(
    pool: Any, server: Server, mode: str, seconds: float, workers: int, threads: int,
    hellos: list[bytes],
) -> tuple[float, float, int]:  # fmt: skip
    """(per second of wall time, per second of the server's CPU time, failures)."""
    cpu_before = server.cpu()
    jobs = [(mode, server.port, seconds, threads, hellos)] * workers
    results = pool.map(_load_worker, jobs)
    cpu = server.cpu() - cpu_before
    done = sum(r[0] for r in results)
    failed = sum(r[1] for r in results)
    wall = sum(r[0] / r[2] for r in results)
    return wall, done / cpu if cpu > 0 else 0.0, failed


def run(
    seconds: float, rounds: int, workers: int, threads: int, *, progress: bool = True
) -> Report:
    config = ServerConfig.self_signed("localhost")
    credential = config.credentials[0]
    hellos = list(captured_client_hellos().values())
    plans = {
        "handshakes": ("ours", "ours, no stateless", "anchor"),
        "first answers": ("ours", "anchor"),
    }
    bar = Progress("sockets", rounds * sum(len(p) for p in plans.values()), enabled=progress)
    wall: dict[tuple[str, str], list[float]] = {}
    per_cpu: dict[tuple[str, str], list[float]] = {}
    failures: dict[tuple[str, str], int] = {}
    with (
        pem_files(credential.certificate_pem(), private_key_pem(credential.private_key)) as (
            cert,
            key,
        ),
        servers(cert, key) as running,
        multiprocessing.get_context("spawn").Pool(workers) as pool,
    ):
        if not all(_is_hrr(running["ours"].port, hello) for hello in hellos):
            raise SystemExit("our server did not answer every captured ClientHello1 with an HRR")
        pool.map(_load_worker, [("handshakes", running["anchor"].port, 0.05, 1, hellos)] * workers)
        for index in range(rounds):
            for mode, names in plans.items():
                shift = index % len(names)
                for name in names[shift:] + names[:shift]:
                    key_ = (mode, name)
                    rate, cpu_rate, failed = measure(
                        pool, running[name], mode, seconds, workers, threads, hellos
                    )
                    wall.setdefault(key_, []).append(rate)
                    per_cpu.setdefault(key_, []).append(cpu_rate)
                    failures[key_] = failures.get(key_, 0) + failed
                    bar.step(f"round {index + 1}/{rounds} {mode} {name}")
    bar.close()

    report = Report(
        "sockets",
        "Sockets on 127.0.0.1: server process vs a load-generator pool (2 cores shared)",
        {"seconds_per_round": seconds, "rounds": rounds, "workers": workers, "threads": threads},
    )
    anchor_name = "asyncio + Python ssl server"
    for mode, names in plans.items():
        unit = "handshakes/s" if mode == "handshakes" else "answers/s"
        for name in names:
            if name == "anchor":
                continue
            label = f"{mode}: {name}" + (" (HRR)" if mode != "handshakes" else "")
            for metric, table, suffix in (
                ("wall", wall, ""),
                ("cpu", per_cpu, " per server CPU-second"),
            ):
                row = Row(
                    label + suffix,
                    unit.replace("/s", "/CPU-s") if metric == "cpu" else unit,
                    table[(mode, name)],
                    anchor_name + (" (first flight)" if mode != "handshakes" else ""),
                    table[(mode, "anchor")],
                )
                failed = failures[(mode, name)] + failures[(mode, "anchor")]
                if failed and metric == "wall":
                    row.note = f"{failed} failed connections over the rounds (both servers)"
                report.rows.append(row)
    report.notes.append(
        "handshakes: Python ssl client, x25519, ECDSA P-256, one byte echoed; ours with the "
        "stateless front answers two ClientHellos per handshake (HRR, then CH2)."
    )
    report.notes.append(
        "first answers: a captured ClientHello1 (all peers in turn) on a raw socket, the first "
        "record read back, then RST.  Ours sends a 204-byte HRR and forgets the client; the "
        "anchor computes and sends its whole first flight and keeps the handshake."
    )
    return report


def main(argv: list[str] | None = None) -> int:
    options = parser("sockets", __doc__.splitlines()[0])
    options.add_argument("--workers", type=int, default=2, help="load-generator processes")
    options.add_argument("--threads", type=int, default=4, help="connections at once per worker")
    options.add_argument("--anchor-server", action="store_true", help=argparse.SUPPRESS)
    options.add_argument("--cert", help=argparse.SUPPRESS)
    options.add_argument("--key", help=argparse.SUPPRESS)
    args = options.parse_args(argv)
    if args.anchor_server:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_anchor_server(args.cert, args.key))
        return 0
    report = run(args.seconds, args.rounds, args.workers, args.threads, progress=not args.quiet)
    emit(report, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
