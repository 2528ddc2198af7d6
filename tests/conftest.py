"""The fixture every socket test shares: ``tls_server`` (tests/servers.py has the rest)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from stateless13 import Credential, ServerConfig
from stateless13.transports.asyncio_tcp import TLSStream, serve
from stateless13.transports.common import Limits
from tests.servers import RunningServer, ServerFactory, http_handler


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[ServerFactory]:
    """``tls_server(validation="hrr", handler=http_handler, limits=None, credentials=None,
    **config_options)``: ``credentials`` in place of a fresh self-signed one for localhost
    (``RunningServer.cert_path`` and ``credential`` are then the first's)."""
    loops: list[tuple[asyncio.AbstractEventLoop, threading.Thread, asyncio.Event]] = []

    def start(
        *,
        validation: str = "hrr",
        handler: Callable[[TLSStream], Awaitable[None]] = http_handler,
        limits: Limits | None = None,
        key_type: str = "ecdsa-p256",
        credentials: tuple[Credential, ...] | None = None,
        **options: object,
    ) -> RunningServer:
        if credentials is None:
            credentials = (Credential.self_signed("localhost", key_type),)
        credential = credentials[0]
        cert_path = tmp_path / f"cert{len(loops)}.pem"
        cert_path.write_bytes(credential.certificate_pem())
        config = ServerConfig(credentials=credentials, **options)  # type: ignore[arg-type]
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        stop = asyncio.Event()
        running: list[RunningServer] = []

        async def main() -> None:
            server = await serve(
                config,
                handler,
                "127.0.0.1",
                0,
                limits=limits,
                validation=validation,
                on_report=lambda r: running[0].reports.append(r),
            )
            port = server.sockets[0].getsockname()[1]
            running.append(RunningServer("127.0.0.1", port, cert_path, credential))
            ready.set()
            async with server:
                await stop.wait()

        thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
        thread.start()
        assert ready.wait(10), "server did not start"
        loops.append((loop, thread, stop))
        return running[0]

    yield start
    for loop, thread, stop in loops:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()
