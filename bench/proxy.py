"""The HTTP/3 front door against its backend reached directly: requests/s, MB/s, and memory per
idle connection.

    python -m bench.proxy [--seconds S] [--rounds N] [--clients N] [--connections N]
                          [--streams N] [--idle N] [--json]

Processes, all on 127.0.0.1:
  * the backend: a small asyncio HTTP/1.1 server (``python -m bench.proxy --backend``; keep-alive,
    ``GET /bytes/N`` answers N bytes, a POST's body is read and dropped);
  * ours: ``python -m stateless13 serve --quic --proxy-to http://127.0.0.1:BACKEND`` (``--validation
    none``: the load's aioquic clients cannot answer a HelloRetryRequest; the HRR's cost is per
    connection, measured by bench.hrr_rate and bench.flood), each request on a new connection to
    the backend (transports/quic_proxy.py);
  * anchor: the same requests sent to the backend directly, HTTP/1.1 over TCP, keep-alive, no TLS.
One core: the server under test (ours, or the backend when reached directly) is pinned to CPU 0
with ``os.sched_setaffinity``; the load generator (``--clients`` processes, each ``--connections``
connections with ``--streams`` requests in flight on each: aioquic HTTP/3 clients for ours, as
many HTTP/1.1 connections for the anchor) and the backend behind ours share the other CPUs.
Each row gives the rate over wall time and per CPU-second of the server under test
(/proc/PID/stat), which depends less on how much CPU the load generator left it.  Cases: GET of
1 KiB (requests/s), GET of 1 MiB and POST of 1 MiB (MB/s).

Also: aioquic's own ``serve()`` answering the same requests by itself (no stateless front, its own
TLS, no backend), the floor HTTP/3 on aioquic sets, in two extra tables.

Memory: ``--idle`` aioquic connections, each past its handshake and one request, held open; the
server's RSS growth divided by their number.  Anchor: aioquic's own ``serve()`` answering the
same request by itself, in the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import ssl
import sys
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from aioquic.asyncio import serve
from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ProtocolNegotiated, QuicEvent

from stateless13 import ServerConfig

from .common import Progress, Report, Row, Table, emit, parser, pem_files, private_key_pem
from .sockets import Server

HOST = "127.0.0.1"  # loopback only
KIB = 1024
MIB = 1 << 20
#: name -> (method, path, request body bytes, unit); the unit says how a case is counted.
CASES: dict[str, tuple[str, str, int, str]] = {
    "GET 1 KiB": ("GET", f"/bytes/{KIB}", 0, "requests/s"),
    "GET 1 MiB": ("GET", f"/bytes/{MIB}", 0, "MB/s"),
    "POST 1 MiB": ("POST", "/sink", MIB, "MB/s"),
}
TIMEOUT = 30.0


# ---------------------------------------------------------------------------------------------
# The backend


async def _backend(port: int) -> None:
    bodies: dict[int, bytes] = {}

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.split(b"\r\n")
                target = lines[0].split(b" ")[1]
                fields = dict(line.split(b":", 1) for line in lines[1:] if b":" in line)
                fields = {name.strip().lower(): value.strip() for name, value in fields.items()}
                if fields.get(b"transfer-encoding", b"").lower() == b"chunked":
                    while size := int((await reader.readline()).split(b";")[0], 16):
                        await reader.readexactly(size + 2)
                    await reader.readline()
                else:
                    left = int(fields.get(b"content-length", b"0"))
                    while left:
                        left -= len(await reader.read(min(left, 65536)))
                size = int(target.rsplit(b"/", 1)[1]) if target.startswith(b"/bytes/") else 2
                body = bodies.setdefault(size, b"x" * size)
                close = fields.get(b"connection", b"").lower() == b"close"
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n"
                    % (size, b"Connection: close\r\n" if close else b"")
                )
                writer.write(body)
                await writer.drain()
                if close:
                    break
        writer.close()

    server = await asyncio.start_server(serve, HOST, port, backlog=1024)
    print(f"backend on {HOST}:{server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


async def _aioquic_server(cert: str, key: str) -> None:
    """aioquic's own serve() answering by itself what the backend answers (``/bytes/N``: N
    bytes; a body is read and dropped): the memory anchor, and HTTP/3's own floor on CPU."""
    bodies: dict[int, bytes] = {}

    class Page(QuicConnectionProtocol):
        h3: H3Connection | None = None
        sizes: dict[int, int]

        def quic_event_received(self, event: QuicEvent) -> None:
            if isinstance(event, ProtocolNegotiated) and event.alpn_protocol in H3_ALPN:
                self.h3, self.sizes = H3Connection(self._quic), {}
            if self.h3 is None:
                return
            for h3_event in self.h3.handle_event(event):
                if not isinstance(h3_event, HeadersReceived | DataReceived):
                    continue
                stream_id = h3_event.stream_id
                if isinstance(h3_event, HeadersReceived) and stream_id not in self.sizes:
                    path = dict(h3_event.headers).get(b":path", b"")
                    self.sizes[stream_id] = (
                        int(path.rsplit(b"/", 1)[1]) if path.startswith(b"/bytes/") else 2
                    )
                if h3_event.stream_ended:
                    size = self.sizes.pop(stream_id, 2)
                    body = bodies.setdefault(size, b"x" * size)
                    self.h3.send_headers(
                        stream_id, [(b":status", b"200"), (b"content-length", b"%d" % size)]
                    )
                    self.h3.send_data(stream_id, body, end_stream=True)
            self.transmit()

    configuration = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN)
    configuration.load_cert_chain(cert, key)
    server = await serve(HOST, 0, configuration=configuration, create_protocol=Page)
    assert server._transport is not None
    port = server._transport.get_extra_info("sockname")[1]
    print(f"aioquic serving h3 on {HOST}:{port}", flush=True)
    await asyncio.Event().wait()


# ---------------------------------------------------------------------------------------------
# The load (in the pool's processes)


def _pin(cpus: set[int]) -> None:
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, cpus)


class _Result:
    def __init__(self) -> None:
        self.requests = 0
        self.bytes = 0


async def _h3_load(
    port: int, case: str, seconds: float, connections: int, streams: int
) -> tuple[int, int, float]:
    method, path, upload, _ = CASES[case]
    configuration = _client_configuration()
    result = _Result()
    body = b"u" * upload
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                connect(HOST, port, configuration=configuration, create_protocol=H3Client)
            )
            for _ in range(connections)
        ]
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + seconds

        async def run(client: Any) -> None:
            while loop.time() < deadline:
                status, size = await client.request(method, path, body)
                if status != b"200":
                    raise RuntimeError(f"{method} {path}: status {status!r}")
                result.requests += 1
                result.bytes += size + upload

        await asyncio.wait_for(
            asyncio.gather(*(run(client) for client in clients for _ in range(streams))),
            seconds + TIMEOUT,
        )
        elapsed = loop.time() - started
    return result.requests, result.bytes, elapsed


class H3Client(QuicConnectionProtocol):
    """aioquic's HTTP/3 client: ``request`` sends one and waits for its (status, body size)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.waiting: dict[int, tuple[asyncio.Future[tuple[bytes, int]], list[Any]]] = {}

    async def request(self, method: str, path: str, body: bytes) -> tuple[bytes, int]:
        stream_id = self._quic.get_next_available_stream_id()
        headers = [
            (b":method", method.encode()),
            (b":scheme", b"https"),
            (b":authority", b"localhost"),
            (b":path", path.encode()),
        ]
        if body:
            headers.append((b"content-length", str(len(body)).encode()))
        self.h3.send_headers(stream_id, headers, end_stream=not body)
        if body:
            self.h3.send_data(stream_id, body, end_stream=True)
        future: asyncio.Future[tuple[bytes, int]] = asyncio.get_running_loop().create_future()
        self.waiting[stream_id] = (future, [b"", 0])
        self.transmit()
        return await future

    def quic_event_received(self, event: QuicEvent) -> None:
        for h3_event in self.h3.handle_event(event):
            if not isinstance(h3_event, HeadersReceived | DataReceived):
                continue
            entry = self.waiting.get(h3_event.stream_id)
            if entry is None:
                continue
            future, state = entry
            if isinstance(h3_event, HeadersReceived):
                state[0] = dict(h3_event.headers).get(b":status", b"")
            else:
                state[1] += len(h3_event.data)
            if h3_event.stream_ended:
                del self.waiting[h3_event.stream_id]
                if not future.done():
                    future.set_result((state[0], state[1]))


def _client_configuration(idle_timeout: float = 60.0) -> QuicConfiguration:
    return QuicConfiguration(
        is_client=True,
        alpn_protocols=["h3"],
        verify_mode=ssl.CERT_NONE,
        server_name="localhost",
        idle_timeout=idle_timeout,
    )


async def _h1_load(
    port: int, case: str, seconds: float, connections: int
) -> tuple[int, int, float]:
    method, path, upload, _ = CASES[case]
    head = f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n".encode()
    request = head + (b"Content-Length: %d\r\n\r\n" % upload if upload else b"\r\n")
    body = b"u" * upload
    result = _Result()
    streams = [await asyncio.open_connection(HOST, port) for _ in range(connections)]
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + seconds

    async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while loop.time() < deadline:
            writer.write(request + body)
            await writer.drain()
            response = await reader.readuntil(b"\r\n\r\n")
            length = int(response.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            result.requests += 1
            result.bytes += length + upload

    await asyncio.wait_for(asyncio.gather(*(run(r, w) for r, w in streams)), seconds + TIMEOUT)
    elapsed = loop.time() - started
    for _, writer in streams:
        writer.close()
    return result.requests, result.bytes, elapsed


def _load_worker(job: tuple[str, int, str, float, int, int, list[int]]) -> tuple[int, int, float]:
    """(requests, bytes, seconds) of one load process."""
    kind, port, case, seconds, connections, streams, cpus = job
    _pin(set(cpus))
    if kind == "h3":
        return asyncio.run(_h3_load(port, case, seconds, connections, streams))
    return asyncio.run(_h1_load(port, case, seconds, connections * streams))


#: Connections opened (and kept) before the server's RSS is first read: a server's first
#: connections pay for more than themselves (lazy imports, caches, the allocator's arenas).
WARM_CONNECTIONS = 5


def _idle_worker(port: int, count: int, cpus: list[int], pipe: Connection) -> None:
    """Open WARM_CONNECTIONS HTTP/3 connections and say so; when told, ``count`` more; say so
    again and hold them all until told.  Each is past its handshake and one request."""
    _pin(set(cpus))

    async def hold() -> None:
        configuration = _client_configuration(idle_timeout=120.0)
        loop = asyncio.get_running_loop()
        async with contextlib.AsyncExitStack() as stack:
            for batch in (WARM_CONNECTIONS, count):
                for _ in range(batch):
                    client = await stack.enter_async_context(
                        connect(HOST, port, configuration=configuration, create_protocol=H3Client)
                    )
                    assert isinstance(client, H3Client)
                    await client.request("GET", f"/bytes/{KIB}", b"")
                pipe.send("open")
                await loop.run_in_executor(None, pipe.recv)

    asyncio.run(hold())
    pipe.close()


# ---------------------------------------------------------------------------------------------
# Measuring


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def _cpus() -> tuple[list[int], list[int]]:
    """(the server's CPU, the others'): one CPU alone for the server under test."""
    cpus = sorted(os.sched_getaffinity(0))
    return cpus[:1], (cpus[1:] or cpus[:1])


@contextlib.contextmanager
def _servers(
    cert: str, key: str, names: tuple[str, ...], backend: int = 0
) -> Iterator[dict[str, Server]]:
    """Fresh server processes: ``backend``, ``ours`` (in front of the one started, or of
    ``backend``'s port), ``aioquic``."""
    started: dict[str, Server] = {}
    try:
        if "backend" in names:
            started["backend"] = Server(
                "backend", [sys.executable, "-m", "bench.proxy", "--backend"]
            )
            backend = started["backend"].port
        if "ours" in names:
            started["ours"] = Server(
                "ours",
                [
                    sys.executable, "-m", "stateless13", "serve", "--quic", "--host", HOST,
                    "--proxy-to", f"http://{HOST}:{backend}", "--validation", "none",
                    "--quiet", "--stats-interval", "0", "--cert", cert, "--key", key,
                ],
            )  # fmt: skip
        if "aioquic" in names:
            started["aioquic"] = Server(
                "aioquic",
                [sys.executable, "-m", "bench.proxy", "--aioquic-server", "--cert", cert,
                 "--key", key],
            )  # fmt: skip
        yield started
    finally:
        for server in started.values():
            server.stop()


def _measure(
    pool: Any, kind: str, port: int, case: str, args: argparse.Namespace, cpus: list[int],
    watched: dict[str, Server],
) -> tuple[float, float, dict[str, float]]:  # fmt: skip
    """The case's rate over wall time, per CPU-second of ``watched["server"]``, and the
    CPU-seconds per request of each watched process."""
    before = {name: server.cpu() for name, server in watched.items()}
    job = (kind, port, case, args.seconds, args.connections, args.streams, cpus)
    results = pool.map(_load_worker, [job] * args.clients)
    spent = {name: server.cpu() - before[name] for name, server in watched.items()}
    requests = sum(r[0] for r in results)
    if CASES[case][3] == "requests/s":
        rate, count = sum(r[0] / r[2] for r in results), float(requests)
    else:
        rate, count = sum(r[1] / r[2] for r in results) / 1e6, sum(r[1] for r in results) / 1e6
    per_cpu = count / spent["server"] if spent["server"] > 0 else 0.0
    return rate, per_cpu, {name: cpu / max(1, requests) for name, cpu in spent.items()}


def _idle_memory(server: Server, count: int, cpus: list[int]) -> float:
    """Bytes of RSS per idle HTTP/3 connection held on ``server`` (a fresh process)."""
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    worker = context.Process(target=_idle_worker, args=(server.port, count, cpus, theirs))
    worker.start()

    def opened() -> int:
        if not ours.poll(TIMEOUT + count * 0.2):
            raise SystemExit(f"{server.name}: idle connections did not open in time")
        ours.recv()
        time.sleep(0.3)  # the last acknowledgements
        return _rss(server.process.pid)

    try:
        before = opened()
        ours.send("more")
        after = opened()
    finally:
        ours.send("close")
        worker.join(TIMEOUT)
        if worker.is_alive():
            worker.kill()
    return (after - before) / count


def run(args: argparse.Namespace, *, progress: bool = True) -> Report:
    config = ServerConfig.self_signed("localhost")
    credential = config.credentials[0]
    server_cpus, other_cpus = _cpus()
    bar = Progress("proxy", args.rounds * (3 * len(CASES) + 2), enabled=progress)
    wall: dict[tuple[str, str], list[float]] = {}
    per_cpu: dict[tuple[str, str], list[float]] = {}
    cpu_per_request: dict[tuple[str, str], list[float]] = {}
    memory: dict[str, list[float]] = {"ours": [], "aioquic": []}
    with (
        pem_files(credential.certificate_pem(), private_key_pem(credential.private_key)) as (
            cert,
            key,
        ),
        _servers(cert, key, ("backend", "ours", "aioquic")) as running,
        multiprocessing.get_context("spawn").Pool(args.clients) as pool,
    ):
        backend, ours, alone = running["backend"], running["ours"], running["aioquic"]
        for kind, port in (("h3", ours.port), ("h1", backend.port), ("h3", alone.port)):
            pool.map(
                _load_worker, [(kind, port, "GET 1 KiB", 0.05, 1, 1, other_cpus)] * args.clients
            )
        for index in range(args.rounds):
            for case in CASES:
                plans = [("ours", "h3"), ("anchor", "h1"), ("aioquic", "h3")]
                shift = index % len(plans)
                for name, kind in plans[shift:] + plans[:shift]:
                    # The server under test alone on its CPU, everything else elsewhere.
                    under_test = {"ours": ours, "anchor": backend, "aioquic": alone}[name]
                    for process in (ours, backend, alone):
                        cpus = server_cpus if process is under_test else other_cpus
                        os.sched_setaffinity(process.process.pid, set(cpus))
                    watched = {"server": under_test}
                    if name == "ours":
                        watched["backend"] = backend
                    port = under_test.port
                    rate, cpu_rate, costs = _measure(
                        pool, kind, port, case, args, other_cpus, watched
                    )
                    wall.setdefault((case, name), []).append(rate)
                    per_cpu.setdefault((case, name), []).append(cpu_rate)
                    for who, cost in costs.items():
                        cpu_per_request.setdefault((case, f"{name} {who}"), []).append(cost)
                    bar.step(f"round {index + 1}/{args.rounds} {case} {name}")
            names = ["ours", "aioquic"]
            for name in names[index % 2 :] + names[: index % 2]:
                # A fresh process each time: RSS does not shrink back after the load.
                with _servers(cert, key, (name,), backend.port) as fresh:
                    os.sched_setaffinity(fresh[name].process.pid, set(server_cpus))
                    memory[name].append(_idle_memory(fresh[name], args.idle, other_cpus))
                bar.step(f"round {index + 1}/{args.rounds} idle connections {name}")
    bar.close()

    report = Report(
        "proxy",
        "HTTP/3 front door (--quic --proxy-to) vs its HTTP/1.1 backend reached directly",
        {
            "seconds_per_round": args.seconds,
            "rounds": args.rounds,
            "clients": args.clients,
            "connections": args.connections,
            "streams": args.streams,
            "idle_connections": args.idle,
            "server_cpu": server_cpus[0],
        },
    )
    anchor_name = "backend directly (HTTP/1.1, no TLS)"
    for case, (_, _, _, unit) in CASES.items():
        report.rows.append(
            Row(f"{case}: front door", unit, wall[(case, "ours")], anchor_name,
                wall[(case, "anchor")])
        )  # fmt: skip
        report.rows.append(
            Row(
                f"{case}: front door per server CPU-second",
                unit.replace("/s", "/CPU-s"),
                per_cpu[(case, "ours")],
                anchor_name,
                per_cpu[(case, "anchor")],
            )
        )
    report.rows.append(
        Row(
            "memory per idle HTTP/3 connection (RSS)",
            "bytes",
            memory["ours"],
            "aioquic serve() answering alone",
            memory["aioquic"],
            higher_is_better=False,
        )
    )

    def median(values: list[float]) -> float:
        return sorted(values)[len(values) // 2]

    report.tables.append(
        Table(
            "Where the front door's time goes: server CPU µs per request (medians)",
            [
                "case",
                "front door",
                "aioquic serve() answering alone",
                "backend behind the front door",
                "backend reached directly",
            ],
            [
                [case]
                + [
                    f"{1e6 * median(cpu_per_request[(case, who)]):,.0f}"
                    for who in ("ours server", "aioquic server", "ours backend", "anchor server")
                ]
                for case in CASES
            ],
        )
    )
    alone_rows = []
    for case, (_, _, _, unit) in CASES.items():
        wall_rate, cpu_rate = median(wall[(case, "aioquic")]), median(per_cpu[(case, "aioquic")])
        alone_rows.append([case, unit, f"{wall_rate:,.1f}", f"{cpu_rate:,.1f}"])
    report.tables.append(
        Table(
            "aioquic serve() answering alone (the same load, its own TLS, no backend)",
            ["case", "unit", "wall", "per server CPU-second"],
            alone_rows,
        )
    )
    report.notes.append(
        f"{os.cpu_count()} CPUs: the server under test pinned to CPU {server_cpus[0]}, the load "
        f"generator and the backend behind ours on {other_cpus}; ours runs aioquic (pure Python "
        "QUIC) and h11, the backend is plain asyncio.  Ours opens a backend connection per "
        "request (Connection: close); the direct clients keep theirs alive."
    )
    report.notes.append(
        "--validation none for ours: aioquic's client cannot take a HelloRetryRequest; the "
        "stateless HRR costs once per connection, not per request."
    )
    return report


def main(argv: list[str] | None = None) -> int:
    options = parser("proxy", __doc__.splitlines()[0])
    options.add_argument("--clients", type=int, default=2, help="load-generator processes")
    options.add_argument("--connections", type=int, default=2, help="connections per load process")
    options.add_argument("--streams", type=int, default=4, help="requests in flight each")
    options.add_argument("--idle", type=int, default=50, help="idle connections held (memory)")
    options.add_argument("--backend", action="store_true", help=argparse.SUPPRESS)
    options.add_argument("--aioquic-server", action="store_true", help=argparse.SUPPRESS)
    options.add_argument("--cert", help=argparse.SUPPRESS)
    options.add_argument("--key", help=argparse.SUPPRESS)
    args = options.parse_args(argv)
    if args.backend:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_backend(0))
        return 0
    if args.aioquic_server:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_aioquic_server(args.cert, args.key))
        return 0
    report = run(args, progress=not args.quiet)
    emit(report, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
