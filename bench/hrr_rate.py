"""HelloRetryRequests per second: ``stateless_accept``, both builds, vs ``SSL_stateless()``.

    python -m bench.hrr_rate [--seconds S] [--rounds N] [--json]

Every side answers the same captured ClientHello1s (tests/data/client_hellos/*.bin) on one core:
ours with a fresh ``stateless_accept`` call, OpenSSL with a fresh SSL object from one SSL_CTX
(ECDSA P-256 certificate, TLS 1.3 only, our suite order).  Two anchors: OpenSSL in C
(bench/openssl_stateless.c, built here with ``cc`` against Debian's libssl-dev, C cookie
callbacks) and OpenSSL through ctypes (Python cookie callbacks).  The mix of all clients in turn
is measured for both builds of the core (bench/builds.py: mypyc-compiled and pure Python, each
in a worker process) and both anchors, in the same rounds; the per-client rows are the build
this process runs (``stateless13.COMPILED``) against ctypes.  Before and after the rounds every
OpenSSL answer is checked to be a real HelloRetryRequest, and every one of ours a ``HelloRetry``.
"""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from stateless13 import COMPILED, HelloRetry, ServerConfig, stateless_accept

from .builds import BUILDS, Measurement, Workers, benchmark_main, builds
from .common import (
    BENCH_DIR,
    CLIENT_HELLOS_DIR,
    PEER,
    Progress,
    Report,
    Row,
    alternate,
    captured_client_hellos,
    pem_files,
    private_key_pem,
    timed_rate,
)
from .openssl_anchor import OpenSSLStateless

BATCH = 50
ANCHOR = "OpenSSL SSL_stateless (ctypes)"
C_ANCHOR = "OpenSSL SSL_stateless in C"
#: The case measured in both builds' workers: every captured client in turn.
MIX = "all clients, in turn"


def _check(config: ServerConfig, anchor: OpenSSLStateless, hellos: dict[str, bytes]) -> None:
    for name, hello in hellos.items():
        result = stateless_accept(config, hello, peer=PEER, now=time.time())
        if not isinstance(result, HelloRetry):
            raise SystemExit(f"{name}: stateless_accept gave {result!r}, not a HelloRetry")
        anchor.hello_retry(hello)  # raises unless OpenSSL wrote an HRR


@contextlib.contextmanager
def c_anchor() -> Iterator[Path]:
    """bench/openssl_stateless.c, compiled against the system's libssl."""
    with tempfile.TemporaryDirectory(prefix="stateless13-anchor-") as scratch:
        binary = Path(scratch) / "openssl_stateless"
        source = BENCH_DIR / "openssl_stateless.c"
        built = subprocess.run(
            ["cc", "-O2", "-o", str(binary), str(source), "-lssl", "-lcrypto"],
            capture_output=True,
            text=True,
            check=False,
        )
        if built.returncode != 0:
            raise SystemExit(f"cannot build the C anchor (libssl-dev?):\n{built.stderr}")
        yield binary


def _rate(output: str) -> float:
    """``<count> <seconds>`` -> count / seconds."""
    count, elapsed = output.split()
    return int(count) / float(elapsed)


def measurement(name: str, seconds: float) -> Measurement:
    """The one case a worker takes (:data:`MIX`): HRRs/s of the build this process imports."""
    if name != MIX:
        raise SystemExit(f"bench.hrr_rate measures {MIX!r} in workers, not {name!r}")
    config = ServerConfig.self_signed("localhost")
    hellos = list(captured_client_hellos().values())
    now = time.time()
    for hello in hellos:
        if not isinstance(stateless_accept(config, hello, peer=PEER, now=now), HelloRetry):
            raise SystemExit("a captured ClientHello got no HelloRetry")

    def batch() -> int:
        for hello in hellos:
            stateless_accept(config, hello, peer=PEER, now=now)
        return len(hellos)

    return lambda: timed_rate(batch, seconds)


def run(seconds: float, rounds: int, *, progress: bool = True) -> Report:
    config = ServerConfig.self_signed("localhost")
    credential = config.credentials[0]
    anchor = OpenSSLStateless(credential.certificate_pem(), private_key_pem(credential.private_key))
    hellos = captured_client_hellos()
    _check(config, anchor, hellos)
    now = time.time()
    cases: dict[str, list[bytes]] = {name: [hello] for name, hello in hellos.items()}
    cases[MIX] = list(hellos.values())
    bar = Progress("hrr_rate", 2 * rounds * len(cases) + 4 * rounds, enabled=progress)

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

    build = "compiled" if COMPILED else "pure"
    report = Report(
        "hrr_rate",
        "HRR rate: CH1 -> HelloRetryRequest, one core",
        {"seconds_per_round": seconds, "rounds": rounds, "peer": PEER[0], "this process": build},
    )
    files = [str(path) for path in sorted(CLIENT_HELLOS_DIR.glob("*.bin"))]
    with (
        builds() as trees,
        c_anchor() as binary,
        pem_files(credential.certificate_pem(), private_key_pem(credential.private_key)) as (
            cert,
            key,
        ),
    ):

        def in_c() -> float:
            run = [str(binary), cert, key, f"{seconds:g}", *files]
            return _rate(subprocess.run(run, capture_output=True, text=True, check=True).stdout)

        workers = Workers("hrr_rate", trees, seconds)
        mix = alternate(
            {
                **{name: workers.measure(MIX, name) for name in BUILDS},
                "C": in_c,
                "ctypes": openssl(cases[MIX]),
            },
            rounds,
            bar,
        )
    for name in BUILDS:
        for anchor_name, key_ in ((C_ANCHOR, "C"), (ANCHOR, "ctypes")):
            report.rows.append(
                Row(
                    f"{MIX}: {name} build",
                    "HRR/s",
                    mix[name],
                    anchor_name,
                    mix[key_],
                )
            )
    for name, inputs in cases.items():
        if len(inputs) > 1:
            continue
        measured = alternate({"ours": ours(inputs), "anchor": openssl(inputs)}, rounds, bar)
        label = f"{name} ({len(inputs[0])} B), {build} build"
        report.rows.append(Row(label, "HRR/s", measured["ours"], ANCHOR, measured["anchor"]))
    bar.close()
    _check(config, anchor, hellos)  # still HRRs after the rounds
    anchor.close()
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
    return benchmark_main("hrr_rate", __doc__.splitlines()[0], measurement, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
