"""Headless Chromium (BoringSSL) against our asyncio server, judged by the DOM and the NetLog.

Chromium's exit status is 0 even when the page failed to load, so success is the DOM holding
``PAGE_TEXT``, and the protocol is read from its NetLog (``--log-net-log``): per TLS connection,
the version, the key exchange group, how many ClientHellos it sent and whether it got an HRR.
Chromium leads with an X25519MLKEM768 key share and opens two connections (``/`` and
``/favicon.ico``); every one that completes a handshake must have gone through the cookie.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from stateless13 import NamedGroup
from stateless13.transports.common import ConnectionReport
from tests.servers import PAGE_TEXT, RunningServer, ServerFactory, require_peer

HRR_RANDOM = bytes.fromhex("CF21AD74E59A6111BE1D8C021E65B891C2A211167ABB8C5E079E09E2C8A8339C")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


@dataclass
class NetLogConnection:
    """One TLS connection as Chromium's NetLog tells it (one NetLog source)."""

    source: int
    client_hellos: int = 0
    hrr_received: bool = False
    version: str | None = None
    group: int | None = None
    cipher_suite: int | None = None


def load_netlog(path: Path) -> dict[str, Any]:
    text = path.read_text()
    try:
        return json.loads(text)  # type: ignore[no-any-return]
    except json.JSONDecodeError:
        # A NetLog is written as it goes; only the closing of its events list can be missing.
        return json.loads(text.rstrip().rstrip(",") + "]}")  # type: ignore[no-any-return]


def tls_connections(netlog: dict[str, Any]) -> list[NetLogConnection]:
    """Every NetLog source that sent a ClientHello or finished an SSL_CONNECT with a version."""
    names = {number: name for name, number in netlog["constants"]["logEventTypes"].items()}
    connections: dict[int, NetLogConnection] = {}
    for event in netlog["events"]:
        name = names.get(event["type"], "")
        source = event.get("source", {}).get("id")
        params = event.get("params", {})
        if name == "SSL_HANDSHAKE_MESSAGE_SENT" and params.get("type") == 1:
            connections.setdefault(source, NetLogConnection(source)).client_hellos += 1
        elif name == "SSL_HANDSHAKE_MESSAGE_RECEIVED" and params.get("type") == 2:
            # ServerHello, as bytes with the 4-byte handshake header: the random starts at 6.
            server_hello = base64.b64decode(params.get("bytes", ""))
            if server_hello[6:38] == HRR_RANDOM:
                connections.setdefault(source, NetLogConnection(source)).hrr_received = True
        elif name == "SSL_CONNECT" and "version" in params:
            connection = connections.setdefault(source, NetLogConnection(source))
            connection.version = params["version"]
            connection.group = params.get("key_exchange_group")
            connection.cipher_suite = params.get("cipher_suite")
    return list(connections.values())


def spki_pin(certificate_pem: bytes) -> str:
    """base64(SHA-256(SubjectPublicKeyInfo)): what --ignore-certificate-errors-spki-list takes."""
    certificate = x509.load_pem_x509_certificate(certificate_pem)
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode("ascii")


@dataclass
class ChromiumRun:
    dom: str
    stderr: str
    connections: list[NetLogConnection]
    seconds: float


def chromium_get(
    server: RunningServer, tmp_path: Path, extra_flags: Sequence[str] = ()
) -> ChromiumRun:
    """One Chromium process loads the server's ``/`` and dumps its DOM; ``extra_flags`` go
    before ``--dump-dom`` (e.g. ``--virtual-time-budget`` to let the page navigate first)."""
    chromium = require_peer("chromium")
    netlog = tmp_path / "netlog.json"
    command = [
        chromium,
        *CHROMIUM_FLAGS,
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--ignore-certificate-errors-spki-list={spki_pin(server.cert_path.read_bytes())}",
        "--host-resolver-rules=MAP localhost 127.0.0.1",
        f"--log-net-log={netlog}",
        "--net-log-capture-mode=Everything",
        *extra_flags,
        "--dump-dom",
        f"https://localhost:{server.port}/",
    ]
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    seconds = time.monotonic() - started
    assert netlog.exists(), f"no NetLog written; rc={result.returncode}\n{result.stderr}"
    return ChromiumRun(result.stdout, result.stderr, tls_connections(load_netlog(netlog)), seconds)


def handshake_reports(server: RunningServer, count: int) -> list[ConnectionReport]:
    """The server's reports of connections that finished a handshake, once there are ``count``."""
    deadline = time.monotonic() + 10
    while True:
        done = [r for r in server.reports if r.handshake is not None]
        if len(done) >= count or time.monotonic() > deadline:
            return done
        time.sleep(0.01)


def assert_chromium_success(server: RunningServer, run: ChromiumRun, group: NamedGroup) -> None:
    detail = f"DOM: {run.dom[:500]!r}\nstderr: {run.stderr[-2000:]}\nreports: {server.reports}"
    assert PAGE_TEXT in run.dom, detail
    completed = [c for c in run.connections if c.version is not None]
    assert completed, f"no TLS connection in the NetLog: {run.connections}\n{detail}"
    for connection in completed:
        assert connection.version == "TLS 1.3", connection
        assert connection.group == group, connection
        assert connection.hrr_received and connection.client_hellos == 2, connection

    reports = handshake_reports(server, len(completed))
    assert len(reports) == len(completed), f"{len(completed)} in the NetLog, server: {reports}"
    for report in server.reports:
        assert report.error is None, report
    for report in reports:
        assert report.handshake is not None
        assert report.hello_retry and report.cookie_verified, report
        assert report.handshake.cookie_verified and report.handshake.hello_retry, report
        assert report.handshake.group == group, report
        assert report.handshake.server_name == "localhost", report


def test_chromium_post_quantum_group_through_the_cookie(
    tls_server: ServerFactory, tmp_path: Path
) -> None:
    # Default groups: X25519MLKEM768 first, which Chromium's ClientHello1 already has a share for;
    # the stateless HRR then carries only the cookie and Chromium repeats its 1216-byte share.
    server = tls_server()
    run = chromium_get(server, tmp_path)
    assert_chromium_success(server, run, NamedGroup.X25519MLKEM768)


def test_chromium_group_switch_to_p384(tls_server: ServerFactory, tmp_path: Path) -> None:
    server = tls_server(groups=(NamedGroup.secp384r1, NamedGroup.x25519))
    run = chromium_get(server, tmp_path)
    assert_chromium_success(server, run, NamedGroup.secp384r1)
