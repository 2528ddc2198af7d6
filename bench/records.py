"""Record layer throughput: 16 KiB application-data records, each suite, protect and unprotect.

    python -m bench.records [--seconds S] [--rounds N] [--json]

Both builds of the core (bench/builds.py: mypyc-compiled and pure Python), each two ways: the
bare ``RecordProtection.seal``/``open``, and what an application sees, ``ServerConnection.send``
+ ``data_to_send`` and ``receive_data`` + ``next_event``.  Anchor: the server side of a Python
``ssl`` connection (``SSLObject.write`` + reading the outgoing MemoryBIO; writing the incoming
MemoryBIO + ``SSLObject.read``).  The peer of each connection is a Python ``ssl`` client; its
records are made outside the clock.  MB/s are 10^6 bytes of plaintext.

Python's ``ssl`` cannot choose TLS 1.3 cipher suites, so the suite is set on the contexts'
``SSL_CTX`` through ctypes (``SSL_CTX_set_ciphersuites``; checked with ``SSLObject.cipher()``).
Every measurement runs in a fresh worker process per round, the anchor's too, alternating in
the same rounds; in each, a throwaway connection and one untimed run come first (see
``measurement``).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import ssl
import time
from collections.abc import Callable

from stateless13 import ApplicationData, CipherSuite, HandshakeComplete, ServerConfig
from stateless13 import ServerConnection as Connection
from stateless13.primitives import SUITES
from stateless13.record import ContentType, RecordProtection

from .builds import BUILDS, Measurement, Workers, benchmark_main, builds
from .common import (
    MemoryClient,
    Progress,
    Report,
    Row,
    alternate,
    measured_rate,
    python_ssl_client_context,
)
from .handshake import server_context
from .openssl_anchor import lib

RECORD = 16 * 1024
BATCH = 32  # records per timed batch (512 KiB)
PAYLOAD = os.urandom(RECORD)


def force_tls13_suite(context: ssl.SSLContext, suite: CipherSuite) -> None:
    """SSL_CTX_set_ciphersuites on the context's SSL_CTX (the pointer after PyObject_HEAD)."""
    library = lib()
    pointer = ctypes.c_void_p.from_address(id(context) + object.__basicsize__).value
    if library.SSL_CTX_get_options(pointer) != int(context.options):  # the pointer is right
        raise RuntimeError("cannot find the SSL_CTX behind this SSLContext")
    if library.SSL_CTX_set_ciphersuites(pointer, suite.name.encode()) != 1:
        raise RuntimeError(f"SSL_CTX_set_ciphersuites({suite.name}) failed")


def _pump(client: MemoryClient, server: ssl.SSLObject, incoming: ssl.MemoryBIO,
          outgoing: ssl.MemoryBIO) -> None:  # fmt: skip
    data = client.step()
    for _ in range(4):
        incoming.write(data)
        with contextlib.suppress(ssl.SSLWantReadError):
            server.do_handshake()
        data = client.step(outgoing.read())
    server.do_handshake()


def _client_records(client: MemoryClient, count: int) -> bytes:
    for _ in range(count):
        client.tls.write(PAYLOAD)
    return client.outgoing.read()


def runners(suite: CipherSuite, seconds: float) -> dict[str, dict[str, Measurement]]:
    """{"protect"/"unprotect": {"raw", "connection", "ssl": measurement}} for one suite."""
    params = SUITES[suite]
    secret = os.urandom(params.hash_len)
    client_context = python_ssl_client_context()
    force_tls13_suite(client_context, suite)

    # Ours, as an application sees it: a ServerConnection with a Python ssl client.
    config = ServerConfig.self_signed("localhost", cipher_suites=(suite,))
    ours_client = MemoryClient(client_context)
    connection = Connection(config)
    connection.receive_data(ours_client.step())
    connection.events()
    connection.receive_data(ours_client.step(connection.data_to_send()))
    assert any(isinstance(e, HandshakeComplete) for e in connection.events())
    assert ours_client.tls.cipher()[0] == suite.name, ours_client.tls.cipher()  # type: ignore[index]

    # The anchor: Python ssl's server with the same client.
    server_ctx = server_context(config, 0)
    force_tls13_suite(server_ctx, suite)
    ssl_client = MemoryClient(client_context)
    s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    ssl_server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    _pump(ssl_client, ssl_server, s_in, s_out)
    assert ssl_server.cipher()[0] == suite.name, ssl_server.cipher()  # type: ignore[index]

    sealer = RecordProtection(params, secret)
    # A second pair whose sequence numbers stay in step: one seals what the other opens.
    peer_sealer, opener = RecordProtection(params, secret), RecordProtection(params, secret)

    def raw_protect() -> tuple[int, float]:
        seal = sealer.seal
        start = time.perf_counter()
        for _ in range(BATCH):
            seal(ContentType.application_data, PAYLOAD)
        return BATCH, time.perf_counter() - start

    def raw_unprotect() -> tuple[int, float]:
        records = [peer_sealer.seal(ContentType.application_data, PAYLOAD) for _ in range(BATCH)]
        open_ = opener.open
        start = time.perf_counter()
        for record in records:
            open_(record[:5], record[5:])
        return BATCH, time.perf_counter() - start

    def connection_protect() -> tuple[int, float]:
        start = time.perf_counter()
        for _ in range(BATCH):
            connection.send(PAYLOAD)
            connection.data_to_send()
        return BATCH, time.perf_counter() - start

    def connection_unprotect() -> tuple[int, float]:
        data = _client_records(ours_client, BATCH)
        start = time.perf_counter()
        connection.receive_data(data)
        received = 0
        while received < BATCH:
            event = connection.next_event()
            assert isinstance(event, ApplicationData), event
            received += 1
        spent = time.perf_counter() - start
        return BATCH, spent

    def ssl_protect() -> tuple[int, float]:
        start = time.perf_counter()
        for _ in range(BATCH):
            ssl_server.write(PAYLOAD)
            s_out.read()
        return BATCH, time.perf_counter() - start

    def ssl_unprotect() -> tuple[int, float]:
        data = _client_records(ssl_client, BATCH)
        start = time.perf_counter()
        s_in.write(data)
        for _ in range(BATCH):
            ssl_server.read(RECORD)
        return BATCH, time.perf_counter() - start

    def mb(batch: Callable[[], tuple[int, float]]) -> Measurement:
        return lambda: measured_rate(batch, seconds) * RECORD / 1e6

    return {
        "protect": {
            "raw": mb(raw_protect),
            "connection": mb(connection_protect),
            "ssl": mb(ssl_protect),
        },
        "unprotect": {
            "raw": mb(raw_unprotect),
            "connection": mb(connection_unprotect),
            "ssl": mb(ssl_unprotect),
        },
    }


#: Ours, two ways, in each suite and direction: the kind in ``runners`` -> what the rows say.
OURS = {"connection": "ServerConnection", "raw": "bare RecordProtection"}


def measurement(name: str, seconds: float) -> Measurement:
    """The measurement named ``"<suite> <direction> <kind>"``, as ``runners`` names them."""
    suite, direction, kind = name.split()
    # A connection can receive at about half speed for good, depending on the allocator's
    # history (its record buffer's 512 KiB reallocations mmap-backed or not): a fresh process's
    # first connection does; so can a connection opened after another one's receive run.  One
    # throwaway connection first, then (benchmark_main) the measurement once untimed, so that
    # every suite is measured in the fast mode (docs/BENCHMARKS.md §4).
    runners(CipherSuite[suite], seconds / 2)["unprotect"]["connection"]()
    return runners(CipherSuite[suite], seconds)[direction][kind]


def run(seconds: float, rounds: int, *, progress: bool = True) -> Report:
    suites = list(CipherSuite)
    directions = ("protect", "unprotect")
    per_round = len(BUILDS) * len(OURS) + 1  # ours, each build each way, then the anchor
    bar = Progress("records", len(suites) * len(directions) * per_round * rounds, enabled=progress)
    report = Report(
        "records",
        "Record layer: 16 KiB application-data records, MB/s of plaintext, one core",
        {"seconds_per_round": seconds, "rounds": rounds, "record_bytes": RECORD},
    )
    anchor = "Python ssl SSLObject (server)"
    with builds() as trees:
        workers = Workers("records", trees, seconds)
        for suite in suites:
            for direction in directions:
                name = f"{suite.name} {direction}"
                measurements = {
                    f"{kind} {build}": workers.measure(f"{name} {kind}", build)
                    for kind in OURS
                    for build in BUILDS
                }
                measurements["ssl"] = workers.anchor(f"{name} ssl")
                measured = alternate(measurements, rounds, bar)
                short = suite.name.removeprefix("TLS_")
                for kind, what in OURS.items():
                    for build in BUILDS:
                        report.rows.append(
                            Row(
                                f"{short} {direction}, {what}, {build} build",
                                "MB/s",
                                measured[f"{kind} {build}"],
                                anchor,
                                measured["ssl"],
                            )
                        )
        bar.close()
    report.notes.append(
        "protect = send + data_to_send (ours) / SSLObject.write + MemoryBIO.read (ssl); "
        "unprotect = receive_data + next_event (ours) / MemoryBIO.write + SSLObject.read (ssl)."
    )
    report.notes.append(
        "Every figure comes from a fresh worker process per round (bench/builds.py), the anchor's"
        " too, after a throwaway connection and one untimed run in that process."
    )
    return report


def main(argv: list[str] | None = None) -> int:
    return benchmark_main("records", __doc__.splitlines()[0], measurement, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
