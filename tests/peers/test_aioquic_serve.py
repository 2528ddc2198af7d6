"""aioquic's HTTP/3 server example with the one-line change, fetched by real clients through the
stateless HelloRetryRequest.

examples/aioquic_http3_server.py is aioquic's ``examples/http3_server.py`` (its
``HttpServerProtocol(QuicConnectionProtocol)`` over ``H3Connection``, reduced to GET) with
``serve`` imported from ``stateless13.transports.aioquic_serve``.  Its docstring's commands run as
written (gtlsclient), then quic-go and Chromium fetch its page; each time the server's own log
line (``stateless13.server``, which aioquic's ``logging.basicConfig`` shows) says the connection
came through the stateless HRR: ``validation=cookie hrr=yes cookie=verified``.  The same file
with aioquic's import put back serves the same page on aioquic (no HRR, no such line).
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
from pathlib import Path

from tests.commands import EXAMPLES, ROOT, Process, docstring_commands, user_env
from tests.peers.test_quic_peers import quicgoclient as quicgoclient  # the fixture
from tests.peers.test_quic_peers import run_chromium, run_quicgo
from tests.servers import require_peer

EXAMPLE = EXAMPLES / "aioquic_http3_server.py"
OUR_IMPORT = "from stateless13.transports.aioquic_serve import serve"
AIOQUIC_IMPORT = "from aioquic.asyncio import serve"
PAGE = "Hello from aioquic's HttpServerProtocol"
THROUGH_THE_HRR = "validation=cookie hrr=yes cookie=verified"
CLIENT_TIMEOUT = 30  # seconds; a fetch takes well under 1 s


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start(*options: str, example: Path = EXAMPLE) -> tuple[Process, int, str]:
    """The example's first docstring command on a free port (its default host, ``::``, which
    takes 127.0.0.1 too); the port and the SPKI pin it printed."""
    server_command = docstring_commands(EXAMPLE)[0]
    if example != EXAMPLE:
        server_command = [server_command[0], str(example)]
    port = free_udp_port()
    server = Process([*server_command, "--port", str(port), *options], cwd=ROOT)
    try:
        pin = server.wait_for(server.stdout, r"^SPKI pin (\S+)$")[1]
        server.wait_for(server.stdout, rf"^listening on :: port {port} \(UDP, HTTP/3\)$")
    except BaseException:
        server.kill()
        raise
    return server, port, pin


def stop(server: Process) -> None:
    """Ctrl-C, as the docstring says: a clean exit."""
    server.send_signal(signal.SIGINT)
    assert server.wait() == 0, server.output()
    assert "Traceback" not in server.output(), server.output()


def test_the_example_as_its_docstring_says() -> None:
    _, client_command = docstring_commands(EXAMPLE)
    require_peer(client_command[0])
    server, port, _ = start()
    try:
        command = [argument.replace("4433", str(port)) for argument in client_command]
        try:
            run = subprocess.run(
                command, env=user_env(), capture_output=True, text=True, timeout=CLIENT_TIMEOUT
            )
        except subprocess.TimeoutExpired as expired:
            raise AssertionError(f"{command} did not exit by itself: {expired.stderr!r}") from None
        output = run.stdout + run.stderr
        assert "QUIC handshake has completed" in output, output[-3000:]
        assert "[:status: 200]" in output and "Hello from aio" in output, output[-3000:]
        # gtlsclient shares x25519 and P-256: the stateless HRR asks for P-384.
        server.wait_for(server.stderr, re.escape(THROUGH_THE_HRR) + r".* group=secp384r1 ")
        # aioquic's example passes a session ticket store: said once, at start.
        assert any("SettingNotHonoured" in line for line in server.stderr), server.output()
        stop(server)
    finally:
        server.kill()


def test_quic_go_through_the_stateless_hrr_with_secrets_log_and_qlog(
    quicgoclient: Path, tmp_path: Path
) -> None:
    secrets, qlog = tmp_path / "secrets.log", tmp_path / "qlog"
    qlog.mkdir()
    server, port, _ = start("-l", str(secrets), "-q", str(qlog))
    try:
        run = run_quicgo(quicgoclient, port)
        assert "HANDSHAKE_DONE alpn h3 tls 0x0304" in run.output, run.output
        assert "status 200" in run.output and PAGE in run.output, run.output
        server.wait_for(server.stderr, re.escape(THROUGH_THE_HRR) + r".* group=secp256r1 ")
        stop(server)
    finally:
        server.kill()
    labels = [line.split()[0] for line in secrets.read_text().splitlines()]
    assert labels == [
        "SERVER_HANDSHAKE_TRAFFIC_SECRET",
        "CLIENT_HANDSHAKE_TRAFFIC_SECRET",
        "SERVER_TRAFFIC_SECRET_0",
        "CLIENT_TRAFFIC_SECRET_0",
        "EXPORTER_SECRET",  # our TLS's key log: aioquic's writes no exporter secret
    ]
    (path,) = qlog.glob("*.qlog")  # the connection's, from aioquic's QuicFileLogger
    (trace,) = json.loads(path.read_text())["traces"]
    assert trace["vantage_point"]["type"] == "server"
    assert path.stem == trace["common_fields"]["ODCID"]  # the client's first DCID, as aioquic


def test_chromium_through_the_stateless_hrr(tmp_path: Path) -> None:
    server, port, pin = start()
    try:
        run, sessions = run_chromium(port, pin, tmp_path)
        assert PAGE in run.output, run.output
        done = [s for s in sessions if s.handshake_complete and "200" in s.statuses]
        assert done and all(s.hrr_seen and s.hrr_cookie for s in done), run.output
        server.wait_for(server.stderr, re.escape(THROUGH_THE_HRR) + r".* group=X25519MLKEM768 ")
        stop(server)
    finally:
        server.kill()


def test_stateless_retry_option_sends_a_retry_as_aioquic(quicgoclient: Path) -> None:
    server, port, _ = start("--stateless-retry")
    try:
        run = run_quicgo(quicgoclient, port)
        assert "status 200" in run.output and PAGE in run.output, run.output
        server.wait_for(server.stderr, r"validation=retry hrr=no cookie=none")
        stop(server)
    finally:
        server.kill()


def test_the_same_file_with_aioquics_import_runs_on_aioquic(
    quicgoclient: Path, tmp_path: Path
) -> None:
    source = EXAMPLE.read_text()
    assert source.count(OUR_IMPORT) == 1
    unchanged = tmp_path / EXAMPLE.name
    unchanged.write_text(source.replace(OUR_IMPORT, AIOQUIC_IMPORT))
    server, port, _ = start(example=unchanged)
    try:
        run = run_quicgo(quicgoclient, port)
        assert "status 200" in run.output and PAGE in run.output, run.output
        server.wait_for(server.stderr, r"ALPN negotiated protocol h3")
        stop(server)
    finally:
        server.kill()
    assert "stateless13" not in server.output(), server.output()
