"""Draw docs/benchmarks.png from the benchmarks' --json outputs: ours vs the anchors.

    python -m bench.chart [RESULTS_DIR] [--out docs/benchmarks.png]

RESULTS_DIR (default bench/results) holds ``<benchmark>.json`` files as written by
``python -m bench all`` (or ``python -m bench.<name> --json > <name>.json``).  Missing ones
leave their panel out.  Needs matplotlib: ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import argparse
import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .common import RESULTS_DIR, ROOT

OURS_COLOR = "#2a6fdb"
ANCHOR_COLOR = "#9a9a9a"


@dataclass(frozen=True)
class Panel:
    benchmark: str
    title: str
    ylabel: str
    keep: Callable[[dict[str, Any]], bool]
    label: Callable[[str], str]
    log: bool = False
    #: A line across the panel: (value, label), or the name of an anchor whose median it is
    #: (OpenSSL in C, measured in the same run against the mix of clients only).
    reference: tuple[float, str] | str | None = None


def _split_build(case: str) -> tuple[str, str]:
    """A row's case without the build it ends with ("...: compiled build", "..., pure build"),
    and that build ("" if none: a row from before both builds were measured)."""
    for build in ("compiled", "pure"):
        for separator in (": ", ", "):
            if case.endswith(f"{separator}{build} build"):
                return case.removesuffix(f"{separator}{build} build"), build
    return case, ""


def _with_build(label: str, build: str) -> str:
    return f"{label}\n{build}" if build else label


def _short_client(case: str) -> str:
    name, build = _split_build(case.split(" (")[0])
    name = name.replace("all clients, in turn", "all").replace("python_ssl", "py ssl")
    return _with_build(name, build)


def _short_record(case: str) -> str:
    case, build = _split_build(case)
    suite, direction = case.replace(",", "").split(" ")[:2]
    suite = {"AES_128_GCM_SHA256": "AES128", "AES_256_GCM_SHA384": "AES256"}.get(suite, "ChaCha")
    return _with_build(f"{suite}\n{direction}", build)


def _short_handshake(case: str) -> str:
    case, build = _split_build(case)
    label = (
        case.replace("X25519MLKEM768", "MLKEM")
        .replace("ECDSA P-256", "P-256")
        .replace("x25519, P-256, ours through the stateless HRR (CH1+CH2+Finished)", "via HRR")
        .replace(", ours through the stateless HRR (CH1+CH2+Finished)", "\nvia HRR")
        .replace(": the cryptography calls of one of our handshakes, alone", "\ncrypto alone")
        .replace(": crypto floor (no protocol code)", "\ncrypto\nfloor")
        .replace("interleaved", "inter-\nleaved")
        .replace(", ", "\n")
    )
    return _with_build(label, build)


def _short_resume(case: str) -> str:
    case, build = _split_build(case)
    return _with_build("CH2 -> Accepted", build or "x25519, P-256")


def _short_socket(case: str) -> str:
    text = case.replace(" per server CPU-second", "")
    text = text.replace("handshakes: ", "handshakes\n").replace("first answers: ", "CH1 answers\n")
    return text.replace("ours, no stateless", "ours no-HRR")


PANELS = (
    Panel(
        "hrr_rate",
        "HRRs/s per client (one core)",
        "HelloRetryRequests/s",
        lambda row: row["anchor_name"] == "OpenSSL SSL_stateless (ctypes)",
        _short_client,
        reference="OpenSSL SSL_stateless in C",
    ),
    Panel(
        "handshake",
        "Full handshake, server side (one core)",
        "handshakes/s",
        lambda row: "2 tickets" not in row["case"] and "codec client" not in row["case"],
        _short_handshake,
    ),
    Panel(
        "resume",
        "CH2 -> server flight (one core)",
        "resumes/s",
        lambda row: row["anchor_name"] is not None,
        _short_resume,
    ),
    Panel(
        "records",
        "16 KiB records, ServerConnection vs SSLObject",
        "MB/s",
        lambda row: ", ServerConnection" in row["case"],
        _short_record,
    ),
    Panel(
        "sizes",
        "HRR bytes / ClientHello1 bytes (lower is better)",
        "HRR / CH1",
        lambda row: True,
        _short_client,
        reference=(1.0, "amplification above this line"),
    ),
    Panel(
        "memory",
        "Bytes kept per client, RSS (lower is better)",
        "bytes per client (log)",
        lambda row: True,
        lambda case: "after answering CH1" if case.startswith("after") else "in-progress handshake",
        log=True,
    ),
    Panel(
        "sockets",
        "Loopback server, per server CPU-second",
        "per CPU-second",
        lambda row: row["unit"].endswith("/CPU-s"),
        _short_socket,
    ),
)


def _anchor_label(rows: list[dict[str, Any]]) -> str:
    names = sorted({row["anchor_name"] for row in rows if row["anchor_name"]}, key=len)
    return names[0] if names else "anchor"


def _reference(panel: Panel, rows: list[dict[str, Any]]) -> tuple[float, str] | None:
    if not isinstance(panel.reference, str):
        return panel.reference
    for row in rows:
        if row["anchor_name"] == panel.reference and row["anchor_median"]:
            median = float(row["anchor_median"])
            return median, f"{panel.reference}: {median / 1000:.1f}k/s"
    return None


def draw(results: dict[str, dict[str, Any]], out: Path) -> None:
    matplotlib = importlib.import_module("matplotlib")
    matplotlib.use("Agg")
    pyplot = importlib.import_module("matplotlib.pyplot")

    panels = [panel for panel in PANELS if panel.benchmark in results]
    if not panels:
        raise SystemExit("no benchmark results to draw")
    columns = 2
    rows_count = (len(panels) + columns - 1) // columns
    figure, axes = pyplot.subplots(rows_count, columns, figsize=(16, 4.6 * rows_count))
    flat = list(axes.flat) if hasattr(axes, "flat") else [axes]
    for axis in flat[len(panels) :]:
        axis.set_visible(False)
    machine = next(iter(results.values()))["machine"]
    for axis, panel in zip(flat, panels, strict=False):
        rows = [row for row in results[panel.benchmark]["results"] if panel.keep(row)]
        labels = [panel.label(row["case"]) for row in rows]
        positions = list(range(len(rows)))
        width = 0.38
        ours = [row["ours_median"] for row in rows]
        anchors = [row["anchor_median"] or 0.0 for row in rows]
        axis.bar([p - width / 2 for p in positions], ours, width, label="stateless13",
                 color=OURS_COLOR)  # fmt: skip
        axis.bar([p + width / 2 for p in positions], anchors, width,
                 label=_anchor_label(rows), color=ANCHOR_COLOR)  # fmt: skip
        for position, row in zip(positions, rows, strict=True):
            if row["ratio"] is not None:
                top = max(row["ours_median"], row["anchor_median"] or 0.0)
                axis.annotate(
                    f"{row['ratio']:.2f}x",
                    (position, top),
                    textcoords="offset points",
                    xytext=(0, 3),
                    ha="center",
                    fontsize=9,
                    fontweight="bold",
                )
        reference = _reference(panel, results[panel.benchmark]["results"])
        if reference is not None:
            axis.axhline(reference[0], color="#d62728", linestyle="--", linewidth=1,
                         label=reference[1])  # fmt: skip
        if panel.log:
            axis.set_yscale("log")
        axis.set_title(panel.title, fontsize=12)
        axis.set_ylabel(panel.ylabel)
        axis.set_xticks(positions)
        # Both builds double the bars of some panels: smaller labels keep them apart.
        axis.set_xticklabels(labels, fontsize=8.5 if len(rows) <= 10 else 7)
        if len(rows) < 3:  # keep one or two groups from spreading over the whole panel
            axis.set_xlim(-1.2, len(rows) + 0.2)
        if panel.log:
            axis.set_ylim(top=max(ours + anchors) * 8)
        else:
            axis.set_ylim(top=max(ours + anchors + [reference[0] if reference else 0.0]) * 1.3)
        axis.grid(axis="y", alpha=0.3)
        axis.legend(fontsize=8, loc="upper left", framealpha=0.9)
    figure.suptitle(
        "stateless13 vs anchors, same run, medians; ratio = ours / anchor  "
        f"({machine['cores']} cores, {machine['cpu']}, Python {machine['python']}, "
        f"{machine['python_ssl']})",
        fontsize=12,
    )
    figure.tight_layout(rect=(0, 0, 1, 0.97))
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    pyplot.close(figure)


def load(directory: Path) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.glob("*.json")):
        data = json.loads(path.read_text())
        if isinstance(data, dict) and "benchmark" in data:
            results[data["benchmark"]] = data
    return results


def main(argv: list[str] | None = None) -> int:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("results", nargs="?", type=Path, default=RESULTS_DIR)
    options.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.png")
    args = options.parse_args(argv)
    try:
        importlib.import_module("matplotlib")
    except ImportError:
        raise SystemExit("bench.chart needs matplotlib: pip install -e '.[bench]'") from None
    draw(load(args.results), args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
