"""Where the time of one of our HRRs goes: profile, stages timed alone, floors, whole rate.

    python -m bench.profile_hrr [--count N] [--seconds S] [--rounds N] [--json] [--pstats FILE]

1. cProfile of ``stateless_accept`` over the captured ClientHello1s (all peers in turn): the
   functions with the most own time, per HRR (cProfile inflates small calls: read it for shares).
2. The stages timed one at a time without a profiler, on the same ClientHellos: µs per call.
3. Floors: the cryptography and randomness one HRR cannot avoid.
4. ``stateless_accept`` as a whole, HRRs/s over the rounds (its anchor is bench.hrr_rate's).
"""

from __future__ import annotations

import cProfile
import hashlib
import os
import pstats
import statistics
from collections.abc import Callable
from typing import Any, cast

from cryptography.hazmat.primitives.ciphers.aead import AESGCMSIV

from stateless13 import ServerConfig, stateless_accept
from stateless13.messages import pull_client_hello

from .common import (
    PEER,
    Progress,
    Report,
    Row,
    Table,
    alternate,
    captured_client_hellos,
    emit,
    parser,
    timed_rate,
)

NOW = 2_000_000_000.0


def _per_call(work: Callable[[], object], inputs: int, seconds: float) -> float:
    """Microseconds per call of ``work`` (which makes ``inputs`` calls), best of 3 runs."""
    best = float("inf")
    for _ in range(3):
        rate = timed_rate(lambda: (work(), inputs)[1], seconds / 3)
        best = min(best, 1e6 / rate)
    return best


# ---------------------------------------------------------------------------------------------
# 1. cProfile


def profile(config: ServerConfig, hellos: list[bytes], count: int, dump: str | None) -> Table:
    profiler = cProfile.Profile()
    for hello in hellos * 20:
        stateless_accept(config, hello, peer=PEER, now=NOW)
    profiler.enable()
    for index in range(count):
        stateless_accept(config, hellos[index % len(hellos)], peer=PEER, now=NOW)
    profiler.disable()
    if dump:
        profiler.dump_stats(dump)
    stats: Any = cast(
        Any, pstats.Stats(profiler)
    ).stats  # {(file, line, name): (cc, nc, tt, ct, callers)}
    total = sum(entry[2] for entry in stats.values())
    rows = []
    for (filename, line, name), (_, calls, own, cumulative, _) in sorted(
        stats.items(), key=lambda item: -item[1][2]
    )[:22]:
        where = filename.rsplit("/", 1)[-1] if filename.startswith("/") else filename
        location = f"{where}:{line}" if line else "(built-in)"
        rows.append(
            [
                f"{name} {location}",
                f"{calls / count:.1f}",
                f"{1e6 * own / count:.2f}",
                f"{100 * own / total:.1f}%",
                f"{1e6 * cumulative / count:.2f}",
            ]
        )
    return Table(
        f"cProfile, {count} HRRs: top functions by own time (µs per HRR, profiler-inflated)",
        ["function", "calls/HRR", "own µs", "own %", "cumulative µs"],
        rows,
    )


# ---------------------------------------------------------------------------------------------
# 2. Stages


def stages(config: ServerConfig, hellos: list[bytes], seconds: float) -> Table:
    """Each step of the HRR path on its own, with the previous steps' outputs precomputed."""
    from stateless13 import negotiation, record, stateless
    from stateless13.cookie import CookieState, peer_binding

    rows: list[list[Any]] = []
    total = _per_call(
        lambda: [stateless_accept(config, h, peer=PEER, now=NOW) for h in hellos],
        len(hellos),
        seconds,
    )
    steps: list[tuple[str, Callable[[], object]]] = []
    try:
        from stateless13.messages import build_hello_retry_request

        def find(hello: bytes) -> tuple[bytes, int] | None:
            """Where stateless_accept finds the ClientHello: the one-record case, else reading."""
            found = stateless._whole_client_hello_record(hello, config.max_client_hello_size)
            if found is None:
                found = stateless._Reader(config.max_client_hello_size, 0).read_client_hello(hello)
            return found

        extracted = [find(h) for h in hellos]
        messages = [found[0] for found in extracted if found is not None]
        parsed = [pull_client_hello(m[4:]) for m in messages]
        negotiated = [negotiation.negotiate(config, h) for h in parsed]
        requested = [
            negotiation.group_to_request(config, h, n)
            for h, n in zip(parsed, negotiated, strict=True)
        ]
        binding = peer_binding(PEER)
        states = [
            CookieState(
                int(NOW), n.suite.code, n.group or 0 if r is None else r, r is not None,
                n.suite.digest(m), negotiation.client_hello_digest(h),
            )
            for h, m, n, r in zip(parsed, messages, negotiated, requested, strict=True)
        ]  # fmt: skip
        state_fields = [
            (s.issued_at, s.cipher_suite, s.group, s.key_share_requested, s.client_hello_hash,
             s.client_hello_digest)
            for s in states
        ]  # fmt: skip
        cookies = [config.cookie_keys.seal(s, binding) for s in states]
        hrrs = [
            build_hello_retry_request(h.legacy_session_id, n.suite.code, r, c)
            for h, n, r, c in zip(parsed, negotiated, requested, cookies, strict=True)
        ]
        steps = [
            (
                "find the ClientHello in the records",
                lambda: [find(h) for h in hellos],
            ),
            (
                "parse it (pull_client_hello)",
                lambda: [pull_client_hello(m[4:]) for m in messages],
            ),
            ("negotiate (checks, suite, group, credential, ALPN)",
             lambda: [negotiation.negotiate(config, h) for h in parsed]),
            (
                "group_to_request",
                lambda: [
                    negotiation.group_to_request(config, h, n)
                    for h, n in zip(parsed, negotiated, strict=True)
                ],
            ),
            ("Hash(ClientHello1) (suite hash)",
             lambda: [n.suite.digest(m) for n, m in zip(negotiated, messages, strict=True)]),
            ("client_hello_digest (fields CH2 must repeat)",
             lambda: [negotiation.client_hello_digest(h) for h in parsed]),
            ("peer_binding (inet_pton)", lambda: [peer_binding(PEER) for _ in hellos]),
            ("CookieState + seal (encode, urandom, AES-GCM-SIV)",
             lambda: [config.cookie_keys.seal(CookieState(*f), binding) for f in state_fields]),
            (
                "build_hello_retry_request",
                lambda: [
                    build_hello_retry_request(h.legacy_session_id, n.suite.code, r, c)
                    for h, n, r, c in zip(parsed, negotiated, requested, cookies, strict=True)
                ],
            ),
            ("frame_plaintext (+ CCS)",
             lambda: [record.frame_plaintext(record.ContentType.handshake, h) for h in hrrs]),
        ]  # fmt: skip
    except (AttributeError, ImportError, TypeError, ValueError) as error:
        rows.append([f"(stages unavailable: the library's internals changed: {error})", "", ""])
    accounted = 0.0
    for label, work in steps:
        cost = _per_call(work, len(hellos), seconds)
        accounted += cost
        rows.append([label, f"{cost:.2f}", f"{100 * cost / total:.0f}%"])
    rows.append(["sum of the stages", f"{accounted:.2f}", f"{100 * accounted / total:.0f}%"])
    # The stages run alone in short warm loops; run one after another on fresh ClientHellos they
    # cost more (measured: parse + the rest is ~7 µs over the two timed apart, for the same code),
    # so most of the gap is caches and branch prediction, not code left out of the stages.
    rows.append(["stateless_accept, whole (stages one after another)", f"{total:.2f}", "100%"])
    return Table(
        "stages, one at a time (µs per ClientHello1, all peers in turn, best of 3)",
        ["stage", "µs", "share"],
        rows,
    )


def floors(hellos: list[bytes], seconds: float) -> Table:
    aead = AESGCMSIV(os.urandom(32))
    nonce, plaintext, aad = os.urandom(12), os.urandom(76), os.urandom(6)
    digest_input = os.urandom(150)
    mix = hellos
    rows = []
    for label, work in (
        ("os.urandom(12) (cookie nonce)", lambda: os.urandom(12)),
        ("AES-256-GCM-SIV seal of a 76-byte cookie body",
         lambda: aead.encrypt(nonce, plaintext, aad)),
        ("SHA-256 of a ClientHello1 (mix)", lambda: [hashlib.sha256(h).digest() for h in mix]),
        ("SHA-256 of 150 bytes (the CH2 digest input)",
         lambda: hashlib.sha256(digest_input).digest()),
        ("an empty Python function call", lambda: None),
    ):  # fmt: skip
        inputs = len(mix) if "mix" in label else 1
        rows.append([label, f"{_per_call(work, inputs, seconds):.2f}"])
    return Table("floors (µs per call)", ["operation", "µs"], rows)


def run(
    count: int, seconds: float, rounds: int, *, progress: bool = True, dump: str | None = None
) -> Report:
    config = ServerConfig.self_signed("localhost")
    hellos = list(captured_client_hellos().values())
    report = Report(
        "profile_hrr",
        "Our HRR path: profile, stages, floors",
        {"count": count, "seconds_per_round": seconds, "rounds": rounds},
    )
    bar = Progress("profile_hrr", 3 + rounds, enabled=progress)
    report.tables.append(profile(config, hellos, count, dump))
    bar.step("cProfile")
    report.tables.append(stages(config, hellos, seconds * 5))
    bar.step("stages")
    report.tables.append(floors(hellos, seconds * 2))
    bar.step("floors")

    def library() -> int:
        for hello in hellos:
            stateless_accept(config, hello, peer=PEER, now=NOW)
        return len(hellos)

    measured = alternate({"library": lambda: timed_rate(library, seconds)}, rounds, bar)
    bar.close()
    rates = measured["library"]
    report.rows.append(Row("stateless_accept, all captured clients in turn", "HRR/s", rates))
    report.notes.append(
        f"stateless_accept: {statistics.median(rates):,.0f} HRR/s "
        f"({1e6 / statistics.median(rates):.1f} µs per HRR), all captured clients in turn."
    )
    return report


def main(argv: list[str] | None = None) -> int:
    options = parser("profile_hrr", __doc__.splitlines()[0])
    options.add_argument("--count", type=int, default=20000, help="HRRs under cProfile")
    options.add_argument("--pstats", help="also write the cProfile stats to this file")
    args = options.parse_args(argv)
    report = run(args.count, args.seconds, args.rounds, progress=not args.quiet, dump=args.pstats)
    emit(report, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
