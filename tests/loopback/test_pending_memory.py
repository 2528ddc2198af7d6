"""What 1,000 clients paused mid-handshake cost our asyncio server, measured with tracemalloc.

The server (``stateless13.transports.asyncio_tcp.serve``) and the clients share this process and
event loop, so tracemalloc sees every allocation the server makes. The clients are raw non-blocking
sockets driven by ``loop.sock_*``; what they keep is their socket object, allocated from this file.

* stateless: each client sends a real ClientHello1, reads the HelloRetryRequest and stops. The
  server must keep no stateless13 object for it, only the socket and the adapter's few bytes.
* ordinary (``validation="none"``): each client sends a ClientHello1 whose key share fits, receives
  the whole server flight (ServerHello ... Finished) and never sends its Finished: an ordinary
  in-progress handshake, which holds a ``ServerConnection`` and its key schedule.

Memory that tracemalloc cannot see is left out of both figures: the kernel's socket buffers and
what OpenSSL and Rust allocate behind ``cryptography`` objects (so the ordinary figure is a lower
bound).
"""

from __future__ import annotations

import asyncio
import gc
import resource
import socket
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from stateless13 import COMPILED, NamedGroup, ServerConfig
from stateless13.connection import ServerConnection
from stateless13.transports.asyncio_tcp import TLSStream, serve
from stateless13.transports.common import ConnectionReport, Limits
from tests.helpers import PythonSSLClient

CLIENTS = 1000
DISTINCT_HELLOS = 50
CONNECTING_AT_ONCE = 100
WARM_UP_CLIENTS = 20
HRR_RANDOM = bytes.fromhex("CF21AD74E59A6111BE1D8C021E65B891C2A211167ABB8C5E079E09E2C8A8339C")
#: Where an allocation was made. Everything but "test clients" is the server's: the clients keep
#: only their socket objects, made in this file (their asyncio calls have all completed).
CATEGORIES = (
    "stateless13",
    "transports",
    "asyncio sockets/buffers",  # streams.py, selector_events.py, selectors.py
    "asyncio other",  # tasks, futures, handles (base_events.py, tasks.py, events.py)
    "other",  # socket.py (accepted sockets), the tasks WeakSet, the interpreter
    "test clients",
)


def category(filename: str) -> str:
    path = filename.replace("\\", "/")
    if "/transports/" in path:  # stateless13/transports/ is the adapters (a link to transports/)
        return "transports"
    if "/stateless13/" in path:
        return "stateless13"
    if path.endswith(("/asyncio/streams.py", "/asyncio/selector_events.py", "/selectors.py")):
        return "asyncio sockets/buffers"
    if "/asyncio/" in path:
        return "asyncio other"
    if path == __file__.replace("\\", "/"):
        return "test clients"
    return "other"


@dataclass
class Measurement:
    mode: str
    clients: int
    bytes_by_category: dict[str, int] = field(default_factory=dict)
    server_connections: int = 0  # stateless13.connection.ServerConnection instances while paused
    stateless13_objects: int = 0  # instances of any stateless13 class, beyond the baseline
    seconds: float = 0.0

    def per_client(self, name: str) -> float:
        return self.bytes_by_category.get(name, 0) / self.clients

    @property
    def total_per_client(self) -> float:
        return sum(self.bytes_by_category.values()) / self.clients

    @property
    def server_per_client(self) -> float:
        return self.total_per_client - self.per_client("test clients")

    def describe(self) -> str:
        parts = [f"{name} {self.per_client(name):.0f}" for name in CATEGORIES]
        return (
            f"{self.mode}: server {self.server_per_client:.0f} B per pending client, "
            f"total {self.total_per_client:.0f} ({', '.join(parts)}); "
            f"ServerConnection objects {self.server_connections}, "
            f"other stateless13 objects {self.stateless13_objects}; {self.seconds:.1f}s"
        )


def stateless13_instances() -> int:
    """Instances of the core's classes (the adapters, stateless13.transports, are counted apart)."""
    return sum(
        type(o).__module__.startswith("stateless13.")
        and not type(o).__module__.startswith("stateless13.transports")
        for o in gc.get_objects()
    )


async def read_records(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, done: Callable[[list[bytes]], bool]
) -> list[bytes]:
    """Read TLS records (header included) from ``sock`` until ``done(records)``."""
    buffer = b""
    records: list[bytes] = []
    while not done(records):
        data = await loop.sock_recv(sock, 65536)
        assert data, "the server closed the connection"
        buffer += data
        while len(buffer) >= 5 and len(buffer) >= 5 + int.from_bytes(buffer[3:5], "big"):
            size = 5 + int.from_bytes(buffer[3:5], "big")
            records.append(buffer[:size])
            buffer = buffer[size:]
    assert not buffer, "bytes beyond the records expected"
    return records


def is_hrr_and_ccs(records: list[bytes]) -> bool:
    """The HelloRetryRequest record, then the compatibility-mode CCS (our clients ask for it)."""
    if not records:
        return False
    assert records[0][0] == 22 and records[0][5] == 2 and records[0][11:43] == HRR_RANDOM
    return len(records) >= 2


async def connect(loop: asyncio.AbstractEventLoop, address: tuple[str, int]) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    await loop.sock_connect(sock, address)
    return sock


async def pause_after_hrr(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, hello: bytes
) -> None:
    await loop.sock_sendall(sock, hello)
    records = await read_records(loop, sock, is_hrr_and_ccs)
    assert records[1] == b"\x14\x03\x03\x00\x01\x01", records
    # ... and never send ClientHello2.


async def pause_before_finished(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    client = PythonSSLClient()
    await loop.sock_sendall(sock, client.step())
    # The client has the server's whole flight once it wants to send its own Finished.
    while True:
        data = await loop.sock_recv(sock, 65536)
        assert data, "the server closed the connection"
        if client.step(data):
            break
    assert client.handshake_done
    # ... and never send the client Finished.


async def handler(stream: TLSStream) -> None:  # never reached by a paused client
    await stream.close()


async def measure(stateless: bool) -> Measurement:
    loop = asyncio.get_running_loop()
    reports: list[ConnectionReport] = []
    config = ServerConfig.self_signed(groups=(NamedGroup.x25519, NamedGroup.secp256r1))
    # Every client comes from 127.0.0.1: one source, so its own limit is lifted too.
    limits = Limits(
        handshake_timeout=120,
        max_concurrent_handshakes=CLIENTS + WARM_UP_CLIENTS,
        max_handshakes_per_source=CLIENTS + WARM_UP_CLIENTS,
    )
    server = await serve(
        config,
        handler,
        "127.0.0.1",
        0,
        limits=limits,
        validation="hrr" if stateless else "none",
        on_report=reports.append,
        backlog=CLIENTS,
    )
    address = server.sockets[0].getsockname()[:2]
    hellos = [PythonSSLClient().step() for _ in range(DISTINCT_HELLOS)]
    gate = asyncio.Semaphore(CONNECTING_AT_ONCE)
    opened: list[socket.socket] = []

    async def one(index: int) -> None:
        async with gate:
            sock = await connect(loop, address)
            opened.append(sock)
            if stateless:
                await pause_after_hrr(loop, sock, hellos[index % DISTINCT_HELLOS])
            else:
                await pause_before_finished(loop, sock)

    async def pause(count: int) -> None:
        await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(count))), 60)
        assert len(opened) == count
        for _ in range(20):  # let every server task get back to its read
            await asyncio.sleep(0.01)

    async def close_all() -> None:
        expected = len(reports) + len(opened)
        for sock in opened:
            sock.close()
        opened.clear()
        deadline = time.monotonic() + 30
        while len(reports) < expected and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert len(reports) == expected, "the server did not see every client go"

    mode = "stateless, paused after the HRR" if stateless else "ordinary, before client Finished"
    measured = Measurement(mode, CLIENTS)
    started = time.monotonic()
    try:
        async with server:
            # Warm up every code path once: lazily built caches are not a per-client cost.
            await pause(WARM_UP_CLIENTS)
            await close_all()
            gc.collect()
            baseline_objects = stateless13_instances()

            tracemalloc.start()
            try:
                gc.collect()
                before = tracemalloc.take_snapshot()
                await pause(CLIENTS)
                gc.collect()
                after = tracemalloc.take_snapshot()
            finally:
                tracemalloc.stop()
            for stat in after.compare_to(before, "filename"):
                name = category(stat.traceback[0].filename)
                measured.bytes_by_category[name] = (
                    measured.bytes_by_category.get(name, 0) + stat.size_diff
                )
            measured.server_connections = sum(
                isinstance(o, ServerConnection) for o in gc.get_objects()
            )
            measured.stateless13_objects = stateless13_instances() - baseline_objects
            await close_all()
    finally:
        for sock in opened:
            sock.close()
    measured.seconds = time.monotonic() - started
    assert len(reports) == WARM_UP_CLIENTS + CLIENTS
    for report in reports:
        assert report.handshake is None and report.error is not None, report
        assert report.hello_retry == stateless, report
    return measured


@pytest.fixture(scope="module")
def measurements() -> Callable[[bool], Measurement]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 2 * (CLIENTS + WARM_UP_CLIENTS) + 256  # both ends of every connection are ours
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= needed, "raise the hard ulimit -n"
    done: dict[bool, Measurement] = {}

    def get(stateless: bool) -> Measurement:
        if stateless not in done:
            done[stateless] = asyncio.run(measure(stateless))
            print(done[stateless].describe())
        return done[stateless]

    return get


def core_bytes(m: Measurement) -> float:
    """Bytes per client the core allocated.  A compiled core (``stateless13.COMPILED``) runs no
    Python frames of its own, so tracemalloc puts its allocations on the Python caller, the
    adapter: there the core is counted with the adapter, whose own share is under 2 KiB."""
    return m.per_client("stateless13") + (m.per_client("transports") if COMPILED else 0)


def test_clients_paused_after_hrr_keep_no_core_state(
    measurements: Callable[[bool], Measurement],
) -> None:
    m = measurements(True)
    assert m.server_connections == 0, m.describe()
    assert m.stateless13_objects <= 0, m.describe()
    # The adapter's bit and buffer (MemoryServer) and its coroutines; asyncio's transport,
    # stream reader/writer and tasks. Generous bounds: the point is that nothing grows with TLS.
    assert core_bytes(m) < 64 + (2048 if COMPILED else 0), m.describe()
    assert m.per_client("transports") < 2048, m.describe()
    assert m.server_per_client < 16384, m.describe()


def test_ordinary_pending_handshakes_each_hold_a_connection(
    measurements: Callable[[bool], Measurement],
) -> None:
    m = measurements(False)
    assert m.server_connections == CLIENTS, m.describe()
    assert m.stateless13_objects >= CLIENTS, m.describe()
    assert core_bytes(m) > 1024 + (2048 if COMPILED else 0), m.describe()


def test_stateless_pending_client_costs_less(measurements: Callable[[bool], Measurement]) -> None:
    stateless, ordinary = measurements(True), measurements(False)
    print(stateless.describe(), ordinary.describe(), sep="\n")
    saved = ordinary.server_per_client - stateless.server_per_client
    assert saved > ordinary.per_client("stateless13" if not COMPILED else "transports") / 2, (
        stateless.describe(),
        ordinary.describe(),
    )
