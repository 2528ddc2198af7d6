"""Cookie verification and resume: ClientHello2 -> ``Accepted`` (with the server's whole flight).

    python -m bench.resume [--seconds S] [--rounds N] [--json]

ClientHello2s come from Python's ``ssl`` (OpenSSL 3 client) over memory BIOs, answering our HRR
(for ours) or OpenSSL's HRR (for the anchor: OpenSSL's cookie is HMAC'd under a key private to
its SSL_CTX).  Ours: ``stateless_accept`` authenticates the cookie, checks ClientHello2 against
it, rebuilds the transcript and writes ServerHello … Finished.  Anchor: ``SSL_stateless()`` on a
fresh SSL object does the same (called twice when it stops at the client's compatibility CCS).
Both: x25519, ECDSA P-256, TLS_AES_128_GCM_SHA256.  The same ClientHello2s are replayed round
after round (neither side has a replay filter on).
"""

from __future__ import annotations

import time

from stateless13 import Accepted, HelloRetry, ServerConfig, stateless_accept
from stateless13.cookie import peer_binding
from stateless13.messages import ExtensionType, pull_client_hello

from .common import (
    PEER,
    MemoryClient,
    Progress,
    Report,
    Row,
    alternate,
    emit,
    parser,
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


def run(seconds: float, rounds: int, *, progress: bool = True) -> Report:
    config = ServerConfig.self_signed("localhost")
    credential = config.credentials[0]
    anchor = OpenSSLStateless(credential.certificate_pem(), private_key_pem(credential.private_key))
    context = python_ssl_client_context()
    now = time.time()

    ours_hellos, anchor_hellos = [], []
    for _ in range(COUNT):
        client = MemoryClient(context)
        retry = stateless_accept(config, client.step(), peer=PEER, now=now)
        assert isinstance(retry, HelloRetry)
        ours_hellos.append(client.step(retry.data_to_send))
        client = MemoryClient(context)
        anchor_hellos.append(client.step(anchor.hello_retry(client.step())))

    for hello in ours_hellos:
        accepted = stateless_accept(config, hello, peer=PEER, now=now)
        assert isinstance(accepted, Accepted), accepted
        assert server_hello_suite(accepted.data_to_send) == 0x1301
    for hello in anchor_hellos:
        assert server_hello_suite(anchor.resume(hello)) == 0x1301

    cookies = [cookie_of(hello) for hello in ours_hellos]
    ring, binding = config.cookie_keys, peer_binding(PEER)

    def ours_resume() -> int:
        for hello in ours_hellos:
            stateless_accept(config, hello, peer=PEER, now=now)
        return len(ours_hellos)

    def anchor_resume() -> int:
        answer = anchor.answer
        for hello in anchor_hellos:
            answer(hello, retry_after_ccs=True)
        return len(anchor_hellos)

    def cookie_open() -> int:
        for _ in range(10):
            for cookie in cookies:
                ring.open(cookie, binding)
        return 10 * len(cookies)

    bar = Progress("resume", 3 * rounds, enabled=progress)
    resumed = alternate(
        {
            "ours": lambda: timed_rate(ours_resume, seconds),
            "anchor": lambda: timed_rate(anchor_resume, seconds),
        },
        rounds,
        bar,
    )
    opened = alternate({"ours": lambda: timed_rate(cookie_open, seconds)}, rounds, bar)
    bar.close()
    for hello in anchor_hellos:  # still a real server flight after the rounds
        anchor.resume(hello)
    anchor.close()

    report = Report(
        "resume",
        "Cookie verification + resume: CH2 -> Accepted (server flight written), one core",
        {"seconds_per_round": seconds, "rounds": rounds, "client": "Python ssl"},
    )
    report.rows.append(
        Row(
            "CH2 -> Accepted (x25519, ECDSA P-256)",
            "resumes/s",
            resumed["ours"],
            "OpenSSL SSL_stateless(CH2) (ctypes)",
            resumed["anchor"],
        )
    )
    report.rows.append(
        Row(
            "cookie open alone (AES-256-GCM-SIV, 105 B)",
            "cookies/s",
            opened["ours"],
            note="CookieKeyRing.open; no anchor (OpenSSL's is an HMAC inside SSL_stateless)",
        )
    )
    report.notes.append(
        "Both write the whole server flight (ServerHello, CCS where due, EncryptedExtensions, "
        "Certificate, CertificateVerify, Finished); checked before and after the rounds."
    )
    return report


def main(argv: list[str] | None = None) -> int:
    args = parser("resume", __doc__.splitlines()[0]).parse_args(argv)
    emit(run(args.seconds, args.rounds, progress=not args.quiet), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
