"""The TCP examples run as their docstrings say: the server's command line and the client's are
taken from the docstring and run as they are (tests/commands.py), the client against the port
the server printed; then Ctrl-C (SIGINT) stops the server, cleanly."""

from __future__ import annotations

import re
import signal
import subprocess

from tests.commands import (
    EXAMPLES,
    ROOT,
    WAIT,
    Process,
    docstring_commands,
    user_env,
    with_port,
)
from tests.servers import require_peer

LOG_LINE = r"hrr=yes cookie=verified suite=TLS_\w+ group=\w+ .*duration="


def start(example: str, *options: str) -> tuple[Process, list[str], int]:
    """The example's server as its docstring starts it (plus ``options``); the client command
    from its docstring, and the port the server printed."""
    server_command, client_command = docstring_commands(EXAMPLES / example)
    require_peer(client_command[0])
    server = Process([*server_command, *options], cwd=ROOT)
    try:
        port = int(server.wait_for(server.stdout, r"^listening on 127\.0\.0\.1:(\d+)$")[1])
    except BaseException:
        server.kill()
        raise
    return server, with_port(client_command, port), port


def stop(server: Process) -> None:
    """Ctrl-C, as the docstring says: a clean exit, no traceback."""
    server.send_signal(signal.SIGINT)
    assert server.wait() == 0, server.output()
    assert "Traceback" not in server.output(), server.output()


def test_asyncio_echo_server_with_openssl() -> None:
    line = "hello, echo over TLS 1.3"
    server, command, _ = start("asyncio_echo_server.py")
    client = Process(command, cwd=ROOT, stdin=True)
    try:
        client.write(line + "\n")  # "type a line: it comes back"
        client.wait_for(client.stdout, f"^{re.escape(line)}$")
        client.close_stdin()  # end of input: s_client sends close_notify and exits
        assert client.wait() == 0, client.output()
        server.wait_for(server.stdout, r"connected: TLS_\w+, \w+, cookie verified: True")
        server.wait_for(server.stderr, LOG_LINE)
        stop(server)
    finally:
        client.kill()
        server.kill()


def test_blocking_server_with_curl() -> None:
    server, command, _ = start("blocking_server.py")
    try:
        run = subprocess.run(
            command, cwd=ROOT, env=user_env(), capture_output=True, text=True, timeout=WAIT
        )
        assert run.returncode == 0, run.stderr
        assert re.fullmatch(r"hello over TLS_\w+ with \w+; cookie verified: True\n", run.stdout), (
            run.stdout
        )
        server.wait_for(server.stderr, LOG_LINE)
        stop(server)
    finally:
        server.kill()


def test_once_serves_one_connection_then_exits() -> None:
    """``--once``, which the docstrings offer: the server leaves by itself after one client."""
    server, command, _ = start("blocking_server.py", "--once")
    try:
        run = subprocess.run(
            command, cwd=ROOT, env=user_env(), capture_output=True, text=True, timeout=WAIT
        )
        assert run.returncode == 0, run.stderr
        assert server.wait() == 0, server.output()
        assert re.search(LOG_LINE, "\n".join(server.stderr)), server.output()
    finally:
        server.kill()
