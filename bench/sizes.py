"""Sizes: HelloRetryRequest bytes / ClientHello1 bytes per captured client, and the cookie.

    python -m bench.sizes [--json]

Ours: what ``stateless_accept`` sends (HRR record, plus a CCS record when the client asked for
compatibility mode).  OpenSSL: what ``SSL_stateless()`` writes (HRR record, plus its CCS), with
our suite order (as in the rate benchmark) and with OpenSSL's defaults (client order: Python and
curl clients then get TLS_AES_256_GCM_SHA384 and a SHA-384 hash in the cookie).  A ratio under
1 means the server sends less than it received: no amplification.  One more client is made
live: Python's ``ssl`` without SNI, whose 243-byte ClientHello1 is the smallest common one.
"""

from __future__ import annotations

import time

from stateless13 import HelloRetry, ServerConfig, stateless_accept
from stateless13.messages import ExtensionType, pull_server_hello

from .common import (
    PEER,
    MemoryClient,
    Report,
    Row,
    Table,
    captured_client_hellos,
    emit,
    parser,
    private_key_pem,
    python_ssl_client_context,
)
from .openssl_anchor import OpenSSLStateless


def hrr_parts(records: bytes) -> tuple[int, int, bool]:
    """(HRR record bytes, cookie bytes, a CCS record follows) of an HRR flight."""
    length = int.from_bytes(records[3:5], "big")
    message = records[5 : 5 + length]
    hello = pull_server_hello(message[4:])
    cookie = dict(hello.extensions).get(ExtensionType.cookie, b"\x00\x00")[2:]
    rest = records[5 + length :]
    return 5 + length, len(cookie), rest[:1] == b"\x14"


def run(*, progress: bool = True) -> Report:
    config = ServerConfig.self_signed("localhost")
    credential = config.credentials[0]
    cert, key = credential.certificate_pem(), private_key_pem(credential.private_key)
    matched = OpenSSLStateless(cert, key)
    default = OpenSSLStateless(cert, key, suites=None)
    report = Report("sizes", "Sizes: HRR (+CCS) bytes / ClientHello1 bytes, and the cookie", {})
    rows = []
    hellos = captured_client_hellos()
    # The smallest ClientHello1 a common client sends: Python's ssl without SNI (no padding).
    hellos["python_ssl, no SNI"] = MemoryClient(python_ssl_client_context(), None).step()
    for name, hello in hellos.items():
        retry = stateless_accept(config, hello, peer=PEER, now=time.time())
        assert isinstance(retry, HelloRetry)
        ours = retry.data_to_send
        theirs = matched.hello_retry(hello)
        theirs_default = default.hello_retry(hello)
        _, ours_cookie, ours_ccs = hrr_parts(ours)
        _, their_cookie, their_ccs = hrr_parts(theirs)
        _, default_cookie, _ = hrr_parts(theirs_default)
        rows.append(
            [
                name,
                len(hello),
                len(ours),
                f"{len(ours) / len(hello):.2f}",
                ours_cookie,
                "yes" if ours_ccs else "no",
                len(theirs),
                f"{len(theirs) / len(hello):.2f}",
                their_cookie,
                "yes" if their_ccs else "no",
                len(theirs_default),
                f"{len(theirs_default) / len(hello):.2f}",
                default_cookie,
            ]
        )
        report.rows.append(
            Row(
                name,
                "HRR/CH1",
                [len(ours) / len(hello)],
                "OpenSSL SSL_stateless",
                [len(theirs) / len(hello)],
                higher_is_better=False,
            )
        )
    matched.close()
    default.close()
    report.tables.append(
        Table(
            "bytes per client (ours | OpenSSL, our suite order | OpenSSL, default suites)",
            [
                "client",
                "CH1",
                "ours",
                "ratio",
                "cookie",
                "CCS",
                "OpenSSL",
                "ratio",
                "cookie",
                "CCS",
                "OpenSSL dflt",
                "ratio",
                "cookie",
            ],
            rows,
        )
    )
    report.notes.append(
        "Our cookie: 105 B for SHA-256 suites (121 B for SHA-384) with no application payload. "
        "OpenSSL's cookie carries a 32-byte application HMAC from the callback here."
    )
    report.notes.append(
        "Ratios in the rows are ours/OpenSSL of HRR/CH1: below 1 means ours is smaller."
    )
    return report


def main(argv: list[str] | None = None) -> int:
    args = parser("sizes", __doc__.splitlines()[0]).parse_args(argv)
    emit(run(progress=not args.quiet), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
