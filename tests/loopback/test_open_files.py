"""A low open-file limit (issue 20): ``stateless13 serve`` at ``ulimit -n 256`` under 400 idle
connections logs no traceback and no line per refusal, and serves an honest client once the
idle ones are gone.  It used to log a traceback per failed accept (33,228 in 40 s at 1024)."""

from __future__ import annotations

import contextlib
import os
import re
import resource
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OPEN_FILES = 256


def _low_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (OPEN_FILES, OPEN_FILES))


def test_a_low_open_file_limit_under_a_flood(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "stateless13", "serve", "--port", "0", "--handshake-timeout", "30"],
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=_low_limit,
    )
    assert process.stdout is not None
    try:
        banner = process.stdout.readline()
        port = int(re.search(r":(\d+) ", banner).group(1))  # type: ignore[union-attr]
        idle = []
        for _ in range(400):  # more than the descriptors it has
            with contextlib.suppress(OSError):
                idle.append(socket.create_connection(("127.0.0.1", port), timeout=2))
        time.sleep(1.5)
        for sock in idle:
            sock.close()
        time.sleep(0.5)
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            page = b""
            while chunk := tls.recv(65536):
                page += chunk
        assert b"200 OK" in page and b"Hello from stateless13" in page, page
    finally:
        process.terminate()
        output = process.communicate(timeout=20)[0]
    assert process.returncode == 0, output[-2000:]
    assert "Traceback" not in output, output[output.find("Traceback") - 500 :][:3000]
    refusals = [line for line in output.splitlines() if "refused" in line]
    assert 1 <= len(refusals) <= 5, refusals[:10]  # counted, one line in a while, not one each
