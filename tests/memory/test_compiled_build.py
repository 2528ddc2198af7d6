"""What the mypyc-compiled build needs of the source (issue 14), checked on every build.

mypyc compiles what ``mypy --strict`` accepts, with a few differences that only show at run time:
* Two ``except ... as NAME`` clauses of one ``try`` that bind the same name: the compiled code
  raised TypeError when the second clause ran (seen in stateless.py while measuring), so a test of
  the clause on the compiled build is needed to see it, and a source check catches it first.
* A compiled class cannot be subclassed by interpreted code (tests, users): extension points are
  Protocols (``Entropy``), not base classes.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

import stateless13
from stateless13 import COMPILED

ROOT = Path(__file__).resolve().parents[2]
CORE = sorted((ROOT / "stateless13").glob("*.py"))
#: Modules setup.py leaves pure in both builds.
NOT_COMPILED = {"__init__", "__main__"}


def same_name_handlers(source: str) -> list[tuple[int, str]]:
    """(line, name) of every ``except ... as name`` that repeats a name bound by an earlier
    clause of the same ``try``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Try | ast.TryStar):
            seen: set[str] = set()
            for handler in node.handlers:
                if handler.name is not None:
                    if handler.name in seen:
                        found.append((handler.lineno, handler.name))
                    seen.add(handler.name)
    return found


def test_the_check_finds_what_mypyc_miscompiles() -> None:
    source = (
        "try:\n    pass\nexcept KeyError as error:\n    pass\n"
        "except ValueError as error:\n    pass\n"
        "try:\n    pass\nexcept KeyError as one:\n    pass\nexcept ValueError as other:\n    pass\n"
    )
    assert same_name_handlers(source) == [(5, "error")]


@pytest.mark.parametrize("path", CORE, ids=lambda path: path.name)
def test_no_try_binds_one_name_in_two_clauses(path: Path) -> None:
    assert same_name_handlers(path.read_text()) == [], path.name


def test_the_build_is_what_it_says() -> None:
    """COMPILED is True exactly when every compiled module was loaded from an extension: a stale
    or missing .so cannot pass for the other build."""
    for path in CORE:
        if path.stem in NOT_COMPILED:
            continue
        spec = importlib.util.find_spec(f"stateless13.{path.stem}")
        assert spec is not None and spec.origin is not None
        assert spec.origin.endswith(".so") == COMPILED, (path.stem, spec.origin, COMPILED)
    assert stateless13.COMPILED is COMPILED
