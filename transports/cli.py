"""``stateless13 serve``: a TLS 1.3 server with a stateless HelloRetryRequest front, on TCP.

With no arguments it generates a self-signed certificate for localhost, listens on 127.0.0.1 on a
free port, prints how to connect, and serves a small HTTP/1.1 page.  One log line per connection.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib
import logging
import os
import shlex
import shutil
import signal
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, NoReturn

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from stateless13 import (
    COMPILED,
    CipherSuite,
    ClientAuth,
    CookieKeyRing,
    Credential,
    NamedGroup,
    ServerConfig,
    __version__,
    keylog_to_file,
    load_external_psks,
)

from .common import (
    DEFAULT_BACKLOG,
    STATS_LOGGER,
    TCP_VALIDATIONS,
    Limits,
    Validation,
    raise_open_file_limit,
)
from .proxy import Backend
from .proxy_protocol import Network, parse_networks

if TYPE_CHECKING:
    from .dtls_server import DtlsServer
    from .quic_proxy import H3ProxyLimits
    from .quic_server import QuicServer

#: Exit statuses.  An operator's mistake is told in one line on stderr (``stateless13: ...``),
#: never as a traceback, so that it reads as what to fix rather than as a bug of ours.
EXIT_RUNTIME = 1  # it started, then could not serve: the address cannot be bound, workers die
EXIT_USAGE = 2  # nothing started: bad arguments or configuration (argparse's own status too)
EXIT_STATUS_HELP = f"""\
exit status:
  0  stopped by SIGINT or SIGTERM (graceful: see --stop-timeout)
  {EXIT_RUNTIME}  could not serve: the address cannot be bound (port in use, no permission,
     unknown host), or --workers kept dying
  {EXIT_USAGE}  bad usage or configuration, nothing started: an unknown option or name; a
     --cert, --key, --keylog, --cookie-key-file, --ticket-key-file, --cid-key-file, --psk-file
     or --client-ca that cannot be used;
     --quic without aioquic
"""

#: What --quic needs: the ``quic`` extra of pyproject.toml (a test keeps the two equal).
QUIC_REQUIREMENT = "aioquic>=1.2,<1.8"
#: aioquic's loggers: per-connection INFO chatter ("Duplicate CRYPTO data received", "ALPN
#: negotiated protocol h3") that would bury our one line per connection; shown with --verbose.
AIOQUIC_LOGGERS = ("quic", "http3")


class CommandError(Exception):
    """Reported by :func:`main` as one line, ``stateless13: <message>``, with exit ``status``."""

    def __init__(self, message: str, status: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.status = status


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


STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}
#: Read the key files again (--cookie-key-file, --ticket-key-file): KeyFiles.reload.  A parent
#: of --workers passes it on to each worker.
RELOAD_SIGNAL = signal.SIGHUP
#: Where the reloads are logged (INFO, with --quiet too; a file that fails: WARNING).
KEYS_LOGGER = "stateless13.keys"

#: The version and which build of the core runs (setup.py: mypyc-compiled, or pure Python).
VERSION = f"{__version__} ({'compiled' if COMPILED else 'pure Python'})"

#: ServerConfig's defaults (read from its fields: a compiled dataclass has no class attributes
#: holding them).
CONFIG_DEFAULTS = {f.name: f.default for f in dataclasses.fields(ServerConfig)}


def _networks(text: str) -> tuple[Network, ...]:
    try:
        return parse_networks(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _names(table: dict[str, CipherSuite] | dict[str, NamedGroup], text: str) -> tuple[int, ...]:
    try:
        return tuple(table[name.strip().lower()] for name in text.split(",") if name.strip())
    except KeyError as exc:
        raise argparse.ArgumentTypeError(
            f"unknown name {exc}; choose from {sorted(table)}"
        ) from None


def _group_tiers(text: str) -> tuple[NamedGroup | tuple[NamedGroup, ...], ...]:
    """``x25519mlkem768,x25519+p256+p384``: commas between tiers in preference order, ``+``
    between groups of one tier (preferred equally; ServerConfig.groups)."""
    tiers = []
    for tier in text.split(","):
        if not tier.strip():
            continue
        groups = tuple(NamedGroup(g) for g in _names(GROUP_NAMES, tier.replace("+", ",")))
        tiers.append(groups[0] if len(groups) == 1 else groups)
    return tuple(tiers)


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port (0 to 65535; 0: a free one)")
    return port


def _at_least_one(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"{number}: must be at least 1")
    return number


class _Parser(argparse.ArgumentParser):
    """argparse, whose usage errors are one line too, like every other error of the command."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"stateless13: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="stateless13", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"stateless13 {VERSION}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser(
        "serve",
        help="run a TLS 1.3 server on TCP",
        description=__doc__.splitlines()[0],
        epilog=EXIT_STATUS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,  # keeps the epilog's lines
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=_port, default=0, help="port (default: a free one, printed)")
    serve.add_argument(
        "--cert",
        type=Path,
        action="append",
        help="PEM certificate chain (default: self-signed); repeat --cert/--key for several, each"
        " served to the clients asking by SNI for a name in its subjectAltName (the first: to"
        " the others)",
    )
    serve.add_argument(
        "--key", type=Path, action="append", help="PEM private key for the --cert of its rank"
    )
    serve.add_argument(
        "--refuse-unknown-server-names",
        action="store_true",
        help="a client asking by SNI for a name none of the certificates has gets"
        " unrecognized_name (default: the first certificate)",
    )
    serve.add_argument("--hostname", default="localhost", help="name for the self-signed cert")
    serve.add_argument(
        "--mode",
        choices=("http", "echo"),
        default=None,
        help="serve a small HTTP/1.1 page (default) or echo bytes back (not with --proxy-to)",
    )
    serve.add_argument(
        "--alpn",
        default=None,
        help="comma-separated ALPN protocols (default: http/1.1 in http mode, h3 with --quic,"
        " none with --proxy-to over TCP)",
    )
    serve.add_argument(
        "--groups",
        type=_group_tiers,
        help="groups in preference order, '+' joining groups preferred equally (default"
        " x25519mlkem768,x25519+p256+p384: within a tier a client keeps the group it sent a"
        " share for, and the stateless HRR can name another without demoting it)",
    )
    serve.add_argument(
        "--suites",
        type=lambda t: _names(SUITE_NAMES, t),
        help="cipher suites in preference order, e.g. aes128,aes256,chacha20",
    )
    serve.add_argument(
        "--retry-names-a-group",
        action="store_true",
        help="every stateless HRR names a group the client sent no share for, even from a lower"
        " tier of --groups (an override: the default groups already serve GnuTLS clients,"
        " which refuse a cookie-only HRR)",
    )
    serve.add_argument(
        "--cookie-key-file",
        type=Path,
        help="cookie keys (hex, newest first), shared by every server of a fleet; they also seal"
        " QUIC's Retry and NEW_TOKEN tokens; created with one random key if missing; read again"
        " at SIGHUP (default: $STATELESS13_COOKIE_KEYS, comma-separated hex, if set; else a key"
        " of this process only)",
    )
    serve.add_argument(
        "--tickets",
        type=int,
        default=CONFIG_DEFAULTS["tickets"],
        help="session tickets sent after each handshake, for clients to resume with"
        " (default %(default)s; 0 sends none)",
    )
    serve.add_argument(
        "--early-data",
        type=int,
        default=CONFIG_DEFAULTS["early_data"],
        metavar="BYTES",
        help="accept up to BYTES of 0-RTT data from clients resuming our tickets (default"
        " %(default)s: refused; with --quic any BYTES turns 0-RTT on, bounded by flow control,"
        " RFC 9001 §4.6.1); early data can be replayed: the echo and the page are safe to"
        " repeat, an application of your own must be",
    )
    serve.add_argument(
        "--ticket-key-file",
        type=Path,
        help="session ticket keys (hex, newest first), shared by every server of a fleet so that"
        " each resumes the others' tickets; created with one random key if missing; read again"
        " at SIGHUP (default: $STATELESS13_TICKET_KEYS, comma-separated hex, if set; else a key"
        " of this process)",
    )
    serve.add_argument(
        "--replay-store",
        metavar="URL",
        help="a Redis shared by every server of a fleet (redis://HOST:PORT/DB, rediss:// for"
        " TLS): with --early-data, each ticket's 0-RTT data is accepted once across the fleet"
        " (default: once per process); while it is down, and for a window after it lost its"
        " keys, 0-RTT is refused (1-RTT goes on) and the stat line says so (docs/FLEET.md);"
        " needs redis-py (pip install 'stateless13[fleet]')",
    )
    serve.add_argument(
        "--replay-cookies",
        choices=("fail-closed", "fail-open"),
        help="with --replay-store: also accept each cookie once across the fleet; while the"
        " store is down, refuse every ClientHello2 (fail-closed) or fall back to this process's"
        " own filter (fail-open: a replay to another server may pass)",
    )
    serve.add_argument(
        "--psk-file",
        type=Path,
        help="external pre-shared keys, one per line: IDENTITY HEX-KEY [sha256|sha384] (at least"
        " 16 bytes of key); a client naming one with a matching binder is admitted by it, without"
        " a certificate",
    )
    serve.add_argument(
        "--client-ca",
        type=Path,
        metavar="PEM",
        help="ask every client for a certificate, valid if its chain leads to one of the"
        " certificates in this PEM file, or in the PEM files of this directory",
    )
    serve.add_argument(
        "--verify-client",
        choices=("required", "optional", "post-handshake"),
        help="with --client-ca: refuse a client without a certificate (certificate_required;"
        " the default), or let it in unauthenticated, or ask only after the handshake, on"
        " GET /secret (post-handshake authentication, to clients that offer it)",
    )
    serve.add_argument(
        "--psk-ke",
        action="store_true",
        help="also accept PSK handshakes (tickets and external PSKs) without a key exchange, for"
        " clients that offer only psk_ke: no forward secrecy (default: psk_dhe_ke only)",
    )
    serve.add_argument(
        "--max-client-hello-size",
        type=int,
        default=CONFIG_DEFAULTS["max_client_hello_size"],
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
        "--proxy-protocol-from",
        type=_networks,
        metavar="CIDR[,CIDR]",
        help="TCP: the balancers in front (addresses or networks): a connection from one must"
        " start with a PROXY protocol v1 or v2 header (HAProxy send-proxy[-v2], nginx"
        " proxy_protocol on, AWS NLB) naming the client, or it is closed; that client is then the"
        " peer (the cookie binds it, the per-source limit counts it, the log says peer=CLIENT"
        " via=BALANCER).  Connections from elsewhere are served as ever, without a header"
        " (default: none expected)",
    )
    serve.add_argument(
        "--quic",
        action="store_true",
        help="serve HTTP/3 over QUIC (UDP) instead of TCP; needs the quic extra (aioquic)",
    )
    serve.add_argument(
        "--dtls",
        action="store_true",
        help="serve DTLS 1.3 (RFC 9147) over UDP instead of TCP, echoing each datagram; every"
        " new client proves its address with the stateless HelloRetryRequest first (the"
        " cookie binds its address and port)",
    )
    serve.add_argument(
        "--cid-key-file",
        type=Path,
        help="with --quic: the key of our connection IDs (hex, one line), shared by every server"
        " of a fleet, so that a ClientHello2 answering one server's stateless HRR is understood"
        " by whichever server the balancer sends it to; created with one random key if missing;"
        " read at start only (default: a key of this process, shared by its --workers)",
    )
    proxy = serve.add_argument_group(
        "front door",
        "forward to a backend instead of serving the page: each client's TLS ends here (behind\n"
        "the stateless front as ever), its bytes or requests go on in clear text",
    )
    proxy.add_argument(
        "--proxy-to",
        metavar="BACKEND",
        help="TCP: HOST:PORT, every connection's bytes piped to it and back (backpressure,"
        " half-close; --idle-timeout: no byte either way); with --quic: http://HOST:PORT, every"
        " HTTP/3 request forwarded to that HTTP/1.1 server (one connection per request;"
        " Forwarded and X-Forwarded-For/-Proto/-Host set, hop-by-hop fields dropped)",
    )
    proxy.add_argument(
        "--proxy-protocol",
        choices=("v2",),
        help="TCP: start each backend connection with a PROXY protocol v2 header (HAProxy's),"
        " naming the client's address and port, its ALPN and SNI",
    )
    proxy.add_argument(
        "--proxy-connect-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="seconds to connect to the backend (default 5); over it: the client gets"
        " close_notify (TCP) or 504 (HTTP/3); a refused connect: close_notify, or 502",
    )
    proxy.add_argument(
        "--proxy-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="--quic: seconds the backend may send nothing once the request is sent, or take"
        " no request bytes (504), and the client may pause its request body (408) or take no"
        " response bytes (stream reset); default 60",
    )
    proxy.add_argument(
        "--proxy-max-body",
        type=int,
        default=None,
        metavar="BYTES",
        help="--quic: largest request body (413 over it; default 100 MiB; 0: no limit)",
    )
    proxy.add_argument(
        "--proxy-max-streams",
        type=_at_least_one,
        default=None,
        metavar="N",
        help="--quic: requests at once per connection (QUIC MAX_STREAMS; default 100)",
    )
    serve.add_argument(
        "--validation",
        choices=[v.value for v in Validation],
        default=Validation.ADAPTIVE.value,
        help="how a new client proves its address: adaptive (default: the stateless HRR only"
        " while more than 32 connections are handshaking; with --quic, a Retry under a flood of"
        " new clients), hrr (always the stateless HRR; with --quic --early-data, a Retry for a"
        " client offering 0-RTT, which an HRR would refuse), none (ordinary handshakes: an HRR"
        " only when the key shares do not fit); with --quic also retry and both; --dtls: always"
        " the stateless HRR",
    )
    serve.add_argument(
        "--stats-interval",
        type=float,
        default=60.0,
        help="seconds between stat lines (handshakes, HRRs, cookies, refusals and failures by"
        " reason, in progress; logged with --quiet too); 0: none (default %(default)s)",
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
        type=_at_least_one,
        default=1,
        help="worker processes sharing the port through SO_REUSEPORT (the kernel spreads"
        " connections); they share the certificate and the cookie keys",
    )
    serve.add_argument("--quiet", action="store_true", help="no per-connection log lines")
    serve.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="with --quic, also aioquic's own INFO log lines (quiet otherwise)",
    )
    return parser


def build_config(
    args: argparse.Namespace, cleanup: contextlib.ExitStack
) -> tuple[ServerConfig, str]:
    """The server's configuration, and what the banner says of its certificate.

    Anything given that cannot be used raises :class:`CommandError`.  A generated certificate is
    written into a temporary directory that ``cleanup`` removes.
    """
    credentials: tuple[Credential, ...]
    if args.cert or args.key:
        if len(args.cert or ()) != len(args.key or ()):
            raise CommandError("--cert and --key go together, one --key for each --cert")
        credentials = tuple(
            _load_credential(c, k) for c, k in zip(args.cert, args.key, strict=True)
        )
        described = "\n".join(
            f"certificate {path} for {', '.join(c.server_names or ()) or 'any name'}"
            for path, c in zip(args.cert, credentials, strict=True)
        )
    else:
        credential = Credential.self_signed(args.hostname)
        credentials = (credential,)
        cert_path = _temporary_directory(cleanup) / "cert.pem"
        cert_path.write_bytes(credential.certificate_pem())
        described = f"self-signed certificate for {args.hostname}, written to {cert_path}"
    options: dict[str, object] = {"tickets": args.tickets, "early_data": args.early_data}
    for field, option, path, variable in (
        ("cookie_keys", "--cookie-key-file", args.cookie_key_file, "STATELESS13_COOKIE_KEYS"),
        ("ticket_keys", "--ticket-key-file", args.ticket_key_file, "STATELESS13_TICKET_KEYS"),
    ):
        keys = _key_ring(option, path, variable)
        if keys is not None:
            options[field] = keys
    if args.psk_file is not None:
        try:
            options["external_psks"] = load_external_psks(args.psk_file)
        except OSError as error:
            raise CommandError(f"--psk-file {args.psk_file}: {_reason(error)}") from None
        except ValueError as error:
            raise CommandError(f"--psk-file {args.psk_file}, {error}") from None
    if args.psk_ke:
        options["psk_ke"] = True
    if args.refuse_unknown_server_names:
        options["refuse_unknown_server_names"] = True
    if args.verify_client is not None and args.client_ca is None:
        raise CommandError("--verify-client goes with --client-ca")
    if args.quic and args.verify_client == "post-handshake":
        raise CommandError(
            "--verify-client post-handshake is for TCP: QUIC forbids post-handshake"
            " authentication (RFC 9001 §4.4); with --quic the certificate is asked for in the"
            " handshake (required or optional)"
        )
    if args.client_ca is not None:
        options["client_auth"] = _client_auth(args.client_ca, args.verify_client or "required")
    if args.groups:
        options["groups"] = args.groups
    if args.retry_names_a_group:
        options["retry_names_a_group"] = True
    if args.suites:
        options["cipher_suites"] = args.suites
    default_alpn = "h3" if args.quic else ("http/1.1" if args.mode == "http" else "")
    if args.proxy_to is not None and not args.quic:
        default_alpn = ""  # the backend's protocol is its own: --alpn names it
    alpn = args.alpn if args.alpn is not None else default_alpn
    options["alpn_protocols"] = tuple(p.encode() for p in alpn.split(",") if p)
    options["max_client_hello_size"] = args.max_client_hello_size
    try:
        if args.keylog is not None:  # refused now, in one line, rather than at every handshake
            options["keylog"] = keylog_to_file(args.keylog)
        config = ServerConfig(credentials=credentials, **options)  # type: ignore[arg-type]
    except ValueError as error:  # LocalProtocolError: a setting that cannot work
        raise CommandError(str(error)) from None
    config = _with_replay_store(args, config)
    return config, f"{described}\nSHA-256 fingerprint {credentials[0].fingerprint}"


#: What --replay-store needs: the ``fleet`` extra of pyproject.toml.
REDIS_REQUIREMENT = "redis>=5"


def _with_replay_store(args: argparse.Namespace, config: ServerConfig) -> ServerConfig:
    """``config`` with the stores of --replay-store (transports/redis_replay.py): one for 0-RTT
    (with --early-data), one for cookies (with --replay-cookies), on one Redis client.  Redis is
    asked once now; down, the server starts all the same (fail safe, and logged)."""
    if args.replay_store is None:
        if args.replay_cookies is not None:
            raise CommandError("--replay-cookies goes with --replay-store")
        return config
    if not args.early_data and args.replay_cookies is None:
        raise CommandError("--replay-store goes with --early-data (0-RTT) or --replay-cookies")
    _import_extra(".redis_replay", "--replay-store", "redis", "redis-py", REDIS_REQUIREMENT)
    from stateless13 import ReplayFilter

    from . import redis_replay  # imported above: typed here

    try:
        client = redis_replay.redis_client(args.replay_store)
    except ValueError as error:  # the URL (not repeated: it may hold a password)
        raise CommandError(f"--replay-store: {error}") from None
    early_data = config.early_data_replay
    if args.early_data:
        early_data = redis_replay.RedisReplayStore(
            client,
            prefix=redis_replay.EARLY_DATA_PREFIX,
            window=redis_replay.early_data_window(config),
            name="0rtt",
        )
    cookies = config.replay_filter
    if args.replay_cookies is not None:
        window = redis_replay.cookie_window(config)
        fail_open = args.replay_cookies == "fail-open"
        cookies = redis_replay.RedisReplayStore(
            client,
            prefix=redis_replay.COOKIE_PREFIX,
            window=window,
            fallback=ReplayFilter.for_capacity(100_000, window=window) if fail_open else None,
            name="cookie",
        )
    for store in (early_data, cookies):
        if isinstance(store, redis_replay.RedisReplayStore):
            store.description = redis_replay.describe(args.replay_store)
            store.ping()  # logs a store that is down, or warming (docs/FLEET.md)
    return dataclasses.replace(config, early_data_replay=early_data, replay_filter=cookies)


def _replay_stat_fields(
    sources: list[Callable[[], dict[str, object]]], config: ServerConfig
) -> None:
    """Put the replay stores' own fields (``stat_fields``) on the stat line."""
    for store in (config.early_data_replay, config.replay_filter):
        fields = getattr(store, "stat_fields", None)
        if fields is not None and fields not in sources:
            sources.append(fields)


def _load_credential(cert: Path, key: Path) -> Credential:
    chain_pem, key_pem = _read(cert, "--cert"), _read(key, "--key")
    # Parsed here first only to say which file is wrong; Credential.from_pem does not.
    try:
        x509.load_pem_x509_certificates(chain_pem)
    except ValueError:
        raise CommandError(f"--cert {cert}: no PEM certificate in it") from None
    try:
        serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:  # cryptography's way of saying "encrypted, and no password given"
        raise CommandError(f"--key {key}: the key is encrypted; give it unencrypted") from None
    except (ValueError, UnsupportedAlgorithm):
        raise CommandError(f"--key {key}: no PEM private key in it") from None
    try:
        return Credential.from_pem(chain_pem, key_pem)
    except ValueError as error:  # LocalProtocolError: not the certificate's key, or unusable
        raise CommandError(f"--cert {cert}, --key {key}: {error}") from None


def _client_auth(path: Path, mode: str) -> ClientAuth:
    required = mode != "optional"
    post_handshake_only = mode == "post-handshake"
    try:
        if path.is_dir():
            return ClientAuth.from_pem(
                capath=path, required=required, post_handshake_only=post_handshake_only
            )
        return ClientAuth.from_pem(path, required=required, post_handshake_only=post_handshake_only)
    except OSError as error:
        raise CommandError(f"--client-ca {path}: {_reason(error)}") from None
    except ValueError as error:  # LocalProtocolError: no certificate in it
        raise CommandError(f"--client-ca {path}: {error}") from None


def _read(path: Path, option: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise CommandError(f"{option} {path}: {_reason(error)}") from None


def _key_ring(option: str, path: Path | None, variable: str) -> CookieKeyRing | None:
    """The ring in the file ``path`` (the first server of a fleet creates it, with one random
    key), else in ``$variable`` if set; None: a key of this process (the config's default)."""
    if path is None:
        if not os.environ.get(variable):
            return None
        try:
            return CookieKeyRing.from_env(variable)
        except ValueError as error:
            raise CommandError(_naming(f"${variable}", error)) from None
    try:
        # O_EXCL, not an exists() check first: servers of a fleet may start at the same moment.
        with contextlib.suppress(FileExistsError):
            CookieKeyRing.write_new_key_file(path)
        return CookieKeyRing.from_file(path)
    except OSError as error:
        raise CommandError(f"{option} {path}: {_reason(error)}") from None
    except ValueError as error:  # not hex, a key too short, no key at all, not text
        raise CommandError(f"{option} {_naming(str(path), error)}") from None


class KeyFiles:
    """The key rings that came from files (--cookie-key-file, --ticket-key-file), read again
    at SIGHUP: each ring takes its file's keys in place (``CookieKeyRing.replace_keys``), so
    that the handshakes that follow seal with the file's first key and open with all of them.
    A file that cannot be read or parsed leaves its ring as it was, and the log says why."""

    def __init__(self, files: list[tuple[str, Path, CookieKeyRing]]) -> None:
        self.files = files
        self.reloads = 0  # files read again and taken
        self.failures = 0  # files that could not be: their rings kept their keys

    @classmethod
    def of(cls, args: argparse.Namespace, config: ServerConfig) -> KeyFiles:
        files = []
        if args.cookie_key_file is not None:
            files.append(("--cookie-key-file", args.cookie_key_file, config.cookie_keys))
        if args.ticket_key_file is not None:
            files.append(("--ticket-key-file", args.ticket_key_file, config.ticket_keys))
        return cls(files)

    def reload(self, *, quiet: bool = False) -> None:
        """Read every file again; one log line each (none if ``quiet``: a --workers parent,
        whose workers say it)."""
        log = logging.getLogger(KEYS_LOGGER)
        if not self.files and not quiet:
            log.warning(
                "SIGHUP: no key file to read again (keys from the environment or of this"
                " process are read at start only)"
            )
        for option, path, ring in self.files:
            try:
                fresh = CookieKeyRing.from_file(path)
            except OSError as error:
                problem = f"{path}: {_reason(error)}"
            except ValueError as error:  # not hex, a key too short, no key at all, not text
                problem = _naming(str(path), error)  # FILE:LINE: ..., or FILE: ...
            else:
                ring.replace_keys(fresh)
                self.reloads += 1
                if not quiet:
                    log.info("keys reloaded: %s %s: %s", option, path, _describe_keys(ring))
                continue
            self.failures += 1
            if not quiet:
                log.warning(
                    "keys NOT reloaded: %s %s; keeping %s", option, problem, _describe_keys(ring)
                )

    def stat_fields(self) -> dict[str, object]:
        """``cookie_keys=N ticket_keys=N key_reloads=N key_reload_failures=N`` on the stat line."""
        fields: dict[str, object] = {
            option.removeprefix("--").removesuffix("-key-file") + "_keys": len(ring)
            for option, _, ring in self.files
        }
        return fields | {"key_reloads": self.reloads, "key_reload_failures": self.failures}


def _describe_keys(ring: CookieKeyRing) -> str:
    """``2 keys, ids 3a (sealing) 91``: which keys a server holds, without saying them (a key's
    id is derived from it and is in clear in everything it seals)."""
    ids = [f"{key_id:02x}" for key_id in ring.key_ids]
    plural = "s" if len(ids) > 1 else ""
    return f"{len(ids)} key{plural}, ids {ids[0]} (sealing) {' '.join(ids[1:])}".rstrip()


def _cid_secret(args: argparse.Namespace) -> bytes | None:
    """--cid-key-file's key (the file created with a random one if missing), or None."""
    path: Path | None = args.cid_key_file
    if path is None:
        return None
    if not args.quic:
        raise CommandError("--cid-key-file is for --quic (it keys QUIC's connection IDs)")
    try:
        with contextlib.suppress(FileExistsError):  # O_EXCL: servers may start at once
            CookieKeyRing.write_new_key_file(path)
        lines = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
    except OSError as error:
        raise CommandError(f"--cid-key-file {path}: {_reason(error)}") from None
    except ValueError:  # not text
        raise CommandError(f"--cid-key-file {path}: not a hex key") from None
    keys = [line for line in lines if line]
    try:
        secret = bytes.fromhex(keys[0]) if len(keys) == 1 else b""
    except ValueError:
        secret = b""
    if len(secret) < 16:
        raise CommandError(
            f"--cid-key-file {path}: not one hex key of at least 16 bytes on a line of its own"
        )
    return secret


def _naming(source: str, error: ValueError) -> str:
    """``error``'s message, prefixed by ``source`` unless it starts with it already (the key
    parser says ``FILE:LINE: not a hex key``)."""
    message = str(error)
    return message if message.startswith(source) else f"{source}: {message}"


def _reason(error: OSError) -> str:
    """The system's words for ``error`` ("Address already in use"), without the path or the
    address that the message it goes into names already."""
    if isinstance(error.errno, int) and error.errno > 0:
        return os.strerror(error.errno)
    return error.strerror or str(error)  # getaddrinfo's (negative errno), asyncio's own


def _temporary_directory(cleanup: contextlib.ExitStack) -> Path:
    """A new private directory, removed at exit by this process only: forked workers inherit
    ``cleanup`` but must not remove what the parent and the other workers still use."""
    directory = Path(tempfile.mkdtemp(prefix="stateless13-"))
    owner = os.getpid()

    def remove() -> None:
        if os.getpid() == owner:
            shutil.rmtree(directory, ignore_errors=True)

    cleanup.callback(remove)
    return directory


def _require_aioquic() -> None:
    """Fail with one line saying how to install aioquic if --quic cannot import it."""
    _import_extra(
        ".quic_server",
        "--quic",
        "aioquic",
        "aioquic",
        QUIC_REQUIREMENT,
        " (from a clone, ./serve installs it)",
    )


def _import_extra(
    module: str, option: str, package: str, name: str, requirement: str, hint: str = ""
) -> None:
    """Our ``module`` that ``option`` needs, or one line saying how to install ``package`` (a
    dependency of an extra, called ``name``) when it is missing; any other import error is
    ours and passes."""
    try:
        importlib.import_module(module, __package__)
    except ModuleNotFoundError as error:
        if (error.name or "").partition(".")[0] != package:
            raise
        install = f"{shlex.quote(sys.executable)} -m pip install {shlex.quote(requirement)}"
        raise CommandError(
            f"{option} needs {name}, which is not installed: {install}{hint}"
        ) from None


def _cannot_listen(args: argparse.Namespace, error: OSError) -> CommandError:
    transport = "UDP" if args.quic or args.dtls else "TCP"
    return CommandError(
        f"cannot listen on {_host_port(args.host, args.port)} ({transport}): {_reason(error)}",
        EXIT_RUNTIME,
    )


#: Called once the server listens, with the address it is bound to: the banner of a single
#: process, a worker's word to its parent that it serves.
Listening = Callable[[tuple[str, int]], None]


async def _serve_quic(
    args: argparse.Namespace,
    config: ServerConfig,
    keys: KeyFiles,
    listening: Listening,
    secret: bytes | None,
    parent: int | None = None,
) -> None:
    """HTTP/3 over QUIC; a new client's first Initial gets a stateless HRR (``--validation``).

    ``secret`` keys the QUIC connection IDs: workers of one port share it (and the cookie keys),
    so a ClientHello2 may reach another worker than its ClientHello1.
    """
    from .quic_front import QuicOptions
    from .quic_proxy import h3_proxy
    from .quic_server import H3PageProtocol, ProtocolFactory, serve_quic

    options = QuicOptions() if secret is None else QuicOptions(secret=secret)
    create_protocol: ProtocolFactory = H3PageProtocol
    if args.backend is not None:
        create_protocol = h3_proxy(args.backend, _h3_proxy_limits(args))
    try:
        server = await serve_quic(
            config,
            args.host,
            args.port,
            validation=args.validation,
            options=options,
            create_protocol=create_protocol,
            reuse_port=args.reuse_port or args.workers > 1,
        )
    except OSError as error:
        raise _cannot_listen(args, error) from None
    await _serve_datagrams(server, args, config, keys, listening, parent)


def _serving(
    args: argparse.Namespace,
    config: ServerConfig,
    keys: KeyFiles,
    listening: Listening,
    quic_secret: bytes | None,
    parent: int | None = None,
) -> Coroutine[None, None, None]:
    """The server ``args`` ask for: QUIC, DTLS or TCP."""
    if args.quic:
        return _serve_quic(args, config, keys, listening, quic_secret, parent)
    if args.dtls:
        return _serve_dtls(args, config, keys, listening, parent)
    return _serve(args, config, keys, listening, parent)


async def _serve_dtls(
    args: argparse.Namespace,
    config: ServerConfig,
    keys: KeyFiles,
    listening: Listening,
    parent: int | None = None,
) -> None:
    """DTLS 1.3 echo over UDP; each new client through the stateless HRR."""
    from .dtls_server import DtlsOptions, serve_dtls

    options = DtlsOptions(
        handshake_timeout=args.handshake_timeout,
        idle_timeout=args.idle_timeout,
        **({} if args.max_handshakes is None else {"max_connections": args.max_handshakes}),
    )
    try:
        server = await serve_dtls(
            config,
            args.host,
            args.port,
            options=options,
            reuse_port=args.reuse_port or args.workers > 1,
        )
    except OSError as error:
        raise _cannot_listen(args, error) from None
    await _serve_datagrams(server, args, config, keys, listening, parent)


async def _serve_datagrams(
    server: QuicServer | DtlsServer,
    args: argparse.Namespace,
    config: ServerConfig,
    keys: KeyFiles,
    listening: Listening,
    parent: int | None,
) -> None:
    """A UDP server (QUIC or DTLS) until SIGINT/SIGTERM: key reloads on SIGHUP, the stat line."""
    with _reloading(keys, server.report.stats.sources):  # its fields first: the stores' last
        _replay_stat_fields(server.report.stats.sources, config)
        listening(server.address)
        async with server, _stat_lines(server.log_stats, args.stats_interval):
            await _until_signalled(parent)


async def _serve(
    args: argparse.Namespace,
    config: ServerConfig,
    keys: KeyFiles,
    listening: Listening,
    parent: int | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM; a worker also stops when its ``parent`` is gone."""
    from .asyncio_tcp import Handler, serve
    from .demo import echo, http_page
    from .proxy import CONNECT_TIMEOUT, TUNNEL_TLS_IDLE, tcp_proxy

    limits = Limits(
        handshake_timeout=args.handshake_timeout,
        idle_timeout=args.idle_timeout,
        write_timeout=args.write_timeout,
        max_concurrent_handshakes=args.max_handshakes,
        proxy_protocol_from=args.proxy_protocol_from or (),
    )
    handler: Handler = http_page if args.mode == "http" else echo
    if args.backend is not None:
        # --idle-timeout is the tunnel's (no byte either way): the stream's own, which counts
        # the client's bytes only, must not end a download the client only listens to.
        limits = dataclasses.replace(limits, idle_timeout=max(TUNNEL_TLS_IDLE, args.idle_timeout))
        handler = tcp_proxy(
            args.backend,
            proxy_protocol=args.proxy_protocol == "v2",
            connect_timeout=args.proxy_connect_timeout or CONNECT_TIMEOUT,
            idle_timeout=args.idle_timeout,
            write_timeout=args.write_timeout,
        )

    try:
        server = await serve(
            config,
            handler,
            args.host,
            args.port,
            limits=limits,
            validation=args.validation,
            reuse_port=args.reuse_port or args.workers > 1 or None,
            **({} if args.backlog is None else {"backlog": args.backlog}),
        )
    except OSError as error:
        raise _cannot_listen(args, error) from None
    with _reloading(keys, server.stats.sources):  # its fields first: the stores' last
        _replay_stat_fields(server.stats.sources, config)
        listening(server.sockets[0].getsockname()[:2])
        try:
            async with _stat_lines(server.log_stats, args.stats_interval):
                await _until_signalled(parent)
        finally:  # graceful: idle connections get close_notify, busy ones --stop-timeout seconds
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, server.abort)  # a second signal: at once
            await server.stop(args.stop_timeout)


@contextlib.contextmanager
def _reloading(keys: KeyFiles, sources: list[Callable[[], dict[str, object]]]) -> Iterator[None]:
    """While the server serves, SIGHUP reads the key files again (``keys.reload``, on the event
    loop) and the stat line counts the keys and the reloads.  The signal was blocked until
    now (one that came meanwhile is pending, and acted on at once), and is blocked again after:
    a SIGHUP while the server stops changes nothing and does not kill it."""
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(RELOAD_SIGNAL, keys.reload)
    if keys.files:
        sources.append(keys.stat_fields)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {RELOAD_SIGNAL})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_BLOCK, {RELOAD_SIGNAL})


@contextlib.asynccontextmanager
async def _stat_lines(log: Callable[[], None], interval: float) -> AsyncIterator[None]:
    """Log the stat line every ``interval`` seconds (0: never), and once more at the end."""
    if interval <= 0:
        yield
        return

    async def every() -> None:
        while True:
            await asyncio.sleep(interval)
            log()

    task = asyncio.create_task(every())
    try:
        yield
    finally:
        task.cancel()
        log()


async def _until_signalled(parent: int | None = None) -> None:
    """Return at SIGINT or SIGTERM (the server then closes cleanly), or, for a worker, once
    its ``parent`` is gone (killed without a chance to stop it: no orphan keeps the port)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    async def watch_parent() -> None:
        while os.getppid() == parent:
            await asyncio.sleep(1.0)
        stop.set()

    watcher = asyncio.create_task(watch_parent()) if parent is not None else None
    await stop.wait()
    if watcher is not None:
        watcher.cancel()


def _announce(
    args: argparse.Namespace, address: tuple[str, int], described: str, config: ServerConfig
) -> None:
    """The banner: where it listens, the certificate, and commands to try that work as printed
    (tests/peers/test_first_run.py runs them)."""
    host, port = address
    # A client cannot connect to "any address"; the loopback address of its family is one.
    client_host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    if args.dtls:
        print(
            f"stateless13 {VERSION} serving DTLS 1.3 echo on {_host_port(host, port)} over UDP"
            " (address validation: the stateless HRR, always)",
            flush=True,
        )
        print(described, flush=True)
        # No Debian package has a DTLS 1.3 client; wolfSSL's, from the sources beside us, does.
        peer = ["dtls13_peer", "client", client_host, str(port), "--message", "hello"]
        print(
            f"try: {shlex.join(peer)}   # wolfSSL's DTLS 1.3 client:"
            " ../shared/peers/wolfssl-dtls13/build DIR makes DIR/dtls13_peer",
            flush=True,
        )
        return
    if args.quic:
        from .quic_server import spki_pin

        proxied = f", proxied to http://{args.backend}" if args.backend is not None else ""
        print(
            f"stateless13 {VERSION} serving h3 on {_host_port(host, port)} over QUIC{proxied} "
            f"(address validation: {args.validation})",
            flush=True,
        )
        print(described, flush=True)
        url = f"https://localhost:{port}/"
        # Without --exit-on-all-streams-close gtlsclient waits for its idle timeout (30 s).
        gtlsclient = ["gtlsclient", "--exit-on-all-streams-close", client_host, str(port), url]
        chromium = [
            "chromium",
            "--headless",
            # Chromium refuses to start as root without it; whoever runs the server as root
            # probably runs the browser as root too.
            *(["--no-sandbox"] if os.geteuid() == 0 else []),
            f"--origin-to-force-quic-on=localhost:{port}",
            # Chromium resolves localhost to ::1 before 127.0.0.1 and does not fall back to the
            # other for QUIC: send it to the address the server is bound to.
            f"--host-resolver-rules=MAP localhost {_bracketed(client_host)}",
            f"--ignore-certificate-errors-spki-list={spki_pin(config.credentials[0])}",
            "--dump-dom",
            url,
        ]
        print(f"try: {shlex.join(gtlsclient)}", flush=True)
        print(f"  or: {shlex.join(chromium)}", flush=True)
        return
    proxied = ""
    if args.backend is not None:
        proxied = f" to {args.backend}" + (" with PROXY protocol v2" if args.proxy_protocol else "")
    balancers = ""
    if args.proxy_protocol_from:
        balancers = "; PROXY protocol from " + ",".join(map(str, args.proxy_protocol_from))
    print(
        f"stateless13 {VERSION} serving {args.mode} on {_host_port(host, port)}{proxied}"
        f" (validation: {args.validation}{balancers})",
        flush=True,
    )
    print(described, flush=True)
    s_client = ["openssl", "s_client", "-connect", _host_port(client_host, port)]
    s_client += ["-servername", args.hostname, "-tls1_3"]
    hint = {
        "http": "then type GET / HTTP/1.0 and Enter twice",
        "echo": "type a line",
        "proxy": f"then speak to {args.backend}",
    }[args.mode]
    print(f"try: {shlex.join(s_client)}   # {hint}", flush=True)
    if args.mode in ("http", "proxy"):
        curl = ["curl", "-k", "--tlsv1.3", f"https://{_host_port(client_host, port)}/"]
        note = "   # if the backend speaks HTTP/1.1" if args.mode == "proxy" else ""
        print(f"  or: {shlex.join(curl)}{note}", flush=True)


def _bracketed(host: str) -> str:
    """An IPv6 address in brackets, as in URLs; other hosts as they are."""
    return f"[{host}]" if ":" in host else host


def _host_port(host: str, port: int) -> str:
    """``host:port`` as URLs and ``openssl s_client -connect`` take it."""
    return f"{_bracketed(host)}:{port}"


#: A worker that dies is restarted after a pause that doubles from the first (0.5 s) up to
#: the last (30 s); more than MAX_RESTARTS deaths within RESTART_WINDOW seconds and the server
#: stops with exit status 1, so that a supervisor's restart-on-failure takes over.
RESTART_DELAYS = (0.5, 30.0)
MAX_RESTARTS = 5
RESTART_WINDOW = 60.0
#: What a worker writes to its parent once it listens.
WORKER_LISTENS = b"L"


def _serve_workers(
    args: argparse.Namespace,
    config: ServerConfig,
    described: str,
    keys: KeyFiles,
    quic_secret: bytes | None,
) -> int:
    """Fork ``args.workers`` processes, each listening on the same port with SO_REUSEPORT, and
    keep them running: restart one that dies (with a growing pause), give up with exit status 1
    when they keep dying, stop them all at SIGTERM or SIGINT (exit status 0), pass SIGHUP on to
    each (and read the key files again itself, so that a worker restarted later starts with
    the keys its siblings hold).

    The port is held by a bound (not listening) placeholder socket until every worker listens,
    so ``--port 0`` gives all of them one free port.
    """
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    kind = socket.SOCK_DGRAM if args.quic or args.dtls else socket.SOCK_STREAM
    placeholder = socket.socket(family, kind)
    placeholder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        placeholder.bind((args.host, args.port))
    except OSError as error:
        placeholder.close()
        raise _cannot_listen(args, error) from None
    bound = placeholder.getsockname()[:2]
    args.port = bound[1]
    if quic_secret is None:
        quic_secret = os.urandom(32)  # shared by the QUIC workers, like the cookie keys

    def start_worker() -> tuple[int, int | None]:
        """Fork a worker and wait until it listens: its pid, and its exit code if it died
        before it could (it said why on stderr)."""
        parent = os.getpid()  # taken before the fork: the parent may die before the child runs
        ready_read, ready_write = os.pipe()
        # A stop signal waits until the child has its own handlers: the parent's would raise
        # KeyboardInterrupt inside fork's bookkeeping, where it is ignored, and the child would
        # serve on, deaf to the signal it missed.  SIGHUP too: the child keeps it blocked (and
        # pending) until its server can reload.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS | {RELOAD_SIGNAL})
        try:
            pid = os.fork()
            if pid == 0:
                os.close(ready_read)
                _run_worker(args, config, keys, quic_secret, placeholder, parent, ready_write)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        os.close(ready_write)
        with open(ready_read, "rb", buffering=0) as ready:  # b"" once the child is gone
            if ready.read(1) == WORKER_LISTENS:
                return pid, None
        return pid, os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])

    # A worker that cannot serve (the address, a permission) fails its first start: stop there,
    # rather than restart workers that cannot do better.
    started = [start_worker() for _ in range(args.workers)]
    children = {pid for pid, died in started if died is None}
    if len(children) < len(started):
        placeholder.close()
        for child in children:
            os.kill(child, signal.SIGTERM)
            os.waitpid(child, 0)
        return EXIT_RUNTIME
    # Every worker listens: a client that reads the banner and connects finds one.
    _announce(args, bound, described, config)
    print(f"{args.workers} workers: {' '.join(map(str, sorted(children)))}", flush=True)
    placeholder.close()

    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGTERM)

    def reload(signum: int, _frame: object) -> None:
        keys.reload(quiet=True)  # for the workers started from now on; each running one says
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, RELOAD_SIGNAL)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(RELOAD_SIGNAL, reload)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {RELOAD_SIGNAL})  # blocked since _run began
    deaths: list[float] = []
    status = 0
    while children:
        try:
            pid, wait_status = os.wait()
        except ChildProcessError:
            break
        children.discard(pid)
        code: int | None = os.waitstatus_to_exitcode(wait_status)
        while not stopping and code is not None:  # restart it until a new one listens
            now = time.monotonic()
            deaths = [t for t in deaths if now - t < RESTART_WINDOW] + [now]
            if len(deaths) > MAX_RESTARTS:
                print(
                    f"stateless13: worker {pid} exited ({code}), {len(deaths)} deaths in"
                    f" {RESTART_WINDOW:g} s: stopping",
                    file=sys.stderr,
                    flush=True,
                )
                status = EXIT_RUNTIME
                stop(signal.SIGTERM, None)
                break
            delay = min(RESTART_DELAYS[0] * 2 ** (len(deaths) - 1), RESTART_DELAYS[1])
            print(
                f"stateless13: worker {pid} exited ({code}); restarting in {delay:g} s",
                file=sys.stderr,
                flush=True,
            )
            deadline = now + delay
            while not stopping and time.monotonic() < deadline:
                time.sleep(0.05)
            if stopping:
                break
            pid, code = start_worker()
            if code is None:
                children.add(pid)
                if stopping:  # the signal came while it started: stop() did not see it
                    os.kill(pid, signal.SIGTERM)
                else:
                    print(f"stateless13: worker {pid} started", file=sys.stderr, flush=True)
    print("stateless13: shut down", flush=True)
    return status


def _run_worker(
    args: argparse.Namespace,
    config: ServerConfig,
    keys: KeyFiles,
    quic_secret: bytes,
    placeholder: socket.socket,
    parent: int,
    ready: int,
) -> NoReturn:
    """A forked worker: serve until SIGTERM, then leave with os._exit, whatever happens, so that
    it never returns into the parent's code (its worker loop, its cleanup).  Once it listens it
    writes WORKER_LISTENS to the pipe ``ready``, which its parent waits on."""
    status = EXIT_RUNTIME
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(RELOAD_SIGNAL, signal.SIG_DFL)  # not the parent's; blocked until served
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # blocked across the fork
        placeholder.close()

        def listening(_address: tuple[str, int]) -> None:
            os.write(ready, WORKER_LISTENS)
            os.close(ready)

        worker = _serving(args, config, keys, listening, quic_secret, parent)
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(worker)
        status = 0
    except CommandError as error:
        print(f"stateless13: {error}", file=sys.stderr)
    except BaseException:  # a bug: show it, and die like any worker (the parent restarts it)
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(message)s"
        if args.workers == 1
        else "%(asctime)s [%(process)d] %(message)s",
        stream=sys.stderr,
    )
    for name in AIOQUIC_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO if args.verbose else logging.WARNING)
    logging.getLogger(STATS_LOGGER).setLevel(logging.INFO)  # with --quiet too
    logging.getLogger(KEYS_LOGGER).setLevel(logging.INFO)  # a reload is said with --quiet too
    try:
        with contextlib.ExitStack() as cleanup:
            return _run(args, cleanup)
    except CommandError as error:
        print(f"stateless13: {error}", file=sys.stderr, flush=True)
        return error.status
    except KeyboardInterrupt:  # stopped before it served: a stop like any other
        return 0


def _run(args: argparse.Namespace, cleanup: contextlib.ExitStack) -> int:
    # Until the event loop's own handlers take over, SIGTERM stops as Ctrl-C does, so that the
    # cleanup (the generated certificate's directory) runs for it too.
    signal.signal(signal.SIGTERM, _interrupt)
    # SIGHUP (read the key files again) waits, blocked, until the server can act on it: its
    # default would kill the process, and one sent while the files are first read must count.
    signal.pthread_sigmask(signal.SIG_BLOCK, {RELOAD_SIGNAL})
    if args.dtls:
        _check_dtls_options(args)
    elif args.quic:
        _require_aioquic()
        if args.proxy_protocol_from:
            raise CommandError(
                "--proxy-protocol-from is for TCP: a QUIC balancer does not send the PROXY"
                " protocol (and QUIC's Retry validates the address it sees)"
            )
    elif Validation(args.validation) not in TCP_VALIDATIONS:
        raise CommandError(f"--validation {args.validation} is for --quic only (QUIC Retry)")
    _check_proxy_options(args)
    raise_open_file_limit()  # connections are limited from it (Limits.max_connections)
    config, described = build_config(args, cleanup)
    quic_secret = _cid_secret(args)
    keys = KeyFiles.of(args, config)
    if args.workers > 1:
        return _serve_workers(args, config, described, keys, quic_secret)

    def listening(address: tuple[str, int]) -> None:
        _announce(args, address, described, config)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serving(args, config, keys, listening, quic_secret))
    print("stateless13: shut down", flush=True)
    return 0


def _check_dtls_options(args: argparse.Namespace) -> None:
    """What --dtls cannot do (yet), refused in one line rather than ignored."""
    refused = {
        "--quic": args.quic,
        "--proxy-to": args.proxy_to is not None,
        "--proxy-protocol-from": bool(args.proxy_protocol_from),
        "--early-data (DTLS 0-RTT is not built)": bool(args.early_data),
        "--mode http (DTLS serves echo)": args.mode == "http",
        "--verify-client post-handshake": args.verify_client == "post-handshake",
    }
    for option, given in refused.items():
        if given:
            raise CommandError(f"{option} does not go with --dtls")
    if Validation(args.validation) not in (Validation.ADAPTIVE, Validation.HRR):
        raise CommandError(
            f"--dtls validates every new client with the stateless HRR (RFC 9147 §5.1: the"
            f" default SHOULD be that the exchange is performed); --validation"
            f" {args.validation} is not built for it"
        )
    args.mode = "echo"


#: The front door's options that only HTTP/3 takes, and the name of each.
QUIC_PROXY_OPTIONS = {
    "proxy_timeout": "--proxy-timeout",
    "proxy_max_body": "--proxy-max-body",
    "proxy_max_streams": "--proxy-max-streams",
}


def _check_proxy_options(args: argparse.Namespace) -> None:
    """``args.mode`` (``proxy`` with --proxy-to, else http by default) and ``args.backend``
    (the parsed --proxy-to, or None); CommandError for options that do not go together."""
    args.backend = None
    if args.proxy_to is None:
        options = {"proxy_protocol": "--proxy-protocol"} | QUIC_PROXY_OPTIONS
        options["proxy_connect_timeout"] = "--proxy-connect-timeout"
        for name, option in options.items():
            if getattr(args, name) is not None:
                raise CommandError(f"{option} goes with --proxy-to")
        args.mode = args.mode or "http"
        return
    if args.mode is not None:
        raise CommandError(
            f"--mode {args.mode} and --proxy-to: choose one (the backend answers the clients)"
        )
    args.mode = "proxy"
    try:
        args.backend = Backend.parse(args.proxy_to, http=args.quic)
    except ValueError as error:
        raise CommandError(f"--proxy-to {error}") from None
    if args.early_data:  # over TCP and over QUIC alike (no Early-Data header, RFC 8470)
        raise CommandError(
            "--early-data and --proxy-to: the backend could not tell replayable 0-RTT bytes"
            " from the rest"
        )
    if args.quic:
        if args.proxy_protocol is not None:
            raise CommandError(
                "--proxy-protocol is for TCP: over HTTP/3 the backend learns the client from"
                " Forwarded and X-Forwarded-For"
            )
    else:
        for name, option in QUIC_PROXY_OPTIONS.items():
            if getattr(args, name) is not None:
                raise CommandError(f"{option} is for --quic --proxy-to (HTTP/3 to HTTP/1.1)")
    if args.verify_client == "post-handshake":
        raise CommandError(
            "--verify-client post-handshake asks on GET /secret of the page; with --proxy-to"
            " there is no page: ask in the handshake (required or optional)"
        )
    timeouts = (args.proxy_connect_timeout, args.proxy_timeout)
    if any(timeout is not None and timeout <= 0 for timeout in timeouts):
        raise CommandError("--proxy-connect-timeout and --proxy-timeout must be positive")
    if args.proxy_max_body is not None and args.proxy_max_body < 0:
        raise CommandError("--proxy-max-body must be positive (0: no limit)")


def _h3_proxy_limits(args: argparse.Namespace) -> H3ProxyLimits:
    """The HTTP/3 front door's limits: H3ProxyLimits' defaults, less what the options change."""
    from .quic_proxy import H3ProxyLimits

    default = H3ProxyLimits()
    timeout = args.proxy_timeout
    max_body = default.max_body_size if args.proxy_max_body is None else args.proxy_max_body
    return dataclasses.replace(
        default,
        connect_timeout=args.proxy_connect_timeout or default.connect_timeout,
        backend_timeout=timeout or default.backend_timeout,
        client_timeout=timeout or default.client_timeout,
        max_body_size=max_body or None,  # 0: no limit
        max_streams=args.proxy_max_streams or default.max_streams,
    )


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    raise SystemExit(main())
