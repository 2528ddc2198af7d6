"""Our TCP server, run in a background thread, for real clients to connect to.

``tls_server(...)`` starts ``stateless13.transports.asyncio_tcp.serve`` with the CLI's HTTP handler
(or echo) on 127.0.0.1 and a free port and collects one ConnectionReport per connection, so a test
can check from the server's own account that an HRR with a cookie went out, that the cookie was
verified, and what was negotiated."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from stateless13 import Credential, ServerConfig
from stateless13.transports.asyncio_tcp import TLSStream, serve
from stateless13.transports.common import ConnectionReport, Limits
from stateless13.transports.demo import PAGE_TEXT as PAGE_TEXT  # re-exported for the peer tests
from stateless13.transports.demo import echo, http_page


def require_peer(program: str) -> str:
    """The path of a peer program; a missing peer fails the test (CI never skips a peer)."""
    path = shutil.which(program)
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


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[ServerFactory]:
    """``tls_server(stateless=True, handler=http_handler, limits=None, **config_options)``."""
    loops: list[tuple[asyncio.AbstractEventLoop, threading.Thread, asyncio.Event]] = []

    def start(
        *,
        stateless: bool = True,
        handler: Callable[[TLSStream], Awaitable[None]] = http_handler,
        limits: Limits | None = None,
        key_type: str = "ecdsa-p256",
        **options: object,
    ) -> RunningServer:
        credential = Credential.self_signed("localhost", key_type)
        cert_path = tmp_path / f"cert{len(loops)}.pem"
        cert_path.write_bytes(credential.certificate_pem())
        config = ServerConfig(credentials=(credential,), **options)  # type: ignore[arg-type]
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        stop = asyncio.Event()
        running: list[RunningServer] = []

        async def main() -> None:
            server = await serve(
                config,
                handler,
                "127.0.0.1",
                0,
                limits=limits,
                stateless=stateless,
                on_report=lambda r: running[0].reports.append(r),
            )
            port = server.sockets[0].getsockname()[1]
            running.append(RunningServer("127.0.0.1", port, cert_path, credential))
            ready.set()
            async with server:
                await stop.wait()

        thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
        thread.start()
        assert ready.wait(10), "server did not start"
        loops.append((loop, thread, stop))
        return running[0]

    yield start
    for loop, thread, stop in loops:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()
