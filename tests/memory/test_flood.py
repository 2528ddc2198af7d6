"""A flood of 100,000 spoofed ClientHello1s from varied addresses: memory stays flat and real
clients keep completing handshakes in the middle of it.
"""

from __future__ import annotations

import gc
import time
import tracemalloc
from pathlib import Path

from stateless13 import HelloRetry, ServerConfig, ServerConnection, stateless_accept
from tests.helpers import PythonSSLClient, stateless_handshake

CAPTURED = sorted((Path(__file__).resolve().parents[1] / "data" / "client_hellos").glob("*.bin"))
FLOOD = 100_000


def spoofed_peer(index: int) -> tuple[str, int]:
    return (f"10.{(index >> 16) & 255}.{(index >> 8) & 255}.{index & 255}", 1024 + index % 60000)


def test_flood_keeps_memory_flat_and_real_clients_served() -> None:
    hellos = [path.read_bytes() for path in CAPTURED]
    assert len(hellos) >= 5, "tests/data/client_hellos should hold the captured peers' ClientHellos"
    config = ServerConfig.self_signed("localhost")
    now = time.time()
    for hello in hellos:  # warm-up, outside the measurement
        assert isinstance(
            stateless_accept(config, hello, peer=spoofed_peer(0), now=now), HelloRetry
        )
    stateless_handshake(config, PythonSSLClient()).connection.events()  # warm the handshake path
    completed = 0
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for index in range(FLOOD):
            result = stateless_accept(
                config, hellos[index % len(hellos)], peer=spoofed_peer(index), now=now
            )
            assert isinstance(result, HelloRetry)
            if index % 10_000 == 5_000:  # a real client in the middle of the flood
                accepted = stateless_handshake(config, PythonSSLClient())
                completed += len(accepted.connection.events())
                del accepted
        del result
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert completed == FLOOD // 10_000
    # One cookie-sized object per spoofed client would be > 10 MB here.
    assert grown < 64 * 1024, f"{grown} bytes retained after {FLOOD} spoofed ClientHellos"
    assert not any(isinstance(o, ServerConnection) for o in gc.get_objects())
