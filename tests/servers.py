"""Our TCP server, run in a background thread, for clients to connect to (the ``tls_server``
fixture in tests/conftest.py starts it), and how the tests find the real peers.

``tls_server(...)`` starts ``stateless13.transports.asyncio_tcp.serve`` with the CLI's HTTP handler
(or echo) on 127.0.0.1 and a free port and collects one ConnectionReport per connection, so a test
can check from the server's own account that an HRR with a cookie went out, that the cookie was
verified, and what was negotiated."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from stateless13 import Credential
from stateless13.transports.common import ConnectionReport
from stateless13.transports.demo import PAGE_TEXT as PAGE_TEXT  # re-exported for the tests
from stateless13.transports.demo import echo, http_page

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
