"""Both builds of the core side by side, for benchmarks that compare them in one run.

``builds()`` copies the core's sources (``stateless13/*.py``, ``setup.py``) into two temporary
directories, leaves one pure and compiles the other with mypyc (``STATELESS13_COMPILE=1 setup.py
build_ext --inplace``, about 20 s), and yields them by name.  A benchmark runs a worker process
in one of them (``cwd``, which ``python -c`` and ``-m`` put first on sys.path) with the checkout
after it on PYTHONPATH (``worker_env``): that process imports that build, whatever the checkout
holds.  Only the core is copied; a worker that needs the adapters finds them in the
checkout, after it.

Benchmarks that compare the builds measure in worker processes, each a fresh process per
measurement and round: the benchmark module gains a hidden ``--worker CASE`` option, and in that
mode builds the measurement named CASE, runs it once untimed, once timed, and prints the figure
(``benchmark_main``).  The parent makes one callable per build and case that starts such a
worker and returns its figure (``Workers``), and alternates them as usual.  Only the timed run
counts: the worker's start-up, imports, set-up and warm-up are outside the figure.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Protocol

from .common import ROOT, Report, emit, parser

BUILDS = ("compiled", "pure")

#: The build the anchors' workers run in.  Their timed part runs no stateless13 code (only their
#: set-up may, e.g. ``ServerConfig.self_signed`` for a key), so either build would do.
ANCHOR_BUILD = "pure"

#: One measurement: one call, one figure (e.g. handshakes per second over one round).
Measurement = Callable[[], float]


#: Where ``python -m bench all`` tells the benchmarks it runs that it made the builds once, for
#: all of them (the directory holding one tree per build).
BUILDS_ENV = "STATELESS13_BENCH_BUILDS"


@contextlib.contextmanager
def builds() -> Iterator[dict[str, Path]]:
    shared = os.environ.get(BUILDS_ENV)
    if shared:
        yield {name: Path(shared) / name for name in BUILDS}
        return
    with tempfile.TemporaryDirectory(prefix="stateless13-builds-") as scratch:
        made: dict[str, Path] = {}
        for name in BUILDS:
            tree = Path(scratch) / name
            (tree / "stateless13").mkdir(parents=True)
            for source in (ROOT / "stateless13").glob("*.py"):
                shutil.copy2(source, tree / "stateless13")
            shutil.copy2(ROOT / "stateless13" / "py.typed", tree / "stateless13")
            shutil.copy2(ROOT / "setup.py", tree)
            made[name] = tree
        subprocess.run(
            [sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
            cwd=made["compiled"],
            env=dict(os.environ, STATELESS13_COMPILE="1"),
            stdout=subprocess.DEVNULL,
            check=True,
        )
        for name, tree in made.items():
            found = subprocess.run(
                [sys.executable, "-c", "import stateless13; print(stateless13.COMPILED)"],
                cwd=tree,
                env=worker_env(tree),
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            if found != str(name == "compiled"):
                raise SystemExit(f"the {name} build imports as COMPILED={found}")
        yield made


def worker_env(tree: Path) -> dict[str, str]:
    """The environment of a worker process that must run the build in ``tree``."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join((str(tree), str(ROOT))))


class Workers:
    """Measurements of one benchmark, each made in a fresh worker process of one build.

    ``measure(case, build)`` is a callable for :func:`bench.common.alternate`: every call starts
    ``python -m bench.<benchmark> --worker CASE --seconds S`` in that build's tree and returns the
    figure it prints.
    """

    def __init__(self, benchmark: str, trees: Mapping[str, Path], seconds: float) -> None:
        self._module = f"bench.{benchmark}"
        self._trees = trees
        self._seconds = seconds

    def measure(self, case: str, build: str) -> Measurement:
        tree = self._trees[build]
        command = [sys.executable, "-m", self._module, "--worker", case]
        command += ["--seconds", repr(self._seconds)]
        env = worker_env(tree)

        def in_worker() -> float:
            done = subprocess.run(
                command, cwd=tree, env=env, capture_output=True, text=True, check=False
            )
            if done.returncode != 0:
                raise SystemExit(
                    f"{self._module} worker {case!r} ({build} build) failed with exit status "
                    f"{done.returncode}:\n{done.stderr[-3000:]}"
                )
            return float(done.stdout)

        return in_worker

    def anchor(self, case: str) -> Measurement:
        """An anchor's measurement: a worker like ours, in :data:`ANCHOR_BUILD`'s tree."""
        return self.measure(case, ANCHOR_BUILD)


class Run(Protocol):
    """A benchmark's ``run``: rounds of ``seconds`` each, measured and reported."""

    def __call__(self, seconds: float, rounds: int, *, progress: bool = True) -> Report: ...


def benchmark_main(
    benchmark: str,
    description: str,
    measurement: Callable[[str, float], Measurement],
    run: Run,
    argv: list[str] | None,
) -> int:
    """The ``main`` of a benchmark measured in workers: its options plus the hidden ``--worker``.

    In worker mode, ``measurement(CASE, seconds)`` makes the named measurement (all its set-up
    happens there, outside the figure); it runs once untimed, so that the timed run finds the
    caches, the allocator and any lazily built state as every later call would, then once
    timed, and its figure goes to stdout for :class:`Workers`.
    """
    options = parser(benchmark, description)
    options.add_argument("--worker", metavar="CASE", help=argparse.SUPPRESS)
    args = options.parse_args(argv)
    if args.worker is not None:
        measure = measurement(args.worker, args.seconds)
        measure()
        print(repr(measure()))
        return 0
    emit(run(args.seconds, args.rounds, progress=not args.quiet), args.json)
    return 0
