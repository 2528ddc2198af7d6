"""Both builds of the core side by side, for benchmarks that compare them in one run.

``builds()`` copies the core's sources (``stateless13/*.py``, ``setup.py``) into two temporary
directories, leaves one pure and compiles the other with mypyc (``STATELESS13_COMPILE=1 setup.py
build_ext --inplace``, about 20 s), and yields them by name.  A benchmark runs a worker process
in one of them (``cwd``, which ``python -c`` and ``-m`` put first on sys.path) with the checkout
after it on PYTHONPATH (``worker_env``): that process imports that build, whatever the checkout
holds.  Only the core is copied; a worker that needs the adapters finds them in the
checkout, after it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .common import ROOT

BUILDS = ("compiled", "pure")


@contextlib.contextmanager
def builds() -> Iterator[dict[str, Path]]:
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
