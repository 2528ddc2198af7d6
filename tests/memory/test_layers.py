"""The arrows point down: read from the source, so a wrong import fails here, not in review.

* The core (``stateless13/*.py``) never imports the adapters or the command line
  (``stateless13.transports``); ``__main__`` is the one entry point that runs the CLI.
* The adapters (``transports/``, installed as ``stateless13.transports``) import only the
  names ``stateless13`` exports (its ``__all__``), never a core module directly.
* Within the core, the record layer knows nothing of the handshake, and the key schedule,
  the codec and the primitives know nothing of either.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import stateless13

ROOT = Path(__file__).resolve().parents[2]
CORE = sorted((ROOT / "stateless13").glob("*.py"))
ADAPTERS = sorted((ROOT / "transports").glob("*.py"))


def imports(path: Path) -> list[tuple[str, tuple[str, ...]]]:
    """(absolute module, names) for every import in ``path``; relative ones resolved."""
    package = "stateless13" if path.parent.name == "stateless13" else "stateless13.transports"
    found: list[tuple[str, tuple[str, ...]]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, ()) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, module] if module else base)
            found.append((module, tuple(alias.name for alias in node.names)))
    return found


def test_the_trees_are_where_the_test_looks() -> None:
    assert len(CORE) > 10 and len(ADAPTERS) > 5


@pytest.mark.parametrize("path", [p for p in CORE if p.name != "__main__.py"], ids=lambda p: p.name)
def test_the_core_never_imports_an_adapter_or_the_cli(path: Path) -> None:
    for module, names in imports(path):
        assert not module.startswith("stateless13.transports"), (path.name, module)
        assert not (module == "stateless13" and "transports" in names), (path.name, module)


@pytest.mark.parametrize("path", ADAPTERS, ids=lambda p: p.name)
def test_adapters_use_only_the_documented_names(path: Path) -> None:
    public = set(stateless13.__all__) | {"__version__"}
    for module, names in imports(path):
        if module == "stateless13":
            assert set(names) <= public, (path.name, set(names) - public)
        elif module.startswith("stateless13.") and not module.startswith("stateless13.transports"):
            raise AssertionError(f"{path.name} imports the core module {module}")


@pytest.mark.parametrize(
    ("lower", "forbidden"),
    [
        ("record", {"handshake", "connection", "stateless", "retry"}),
        ("key_schedule", {"handshake", "record", "connection", "stateless", "retry"}),
        ("messages", {"handshake", "record", "connection", "stateless", "retry", "negotiation"}),
        ("primitives", {"handshake", "record", "connection", "stateless", "retry"}),
        ("retry", {"handshake", "record", "connection", "stateless"}),
        # DTLS: records and flights move bytes; only the connection and the listener know the
        # handshake, and the listener (stateless) never the reverse.
        ("dtls_record", {"handshake", "connection", "stateless", "retry", "dtls_flight"}),
        ("dtls_flight", {"handshake", "connection", "stateless", "retry", "dtls_record"}),
        ("dtls_connection", {"connection", "stateless", "retry", "dtls_listener"}),
    ],
)
def test_lower_core_modules_do_not_import_higher_ones(lower: str, forbidden: set[str]) -> None:
    path = ROOT / "stateless13" / f"{lower}.py"
    imported = {m.removeprefix("stateless13.") for m, _ in imports(path)}
    assert not imported & forbidden, (lower, imported & forbidden)
