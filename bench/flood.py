"""HRRs per second under a flood of spoofed ClientHello1s, and real handshakes in the middle.

    python -m bench.flood [--count N] [--json]

Feeds ``--count`` (default 100,000) captured ClientHello1s (bench/client_hellos: OpenSSL, GnuTLS,
curl, Chromium with ML-KEM, tlslite-ng, Python ssl) from varied spoofed addresses through
``stateless_accept`` on one core, with a real OpenSSL client completing a stateless handshake
every 10,000 of them; prints the HRR rate and the real handshakes' latency.
(Memory under the same flood is measured by tests/test_flood.py, with tracemalloc.)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import ssl
import statistics
import time
from pathlib import Path

from stateless13 import Accepted, HelloRetry, ServerConfig, stateless_accept

CAPTURED = Path(__file__).resolve().parent / "client_hellos"


def real_handshake(config: ServerConfig) -> float:
    """Seconds of server-side work plus client steps for one full stateless handshake."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = context.wrap_bio(incoming, outgoing, server_hostname="localhost")

    def step(data: bytes = b"") -> bytes:
        incoming.write(data)
        with contextlib.suppress(ssl.SSLWantReadError):
            client.do_handshake()
        return outgoing.read()

    started = time.perf_counter()
    peer = ("192.0.2.1", 443)
    retry = stateless_accept(config, step(), peer=peer, now=time.time())
    assert isinstance(retry, HelloRetry)
    accepted = stateless_accept(config, step(retry.data_to_send), peer=peer, now=time.time())
    assert isinstance(accepted, Accepted)
    accepted.connection.receive_data(step(accepted.data_to_send))
    assert accepted.connection.events()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    hellos = [path.read_bytes() for path in sorted(CAPTURED.glob("*.bin"))]
    config = ServerConfig.self_signed("localhost")
    now = time.time()
    real_handshake(config)  # warm-up
    latencies = []
    started = time.perf_counter()
    for index in range(args.count):
        peer = (
            f"10.{(index >> 16) & 255}.{(index >> 8) & 255}.{index & 255}",
            1024 + index % 60000,
        )
        stateless_accept(config, hellos[index % len(hellos)], peer=peer, now=now)
        if index % 10_000 == 5_000:
            latencies.append(real_handshake(config))
    elapsed = time.perf_counter() - started
    result = {
        "spoofed_client_hellos": args.count,
        "hrr_per_second_under_flood": args.count / elapsed,
        "real_handshakes": len(latencies),
        "real_handshake_median_ms": statistics.median(latencies) * 1000 if latencies else None,
        "captured_clients": [path.stem for path in sorted(CAPTURED.glob("*.bin"))],
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"{args.count:,} spoofed ClientHello1s in {elapsed:.1f}s: "
            f"{result['hrr_per_second_under_flood']:,.0f} HRRs/s on one core"
        )
        print(
            f"{len(latencies)} real handshakes completed during the flood, median "
            f"{result['real_handshake_median_ms']:.2f} ms each"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
