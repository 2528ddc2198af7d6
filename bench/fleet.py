"""A fleet behind nginx: TCP connections per second through it to 1, 2 and 3 nodes.

    python -m bench.fleet [--seconds S] [--rounds N] [--workers N] [--threads N] [--json]

Processes, all on 127.0.0.1:
  * three nodes: ``python -m stateless13 serve --mode echo --validation none
    --proxy-protocol-from 127.0.0.1`` sharing ``--cookie-key-file`` and ``--ticket-key-file``
    (full handshakes, two tickets each, as a calm fleet runs);
  * three unmodified nginx (Debian's, its stream module), each with docs/fleet/nginx-tcp.conf
    as written but for its addresses: round robin to the first 1, 2 or 3 nodes, a PROXY protocol
    header before every connection;
  * the load generator: ``--workers`` processes of ``--threads`` threads, each a Python ``ssl``
    client (OpenSSL) doing a full TLS 1.3 handshake, one byte echoed, then RST.
Cases, their order rotated from round to round: through nginx to 1, 2 and 3 nodes, and the anchor
of the first, the same load on one node directly (from 127.0.0.2, which is no balancer, so no
PROXY header).  Besides the rate, the CPU seconds each process spent (/proc/PID/stat: every node,
nginx's master and worker, the load generator).

The machine has 2 cores, shared by everything above and by whatever else runs on it: three
single-threaded nodes cannot run three times as fast as one there.  What the figures show is
that the fleet works at speed, how the work spreads over the nodes, and what nginx costs per
connection; not how a fleet of machines scales.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from stateless13 import CookieKeyRing, ServerConfig

from .common import (
    ROOT,
    Progress,
    Report,
    Row,
    Table,
    cpu_seconds,
    emit,
    parser,
    pem_files,
    private_key_pem,
    python_ssl_client_context,
)
from .sockets import Server

HOST = "127.0.0.1"  # loopback only; nginx connects to the nodes from here
CLIENT = "127.0.0.2"  # the direct load's address: not a balancer of the nodes
NODES = 3
TIMEOUT = 5.0
#: The balancer configurations FLEET.md shows and tests/peers/test_fleet.py runs.
FLEET_DIR = ROOT / "docs" / "fleet"
TCP_CONF = FLEET_DIR / "nginx-tcp.conf"
UDP_CONF = FLEET_DIR / "nginx-udp.conf"
NGINX_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")  # libnginx-mod-stream
#: Where Debian puts nginx: not on a plain user's PATH.
SYSTEM_PROGRAMS = "/usr/sbin:/sbin"


# ---------------------------------------------------------------------------------------------
# nginx with the configurations of docs/fleet/ (the tests use these too)


def balancer_config(fragment: Path, listen: str, upstreams: Sequence[str]) -> str:
    """``fragment`` (docs/fleet/nginx-*.conf) as nginx is to read it here: its ``listen``
    address (the first word after ``listen``) replaced by ``listen``, its upstream ``server``
    addresses by ``upstreams`` in order, the server lines past ``len(upstreams)`` dropped;
    every other line exactly as written."""
    return _readdressed(
        fragment, listen, upstreams, r"(\s*listen\s+)(\S+?)([;\s].*)", r"(\s*server\s+)(\S+?)(;.*)"
    )


def haproxy_config(fragment: Path, listen: str, upstreams: Sequence[str]) -> str:
    """``fragment`` (docs/fleet/haproxy-tcp.cfg) as HAProxy is to read it here, as
    :func:`balancer_config` does for nginx: its ``bind`` address, and the addresses of its
    ``server`` lines."""
    return _readdressed(
        fragment, listen, upstreams, r"(\s*bind\s+)(\S+)(.*)", r"(\s*server\s+\S+\s+)(\S+)(.*)"
    )


def _readdressed(
    fragment: Path, listen: str, upstreams: Sequence[str], listen_line: str, server_line: str
) -> str:
    """``fragment`` with the address of its one ``listen_line`` replaced by ``listen`` and those
    of its ``server_line``s by ``upstreams`` in order (the lines past them dropped): each pattern
    has three groups, the address the second."""
    lines, servers, listens = [], 0, 0
    for line in fragment.read_text().splitlines(keepends=True):
        server = re.match(server_line, line, re.DOTALL)
        if server is not None:
            servers += 1
            if servers <= len(upstreams):
                lines.append(server[1] + upstreams[servers - 1] + server[3])
            continue
        listened = re.match(listen_line, line, re.DOTALL)
        if listened is not None:
            listens += 1
            line = listened[1] + listen + listened[3]
        lines.append(line)
    if listens != 1 or not 1 <= len(upstreams) <= servers:
        raise ValueError(f"{fragment}: {listens} listen lines, {servers} upstream servers")
    return "".join(lines)


NGINX_MAIN = """\
load_module {module};
daemon off;
worker_processes 1;
pid {directory}/nginx.pid;
error_log {directory}/error.log info;
events {{ worker_connections 4096; }}
stream {{
{includes}}}
"""


def nginx_binary() -> str:
    found = shutil.which("nginx", path=f"{os.environ.get('PATH', '')}:{SYSTEM_PROGRAMS}")
    if found is None:
        raise FileNotFoundError(
            "nginx is not installed (apt-get install nginx libnginx-mod-stream)"
        )
    if not NGINX_MODULE.exists():
        raise FileNotFoundError(f"nginx's stream module is missing: {NGINX_MODULE}")
    return found


class Nginx:
    """An unmodified nginx in the foreground, its own prefix, configuration and PID file in
    ``directory``, running ``fragments`` (name: text, as :func:`balancer_config` made them)
    inside one ``stream`` block; up when the constructor returns (its PID file written, which
    the master does once it listens), or FileNotFoundError / RuntimeError.  Stopped by its PID."""

    def __init__(
        self, directory: Path, fragments: dict[str, str], binary: str | None = None
    ) -> None:
        binary = binary or nginx_binary()
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        includes = ""
        for name, text in fragments.items():
            (directory / name).write_text(text)
            includes += f"    include {directory / name};\n"
        conf = directory / "nginx.conf"
        conf.write_text(
            NGINX_MAIN.format(module=NGINX_MODULE, directory=directory, includes=includes)
        )
        self.process = subprocess.Popen(
            [binary, "-p", str(directory), "-c", str(conf), "-e", str(directory / "error.log")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while not (directory / "nginx.pid").exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"nginx did not start ({self.process.returncode}):\n{self.log()}"
                )
            time.sleep(0.02)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        path = self.directory / "error.log"
        return path.read_text(errors="replace") if path.exists() else "(no error.log)"

    def cpu(self) -> float:
        """CPU seconds of the master and its workers."""
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
        return sum(cpu_seconds(pid) for pid in [self.pid, *map(int, children)])

    def stop(self) -> None:
        """SIGTERM to the master, by its PID (it stops its workers); SIGKILL if it lingers."""
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.process.wait(10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------------------------------------
# The load (in the pool's processes)


def _handshake(port: int, source: str, context: ssl.SSLContext) -> bool:
    raw = socket.create_connection((HOST, port), timeout=TIMEOUT, source_address=(source, 0))
    try:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        tls = context.wrap_socket(raw, server_hostname="localhost")
        tls.sendall(b"x")
        return tls.recv(1) == b"x"
    finally:
        # RST rather than FIN: no TIME_WAIT pile-up of client ports.
        with contextlib.suppress(OSError):
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        raw.close()


def _load_worker(job: tuple[int, str, float, int]) -> tuple[int, int, float, float]:
    """(successes, failures, seconds, CPU seconds of this process) of one load process."""
    port, source, seconds, threads = job
    context = python_ssl_client_context()
    counts = [[0, 0] for _ in range(threads)]
    cpu = time.process_time()
    start = time.perf_counter()
    deadline = start + seconds

    def loop(tally: list[int]) -> None:
        while time.perf_counter() < deadline:
            try:
                tally[0 if _handshake(port, source, context) else 1] += 1
            except (OSError, ssl.SSLError):
                tally[1] += 1

    workers = [threading.Thread(target=loop, args=(tally,)) for tally in counts]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - start
    return sum(c[0] for c in counts), sum(c[1] for c in counts), elapsed, time.process_time() - cpu


# ---------------------------------------------------------------------------------------------
# Measuring


@contextlib.contextmanager
def _fleet(directory: Path, cert: str, key: str) -> Iterator[tuple[list[Server], list[Nginx]]]:
    """Three nodes sharing key files, and one nginx for each fleet size (1, 2, 3 nodes)."""
    cookie_keys, ticket_keys = directory / "cookie.keys", directory / "ticket.keys"
    CookieKeyRing.write_new_key_file(cookie_keys)
    CookieKeyRing.write_new_key_file(ticket_keys)
    node = [sys.executable, "-m", "stateless13", "serve", "--host", HOST, "--mode", "echo"]
    node += ["--validation", "none", "--proxy-protocol-from", HOST, "--quiet"]
    node += ["--cookie-key-file", str(cookie_keys), "--ticket-key-file", str(ticket_keys)]
    node += ["--cert", cert, "--key", key, "--max-handshakes", "4096", "--stats-interval", "0"]
    nodes: list[Server] = []
    balancers: list[Nginx] = []
    try:
        nodes.extend(Server(f"node {index + 1}", node) for index in range(NODES))
        for size in range(1, NODES + 1):
            upstreams = [f"{HOST}:{n.port}" for n in nodes[:size]]
            text = balancer_config(TCP_CONF, f"{HOST}:{free_port()}", upstreams)
            balancers.append(Nginx(directory / f"nginx{size}", {"tcp.conf": text}))
        yield nodes, balancers
    finally:
        for balancer in balancers:
            balancer.stop()
        for server in nodes:
            server.stop()


def _listen_port(balancer: Nginx) -> int:
    text = (balancer.directory / "tcp.conf").read_text()
    match = re.search(r"listen\s+\S+:(\d+)", text)
    assert match is not None
    return int(match[1])


def run(
    seconds: float, rounds: int, workers: int, threads: int, *, progress: bool = True
) -> Report:
    config = ServerConfig.self_signed("localhost")
    credential = config.credentials[0]
    cases = ["directly, 1 node", "nginx, 1 node", "nginx, 2 nodes", "nginx, 3 nodes"]
    bar = Progress("fleet", rounds * len(cases), enabled=progress)
    rates: dict[str, list[float]] = {case: [] for case in cases}
    failures: dict[str, int] = dict.fromkeys(cases, 0)
    #: per case, summed over the rounds: connections, wall seconds, CPU seconds of each node,
    #: of nginx and of the load generator
    totals: dict[str, dict[str, Any]] = {}
    load_before = os.getloadavg()[0]  # what else the machine was doing
    with (
        pem_files(credential.certificate_pem(), private_key_pem(credential.private_key)) as (
            cert,
            key,
        ),
        tempfile.TemporaryDirectory(prefix="stateless13-fleet-") as directory,
        _fleet(Path(directory), cert, key) as (nodes, balancers),
        multiprocessing.get_context("spawn").Pool(workers) as pool,
    ):
        targets: dict[str, tuple[int, str, Nginx | None]] = {
            cases[0]: (nodes[0].port, CLIENT, None)
        }
        for case, front in zip(cases[1:], balancers, strict=True):
            targets[case] = (_listen_port(front), HOST, front)
        for port, source, _ in targets.values():  # warm up: imports, caches, first accepts
            pool.map(_load_worker, [(port, source, 0.05, 1)] * workers)
        for index in range(rounds):
            shift = index % len(cases)
            for case in cases[shift:] + cases[:shift]:
                port, source, balancer = targets[case]
                before = [n.cpu() for n in nodes], balancer.cpu() if balancer else 0.0
                results = pool.map(_load_worker, [(port, source, seconds, threads)] * workers)
                after = [n.cpu() for n in nodes], balancer.cpu() if balancer else 0.0
                done = sum(r[0] for r in results)
                rates[case].append(sum(r[0] / r[2] for r in results))
                failures[case] += sum(r[1] for r in results)
                total = totals.setdefault(
                    case,
                    {"done": 0, "wall": 0.0, "nodes": [0.0] * NODES, "nginx": 0.0, "load": 0.0},
                )
                total["done"] += done
                total["wall"] += max(r[2] for r in results)
                total["nodes"] = [
                    t + a - b for t, a, b in zip(total["nodes"], after[0], before[0], strict=True)
                ]
                total["nginx"] += after[1] - before[1]
                total["load"] += sum(r[3] for r in results)
                bar.step(f"round {index + 1}/{rounds} {case}")
    bar.close()

    report = Report(
        "fleet",
        "A fleet behind nginx (PROXY protocol, round robin): TCP handshakes/s, 2 cores shared",
        {
            "seconds_per_round": seconds,
            "rounds": rounds,
            "workers": workers,
            "threads": threads,
            "load_average_before": round(load_before, 2),
            "load_average_after": round(os.getloadavg()[0], 2),
        },
    )
    for case in cases[1:]:
        # Through nginx to one node against one node directly (what nginx costs); two and three
        # nodes against one, through nginx (how the load spreads).
        anchor = cases[0] if case == cases[1] else cases[1]
        row = Row(case, "connections/s", rates[case], anchor, rates[anchor])
        if failures[case] or failures[anchor]:
            row.note = f"{failures[case]} failed connections ({failures[anchor]} for the anchor)"
        report.rows.append(row)

    def micro(cpu: float, done: int) -> str:
        return f"{1e6 * cpu / max(done, 1):,.0f}"

    table_rows = []
    for case in cases:
        total = totals[case]
        done, wall = total["done"], total["wall"]
        table_rows.append(
            [
                case,
                f"{done / wall:,.0f}" if wall else "-",
                " / ".join(f"{cpu / wall:.2f}" for cpu in total["nodes"]) if wall else "-",
                f"{total['nginx'] / wall:.2f}" if wall else "-",
                f"{total['load'] / wall:.2f}" if wall else "-",
                micro(sum(total["nodes"]), done),
                micro(total["nginx"], done),
                micro(total["load"], done),
            ]
        )
    report.tables.append(
        Table(
            "Where the CPU went, all rounds: cores busy (CPU-s per s) and CPU µs per connection",
            [
                "case",
                "connections/s",
                "cores: node 1 / 2 / 3",
                "cores: nginx",
                "cores: load",
                "µs nodes/conn",
                "µs nginx/conn",
                "µs load/conn",
            ],
            table_rows,
        )
    )
    report.notes.append(
        f"{os.cpu_count()} CPUs shared by the nodes, nginx, the load generator and anything else"
        " running: a functional scale figure, not a fleet of machines.  Nodes are single-threaded"
        " Python processes; nginx runs one worker."
    )
    report.notes.append(
        "Each connection: a full TLS 1.3 handshake (x25519, ECDSA P-256, --validation none, two"
        " tickets sent), one byte echoed, RST.  Through nginx, a PROXY protocol v1 header before"
        " it (nginx sends v1 only); the node's report names the client."
    )
    return report


def main(argv: list[str] | None = None) -> int:
    options = parser("fleet", __doc__.splitlines()[0])
    options.add_argument("--workers", type=int, default=2, help="load-generator processes")
    options.add_argument("--threads", type=int, default=4, help="connections at once per worker")
    args = options.parse_args(argv)
    try:
        nginx_binary()
    except FileNotFoundError as error:
        raise SystemExit(f"bench.fleet: {error}") from None
    report = run(args.seconds, args.rounds, args.workers, args.threads, progress=not args.quiet)
    emit(report, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
