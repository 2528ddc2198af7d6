"""Cookie verification and resume: ClientHello2 -> ``Accepted`` (with the server's whole flight).

    python -m bench.resume [--seconds S] [--rounds N] [--json]

ClientHello2s come from Python's ``ssl`` (OpenSSL 3 client) over memory BIOs, answering our HRR
(for ours) or OpenSSL's HRR (for the anchor: OpenSSL's cookie is HMAC'd under a key private to
its SSL_CTX).  Ours: ``stateless_accept`` authenticates the cookie, checks ClientHello2 against
it, rebuilds the transcript and writes ServerHello … Finished.  Anchor: ``SSL_stateless()`` on a
fresh SSL object does the same (called twice when it stops at the client's compatibility CCS).
Both: x25519, ECDSA P-256, TLS_AES_128_GCM_SHA256.  The same ClientHello2s are replayed round
after round (neither side has a replay filter on).

Ours is measured in both builds of the core (bench/builds.py: mypyc-compiled and pure Python),
alternating in the same rounds with the anchor, every measurement in a fresh worker process per
round (the anchor's too), after one untimed run in that process.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from stateless13 import Accepted, HelloRetry, ServerConfig, stateless_accept
from stateless13.cookie import peer_binding
from stateless13.messages import ExtensionType, pull_client_hello

from .builds import BUILDS, Measurement, Workers, benchmark_main, builds
from .common import (
    PEER,
    MemoryClient,
    Progress,
    Report,
    Row,
    alternate,
    private_key_pem,
    python_ssl_client_context,
    timed_rate,
)
from .openssl_anchor import OpenSSLStateless

COUNT = 32  # distinct ClientHello2s per side


def server_hello_suite(records: bytes) -> int:
    """The cipher suite of the ServerHello at the start of ``records``."""
    session_id_length = records[5 + 4 + 2 + 32]
    start = 5 + 4 + 2 + 32 + 1 + session_id_length
    return int.from_bytes(records[start : start + 2], "big")


def _strip_change_cipher_spec(data: bytes) -> bytes:
    return data[6:] if data[:1] == b"\x14" else data


def cookie_of(client_hello_2: bytes) -> bytes:
    message = _strip_change_cipher_spec(client_hello_2)[5:]
    hello = pull_client_hello(message[4:])
    cookie = dict(hello.extensions).get(ExtensionType.cookie)
    assert cookie is not None
    return cookie[2:]


def ours_client_hellos(config: ServerConfig, now: float) -> list[bytes]:
    """:data:`COUNT` ClientHello2s from Python's ssl client, each after our HRR; checked."""
    context = python_ssl_client_context()
    hellos = []
    for _ in range(COUNT):
        client = MemoryClient(context)
        retry = stateless_accept(config, client.step(), peer=PEER, now=now)
        assert isinstance(retry, HelloRetry)
        hellos.append(client.step(retry.data_to_send))
    for hello in hellos:
        accepted = stateless_accept(config, hello, peer=PEER, now=now)
        assert isinstance(accepted, Accepted), accepted
        assert server_hello_suite(accepted.data_to_send) == 0x1301
    return hellos


def ours_resume(seconds: float) -> Measurement:
    """``stateless_accept`` of our ClientHello2s: resumes per second."""
    config = ServerConfig.self_signed("localhost")
    now = time.time()
    hellos = ours_client_hellos(config, now)

    def batch() -> int:
        for hello in hellos:
            stateless_accept(config, hello, peer=PEER, now=now)
        return len(hellos)

    return lambda: timed_rate(batch, seconds)


def anchor_resume(seconds: float) -> Measurement:
    """``SSL_stateless()`` of ClientHello2s that answer OpenSSL's HRR: resumes per second."""
    config = ServerConfig.self_signed("localhost")
    credential = config.credentials[0]
    anchor = OpenSSLStateless(credential.certificate_pem(), private_key_pem(credential.private_key))
    context = python_ssl_client_context()
    hellos = []
    for _ in range(COUNT):
        client = MemoryClient(context)
        hellos.append(client.step(anchor.hello_retry(client.step())))

    def check() -> None:
        for hello in hellos:
            assert server_hello_suite(anchor.resume(hello)) == 0x1301

    def batch() -> int:
        answer = anchor.answer
        for hello in hellos:
            answer(hello, retry_after_ccs=True)
        return len(hellos)

    def measure() -> float:
        rate = timed_rate(batch, seconds)
        check()  # still a real server flight after the run (the worker's exit frees the SSL_CTX)
        return rate

    check()
    return measure


def cookie_open(seconds: float) -> Measurement:
    """``CookieKeyRing.open`` of our ClientHello2s' cookies: cookies per second."""
    config = ServerConfig.self_signed("localhost")
    cookies = [cookie_of(hello) for hello in ours_client_hellos(config, time.time())]
    ring, binding = config.cookie_keys, peer_binding(PEER)

    def batch() -> int:
        for _ in range(10):
            for cookie in cookies:
                ring.open(cookie, binding)
        return 10 * len(cookies)

    return lambda: timed_rate(batch, seconds)


#: The measurements, by the name a worker takes.
MEASUREMENTS: dict[str, Callable[[float], Measurement]] = {
    "resume": ours_resume,
    "anchor resume": anchor_resume,
    "cookie open": cookie_open,
}


def measurement(name: str, seconds: float) -> Measurement:
    return MEASUREMENTS[name](seconds)


def run(seconds: float, rounds: int, *, progress: bool = True) -> Report:
    bar = Progress("resume", (2 * len(BUILDS) + 1) * rounds, enabled=progress)
    with builds() as trees:
        workers = Workers("resume", trees, seconds)
        resumed = alternate(
            {
                **{build: workers.measure("resume", build) for build in BUILDS},
                "anchor": workers.anchor("anchor resume"),
            },
            rounds,
            bar,
        )
        opened = alternate(
            {build: workers.measure("cookie open", build) for build in BUILDS}, rounds, bar
        )
    bar.close()

    report = Report(
        "resume",
        "Cookie verification + resume: CH2 -> Accepted (server flight written), one core",
        {"seconds_per_round": seconds, "rounds": rounds, "client": "Python ssl"},
    )
    for build in BUILDS:
        report.rows.append(
            Row(
                f"CH2 -> Accepted (x25519, ECDSA P-256): {build} build",
                "resumes/s",
                resumed[build],
                "OpenSSL SSL_stateless(CH2) (ctypes)",
                resumed["anchor"],
            )
        )
    for build in BUILDS:
        report.rows.append(
            Row(
                f"cookie open alone (AES-256-GCM-SIV, 105 B): {build} build",
                "cookies/s",
                opened[build],
                note="CookieKeyRing.open; no anchor (OpenSSL's is an HMAC inside SSL_stateless)",
            )
        )
    report.notes.append(
        "Both write the whole server flight (ServerHello, CCS where due, EncryptedExtensions, "
        "Certificate, CertificateVerify, Finished); checked before and after each timed run."
    )
    report.notes.append(
        "Every figure comes from a fresh worker process per round (bench/builds.py), the anchor's"
        " too, after one untimed run in that process."
    )
    return report


def main(argv: list[str] | None = None) -> int:
    return benchmark_main("resume", __doc__.splitlines()[0], measurement, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
