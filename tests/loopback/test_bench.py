"""The benchmarks still run: ``python -m bench all`` at a tiny scale, every result well formed.

It checks that each benchmark produces a figure for ours and for its anchor (so a broken anchor
or a renamed library call shows up here, not on the day someone re-measures), never what the
figures are: timings on a shared machine belong in docs/BENCHMARKS.md, not in assertions.
profile_hrr has no anchor (it times our own HRR path by stages; bench.hrr_rate has the anchor):
it must time every stage.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from bench.common import BENCHMARKS

ROOT = Path(__file__).resolve().parents[2]


def test_every_benchmark_runs_and_reports_ours_and_the_anchor(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "all", "--scale", "0.05", "--rounds", "1", "--no-chart",
         "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    for name in BENCHMARKS:
        report = json.loads((tmp_path / f"{name}.json").read_text())
        assert report["benchmark"] == name
        results, tables = report["results"], report["tables"]
        assert results or tables, f"{name}: no results"
        for row in results:
            assert math.isfinite(row["ours_median"]) and row["ours_median"] > 0, (name, row)
            if row["anchor_name"] and row["anchor_median"] is not None:
                assert row["anchor_median"] > 0 and row["ratio"] > 0, (name, row)
        if name != "profile_hrr":
            assert any(row["anchor_median"] for row in results), f"{name}: no anchor"
    tables = json.loads((tmp_path / "profile_hrr.json").read_text())["tables"]
    stages = next(table for table in tables if table["title"].startswith("stages"))
    assert not any("unavailable" in row[0] for row in stages["rows"]), stages["rows"]
    cases = [
        row["case"] for row in json.loads((tmp_path / "handshake.json").read_text())["results"]
    ]
    assert any("crypto floor" in case for case in cases), cases
    for name in ("hrr_rate", "handshake", "records", "resume"):  # issue 14: both builds, one run
        cases = [
            row["case"] for row in json.loads((tmp_path / f"{name}.json").read_text())["results"]
        ]
        for build in ("compiled build", "pure build"):
            assert any(build in case for case in cases), (name, build, cases)
