"""What every benchmark shares: options, alternating rounds, medians, tables, JSON, progress.

Each benchmark measures ours and its anchor in the same process run, alternating which goes
first from round to round (so drift on a noisy machine hits both), and reports the median of
the rounds and the ratio ours / anchor of those medians.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
CLIENT_HELLOS_DIR = ROOT / "tests" / "data" / "client_hellos"
RESULTS_DIR = BENCH_DIR / "results"

#: The benchmarks docs/BENCHMARKS.md publishes: name -> (what it measures, default seconds per
#: round, default rounds). The one place these defaults are written: ``python -m bench all`` scales
#: them and each benchmark's options default to them. None: the benchmark takes no such option.
BENCHMARKS: dict[str, tuple[str, float | None, int | None]] = {
    "hrr_rate": ("HRRs/s per captured client vs OpenSSL SSL_stateless (ctypes)", 0.1, 5),
    "resume": ("CH2 -> Accepted vs SSL_stateless(CH2); cookie opens/s", 0.2, 5),
    "tickets": ("ticket issue/accept µs per op, both builds, vs OpenSSL; ticket bytes", 0.2, 5),
    "handshake": ("full handshake, server side, vs Python ssl's server", 0.25, 3),
    "records": ("16 KiB records MB/s per suite vs ssl.SSLObject", 0.1, 3),
    "sizes": ("HRR/CH1 bytes per client vs SSL_stateless; cookie size", None, None),
    "memory": ("bytes per client after the HRR and per handshake vs Python ssl", None, 3),
    "sockets": ("stateless13 serve on loopback vs an asyncio+ssl server", 1.0, 3),
    "profile_hrr": ("our HRR path: cProfile, stages timed alone, floors, HRRs/s", 0.2, 5),
    "flood": ("adaptive validation: idle handshake ms, TCP and QUIC floods vs always HRR", 2.0, 3),
    "proxy": ("HTTP/3 front door vs its backend directly: req/s, MB/s, bytes/idle conn", 1.0, 3),
    "fleet": ("TCP handshakes/s through nginx to 1, 2, 3 nodes; CPU of each process", 2.0, 3),
    "dtls": ("DTLS 1.3 HRRs/s vs wolfSSL's stateless server; HRR sizes; lossy handshakes", 2.0, 3),
}

#: The simulated client address (TEST-NET-3): ours binds its cookie to it, the anchor's HMAC too.
PEER = ("203.0.113.7", 4433)

#: Captured peers in the order the tables show them.
CLIENT_ORDER = ("openssl", "gnutls", "go", "curl", "python_ssl", "tlslite", "chromium")


def captured_client_hellos() -> dict[str, bytes]:
    """The ClientHello1s captured by ``python -m bench.capture`` (raw TLS records), by peer."""
    found = {path.stem: path.read_bytes() for path in CLIENT_HELLOS_DIR.glob("*.bin")}
    if not found:
        raise SystemExit(f"no captured ClientHellos in {CLIENT_HELLOS_DIR}: run bench.capture")
    order = {name: index for index, name in enumerate(CLIENT_ORDER)}
    return dict(sorted(found.items(), key=lambda item: (order.get(item[0], 99), item[0])))


# ---------------------------------------------------------------------------------------------
# Progress on stderr


class Progress:
    """A one-line progress indicator on stderr (rewritten in place on a terminal)."""

    def __init__(self, label: str, total: int, *, enabled: bool = True) -> None:
        self.label = label
        self.total = max(total, 1)
        self.done = 0
        self.enabled = enabled
        self._tty = sys.stderr.isatty()
        self._started = time.monotonic()
        self._last_line = self._started

    def step(self, what: str) -> None:
        self.done += 1
        if not self.enabled:
            return
        width = 20
        filled = width * min(self.done, self.total) // self.total
        bar = "#" * filled + "." * (width - filled)
        elapsed = time.monotonic() - self._started
        line = f"{self.label} [{bar}] {self.done}/{self.total} {elapsed:5.1f}s {what}"
        if self._tty:
            sys.stderr.write("\r\x1b[K" + line[:150])
        elif self.done >= self.total or time.monotonic() - self._last_line >= 5:
            sys.stderr.write(line + "\n")  # a log, not a terminal: a line every 5 s
            self._last_line = time.monotonic()
        else:
            return
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled and self._tty:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


# ---------------------------------------------------------------------------------------------
# Measuring


def timed_rate(batch: Callable[[], int], seconds: float) -> float:
    """Operations per second: call ``batch`` (it returns how many it did) for ``seconds``."""
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        done += batch()
        now = time.perf_counter()
        if now >= deadline:
            return done / (now - start)


def measured_rate(batch: Callable[[], tuple[int, float]], seconds: float) -> float:
    """Like :func:`timed_rate` when only part of each batch counts: ``batch`` returns
    (operations, seconds spent in the measured part); the round lasts ``seconds`` of wall time."""
    done, spent = 0, 0.0
    deadline = time.perf_counter() + seconds
    while True:
        count, elapsed = batch()
        done, spent = done + count, spent + elapsed
        if time.perf_counter() >= deadline and spent > 0:
            return done / spent


def cpu_seconds(pid: int) -> float:
    """A process's CPU time: its threads' run time in ns (/proc/PID/task/*/schedstat), else
    utime + stime (/proc/PID/stat, in 10 ms ticks: too coarse for a short round, which may
    then see none at all)."""
    try:
        total = 0
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/schedstat") as file:
                total += int(file.read().split()[0])
        return total / 1e9
    except (OSError, ValueError, IndexError):
        pass
    with open(f"/proc/{pid}/stat") as file:
        fields = file.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop_process(process: subprocess.Popen[Any]) -> None:
    """SIGTERM, by its PID; SIGKILL if it is still there 10 s later."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def alternate(
    runners: Mapping[str, Callable[[], float]],
    rounds: int,
    progress: Progress | None = None,
    *,
    warm_up: bool = False,
) -> dict[str, list[float]]:
    """Run each named measurement once per round, rotating the order every round.

    ``warm_up`` runs each once first and drops the result (e.g. so that glibc's malloc has
    adapted its mmap threshold to large buffers before anything is timed).
    """
    names = list(runners)
    if warm_up:
        for name in names:
            runners[name]()
    results: dict[str, list[float]] = {name: [] for name in names}
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            results[name].append(runners[name]())
            if progress is not None:
                progress.step(f"round {index + 1}/{rounds} {name}")
    return results


# ---------------------------------------------------------------------------------------------
# Reporting


@dataclass
class Row:
    """One line of a comparison: our rounds against the anchor's, same unit."""

    case: str
    unit: str
    ours: list[float]
    anchor_name: str = ""
    anchor: list[float] | None = None
    higher_is_better: bool = True
    note: str = ""

    @property
    def ours_median(self) -> float:
        return statistics.median(self.ours)

    @property
    def anchor_median(self) -> float | None:
        return statistics.median(self.anchor) if self.anchor else None

    @property
    def ratio(self) -> float | None:
        """ours / anchor of the medians (for rates: above 1 means ours is faster)."""
        anchor = self.anchor_median
        if anchor is None or anchor == 0:
            return None
        return self.ours_median / anchor

    def to_json(self) -> dict[str, Any]:
        return {
            "case": self.case,
            "unit": self.unit,
            "ours_median": self.ours_median,
            "ours_rounds": self.ours,
            "anchor_name": self.anchor_name or None,
            "anchor_median": self.anchor_median,
            "anchor_rounds": self.anchor,
            "ratio": self.ratio,
            "higher_is_better": self.higher_is_better,
            "note": self.note or None,
        }


@dataclass
class Table:
    """A plain extra table (sizes, profiles): headers and rows of already-formatted cells."""

    title: str
    headers: list[str]
    rows: list[list[Any]]

    def to_json(self) -> dict[str, Any]:
        return {"title": self.title, "headers": self.headers, "rows": self.rows}


@dataclass
class Report:
    benchmark: str
    title: str
    params: dict[str, Any]
    rows: list[Row] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "title": self.title,
            "machine": machine_info(),
            "params": self.params,
            "results": [row.to_json() for row in self.rows],
            "tables": [table.to_json() for table in self.tables],
            "notes": self.notes,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Report:
        return cls(
            data["benchmark"],
            data["title"],
            dict(data["params"]),
            [
                Row(
                    row["case"],
                    row["unit"],
                    list(row["ours_rounds"]),
                    row["anchor_name"] or "",
                    row["anchor_rounds"],
                    row["higher_is_better"],
                    row["note"] or "",
                )
                for row in data["results"]
            ],
            [Table(t["title"], list(t["headers"]), list(t["rows"])) for t in data["tables"]],
            list(data["notes"]),
        )

    def render(self) -> str:
        lines = [f"== {self.title}"]
        if self.params:
            lines.append(_params_line(self.params))
        if self.rows:
            lines.append("")
            lines.extend(_render_rows(self.rows))
        for table in self.tables:
            lines.append("")
            lines.append(f"-- {table.title}")
            lines.extend(format_table(table.headers, table.rows))
        if self.notes:
            lines.append("")
            lines.extend(f"* {note}" for note in self.notes)
        return "\n".join(lines)


def _params_line(params: Mapping[str, Any]) -> str:
    return "   ".join(f"{key}={value}" for key, value in params.items())


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:,.1f}"
    return f"{value:,.2f}"


def _spread(values: list[float] | None) -> str:
    if not values or len(values) < 2:
        return ""
    middle = statistics.median(values)
    if middle == 0:
        return ""
    return f"±{50 * (max(values) - min(values)) / middle:.0f}%"


def _render_rows(rows: list[Row]) -> list[str]:
    headers = ["case", "unit", "ours", "spread", "anchor", "anchor median", "spread", "ratio"]
    body = []
    for row in rows:
        ratio = row.ratio
        body.append(
            [
                row.case,
                row.unit,
                _number(row.ours_median),
                _spread(row.ours),
                row.anchor_name or "-",
                _number(row.anchor_median),
                _spread(row.anchor),
                "-" if ratio is None else f"{ratio:.2f}x",
            ]
        )
    lines = format_table(headers, body)
    notes = [f"  [{row.case}] {row.note}" for row in rows if row.note]
    return lines + notes


def format_table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for index, cell in enumerate(row):
            widths[index] = max(widths[index], len(cell))

    def line(values: list[str]) -> str:
        out = []
        for index, value in enumerate(values):
            # Text left, numbers right.
            numeric = value[:1].isdigit() or (value[:1] in "-±+" and value[1:2].isdigit())
            out.append(value.rjust(widths[index]) if numeric else value.ljust(widths[index]))
        return "  ".join(out).rstrip()

    return [line(headers), line(["-" * w for w in widths])] + [line(row) for row in cells]


def emit(report: Report, as_json: bool) -> None:
    try:
        if as_json:
            print(json.dumps(report.to_json(), indent=2))
        else:
            print(report.render())
        sys.stdout.flush()
    except BrokenPipeError:  # e.g. piped into head: not an error of the benchmark
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


# ---------------------------------------------------------------------------------------------
# Options and machine


def parser(benchmark: str, description: str) -> argparse.ArgumentParser:
    """The options every benchmark takes, with its defaults from :data:`BENCHMARKS`."""
    _, seconds, rounds = BENCHMARKS[benchmark]
    result = argparse.ArgumentParser(description=description)
    if seconds is not None:
        result.add_argument(
            "--seconds",
            type=float,
            default=seconds,
            help=f"length of one round (default {seconds})",
        )
    if rounds is not None:
        result.add_argument(
            "--rounds", type=int, default=rounds, help=f"rounds per measurement (default {rounds})"
        )
    result.add_argument("--json", action="store_true", help="print JSON instead of tables")
    result.add_argument("--quiet", action="store_true", help="no progress on stderr")
    return result


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _git_commit() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        if done.returncode == 0:
            return done.stdout.strip()
    return "unknown"


_MACHINE: dict[str, Any] = {}


def machine_info() -> dict[str, Any]:
    if not _MACHINE:
        import cryptography
        from cryptography.hazmat.backends.openssl import backend

        import stateless13

        _MACHINE.update(
            {
                "cpu": _cpu_model(),
                "cores": os.cpu_count(),
                "os": platform.platform(),
                "python": platform.python_version(),
                "python_ssl": ssl.OPENSSL_VERSION,
                "cryptography": f"{cryptography.__version__} ({backend.openssl_version_text()})",
                "stateless13": f"{stateless13.__version__} ({_git_commit()})",
            }
        )
    return _MACHINE


# ---------------------------------------------------------------------------------------------
# Python's ssl, for clients and the ssl anchors


def python_ssl_client_context(*, middlebox_compat: bool = True) -> ssl.SSLContext:
    """OpenSSL's TLS 1.3 client as Python exposes it, certificate checks off (benchmarks only)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    if not middlebox_compat:
        context.options &= ~ssl.OP_ENABLE_MIDDLEBOX_COMPAT
    return context


class MemoryClient:
    """A Python ``ssl`` client over memory BIOs: feed it server bytes, get its bytes back."""

    __slots__ = ("incoming", "outgoing", "tls")

    def __init__(
        self,
        context: ssl.SSLContext,
        server_hostname: str | None = "localhost",
        session: ssl.SSLSession | None = None,
    ) -> None:
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.tls = context.wrap_bio(
            self.incoming, self.outgoing, server_hostname=server_hostname, session=session
        )

    def step(self, data: bytes = b"") -> bytes:
        if data:
            self.incoming.write(data)
        with contextlib.suppress(ssl.SSLWantReadError):
            self.tls.do_handshake()
        return self.outgoing.read()


@contextlib.contextmanager
def pem_files(certificate_pem: bytes, key_pem: bytes) -> Iterator[tuple[str, str]]:
    """Write a PEM chain and key to a private temporary directory (for OpenSSL's loaders)."""
    with tempfile.TemporaryDirectory(prefix="stateless13-bench-") as directory:
        cert_path = os.path.join(directory, "cert.pem")
        key_path = os.path.join(directory, "key.pem")
        Path(cert_path).write_bytes(certificate_pem)
        Path(key_path).write_bytes(key_pem)
        yield cert_path, key_path


def private_key_pem(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    pem: bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem
