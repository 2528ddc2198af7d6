"""HelloRetryRequests per second, cookie verifications per second, CH2 → Accepted per second.

Run:  python -m bench.hrr [--seconds S] [--rounds N] [--json]

Each figure is the median of N rounds on one core, each round a fresh ``stateless_accept`` call per
ClientHello (nothing cached between calls but the immutable config).  The ClientHellos are real:
captured from Python's ``ssl`` (OpenSSL 3) over memory BIOs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import ssl
import statistics
import sys
import time
from collections.abc import Callable

from stateless13 import Accepted, HelloRetry, ServerConfig, stateless_accept
from stateless13.cookie import peer_binding

PEER = ("203.0.113.7", 4433)


def _client() -> tuple[ssl.SSLObject, ssl.MemoryBIO, ssl.MemoryBIO]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    return ctx.wrap_bio(incoming, outgoing, server_hostname="localhost"), incoming, outgoing


def _step(tls: ssl.SSLObject, outgoing: ssl.MemoryBIO) -> bytes:
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def capture(config: ServerConfig, count: int) -> tuple[list[bytes], list[bytes]]:
    """``count`` real ClientHello1s, and the ClientHello2s their clients send after our HRR."""
    first, second = [], []
    for _ in range(count):
        tls, incoming, outgoing = _client()
        ch1 = _step(tls, outgoing)
        retry = stateless_accept(config, ch1, peer=PEER, now=time.time())
        assert isinstance(retry, HelloRetry)
        incoming.write(retry.data_to_send)
        first.append(ch1)
        second.append(_step(tls, outgoing))
    return first, second


def rate(work: Callable[[bytes], object], inputs: list[bytes], seconds: float) -> float:
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        for item in inputs:
            work(item)
        done += len(inputs)
    return done / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="length of one round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)

    config = ServerConfig.self_signed("localhost")
    ch1s, ch2s = capture(config, 64)
    now = time.time()
    ring, binding = config.cookie_keys, peer_binding(PEER)
    cookies = []
    for ch1 in ch1s:
        retry = stateless_accept(config, ch1, peer=PEER, now=now)
        assert isinstance(retry, HelloRetry)
        # HRR record: 5 header + 4 msg header + 2 + 32 + 1 + sid + 2 + 1 + 2 ext len, then ext
        cookies.append(retry.data_to_send)

    def hello_retry(ch1: bytes) -> object:
        return stateless_accept(config, ch1, peer=PEER, now=now)

    def accept(ch2: bytes) -> object:
        result = stateless_accept(config, ch2, peer=PEER, now=now)
        assert isinstance(result, Accepted)
        return result

    from stateless13.cookie import CookieState

    sealed = [
        ring.seal(CookieState(int(now), 0x1301, 0x1D, False, bytes(32), bytes(32)), binding)
        for _ in range(64)
    ]

    def verify_cookie(cookie: bytes) -> object:
        return ring.open(cookie, binding)

    benchmarks = {
        "HRR (CH1 -> HelloRetry)": (hello_retry, ch1s),
        "cookie verification (open)": (verify_cookie, sealed),
        "resume (CH2 -> Accepted, x25519, ECDSA P-256)": (accept, ch2s),
    }
    results = {}
    for name, (work, inputs) in benchmarks.items():
        rounds = [rate(work, inputs, args.seconds) for _ in range(args.rounds)]
        results[name] = {"median_per_s": statistics.median(rounds), "rounds": rounds}
        print(f"  measured {name}", file=sys.stderr)

    hrr_sizes = [
        len(stateless_accept(config, ch1, peer=PEER, now=now).data_to_send)  # type: ignore[union-attr]
        for ch1 in ch1s[:1]
    ]
    sizes = {
        "ch1_bytes": len(ch1s[0]),
        "hrr_bytes_with_ccs": hrr_sizes[0],
        "ratio": hrr_sizes[0] / len(ch1s[0]),
        "cookie_bytes": len(sealed[0]),
    }
    machine = {
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "openssl": ssl.OPENSSL_VERSION,
    }
    if args.json:
        print(json.dumps({"results": results, "sizes": sizes, "machine": machine}, indent=2))
        return 0
    print(f"{'benchmark':<48} {'median/s':>12}   (rounds: {args.rounds} x {args.seconds}s)")
    for name, result in results.items():
        print(f"{name:<48} {result['median_per_s']:>12,.0f}")
    print(
        f"\nCH1 {sizes['ch1_bytes']} B -> HRR+CCS {sizes['hrr_bytes_with_ccs']} B "
        f"(ratio {sizes['ratio']:.2f}); cookie {sizes['cookie_bytes']} B"
    )
    print(f"Python {machine['python']}, {machine['openssl']}, {machine['machine']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
