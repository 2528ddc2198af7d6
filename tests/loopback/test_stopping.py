"""Stopping (issue 20): SIGTERM to ``stateless13 serve`` under load stops accepting, sends
close_notify to every idle connection at once, lets a busy one finish, cuts what is left at
``--stop-timeout``, and exits 0 with no traceback; a second signal stops at once.  On Python
3.11 it used to cut connections without close_notify and log a traceback for each."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def start(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen(
        [sys.executable, "-m", "stateless13", "serve", "--port", "0", *args],
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    match = re.search(r":(\d+) ", process.stdout.readline())
    assert match, "no banner"
    return process, int(match[1])


def connect(port: int) -> ssl.SSLSocket:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    tls = context.wrap_socket(raw, server_hostname="localhost")
    tls.sendall(b"ping")
    assert tls.recv(4) == b"ping"  # echo: the handshake is done and the connection idle
    return tls


def test_sigterm_closes_idle_connections_cleanly_and_exits_0(tmp_path: Path) -> None:
    process, port = start(tmp_path, "--mode", "echo", "--stop-timeout", "5")
    idle = [connect(port) for _ in range(20)]
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    for tls in idle:  # close_notify, not a reset: a clean end of stream for the client
        assert tls.recv(10) == b""
        tls.close()
    output = process.communicate(timeout=10)[0]
    assert process.returncode == 0, output
    assert time.monotonic() - started < 3, "idle connections must not wait for the deadline"
    assert "Traceback" not in output, output
    assert "stateless13: shut down" in output, output
    refused = socket.socket()
    assert refused.connect_ex(("127.0.0.1", port)) != 0  # no longer accepting


def test_a_client_writing_as_the_server_stops() -> None:
    """An idle connection whose client sends more just after the server ended its stream (at
    stop: close_notify, read() returns b""), while the handler still holds the connection:
    those bytes are not read, rather than reach a reader at EOF, which asyncio reports as an
    error ("feed_data after feed_eof") with a traceback."""
    from stateless13 import ServerConfig
    from stateless13.transports.asyncio_tcp import TLSStream, serve

    errors: list[dict[str, object]] = []

    async def handler(stream: TLSStream) -> None:
        while data := await stream.read():
            stream.write(data)
            await stream.drain()
        await asyncio.sleep(0.3)  # the handler's own cleanup, before it closes
        await stream.close()

    async def main() -> None:
        server = await serve(ServerConfig.self_signed(), handler, validation="none")
        asyncio.get_running_loop().set_exception_handler(lambda _, context: errors.append(context))
        port = server.sockets[0].getsockname()[1]
        clients = await asyncio.gather(*(asyncio.to_thread(connect, port) for _ in range(5)))
        stopping = asyncio.create_task(server.stop(timeout=2))
        await asyncio.sleep(0.1)  # close_notify sent, each stream at its end
        for tls in clients:
            await asyncio.to_thread(tls.sendall, b"more")
        await stopping
        for tls in clients:
            tls.close()

    asyncio.run(main())
    assert not errors, errors


def test_a_second_signal_stops_at_once(tmp_path: Path) -> None:
    process, port = start(tmp_path, "--mode", "echo", "--stop-timeout", "60")
    handshaking = socket.create_connection(("127.0.0.1", port))  # a client in its handshake
    busy = connect(port)
    busy.settimeout(0.2)
    with contextlib.suppress(TimeoutError):  # until the server, blocked writing, stops reading
        for _ in range(2000):
            busy.send(bytes(1 << 16))  # echoed back, never read: the server stays busy
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert process.poll() is None  # waiting for the busy connection (up to 60 s)
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=10)[0]
    assert process.returncode == 0 and time.monotonic() - started < 5, output
    assert "Traceback" not in output, output
    handshaking.close()
    busy.close()
