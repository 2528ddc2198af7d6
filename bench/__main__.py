"""``python -m bench``: run one benchmark, or all of them and the chart.

python -m bench                      list the benchmarks
python -m bench NAME [options]       the same as python -m bench.NAME [options]
python -m bench all [--out DIR] [--scale F] [--rounds N] [--skip a,b]
                                     every benchmark in a fresh process, with --json saved
                                     to DIR/NAME.json (default bench/results), tables on
                                     stdout, then docs/benchmarks.png if matplotlib is there
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from .builds import BUILDS_ENV, builds
from .common import BENCHMARKS, RESULTS_DIR, ROOT, Report

#: Not benchmarks, but run the same way.
OTHER = {
    "chart": "draw docs/benchmarks.png from the JSON results",
    "capture": "capture ClientHello1s from the installed peers (tests/data/client_hellos)",
    "hostile": "issue 20's ten hostile-load measurements against stateless13 serve (~4 min)",
}


def _list() -> int:
    print(__doc__)
    for name, (what, _, _) in BENCHMARKS.items():
        print(f"  {name:<12} {what}")
    for name, what in OTHER.items():
        print(f"  {name:<12} {what}")
    return 0


def _all(argv: list[str]) -> int:
    options = argparse.ArgumentParser(prog="python -m bench all")
    options.add_argument("--out", type=Path, default=RESULTS_DIR, help="where the JSON goes")
    options.add_argument("--scale", type=float, default=1.0, help="multiply seconds per round")
    options.add_argument("--rounds", type=int, help="rounds for every benchmark")
    options.add_argument("--skip", default="", help="comma-separated benchmarks to leave out")
    options.add_argument("--no-chart", action="store_true")
    args = options.parse_args(argv)
    skip = {name.strip() for name in args.skip.split(",") if name.strip()}
    args.out.mkdir(parents=True, exist_ok=True)
    with builds() as trees:  # made once (about 20 s), for every benchmark that compares them
        status = _run_all(args, skip, dict(os.environ, **{BUILDS_ENV: str(trees["pure"].parent)}))
    if status != 0:
        return status
    if not args.no_chart:
        try:
            importlib.import_module("matplotlib")
        except ImportError:
            print("no matplotlib: chart skipped (pip install -e '.[bench]')", file=sys.stderr)
        else:
            from . import chart

            chart.main([str(args.out)])
    return 0


def _run_all(args: argparse.Namespace, skip: set[str], env: dict[str, str]) -> int:
    for name, (_, seconds, rounds) in BENCHMARKS.items():
        if name in skip:
            continue
        command = [sys.executable, "-m", f"bench.{name}", "--json"]
        if seconds is not None:
            command += ["--seconds", f"{seconds * args.scale:g}"]
        if rounds is not None and args.rounds is not None:
            command += ["--rounds", str(args.rounds)]
        print(f"$ {' '.join(['python', *command[1:]])}", file=sys.stderr, flush=True)
        started = time.monotonic()
        done = subprocess.run(
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True, check=False
        )
        if done.returncode != 0:
            print(f"bench.{name} failed (exit {done.returncode})", file=sys.stderr)
            return done.returncode
        (args.out / f"{name}.json").write_text(done.stdout)
        print(Report.from_json(json.loads(done.stdout)).render())
        print(f"({time.monotonic() - started:.0f} s)\n", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "list"):
        return _list()
    name, rest = args[0], args[1:]
    if name == "all":
        return _all(rest)
    if name not in BENCHMARKS and name not in OTHER:
        print(f"unknown benchmark {name!r}", file=sys.stderr)
        _list()
        return 2
    module = importlib.import_module(f"bench.{name}")
    result: int = module.main(rest)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
