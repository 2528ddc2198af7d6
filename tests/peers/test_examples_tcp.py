"""The TCP examples run as written: started with ``--once``, driven by real clients, exit 0."""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

from tests.servers import require_peer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TIMEOUT = 10.0
LOG_LINE = re.compile(r"hrr=yes cookie=verified suite=TLS_\w+ group=\w+ .*duration=")


def read_until(stream: IO[bytes], needle: bytes, timeout: float = TIMEOUT) -> bytes:
    """Read a pipe until ``needle`` shows (bounded by ``timeout``); everything read so far."""
    data = b""
    deadline = time.monotonic() + timeout
    while needle not in data:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"{needle!r} not seen in {data!r}"
        if select.select([stream], [], [], remaining)[0]:
            chunk = os.read(stream.fileno(), 65536)
            assert chunk, f"end of output before {needle!r}: {data!r}"
            data += chunk
    return data


@contextmanager
def example(name: str) -> Iterator[tuple[subprocess.Popen[bytes], int, bytes]]:
    """Start ``examples/NAME --once``; yield it, its port and its first line."""
    process = subprocess.Popen(
        [sys.executable, f"examples/{name}", "--once"],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=ROOT, PYTHONUNBUFFERED="1"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        first = read_until(process.stdout, b"\n")
        match = re.match(rb"listening on 127\.0\.0\.1:(\d+)\n", first)
        assert match, first
        yield process, int(match[1]), first
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(TIMEOUT)


def finish(process: subprocess.Popen[bytes]) -> tuple[str, str]:
    """Wait for the example to exit by itself (``--once``); its remaining stdout and stderr."""
    stdout, stderr = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 0, (stdout, stderr)
    return stdout.decode(), stderr.decode()


def test_asyncio_echo_server_with_openssl() -> None:
    openssl = require_peer("openssl")
    line = b"hello, echo over TLS 1.3\n"
    with example("asyncio_echo_server.py") as (server, port, _):
        # -quiet implies -ign_eof; -no_ign_eof makes s_client close (close_notify) at the end
        # of its input, which ends the echo and so the --once server.
        args = [openssl, "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost"]
        args += ["-tls1_3", "-quiet", "-no_ign_eof"]
        client = subprocess.Popen(
            args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            assert client.stdin is not None and client.stdout is not None
            client.stdin.write(line)
            client.stdin.flush()
            assert read_until(client.stdout, line) == line  # -quiet: only the echo
            client.stdin.close()  # only now: closing earlier could beat the echo
            assert client.wait(TIMEOUT) == 0
        finally:
            if client.poll() is None:
                client.kill()
                client.wait(TIMEOUT)
        stdout, stderr = finish(server)
    assert re.search(r"connected: TLS_\w+, \w+, cookie verified: True", stdout), stdout
    assert LOG_LINE.search(stderr), stderr


def test_blocking_server_with_curl() -> None:
    curl = require_peer("curl")
    with example("blocking_server.py") as (server, port, _):
        args = [curl, "--silent", "--show-error", "--insecure", "--tlsv1.3", "--noproxy", "*"]
        args += ["--max-time", "5", f"https://127.0.0.1:{port}/"]
        run = subprocess.run(
            args,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        assert run.returncode == 0, run.stderr
        assert re.fullmatch(r"hello over TLS_\w+ with \w+; cookie verified: True\n", run.stdout), (
            run.stdout
        )
        _, stderr = finish(server)
    assert LOG_LINE.search(stderr), stderr
