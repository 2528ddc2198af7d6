"""Stateless, measured: answering ClientHello1 retains nothing, and any process can resume.

"Stateless" is proven by measurement, not by reading code: tracemalloc over 10,000 HRRs, plus a
second OS process that accepts a cookie minted by this one because it loaded the same key file.
"""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
import time
import tracemalloc
from pathlib import Path

from stateless13 import (
    Accepted,
    CookieKeyRing,
    Credential,
    HelloRetry,
    ServerConfig,
    stateless_accept,
)
from tests.helpers import PEER, PythonSSLClient

ROOT = Path(__file__).resolve().parents[2]


def distinct_client_hellos(count: int) -> list[bytes]:
    """Real OpenSSL ClientHellos (each has its own random and key share)."""
    return [PythonSSLClient().step() for _ in range(count)]


def test_ten_thousand_hellos_retain_nothing() -> None:
    config = ServerConfig.self_signed("localhost")
    samples = distinct_client_hellos(50)
    hellos = [samples[i % len(samples)] for i in range(10_000)]
    now = time.time()
    # Warm up every lazy cache (HKDF tables, enum lookups) before measuring.
    for hello in samples:
        assert isinstance(stateless_accept(config, hello, peer=PEER, now=now), HelloRetry)
    gc.collect()
    objects_before = len(gc.get_objects())
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for index, hello in enumerate(hellos):
            result = stateless_accept(
                config, hello, peer=(f"198.51.100.{index % 250}", index), now=now
            )
            assert isinstance(result, HelloRetry)
        del result
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    # Zero per client: keeping even one cookie-sized object per HRR would be > 1 MB here; what
    # remains is the interpreter's own noise (tracemalloc's bookkeeping, free lists).
    assert grown < 16_384, f"{grown} bytes retained after 10,000 HRRs"
    assert len(gc.get_objects()) - objects_before < 100


def test_a_cookie_minted_here_is_accepted_by_another_process(tmp_path: Path) -> None:
    key_file = tmp_path / "cookie.keys"
    CookieKeyRing.write_new_key_file(key_file)
    credential = Credential.self_signed("localhost")
    (tmp_path / "cert.pem").write_bytes(credential.certificate_pem())
    from cryptography.hazmat.primitives import serialization

    (tmp_path / "key.pem").write_bytes(
        credential.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    config = ServerConfig(credentials=(credential,), cookie_keys=CookieKeyRing.from_file(key_file))
    client = PythonSSLClient()
    retry = stateless_accept(config, client.step(), peer=PEER, now=time.time())
    assert isinstance(retry, HelloRetry)
    ch2 = client.step(retry.data_to_send)

    worker = textwrap.dedent(
        """
        import sys, time
        from stateless13 import Accepted, CookieKeyRing, ServerConfig, stateless_accept
        key_file, cert, key = sys.argv[1:4]
        config = ServerConfig.from_pem_files(cert, key,
                                             cookie_keys=CookieKeyRing.from_file(key_file))
        ch2 = sys.stdin.buffer.read()
        result = stateless_accept(config, ch2, peer=("203.0.113.7", 4433), now=time.time())
        assert isinstance(result, Accepted), result
        sys.stdout.buffer.write(result.data_to_send)
        """
    )
    process = subprocess.run(
        [
            sys.executable,
            "-c",
            worker,
            str(key_file),
            str(tmp_path / "cert.pem"),
            str(tmp_path / "key.pem"),
        ],
        input=ch2,
        capture_output=True,
        cwd=ROOT,
        timeout=60,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert process.returncode == 0, process.stderr.decode()
    client.step(process.stdout)
    assert client.handshake_done  # the client verified the other process's whole flight


def test_a_process_with_another_key_refuses_the_cookie() -> None:
    """The control for the test above: the key ring, not luck, makes the cookie acceptable."""
    client = PythonSSLClient()
    config = ServerConfig.self_signed("localhost")
    retry = stateless_accept(config, client.step(), peer=PEER, now=time.time())
    assert isinstance(retry, HelloRetry)
    other = ServerConfig(credentials=config.credentials, cookie_keys=CookieKeyRing.generate())
    result = stateless_accept(other, client.step(retry.data_to_send), peer=PEER, now=time.time())
    assert not isinstance(result, Accepted)
