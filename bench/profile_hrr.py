"""Where an HRR's time goes, and what the prototypes left in bench/lean_hrr.py would save.

    python -m bench.profile_hrr [--count 20000] [--seconds 0.2] [--rounds 5] [--json]
                                [--pstats FILE]

1. cProfile of ``stateless_accept`` over the captured ClientHello1s (all peers in turn): the
   functions with the most own time, per HRR (cProfile inflates small calls: read it for shares).
2. The stages timed one at a time without a profiler, on the same ClientHellos: µs per call.
3. Floors: the cryptography and randomness one HRR cannot avoid.
4. The proposals not yet in the library, stage by stage against the library's stage (P2 table
   negotiation, P4 direct cookie seal, P5 digest from wire slices), each checked
   first; then ``HrrTemplate.answer`` (P2 + P4 around the library's parser and HRR builder) timed
   against ``stateless_accept`` in alternating rounds.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import os
import pstats
import statistics
import time
from collections.abc import Callable
from typing import Any, cast

from cryptography.hazmat.primitives.ciphers.aead import AESGCMSIV

from stateless13 import Accepted, HelloRetry, ServerConfig, stateless_accept
from stateless13.messages import pull_client_hello, pull_server_hello
from stateless13.negotiation import client_hello_digest, group_to_request, negotiate

from .common import (
    PEER,
    MemoryClient,
    Progress,
    Report,
    Row,
    Table,
    alternate,
    captured_client_hellos,
    emit,
    python_ssl_client_context,
    timed_rate,
)
from .lean_hrr import HrrTemplate, slice_digest
from .sizes import hrr_parts

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
    from stateless13 import handshake, negotiation, record, stateless
    from stateless13.cookie import CookieState, peer_binding

    rows: list[list[Any]] = []
    total = _per_call(
        lambda: [stateless_accept(config, h, peer=PEER, now=NOW) for h in hellos],
        len(hellos),
        seconds,
    )
    steps: list[tuple[str, Callable[[], object]]] = []
    try:
        extracted = [
            stateless._extract_client_hello(h, config.max_client_hello_size, 0) for h in hellos
        ]
        messages = [m for m, _ in extracted]  # type: ignore[misc]
        parsed = [pull_client_hello(m[4:]) for m in messages]
        negotiated = [negotiation.negotiate(config, h) for h in parsed]
        requested = [
            negotiation.group_to_request(config, h, n)
            for h, n in zip(parsed, negotiated, strict=True)
        ]
        binding = peer_binding(PEER)
        states = [
            CookieState(
                int(NOW), n.suite.suite, n.group if r is None else r, r is not None,
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
            handshake.build_hello_retry_request(h.legacy_session_id, n.suite.suite, r, c)
            for h, n, r, c in zip(parsed, negotiated, requested, cookies, strict=True)
        ]
        steps = [
            (
                "find the ClientHello in the records (_extract_client_hello)",
                lambda: [
                    stateless._extract_client_hello(h, config.max_client_hello_size, 0)
                    for h in hellos
                ],
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
                    handshake.build_hello_retry_request(h.legacy_session_id, n.suite.suite, r, c)
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


# ---------------------------------------------------------------------------------------------
# 4. What is left: check, then time


def check_template(config: ServerConfig, template: HrrTemplate, hellos: list[bytes]) -> list[str]:
    """The template's HRR equals the library's but for the cookie's nonce and ciphertext, its
    cookie opens to the same state, and a real client's ClientHello2 after it is Accepted."""
    from stateless13.cookie import peer_binding

    problems = []
    binding = peer_binding(PEER)
    for name, hello in captured_client_hellos().items():
        ours = stateless_accept(config, hello, peer=PEER, now=NOW)
        lean = template.answer(hello, PEER, NOW)
        assert isinstance(ours, HelloRetry)
        if lean is None:
            problems.append(f"{name}: template declined")
            continue
        if len(lean) != len(ours.data_to_send):
            problems.append(f"{name}: {len(lean)} bytes, library {len(ours.data_to_send)}")
            continue
        _, cookie_length, _ = hrr_parts(lean)
        length = int.from_bytes(lean[3:5], "big")
        cookies = []
        for data in (ours.data_to_send, lean):
            parsed = pull_server_hello(data[9 : 5 + length])
            cookies.append(dict(parsed.extensions)[44][2:])
        start = lean.index(cookies[1])  # the cookie's version and key id must agree too
        if (lean[: start + 2], lean[start + cookie_length :]) != (
            ours.data_to_send[: start + 2],
            ours.data_to_send[start + cookie_length :],
        ):
            problems.append(f"{name}: bytes outside the cookie differ")
        states = [config.cookie_keys.open(cookie, binding) for cookie in cookies]
        if states[0] != states[1]:
            problems.append(f"{name}: cookie state differs: {states[0]} vs {states[1]}")
    context = python_ssl_client_context()
    client = MemoryClient(context)
    lean = template.answer(client.step(), PEER, time.time())
    assert lean is not None
    resumed = stateless_accept(config, client.step(lean), peer=PEER, now=time.time())
    if not isinstance(resumed, Accepted):
        problems.append(f"Python ssl's ClientHello2 after the template's HRR: {resumed!r:.80}")
    return problems


def check_p5(config: ServerConfig) -> list[str]:
    """P5: Python ssl's ClientHello2 (after our HRR) gives the same slice digest as its
    ClientHello1, and the captured clients all differ."""
    problems = []
    client = MemoryClient(python_ssl_client_context())
    first = client.step()
    retry = stateless_accept(config, first, peer=PEER, now=NOW)
    assert isinstance(retry, HelloRetry)
    second = client.step(retry.data_to_send)
    second = second[second.index(b"\x16\x03\x03") :]  # after the compatibility-mode CCS
    digests = [
        slice_digest(pull_client_hello(record[9:]), record[9:]) for record in (first, second)
    ]
    if digests[0] != digests[1]:
        problems.append("P5: Python ssl's CH1 and CH2 give different slice digests")
    captured = [h[9:] for h in captured_client_hellos().values()]
    if len({slice_digest(pull_client_hello(body), body) for body in captured}) != len(captured):
        problems.append("P5: two captured clients give the same slice digest")
    return problems


def proposals(
    config: ServerConfig, template: HrrTemplate, hellos: list[bytes], seconds: float
) -> Table:
    """Each remaining proposal's stage, the library's stage and the prototype's, µs per call."""
    from stateless13.cookie import CookieState, peer_binding

    messages = [h[5:] for h in hellos]
    parsed = [pull_client_hello(m[4:]) for m in messages]
    negotiated = [negotiate(config, h) for h in parsed]
    requested = [group_to_request(config, h, n) for h, n in zip(parsed, negotiated, strict=True)]
    binding = peer_binding(PEER)
    states = [
        CookieState(
            int(NOW), n.suite.suite, n.group if r is None else r, r is not None,
            n.suite.digest(m), client_hello_digest(h),
        )
        for m, h, n, r in zip(messages, parsed, negotiated, requested, strict=True)
    ]  # fmt: skip
    cases: list[tuple[str, Callable[[], object], Callable[[], object]]] = [
        (
            "P2 negotiate + group_to_request | HrrTemplate.negotiate (tables)",
            lambda: [group_to_request(config, h, negotiate(config, h)) for h in parsed],
            lambda: [template.negotiate(h) for h in parsed],
        ),
        (
            "P4 CookieState + seal (encode, urandom, AES-GCM-SIV) | HrrTemplate.seal",
            lambda: [
                config.cookie_keys.seal(
                    CookieState(
                        s.issued_at,
                        s.cipher_suite,
                        s.group,
                        s.key_share_requested,
                        s.client_hello_hash,
                        s.client_hello_digest,
                    ),
                    binding,
                )
                for s in states
            ],
            lambda: [
                template.seal(
                    NOW,
                    s.cipher_suite,
                    s.group,
                    s.key_share_requested,
                    s.client_hello_hash,
                    s.client_hello_digest,
                    binding,
                )
                for s in states
            ],
        ),
        (
            "P5 client_hello_digest | slice_digest (wire slices)",
            lambda: [client_hello_digest(h) for h in parsed],
            lambda: [slice_digest(h, m[4:]) for h, m in zip(parsed, messages, strict=True)],
        ),
    ]
    rows = []
    for label, library, prototype in cases:
        before = _per_call(library, len(hellos), seconds)
        after = _per_call(prototype, len(hellos), seconds)
        rows.append([label, f"{before:.2f}", f"{after:.2f}", f"{before - after:.2f}"])
    return Table(
        "remaining proposals, stage by stage (µs per ClientHello1, all peers in turn, best of 3)",
        ["proposal: library | prototype", "library µs", "prototype µs", "saved µs"],
        rows,
    )


def run(
    count: int, seconds: float, rounds: int, *, progress: bool = True, dump: str | None = None
) -> Report:
    config = ServerConfig.self_signed("localhost")
    hellos = list(captured_client_hellos().values())
    report = Report(
        "profile_hrr",
        "The HRR path: profile, stages, floors and the proposals left",
        {"count": count, "seconds_per_round": seconds, "rounds": rounds},
    )
    bar = Progress("profile_hrr", 5 + 2 * rounds, enabled=progress)
    report.tables.append(profile(config, hellos, count, dump))
    bar.step("cProfile")
    report.tables.append(stages(config, hellos, seconds * 5))
    bar.step("stages")
    report.tables.append(floors(hellos, seconds * 2))
    bar.step("floors")

    template = HrrTemplate(config)
    template_problems = check_template(config, template, hellos)
    other_problems = check_p5(config)
    bar.step("checks")
    report.tables.append(
        Table(
            "prototype checks",
            ["check", "result"],
            [
                [
                    "HrrTemplate HRR == library HRR but the cookie's nonce/ciphertext; same "
                    "cookie state; Python ssl CH2 after it Accepted",
                    "ok" if not template_problems else "; ".join(template_problems),
                ],
                [
                    "slice_digest: Python ssl CH1 == CH2, captured clients all differ",
                    "ok" if not other_problems else "; ".join(other_problems),
                ],
            ],
        )
    )
    report.tables.append(proposals(config, template, hellos, seconds * 2))
    bar.step("proposals")

    def library() -> int:
        for hello in hellos:
            stateless_accept(config, hello, peer=PEER, now=NOW)
        return len(hellos)

    def templated() -> int:
        answer = template.answer
        for hello in hellos:
            HelloRetry(answer(hello, PEER, NOW) or b"")
        return len(hellos)

    measured = alternate(
        {
            "library": lambda: timed_rate(library, seconds),
            "template": lambda: timed_rate(templated, seconds),
        },
        rounds,
        bar,
    )
    bar.close()
    base = measured["library"]
    report.rows.append(
        Row(
            "HrrTemplate.answer (P2 tables + P4 direct seal, library parser and HRR builder)",
            "HRR/s",
            measured["template"],
            "library stateless_accept",
            base,
        )
    )
    report.notes.append(
        f"library stateless_accept: {statistics.median(base):,.0f} HRR/s "
        f"({1e6 / statistics.median(base):.1f} µs per HRR), all captured clients in turn."
    )
    return report


def main(argv: list[str] | None = None) -> int:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--count", type=int, default=20000, help="HRRs under cProfile")
    options.add_argument("--seconds", type=float, default=0.2, help="length of one round")
    options.add_argument("--rounds", type=int, default=5)
    options.add_argument("--json", action="store_true", help="print JSON instead of tables")
    options.add_argument("--quiet", action="store_true", help="no progress on stderr")
    options.add_argument("--pstats", help="also write the cProfile stats to this file")
    args = options.parse_args(argv)
    report = run(args.count, args.seconds, args.rounds, progress=not args.quiet, dump=args.pstats)
    emit(report, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
