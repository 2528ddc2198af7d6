"""examples/quic_server.py runs as written: started with ``--once``, fetched by gtlsclient."""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.peers.test_quic_peers import run_gtlsclient

ROOT = Path(__file__).resolve().parent.parent.parent


def read_until(process: subprocess.Popen[bytes], needle: bytes, timeout: float = 15.0) -> bytes:
    assert process.stdout is not None
    data = b""
    deadline = time.monotonic() + timeout
    while needle not in data:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"{needle!r} not seen in {data!r}"
        if select.select([process.stdout], [], [], remaining)[0]:
            chunk = os.read(process.stdout.fileno(), 65536)
            assert chunk, f"end of output before {needle!r}: {data!r}"
            data += chunk
    return data


@pytest.mark.parametrize("validation", ["hrr", "both"])
def test_quic_server_example(validation: str) -> None:
    process = subprocess.Popen(
        [sys.executable, "examples/quic_server.py", "--once", "--validation", validation],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        banner = read_until(process, b"SPKI pin")
        match = re.search(rb"listening on 127\.0\.0\.1:(\d+) \(UDP, HTTP/3", banner)
        assert match, banner
        run = run_gtlsclient(int(match.group(1)))
        assert run.ok and run.hrr_seen, run.output
        log = read_until(process, b"duration=")
        expected = b"validation=cookie" if validation == "hrr" else b"validation=retry+cookie"
        assert expected + b" hrr=yes cookie=verified" in log, log
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
