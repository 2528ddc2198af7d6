"""Our TCP server, run in a background thread, for clients to connect to (the ``tls_server``
fixture in tests/conftest.py starts it), and how the tests find the real peers.

``tls_server(...)`` starts ``stateless13.transports.asyncio_tcp.serve`` with the CLI's HTTP handler
(or echo) on 127.0.0.1 and a free port and collects one ConnectionReport per connection, so a test
can check from the server's own account that an HRR with a cookie went out, that the cookie was
verified, and what was negotiated."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from stateless13 import Credential, ServerConfig
from stateless13.dtls_listener import DtlsListenerLimits
from stateless13.transports.common import ConnectionReport
from stateless13.transports.demo import PAGE_TEXT as PAGE_TEXT  # re-exported for the tests
from stateless13.transports.demo import echo, http_page
from stateless13.transports.dtls_server import (
    DatagramHandler,
    DtlsOptions,
    DtlsServer,
    echo_datagram,
    serve_dtls,
)

#: Where Debian puts daemons (nginx): not on a plain user's PATH, as CI's clean environment has it.
_SYSTEM_PROGRAMS = "/usr/sbin:/sbin"


def require_peer(program: str) -> str:
    """The path of a peer program; a missing peer fails the test (CI never skips a peer)."""
    path = shutil.which(program, path=f"{os.environ.get('PATH', '')}:{_SYSTEM_PROGRAMS}")
    assert path is not None, f"peer {program!r} is not installed: run ./run-tests to install it"
    return path


def build_go_program(
    source: Path, work: Path, gopath: Path | None = None, timeout: float = 300
) -> Path:
    """``go build`` offline with Debian's Go (GOPATH mode: Debian ships its Go libraries there)."""
    go = require_peer("go")
    binary = work / source.parent.name
    env = {
        **os.environ,
        "GOPATH": str(gopath or work / "gopath"),
        "GOCACHE": str(work / "gocache"),
        "GOFLAGS": "",
        "GO111MODULE": "off",
        "GOPROXY": "off",
        "GOTOOLCHAIN": "local",
    }
    built = subprocess.run(
        [go, "build", "-o", str(binary), str(source)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert built.returncode == 0, f"go build failed:\n{built.stdout}{built.stderr}"
    return binary


@dataclass
class RunningServer:
    host: str
    port: int
    cert_path: Path
    credential: Credential
    reports: list[ConnectionReport] = field(default_factory=list)
    server: DtlsServer | None = None  # the DTLS server itself (dtls_server), for its stats

    def wait_reports(self, count: int, timeout: float = 10.0) -> list[ConnectionReport]:
        deadline = time.monotonic() + timeout
        while len(self.reports) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return list(self.reports)

    def only_report(self) -> ConnectionReport:
        reports = self.wait_reports(1)
        assert len(reports) >= 1, "the server saw no connection"
        return reports[-1]


# The command line's own handlers: the page the tests fetch is the one `stateless13 serve` serves.
http_handler = http_page
echo_handler = echo


ServerFactory = Callable[..., RunningServer]


#: wolfSSL 5.8.4 with DTLS 1.3, the one DTLS 1.3 peer there is (../shared/peers/wolfssl-dtls13).
WOLFSSL_DTLS13_SOURCE = Path(__file__).resolve().parents[2] / "shared/peers/wolfssl-dtls13"


#: Where it is built: one directory for the tests and the benchmark, so that a second build is
#: make's "nothing to do" (about 0.1 s) rather than 10 s of compiling.
WOLFSSL_DTLS13_BUILD = Path(tempfile.gettempdir()) / f"stateless13-wolfssl-dtls13-{os.getuid()}"


def build_wolfssl_dtls_peer(work: Path = WOLFSSL_DTLS13_BUILD, timeout: float = 300) -> Path:
    """Build ``dtls13_peer`` (wolfSSL's DTLS 1.3 client and server) into ``work``, or bring the
    build there up to date; a missing compiler or source fails the test."""
    require_peer("gcc")
    require_peer("make")
    build = WOLFSSL_DTLS13_SOURCE / "build"
    assert build.is_file(), f"the wolfSSL DTLS 1.3 peer's sources are missing: {build}"
    built = subprocess.run([str(build), str(work)], capture_output=True, text=True, timeout=timeout)
    assert built.returncode == 0, f"building wolfSSL failed:\n{built.stdout}{built.stderr}"
    return work / "dtls13_peer"


@contextlib.contextmanager
def dtls_server(
    config: ServerConfig | None = None,
    *,
    handler: DatagramHandler | None = None,
    limits: DtlsListenerLimits | None = None,
    options: DtlsOptions | None = None,
) -> Iterator[RunningServer]:
    """Our DTLS 1.3 server (``serve_dtls``, echo by default) on 127.0.0.1 and a free UDP port,
    in a thread of its own, collecting its ConnectionReports."""
    credential = (config.credentials[0] if config else None) or Credential.self_signed("localhost")
    config = config or ServerConfig(credentials=(credential,))
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stop = asyncio.Event()
    running: list[RunningServer] = []

    async def main() -> None:
        server = await serve_dtls(
            config,
            "127.0.0.1",
            0,
            handler=handler or echo_datagram,
            limits=limits,
            options=options,
            on_report=lambda r: running[0].reports.append(r),
        )
        host, port = server.address
        running.append(RunningServer(host, port, Path(), credential))
        running[0].server = server
        ready.set()
        async with server:
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    try:
        assert ready.wait(10), "DTLS server did not start"
        yield running[0]
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()


def free_udp_port() -> int:
    """A UDP port free on 127.0.0.1 now (for a peer that binds it itself)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
