"""``stateless13 serve``: a TLS 1.3 server with a stateless HelloRetryRequest front, on TCP.

With no arguments it generates a self-signed certificate for localhost, listens on 127.0.0.1 on a
free port, prints how to connect, and serves a small HTTP/1.1 page.  One log line per connection.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path

from stateless13 import (
    CipherSuite,
    CookieKeyRing,
    Credential,
    NamedGroup,
    ServerConfig,
    __version__,
    keylog_to_file,
)

from .common import DEFAULT_BACKLOG, Limits, raise_open_file_limit

GROUP_NAMES = {
    "x25519": NamedGroup.x25519,
    "p256": NamedGroup.secp256r1,
    "secp256r1": NamedGroup.secp256r1,
    "p384": NamedGroup.secp384r1,
    "secp384r1": NamedGroup.secp384r1,
    "x25519mlkem768": NamedGroup.X25519MLKEM768,
}
SUITE_NAMES = {
    "aes128": CipherSuite.TLS_AES_128_GCM_SHA256,
    "aes256": CipherSuite.TLS_AES_256_GCM_SHA384,
    "chacha20": CipherSuite.TLS_CHACHA20_POLY1305_SHA256,
} | {suite.name.lower(): suite for suite in CipherSuite}


def _names(table: dict[str, CipherSuite] | dict[str, NamedGroup], text: str) -> tuple[int, ...]:
    try:
        return tuple(table[name.strip().lower()] for name in text.split(",") if name.strip())
    except KeyError as exc:
        raise argparse.ArgumentTypeError(
            f"unknown name {exc}; choose from {sorted(table)}"
        ) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stateless13", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"stateless13 {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run a TLS 1.3 server on TCP")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=0, help="port (default: a free one, printed)")
    serve.add_argument("--cert", type=Path, help="PEM certificate chain (default: self-signed)")
    serve.add_argument("--key", type=Path, help="PEM private key for --cert")
    serve.add_argument("--hostname", default="localhost", help="name for the self-signed cert")
    serve.add_argument(
        "--mode",
        choices=("http", "echo"),
        default="http",
        help="serve a small HTTP/1.1 page (default) or echo bytes back",
    )
    serve.add_argument(
        "--alpn",
        default=None,
        help="comma-separated ALPN protocols (default: http/1.1 in http mode)",
    )
    serve.add_argument(
        "--groups",
        type=lambda t: _names(GROUP_NAMES, t),
        help="groups in preference order, e.g. x25519mlkem768,x25519,p256,p384",
    )
    serve.add_argument(
        "--suites",
        type=lambda t: _names(SUITE_NAMES, t),
        help="cipher suites in preference order, e.g. aes128,aes256,chacha20",
    )
    serve.add_argument(
        "--no-stateless",
        action="store_true",
        help="ordinary handshakes: HRR only when the client's key shares do not fit",
    )
    serve.add_argument(
        "--retry-names-a-group",
        action="store_true",
        help="every HRR names a key share group (GnuTLS clients refuse a cookie-only HRR);"
        " may negotiate a group further down the preference list",
    )
    serve.add_argument(
        "--cookie-key-file",
        type=Path,
        help="cookie keys (hex, newest first), shared by every server of a fleet;"
        " created with one random key if missing (default: $STATELESS13_COOKIE_KEYS,"
        " comma-separated hex, if set; else a key of this process only)",
    )
    serve.add_argument(
        "--max-client-hello-size",
        type=int,
        default=ServerConfig.max_client_hello_size,
        help="largest ClientHello accepted, in bytes (default %(default)s; at least 512)",
    )
    serve.add_argument("--keylog", type=Path, help="append NSS SSLKEYLOGFILE lines to this file")
    serve.add_argument("--handshake-timeout", type=float, default=Limits.handshake_timeout)
    serve.add_argument("--idle-timeout", type=float, default=Limits.idle_timeout)
    serve.add_argument(
        "--stop-timeout",
        type=float,
        default=10.0,
        help="at SIGTERM/SIGINT, seconds busy connections get to finish (idle ones are closed"
        " at once; a second signal cuts everything; default %(default)s)",
    )
    serve.add_argument(
        "--write-timeout",
        type=float,
        default=Limits.write_timeout,
        help="seconds a client may take no bytes before it is cut off (default %(default)s)",
    )
    serve.add_argument(
        "--max-handshakes",
        type=int,
        default=Limits.max_concurrent_handshakes,
        help="connections handshaking at once; more are refused at accept",
    )
    serve.add_argument(
        "--quic",
        action="store_true",
        help="serve HTTP/3 over QUIC (UDP) instead of TCP; needs the quic extra (aioquic)",
    )
    serve.add_argument(
        "--validation",
        choices=("hrr", "retry", "both", "none"),
        default="hrr",
        help="with --quic: how a new client proves its address (default: stateless HRR)",
    )
    serve.add_argument("--reuse-port", action="store_true", help="set SO_REUSEPORT on the socket")
    serve.add_argument(
        "--backlog",
        type=int,
        default=None,
        help=f"connections the kernel queues for accept (TCP; default {DEFAULT_BACKLOG}, as"
        " nginx, less when the open-file limit is low)",
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes sharing the port through SO_REUSEPORT (the kernel spreads"
        " connections); they share the certificate and the cookie keys",
    )
    serve.add_argument("--quiet", action="store_true", help="no per-connection log lines")
    return parser


def build_config(args: argparse.Namespace) -> tuple[ServerConfig, str]:
    if args.cert or args.key:
        if not (args.cert and args.key):
            raise SystemExit("--cert and --key go together")
        credential = Credential.from_pem(args.cert.read_bytes(), args.key.read_bytes())
        described = f"certificate {args.cert}"
    else:
        credential = Credential.self_signed(args.hostname)
        cert_path = Path(tempfile.mkdtemp(prefix="stateless13-")) / "cert.pem"
        cert_path.write_bytes(credential.certificate_pem())
        described = f"self-signed certificate for {args.hostname}, written to {cert_path}"
    options: dict[str, object] = {}
    if args.cookie_key_file is not None:
        if not args.cookie_key_file.exists():
            CookieKeyRing.write_new_key_file(args.cookie_key_file)
        options["cookie_keys"] = CookieKeyRing.from_file(args.cookie_key_file)
    elif os.environ.get("STATELESS13_COOKIE_KEYS"):
        options["cookie_keys"] = CookieKeyRing.from_env("STATELESS13_COOKIE_KEYS")
    if args.groups:
        options["groups"] = args.groups
    if args.retry_names_a_group:
        options["retry_names_a_group"] = True
    if args.suites:
        options["cipher_suites"] = args.suites
    default_alpn = "h3" if args.quic else ("http/1.1" if args.mode == "http" else "")
    alpn = args.alpn if args.alpn is not None else default_alpn
    options["alpn_protocols"] = tuple(p.encode() for p in alpn.split(",") if p)
    options["max_client_hello_size"] = args.max_client_hello_size
    try:
        if args.keylog is not None:
            options["keylog"] = keylog_to_file(args.keylog)
        config = ServerConfig(credentials=(credential,), **options)  # type: ignore[arg-type]
    except ValueError as error:  # LocalProtocolError: a setting that cannot work
        raise SystemExit(f"stateless13: {error}") from None
    return config, f"{described}\nSHA-256 fingerprint {credential.fingerprint}"


async def _serve_quic(
    args: argparse.Namespace, config: ServerConfig, described: str | None, secret: bytes | None
) -> None:
    """HTTP/3 over QUIC; a new client's first Initial gets a stateless HRR (``--validation``).

    ``secret`` keys the QUIC connection IDs: workers of one port share it (and the cookie keys),
    so a ClientHello2 may reach another worker than its ClientHello1.
    """
    from .quic_front import QuicOptions
    from .quic_server import serve_quic

    options = QuicOptions() if secret is None else QuicOptions(secret=secret)
    server = await serve_quic(
        config,
        args.host,
        args.port,
        validation=args.validation,
        options=options,
        reuse_port=args.reuse_port or args.workers > 1,
    )
    if described is not None:
        _announce(args, server.address, described, config)
    async with server:
        await _until_signalled()
    if described is not None:
        print("stateless13: shut down", flush=True)


async def _serve(args: argparse.Namespace, config: ServerConfig, described: str | None) -> None:
    """Serve until SIGINT/SIGTERM; ``described`` is printed by the one process that announces."""
    from .asyncio_tcp import serve
    from .demo import echo, http_page

    limits = Limits(
        handshake_timeout=args.handshake_timeout,
        idle_timeout=args.idle_timeout,
        write_timeout=args.write_timeout,
        max_concurrent_handshakes=args.max_handshakes,
    )

    server = await serve(
        config,
        http_page if args.mode == "http" else echo,
        args.host,
        args.port,
        limits=limits,
        stateless=not args.no_stateless,
        reuse_port=args.reuse_port or args.workers > 1 or None,
        **({} if args.backlog is None else {"backlog": args.backlog}),
    )
    if described is not None:
        _announce(args, server.sockets[0].getsockname()[:2], described, config)
    try:
        await _until_signalled()
    finally:  # graceful: idle connections get close_notify, busy ones --stop-timeout seconds
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, server.abort)  # a second signal: at once
        await server.stop(args.stop_timeout)
    if described is not None:
        print("stateless13: shut down", flush=True)


async def _until_signalled() -> None:
    """Return at SIGINT or SIGTERM (the server then closes cleanly)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()


def _announce(
    args: argparse.Namespace, address: tuple[str, int], described: str, config: ServerConfig
) -> None:
    host, port = address
    if args.quic:
        from .quic_server import spki_pin

        print(
            f"stateless13 {__version__} serving h3 on {host}:{port} over QUIC "
            f"(address validation: {args.validation})",
            flush=True,
        )
        print(described, flush=True)
        gnutls = "" if config.retry_names_a_group else "   (GnuTLS: add --retry-names-a-group)"
        print(f"try: gtlsclient {host} {port} https://localhost:{port}/{gnutls}", flush=True)
        print(
            f"  or: chromium --headless --origin-to-force-quic-on=localhost:{port} "
            f"--ignore-certificate-errors-spki-list={spki_pin(config.credentials[0])} "
            f"--dump-dom https://localhost:{port}/",
            flush=True,
        )
        return
    front = "stateless HelloRetryRequest on" if not args.no_stateless else "ordinary handshakes"
    print(f"stateless13 {__version__} serving {args.mode} on {host}:{port} ({front})", flush=True)
    print(described, flush=True)
    print(
        f"try: openssl s_client -connect {host}:{port} -servername {args.hostname} -tls1_3",
        flush=True,
    )
    if args.mode == "http":
        print(f"  or: curl -k --tlsv1.3 https://{host}:{port}/", flush=True)


#: A worker that dies is restarted after a pause that doubles from the first (0.5 s) up to
#: the last (30 s); more than MAX_RESTARTS deaths within RESTART_WINDOW seconds and the server
#: stops with exit status 1, so that a supervisor's restart-on-failure takes over.
RESTART_DELAYS = (0.5, 30.0)
MAX_RESTARTS = 5
RESTART_WINDOW = 60.0


def _serve_workers(args: argparse.Namespace, config: ServerConfig, described: str) -> int:
    """Fork ``args.workers`` processes, each listening on the same port with SO_REUSEPORT, and
    keep them running: restart one that dies (with a growing pause), give up with exit status 1
    when they keep dying, stop them all at SIGTERM or SIGINT (exit status 0).

    The port is held by a bound (not listening) placeholder socket until every worker listens,
    so ``--port 0`` gives all of them one free port.
    """
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    placeholder = socket.socket(family, socket.SOCK_DGRAM if args.quic else socket.SOCK_STREAM)
    placeholder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    placeholder.bind((args.host, args.port))
    args.port = placeholder.getsockname()[1]
    quic_secret = os.urandom(32)  # shared by the QUIC workers, like the cookie keys

    def start_worker() -> int:
        pid = os.fork()
        if pid == 0:  # a worker: serve, then leave without running the parent's cleanup
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            placeholder.close()
            worker = (
                _serve_quic(args, config, None, quic_secret)
                if args.quic
                else _serve(args, config, None)
            )
            with contextlib.suppress(KeyboardInterrupt):
                asyncio.run(worker)
            os._exit(0)
        return pid

    children = {start_worker() for _ in range(args.workers)}
    _announce(args, (args.host, args.port), described, config)
    print(f"{args.workers} workers: {' '.join(map(str, sorted(children)))}", flush=True)
    placeholder.close()

    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    deaths: list[float] = []
    status = 0
    while children:
        try:
            pid, wait_status = os.wait()
        except ChildProcessError:
            break
        children.discard(pid)
        if stopping:
            continue
        code = os.waitstatus_to_exitcode(wait_status)
        now = time.monotonic()
        deaths = [t for t in deaths if now - t < RESTART_WINDOW] + [now]
        if len(deaths) > MAX_RESTARTS:
            print(
                f"stateless13: worker {pid} exited ({code}), {len(deaths)} deaths in"
                f" {RESTART_WINDOW:g} s: stopping",
                file=sys.stderr,
                flush=True,
            )
            status = 1
            stop(signal.SIGTERM, None)
            continue
        delay = min(RESTART_DELAYS[0] * 2 ** (len(deaths) - 1), RESTART_DELAYS[1])
        print(
            f"stateless13: worker {pid} exited ({code}); restarting in {delay:g} s",
            file=sys.stderr,
            flush=True,
        )
        deadline = now + delay
        while not stopping and time.monotonic() < deadline:
            time.sleep(0.05)
        if not stopping:
            child = start_worker()
            children.add(child)
            print(f"stateless13: worker {child} started", file=sys.stderr, flush=True)
    print("stateless13: shut down", flush=True)
    return status


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(message)s"
        if args.workers == 1
        else "%(asctime)s [%(process)d] %(message)s",
        stream=sys.stderr,
    )
    if args.workers < 1:
        raise SystemExit("--workers must be at least 1")
    raise_open_file_limit()  # connections are limited from it (Limits.max_connections)
    config, described = build_config(args)
    if args.workers > 1:
        return _serve_workers(args, config, described)
    serving = (
        _serve_quic(args, config, described, None) if args.quic else _serve(args, config, described)
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serving)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
