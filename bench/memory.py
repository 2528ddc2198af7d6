"""Memory per client: after the HRR (must be 0 in the core) and per in-progress handshake.

    python -m bench.memory [--count N] [--rounds N] [--json]

Two methods, and each number says which:
  * tracemalloc: every Python allocation still alive, exact, but blind to C allocations made
    by OpenSSL inside Python's ``ssl`` (and inside ``cryptography``).  Used for ours.
  * RSS growth (/proc/self/statm) over ``--count`` objects kept alive: sees everything, C included,
    but in pages and with allocator noise.  Used for both, so ours and Python ``ssl`` compare.
Each RSS figure comes from a fresh child process (RSS does not shrink when objects are freed, so
two measurements cannot share a process); the children alternate ours and the anchor, and the
median of the rounds is reported.  "In progress" means: ClientHello (Python ssl, x25519)
answered with the server's whole flight, the server now waiting for the client's Finished.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import resource
import ssl
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stateless13 import Accepted, HelloRetry, ServerConfig, ServerConnection, stateless_accept

from .common import (
    PEER,
    ROOT,
    MemoryClient,
    Progress,
    Report,
    Row,
    Table,
    captured_client_hellos,
    emit,
    parser,
    python_ssl_client_context,
)
from .handshake import server_context

RSS_KINDS = ("ours-hrr", "ours-inprogress", "ssl-inprogress")


def rss() -> int:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize()


class _Setup:
    """The config, a captured CH1 set, and one Python ssl ClientHello1 and ClientHello2."""

    def __init__(self) -> None:
        self.config = ServerConfig.self_signed("localhost")
        self.hellos = list(captured_client_hellos().values())
        client = MemoryClient(python_ssl_client_context())
        self.client_hello = client.step()
        self.now = time.time()
        retry = stateless_accept(self.config, self.client_hello, peer=PEER, now=self.now)
        assert isinstance(retry, HelloRetry)
        self.client_hello_2 = client.step(retry.data_to_send)

    def hrr(self, index: int) -> None:
        hello = self.hellos[index % len(self.hellos)]
        result = stateless_accept(self.config, hello, peer=PEER, now=self.now)
        assert isinstance(result, HelloRetry)

    def ours_in_progress(self, index: int) -> object:
        connection = ServerConnection(self.config, peer=PEER)
        connection.receive_data(self.client_hello)
        assert connection.next_event() is None
        assert connection.data_to_send()
        return connection

    def ours_accepted(self, index: int) -> object:
        result = stateless_accept(self.config, self.client_hello_2, peer=PEER, now=self.now)
        assert isinstance(result, Accepted)
        return result.connection  # the flight (data_to_send) is sent and dropped

    def ssl_in_progress(self, index: int) -> object:
        context = self._server_context()
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        server = context.wrap_bio(incoming, outgoing, server_side=True)
        incoming.write(self.client_hello)
        with contextlib.suppress(ssl.SSLWantReadError):
            server.do_handshake()
        assert outgoing.read()
        return (server, incoming, outgoing)

    _context: ssl.SSLContext | None = None

    def _server_context(self) -> ssl.SSLContext:
        if self._context is None:
            self._context = server_context(self.config, 0)
        return self._context


def _keep(make: Callable[[int], object], count: int) -> list[object]:
    return [make(index) for index in range(count)]


def _rss_child(kind: str, count: int) -> dict[str, Any]:
    setup = _Setup()
    make: Callable[[int], object] = {
        "ours-hrr": setup.hrr,
        "ours-inprogress": setup.ours_in_progress,
        "ssl-inprogress": setup.ssl_in_progress,
    }[kind]
    warm = _keep(make, 200)  # allocator pools, caches, lazy imports
    del warm
    gc.collect()
    before = rss()
    kept = _keep(make, count)
    gc.collect()
    grown = rss() - before
    del kept
    return {"kind": kind, "count": count, "rss_bytes_per_client": grown / count}


def _tracemalloc_child(count: int) -> dict[str, Any]:
    setup = _Setup()
    results: dict[str, Any] = {"count": count}
    makers: dict[str, Callable[[int], object]] = {
        "ours-hrr": setup.hrr,
        "ours-inprogress": setup.ours_in_progress,
        "ours-accepted": setup.ours_accepted,
        "ssl-inprogress": setup.ssl_in_progress,
    }
    for kind, make in makers.items():
        # Warm up outside the measurement (interpreter caches and free lists fill once).
        del _keep(make, count if kind == "ours-hrr" else 200)[:]
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        tracemalloc.reset_peak()
        baseline = tracemalloc.get_traced_memory()[0]
        if kind == "ours-hrr":  # nothing to keep: the caller sends the HRR and drops it
            for index in range(count):
                make(index)
            kept: list[object] = []
        else:
            kept = _keep(make, count)
        gc.collect()
        peak = tracemalloc.get_traced_memory()[1] - baseline
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        # tracemalloc's own bookkeeping (the "before" snapshot) is not the code under test.
        own = [tracemalloc.Filter(False, tracemalloc.__file__)]
        changes = after.filter_traces(own).compare_to(before.filter_traces(own), "filename")
        grown = sum(stat.size_diff for stat in changes)
        in_core = sum(
            stat.size_diff for stat in changes if "stateless13" in str(stat.traceback[0].filename)
        )
        results[kind] = {
            "bytes_per_client": grown / count,
            "stateless13_bytes_per_client": in_core / count,
            "retained_total": grown,
            "peak_total": peak,
        }
        del kept
        gc.collect()
    return results


def _child(args: list[str]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "bench.memory", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"bench.memory child {args} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def run(count: int, rounds: int, *, progress: bool = True) -> Report:
    bar = Progress("memory", 1 + rounds * len(RSS_KINDS), enabled=progress)
    traced = _child(["--child-tracemalloc", "--count", str(count)])
    bar.step("tracemalloc")
    measured: dict[str, list[float]] = {kind: [] for kind in RSS_KINDS}
    for index in range(rounds):
        shift = index % len(RSS_KINDS)
        for kind in RSS_KINDS[shift:] + RSS_KINDS[:shift]:
            result = _child(["--child-rss", kind, "--count", str(count)])
            measured[kind].append(result["rss_bytes_per_client"])
            bar.step(f"round {index + 1}/{rounds} {kind}")
    bar.close()

    report = Report(
        "memory",
        "Memory per client (bytes)",
        {"count": count, "rounds": rounds},
    )
    report.rows.append(
        Row(
            "after answering CH1: ours HRR, ssl first flight (RSS)",
            "B/client",
            measured["ours-hrr"],
            "Python ssl server (RSS)",
            measured["ssl-inprogress"],
            higher_is_better=False,
            note="ours keeps nothing after its HRR; Python ssl must keep the handshake",
        )
    )
    report.rows.append(
        Row(
            "in-progress handshake, awaiting Finished (RSS)",
            "B/client",
            measured["ours-inprogress"],
            "Python ssl server (RSS)",
            measured["ssl-inprogress"],
            higher_is_better=False,
        )
    )
    traced_rows = []
    for kind, label in (
        ("ours-hrr", "ours, after the HRR (stateless_accept result dropped)"),
        ("ours-inprogress", "ours, in-progress ServerConnection (ordinary handshake)"),
        ("ours-accepted", "ours, in-progress after CH2 (stateless path, Accepted)"),
        ("ssl-inprogress", "Python ssl, in-progress SSLObject: Python objects only"),
    ):
        entry = traced[kind]
        traced_rows.append(
            [
                label,
                f"{entry['bytes_per_client']:,.1f}",
                f"{entry['stateless13_bytes_per_client']:,.1f}",
                f"{entry['retained_total']:,}",
                f"{entry['peak_total']:,}",
            ]
        )
    report.tables.append(
        Table(
            f"tracemalloc over {count} clients (exact for Python allocations; blind to OpenSSL's)",
            ["what", "B/client", "of which in stateless13/", "retained total", "peak total"],
            traced_rows,
        )
    )
    report.notes.append(
        "RSS rows: growth of the resident set over COUNT live objects in a fresh process, median"
        " of the rounds; it includes the C allocations of OpenSSL and cryptography.  The"
        " tracemalloc table cannot see Python ssl's C allocations (its figure is the wrappers)."
    )
    hrr = traced["ours-hrr"]
    report.notes.append(
        f"After {count} HRRs (and as many before, as warm-up) {hrr['retained_total']} bytes were "
        f"still allocated in total, {hrr['stateless13_bytes_per_client']:.0f} B per client in "
        "stateless13/.  The peak column includes CPython's tuple free lists (emptied by "
        "gc.collect), not memory held for clients."
    )
    return report


def main(argv: list[str] | None = None) -> int:
    options = parser("memory", __doc__.splitlines()[0])
    options.add_argument("--count", type=int, default=2000, help="objects per measurement")
    options.add_argument("--child-rss", choices=RSS_KINDS, help=argparse.SUPPRESS)
    options.add_argument("--child-tracemalloc", action="store_true", help=argparse.SUPPRESS)
    args = options.parse_args(argv)
    if args.child_rss:
        print(json.dumps(_rss_child(args.child_rss, args.count)))
        return 0
    if args.child_tracemalloc:
        print(json.dumps(_tracemalloc_child(args.count)))
        return 0
    emit(run(args.count, args.rounds, progress=not args.quiet), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
