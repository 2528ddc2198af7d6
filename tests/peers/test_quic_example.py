"""examples/quic_server.py runs as its docstring says: the server's command line and
gtlsclient's are taken from the docstring and run as they are (tests/commands.py); gtlsclient
must exit by itself with the page; then Ctrl-C (SIGINT) stops the server, cleanly."""

from __future__ import annotations

import re
import signal
import subprocess

import pytest

from tests.commands import EXAMPLES, ROOT, Process, docstring_commands, user_env, with_port
from tests.peers.test_quic_peers import run_gtlsclient
from tests.servers import require_peer

#: What gtlsclient prints when it fetched the page over HTTP/3 (its exit status is 0 even when
#: the handshake failed).
GTLSCLIENT_SUCCESS = ("QUIC handshake has completed", "Negotiated ALPN is h3", "[:status: 200]")
CLIENT_TIMEOUT = 30  # seconds; the fetch takes well under 1 s, gtlsclient's idle timeout is 30 s


def start(*options: str) -> tuple[Process, list[str], int]:
    server_command, client_command = docstring_commands(EXAMPLES / "quic_server.py")
    require_peer(client_command[0])
    server = Process([*server_command, *options], cwd=ROOT)
    try:
        match = server.wait_for(server.stdout, r"^listening on 127\.0\.0\.1:(\d+) \(UDP, HTTP/3")
        server.wait_for(server.stdout, r"^SPKI pin \S+$")
    except BaseException:
        server.kill()
        raise
    port = int(match[1])
    return server, with_port(client_command, port), port


def test_quic_server_example_as_its_docstring_says() -> None:
    server, command, _ = start()
    try:
        try:
            run = subprocess.run(
                command, env=user_env(), capture_output=True, text=True, timeout=CLIENT_TIMEOUT
            )
        except subprocess.TimeoutExpired as expired:
            raise AssertionError(f"{command} did not exit by itself: {expired.stderr!r}") from None
        output = run.stdout + run.stderr
        assert all(marker in output for marker in GTLSCLIENT_SUCCESS), output[-3000:]
        server.wait_for(server.stderr, r"validation=cookie hrr=yes cookie=verified")
        server.send_signal(signal.SIGINT)  # Ctrl-C
        assert server.wait() == 0, server.output()
        assert "Traceback" not in server.output(), server.output()
    finally:
        server.kill()


@pytest.mark.parametrize("validation", ["hrr", "both"])
def test_quic_server_example_options(validation: str) -> None:
    """The options the docstring offers: ``--validation`` and ``--once`` (exits by itself)."""
    server, _, port = start("--once", "--validation", validation)
    try:
        run = run_gtlsclient(port)
        assert run.ok and run.hrr_seen, run.output
        expected = "validation=cookie" if validation == "hrr" else "validation=retry+cookie"
        server.wait_for(server.stderr, re.escape(f"{expected} hrr=yes cookie=verified"))
        assert server.wait() == 0, server.output()
    finally:
        server.kill()
