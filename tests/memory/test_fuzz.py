"""A bounded slice of the coverage-guided fuzzer runs in CI (`python -m fuzz` runs long)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_fuzz_slice_finds_no_crash(tmp_path: Path) -> None:
    runs = int(os.environ.get("STATELESS13_FUZZ_RUNS", "30000"))
    process = subprocess.run(
        [
            sys.executable,
            "-m",
            "fuzz",
            f"-runs={runs}",
            "-max_total_time=120",
            "-timeout=10",
            str(tmp_path),
            str(ROOT / "tests" / "fuzz_corpus"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    output = process.stdout + process.stderr
    assert process.returncode == 0, output[-4000:]
    assert "Done" in output, output[-4000:]


def test_the_harness_fails_on_an_uncaught_exception(tmp_path: Path) -> None:
    """The control: the harness does report a crash (so the slice above can fail)."""
    crash = tmp_path / "crash.py"
    crash.write_text(
        "import sys, fuzz.__main__ as f\n"
        "import stateless13.stateless as s\n"
        "def boom(*a, **k): raise RuntimeError('planted')\n"
        "f.stateless_accept = boom\n"
        "sys.argv = [sys.argv[0], '-runs=10', sys.argv[1]]\n"
        "f.main()\n"
    )
    process = subprocess.run(
        [sys.executable, str(crash), str(ROOT / "tests" / "fuzz_corpus")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert process.returncode != 0 and "planted" in process.stdout + process.stderr


def test_the_corpus_clienthello2_seeds_still_reach_accepted() -> None:
    """Seeds that stopped verifying (a cookie format change) would quietly shrink coverage:
    regenerate with ``python -m fuzz --make-corpus tests/fuzz_corpus``."""
    import fuzz.__main__ as harness
    from stateless13 import Accepted, stateless_accept

    seeds = sorted((ROOT / "tests" / "fuzz_corpus").glob("ch2-*"))
    assert seeds
    for seed in seeds:
        data = seed.read_bytes()[1:]
        result = stateless_accept(harness.CONFIG, data, peer=harness.PEER, now=harness.NOW)
        assert isinstance(result, Accepted), (seed.name, result)
