"""HelloRetryRequests per second: ``stateless_accept`` vs OpenSSL's ``SSL_stateless()`` (ctypes).

    python -m bench.hrr_rate [--seconds S] [--rounds N] [--json]

Both answer the same captured ClientHello1s (tests/data/client_hellos/*.bin) on one core: ours
with a fresh ``stateless_accept`` call, OpenSSL with a fresh SSL object from one SSL_CTX (ECDSA
P-256 certificate, TLS 1.3 only, our suite order, Python HMAC cookie callbacks).  Before and
after the rounds every OpenSSL answer is checked to be a real HelloRetryRequest, and every one of
ours a ``HelloRetry``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from stateless13 import HelloRetry, ServerConfig, stateless_accept

from .common import (
    OPENSSL_C_HRR_PER_S,
    PEER,
    Progress,
    Report,
    Row,
    alternate,
    captured_client_hellos,
    emit,
    parser,
    private_key_pem,
    timed_rate,
)
from .openssl_anchor import OpenSSLStateless

BATCH = 50
ANCHOR = "OpenSSL SSL_stateless (ctypes)"


def _check(config: ServerConfig, anchor: OpenSSLStateless, hellos: dict[str, bytes]) -> None:
    for name, hello in hellos.items():
        result = stateless_accept(config, hello, peer=PEER, now=time.time())
        if not isinstance(result, HelloRetry):
            raise SystemExit(f"{name}: stateless_accept gave {result!r}, not a HelloRetry")
        anchor.hello_retry(hello)  # raises unless OpenSSL wrote an HRR


def run(seconds: float, rounds: int, *, progress: bool = True) -> Report:
    config = ServerConfig.self_signed("localhost")
    credential = config.credentials[0]
    anchor = OpenSSLStateless(credential.certificate_pem(), private_key_pem(credential.private_key))
    hellos = captured_client_hellos()
    _check(config, anchor, hellos)
    now = time.time()
    cases: dict[str, list[bytes]] = {name: [hello] for name, hello in hellos.items()}
    cases["all clients, in turn"] = list(hellos.values())
    bar = Progress("hrr_rate", 2 * rounds * len(cases), enabled=progress)

    def ours(inputs: list[bytes]) -> Callable[[], float]:
        count = max(BATCH // len(inputs), 1)

        def batch() -> int:
            for _ in range(count):
                for hello in inputs:
                    stateless_accept(config, hello, peer=PEER, now=now)
            return count * len(inputs)

        return lambda: timed_rate(batch, seconds)

    def openssl(inputs: list[bytes]) -> Callable[[], float]:
        count = max(BATCH // len(inputs), 1)
        answer = anchor.answer

        def batch() -> int:
            for _ in range(count):
                for hello in inputs:
                    answer(hello)
            return count * len(inputs)

        return lambda: timed_rate(batch, seconds)

    report = Report(
        "hrr_rate",
        "HRR rate: CH1 -> HelloRetryRequest, one core",
        {"seconds_per_round": seconds, "rounds": rounds, "peer": PEER[0]},
    )
    mixed: Row | None = None
    for name, inputs in cases.items():
        measured = alternate({"ours": ours(inputs), "anchor": openssl(inputs)}, rounds, bar)
        size = f"{len(inputs[0])} B" if len(inputs) == 1 else "mix"
        row = Row(f"{name} ({size})", "HRR/s", measured["ours"], ANCHOR, measured["anchor"])
        report.rows.append(row)
        if len(inputs) > 1:
            mixed = row
    bar.close()
    _check(config, anchor, hellos)  # still HRRs after the rounds
    anchor.close()
    assert mixed is not None
    report.rows.append(
        Row(
            "all clients vs the published C figure",
            "HRR/s",
            mixed.ours,
            "OpenSSL SSL_stateless in C (published)",
            [OPENSSL_C_HRR_PER_S],
            note="44.6k/s: ../shared/research/openssl_stateless.md, not measured in this run",
        )
    )
    report.notes.append(
        "OpenSSL's output was checked to be a HelloRetryRequest (handshake record, ServerHello, "
        "random = SHA-256('HelloRetryRequest')) for every client, before and after the rounds."
    )
    report.notes.append(
        "OpenSSL: fresh SSL object per ClientHello from one SSL_CTX (ECDSA P-256 certificate, "
        "TLS 1.3 only, suites in our order), cookie callbacks in Python "
        "(HMAC-SHA256 of the client's IP address)."
    )
    return report


def main(argv: list[str] | None = None) -> int:
    args = parser("hrr_rate", __doc__.splitlines()[0]).parse_args(argv)
    emit(run(args.seconds, args.rounds, progress=not args.quiet), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
