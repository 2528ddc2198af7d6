"""Every example runs as written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_memory_handshake_example() -> None:
    process = subprocess.run(
        [sys.executable, "examples/memory_handshake.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert process.returncode == 0, process.stderr
    assert "cookie verified by another config" in process.stdout
    assert "client received b'hello, client' over TLSv1.3" in process.stdout
