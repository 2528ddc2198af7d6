"""The listen backlog (issue 20): 511 by default, as nginx, not asyncio's 100; configurable.

The kernel says what a listening socket's backlog is: ``ss`` prints it as the Send-Q of a
socket in LISTEN state.
"""

from __future__ import annotations

import asyncio
import subprocess
import threading

import pytest

from stateless13 import ServerConfig
from stateless13.transports import blocking, common
from stateless13.transports.asyncio_tcp import TLSStream, serve
from stateless13.transports.common import DEFAULT_BACKLOG, default_backlog
from tests.servers import require_peer

CONFIG = ServerConfig.self_signed()


def listen_backlog(port: int) -> int:
    out = subprocess.run(
        [require_peer("ss"), "-ltnH", f"sport = :{port}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out and out[0] == "LISTEN", out
    return int(out[2])  # State Recv-Q Send-Q ...: Send-Q is the backlog


async def _asyncio_backlog(backlog: int | None) -> int:
    async def handler(stream: TLSStream) -> None:
        await stream.close()

    if backlog is None:
        server = await serve(CONFIG, handler, "127.0.0.1", 0)
    else:
        server = await serve(CONFIG, handler, "127.0.0.1", 0, backlog=backlog)
    async with server:
        port = server.sockets[0].getsockname()[1]
        return await asyncio.to_thread(listen_backlog, port)


@pytest.mark.parametrize("backlog", [None, 64], ids=["default", "64"])
def test_asyncio_server_backlog(backlog: int | None) -> None:
    assert asyncio.run(_asyncio_backlog(backlog)) == (backlog or default_backlog())


def test_blocking_server_backlog() -> None:
    server = blocking.serve(CONFIG, lambda stream: stream.close())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert listen_backlog(server.server_address[1]) == default_backlog()
    finally:
        server.shutdown()
        thread.join(5)


@pytest.mark.parametrize(
    ("open_files", "backlog", "connections"),
    [(1 << 20, 511, (1 << 20) - 64 - 511), (1024, 240, 720), (256, 48, 144), (64, 16, 1)],
)
def test_backlog_and_connections_fit_in_the_open_file_limit(
    monkeypatch: pytest.MonkeyPatch, open_files: int, backlog: int, connections: int
) -> None:
    """511 (nginx's) when descriptors are plenty; less when scarce, so that the connections
    held plus one burst of accepts never run out of descriptors."""
    monkeypatch.setattr(common, "_open_file_limit", lambda: open_files)
    assert DEFAULT_BACKLOG == 511
    assert default_backlog() == backlog
    assert common.connection_budget(common.Limits(), backlog) == connections
    assert common.connection_budget(common.Limits(max_connections=7), backlog) == 7
