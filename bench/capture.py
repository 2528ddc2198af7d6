"""Capture real ClientHello1s from the installed peers, for benchmarks and the fuzz corpus.

    python -m bench.capture [OUT_DIR] [--peers go,curl]   (default: tests/data/client_hellos, all)

A plain TCP listener on 127.0.0.1 records the first ClientHello each peer sends (all of its
records), then closes the connection; each peer's failure to connect afterwards is expected.
Files: ``<peer>.bin`` holding the raw TLS records.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from stateless13 import NeedMoreData, ServerConfig, stateless_accept

from .common import CLIENT_HELLOS_DIR, ROOT

GO_CLIENT = ROOT / "tests" / "peers" / "goclient" / "main.go"


def _record_one(listener: socket.socket, result: list[bytes]) -> None:
    config = ServerConfig.self_signed("localhost")
    listener.settimeout(30)
    try:
        conn, _ = listener.accept()
    except TimeoutError:
        return
    with conn:
        conn.settimeout(10)
        data = b""
        while True:
            try:
                chunk = conn.recv(65536)
            except TimeoutError:
                return
            if not chunk:
                return
            data += chunk
            # stateless_accept tells us when the ClientHello is complete.
            outcome = stateless_accept(config, data, peer=None, now=0.0)
            if not isinstance(outcome, NeedMoreData):
                result.append(data)
                return


def _python_ssl(port: int) -> None:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 5) as raw:
        context.wrap_socket(raw, server_hostname="localhost")


def _tlslite(port: int) -> None:
    from tlslite.api import HandshakeSettings, TLSConnection

    with contextlib.suppress(Exception), socket.create_connection(("127.0.0.1", port), 5) as raw:
        settings = HandshakeSettings()
        settings.minVersion = settings.maxVersion = (3, 4)
        TLSConnection(raw).handshakeClientCert(settings=settings, serverName="localhost")


def _command(argv: list[str]) -> None:
    if shutil.which(argv[0]) is None:
        print(f"  {argv[0]} not installed", file=sys.stderr)
        return
    subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=60, check=False)


def _go(work_dir: str, port: int) -> None:
    """Go crypto/tls (stdlib only): build tests/peers/goclient offline, then run it."""
    go = shutil.which("go")
    if go is None:
        print("  go not installed", file=sys.stderr)
        return
    binary = Path(work_dir) / "goclient"
    if not binary.exists():
        env = {
            **os.environ,
            "GOPATH": str(Path(work_dir) / "gopath"),
            "GOCACHE": str(Path(work_dir) / "gocache"),
            "GOFLAGS": "",
            "GO111MODULE": "off",
            "GOPROXY": "off",
            "GOTOOLCHAIN": "local",
        }
        built = subprocess.run(
            [go, "build", "-o", str(binary), str(GO_CLIENT)],
            env=env,
            capture_output=True,
            timeout=300,
            check=False,
        )
        if built.returncode != 0:
            print(f"  go build failed: {built.stderr.decode(errors='replace')}", file=sys.stderr)
            return
    _command([str(binary), f"127.0.0.1:{port}"])


def peers(user_data_dir: str) -> dict[str, object]:
    return {
        "python_ssl": _python_ssl,
        "tlslite": _tlslite,
        "openssl": lambda port: _command(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost"]
        ),
        "gnutls": lambda port: _command(
            ["gnutls-cli", f"--port={port}", "--insecure", "--sni-hostname=localhost", "127.0.0.1"]
        ),
        "curl": lambda port: _command(["curl", "-sk", f"https://localhost:{port}/"]),
        "go": lambda port: _go(user_data_dir, port),
        "chromium": lambda port: _command(
            [
                "chromium",
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={user_data_dir}",
                "--dump-dom",
                f"https://localhost:{port}/",
            ]
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "out", nargs="?", type=Path, default=CLIENT_HELLOS_DIR, help="output directory"
    )
    parser.add_argument("--peers", help="comma-separated peers to capture (default: all)")
    args = parser.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as user_data_dir:
        selected = peers(user_data_dir)
        if args.peers:
            wanted = [name.strip() for name in args.peers.split(",") if name.strip()]
            unknown = sorted(set(wanted) - set(selected))
            if unknown:
                parser.error(f"unknown peers {unknown}; choose from {sorted(selected)}")
            selected = {name: selected[name] for name in wanted}
        for name, run in selected.items():
            listener = socket.create_server(("127.0.0.1", 0))
            port = listener.getsockname()[1]
            captured: list[bytes] = []
            thread = threading.Thread(target=_record_one, args=(listener, captured))
            thread.start()
            run(port)  # type: ignore[operator]
            thread.join(40)
            listener.close()
            if captured:
                (out / f"{name}.bin").write_bytes(captured[0])
                print(f"{name}: {len(captured[0])} bytes")
            else:
                print(f"{name}: nothing captured", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
