"""``python -m stateless13 serve`` as a user runs it: a subprocess, real clients, Ctrl-C.

Each test starts the command, reads the address it prints, talks to it (``openssl s_client``, or
Python's ssl through raw sockets), checks the per-connection log line on stderr, then stops it
with SIGINT and expects exit code 0 and the ``shut down`` line.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from stateless13 import Credential
from tests.commands import Process
from tests.helpers import PythonSSLClient, read_record, read_until_closed
from tests.servers import require_peer

ROOT = Path(__file__).resolve().parents[2]
REQUEST = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
PAGE_TEXT = "Hello from stateless13"  # the CLI's own page
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
LOG_LINE = re.compile(
    r"peer=127\.0\.0\.1:\d+ (?:validation=\S+ )?"
    r"hrr=(?P<hrr>yes|no) cookie=(?P<cookie>verified|none)"
    r"(?: suite=(?P<suite>\S+) group=(?P<group>\S+) alpn=(?P<alpn>\S+) sni=(?P<sni>\S+)"
    r" resumed=(?P<resumed>yes|no|0rtt)(?: psk=(?P<psk>\S+))?"
    r"(?: client=(?P<client>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|\S+))?)?"
    r"(?: handshake=[\d.]+ms)? duration=[\d.]+ms(?: in=\S+)?(?: out=\S+)?"
    r"(?: error=(?P<error>.*))?$"
)
CLASSICAL_TIER = {"x25519", "secp256r1", "secp384r1"}
NSS_LABELS = {
    "CLIENT_HANDSHAKE_TRAFFIC_SECRET",
    "SERVER_HANDSHAKE_TRAFFIC_SECRET",
    "CLIENT_TRAFFIC_SECRET_0",
    "SERVER_TRAFFIC_SECRET_0",
    "EXPORTER_SECRET",
}


class CliServer(Process):
    """One ``stateless13 serve`` process of this checkout (PYTHONPATH), its address read from the
    banner; stdout and stderr are collected line by line."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
        environment = {k: v for k, v in os.environ.items() if k != "SSLKEYLOGFILE"}
        environment |= {"PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"} | (env or {})
        super().__init__([sys.executable, "-m", "stateless13", "serve", *args], cwd, environment)
        serving = self.wait_for(self.stdout, r"serving (\w+) on (127\.0\.0\.1):(\d+) ")
        self.mode, self.host, self.port = serving[1], serving[2], int(serving[3])

    def wait_for(  # type: ignore[override]
        self, lines: list[str], pattern: str, count: int = 1
    ) -> re.Match[str]:
        """The ``count``-th line matching ``pattern`` (waits for it, up to START_TIMEOUT)."""
        return super().wait_for(lines, pattern, START_TIMEOUT, count)

    def log_lines(self, count: int = 1) -> list[re.Match[str]]:
        """The first ``count`` per-connection log lines, parsed."""
        self.wait_for(self.stderr, LOG_LINE.pattern, count)
        return [m for line in list(self.stderr) if (m := LOG_LINE.search(line))][:count]

    def stop(self) -> None:
        """SIGINT, then a clean exit (code 0, ``shut down``) within STOP_TIMEOUT."""
        self.send_signal(signal.SIGINT)
        assert self.wait(STOP_TIMEOUT) == 0, self.output()
        assert "stateless13: shut down" in self.stdout, self.output()


Serve = Callable[..., CliServer]  # serve(args, env=None)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    """``serve(args)`` starts a server in tmp_path; any left running are killed at the end."""
    started: list[CliServer] = []

    def start(args: list[str], env: dict[str, str] | None = None) -> CliServer:
        server = CliServer(args, tmp_path, env)
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()


def s_client(
    server: CliServer, *options: str, request: bytes = REQUEST
) -> subprocess.CompletedProcess[str]:
    """``openssl s_client`` fetching one reply (``-ign_eof``: until the server closes)."""
    args = [require_peer("openssl"), "s_client", "-connect", f"{server.host}:{server.port}"]
    args += ["-servername", "localhost", "-tls1_3", "-ign_eof", *options]
    return subprocess.run(args, input=request.decode(), capture_output=True, text=True, timeout=10)


def serve_once(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``stateless13 serve ARGS`` expected to exit by itself (a usage or configuration error)."""
    command = [sys.executable, "-m", "stateless13", "serve", *args]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=30)


def assert_page(run: subprocess.CompletedProcess[str]) -> None:
    assert run.returncode == 0, run.stdout + run.stderr
    assert "New, TLSv1.3, Cipher is" in run.stdout, run.stdout
    assert PAGE_TEXT in run.stdout, run.stdout


# --- the default: http, adaptive validation --------------------------------------------------


def test_default_http_mode(serve: Serve) -> None:
    """The default server, calm: no HelloRetryRequest (adaptive validation), OpenSSL keeps the
    x25519 share it sent."""
    server = serve([])
    assert server.mode == "http"
    assert "(validation: adaptive)" in server.stdout[0], server.output()
    run = s_client(server, "-alpn", "http/1.1")
    assert_page(run)
    assert "HelloRetryRequest: no, cookie verified: no" in run.stdout, run.stdout
    (log,) = server.log_lines()
    assert log["hrr"] == "no" and log["cookie"] == "none", log[0]
    assert "validation=none" in log[0] and "handshake=" in log[0], log[0]
    assert log["suite"] == "TLS_AES_128_GCM_SHA256" and log["group"] == "x25519", log[0]
    assert log["alpn"] == "http/1.1" and log["sni"] == "localhost", log[0]
    assert log["error"] is None, log[0]
    server.stop()


def test_validation_hrr(serve: Serve) -> None:
    """``--validation hrr``: the stateless HRR for every client; it names P-256, the tier-mate
    of OpenSSL's x25519 share (README: the group table)."""
    server = serve(["--validation", "hrr"])
    run = s_client(server, "-alpn", "http/1.1")
    assert_page(run)
    assert "HelloRetryRequest: yes, cookie verified: yes" in run.stdout, run.stdout
    (log,) = server.log_lines()
    assert log["hrr"] == "yes" and log["cookie"] == "verified", log[0]
    assert "validation=hrr" in log[0], log[0]
    assert log["group"] == "secp256r1" and log["error"] is None, log[0]
    server.stop()


def test_stat_line(serve: Serve) -> None:
    """``--stats-interval``: the counters as one line, with --quiet too; a client that takes
    the HRR and leaves is counted there, not logged."""
    server = serve(["--validation", "hrr", "--stats-interval", "0.3", "--quiet"])
    assert_page(s_client(server))
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(PythonSSLClient().step())
        read_record(sock)  # the HRR; then leave
    server.wait_for(
        server.stderr,
        r"stats tcp: completed=1 .*hrr=2 cookies_verified=1 resumed=0 left_after_hrr=1 .*"
        r"in_progress=0 open=0 validating=1$",
    )
    assert not [line for line in server.stderr if LOG_LINE.search(line)], server.output()
    server.stop()


def test_validation_retry_is_for_quic_only(tmp_path: Path) -> None:
    run = serve_once(tmp_path, "--validation", "retry")
    assert run.returncode == 2, run
    assert run.stderr == "stateless13: --validation retry is for --quic only (QUIC Retry)\n"


def test_echo_mode(serve: Serve) -> None:
    server = serve(["--mode", "echo", "--idle-timeout", "0.5", "--validation", "hrr"])
    assert server.mode == "echo"
    # -ign_eof: s_client leaves once the server closes, after its idle timeout
    run = s_client(server, request=b"echo this line\n")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "\necho this line\n" in run.stdout, run.stdout
    (log,) = server.log_lines()
    assert log["hrr"] == "yes" and log["cookie"] == "verified" and log["alpn"] == "-", log[0]
    server.stop()


def test_validation_none(serve: Serve) -> None:
    server = serve(["--validation", "none"])
    assert "(validation: none)" in server.stdout[0], server.output()
    assert_page(s_client(server))
    (log,) = server.log_lines()
    assert log["hrr"] == "no" and log["cookie"] == "none" and log["group"] == "x25519", log[0]
    server.stop()


def test_groups_p384(serve: Serve) -> None:
    server = serve(["--groups", "p384", "--validation", "hrr"])
    assert_page(s_client(server))
    (log,) = server.log_lines()
    assert log["hrr"] == "yes" and log["cookie"] == "verified", log[0]
    assert log["group"] == "secp384r1", log[0]
    server.stop()


def test_groups_of_equal_preference(serve: Serve) -> None:
    """``+`` joins a tier: OpenSSL's x25519 share is x25519's tier-mate P-384's to name in the
    stateless HRR, and kept as it is in an ordinary handshake."""
    server = serve(["--groups", "x25519+p384", "--validation", "hrr"])
    assert_page(s_client(server))
    (log,) = server.log_lines()
    assert log["hrr"] == "yes" and log["group"] == "secp384r1", log[0]
    server.stop()
    server = serve(["--groups", "x25519+p384", "--validation", "none"])
    assert_page(s_client(server))
    (log,) = server.log_lines()
    assert log["hrr"] == "no" and log["group"] == "x25519", log[0]
    server.stop()


def test_bad_groups_name_exits_with_a_message(tmp_path: Path) -> None:
    run = serve_once(tmp_path, "--groups", "x25519,p999")
    assert run.returncode != 0, run
    assert "--groups" in run.stderr and "p999" in run.stderr, run.stderr
    assert "serving" not in run.stdout, run.stdout


# --- keylog ------------------------------------------------------------------------------------


def test_keylog_file(serve: Serve, tmp_path: Path) -> None:
    """5 NSS lines per connection, the same secrets OpenSSL's own key log has."""
    keylog = tmp_path / "server.keys"
    server = serve(["--keylog", str(keylog)])
    client_logs = [tmp_path / "client1.keys", tmp_path / "client2.keys"]
    for client_log in client_logs:
        assert_page(s_client(server, "-keylogfile", str(client_log)))
    server.log_lines(2)
    lines = keylog.read_text().splitlines()
    assert len(lines) == 10, lines
    assert stat.S_IMODE(keylog.stat().st_mode) == 0o600
    for first, client_log in zip((0, 5), client_logs, strict=True):
        ours = lines[first : first + 5]
        assert {line.split()[0] for line in ours} == NSS_LABELS, ours
        assert len({line.split()[1] for line in ours}) == 1, ours  # one client random
        assert all(re.fullmatch(r"[A-Z_0-9]+ [0-9a-f]{64} [0-9a-f]{64}", line) for line in ours)
        theirs = [line for line in client_log.read_text().splitlines() if line[:1] != "#"]
        assert set(ours) == set(theirs), (ours, theirs)
    server.stop()


def test_no_keylog_unless_asked(serve: Serve, tmp_path: Path) -> None:
    """Without --keylog nothing is written, not even where SSLKEYLOGFILE points."""
    env_keylog = tmp_path / "from-env.keys"
    before = set(tmp_path.iterdir())
    server = serve([], env={"SSLKEYLOGFILE": str(env_keylog)})
    assert_page(s_client(server))
    server.log_lines()
    server.stop()
    assert not env_keylog.exists()
    assert set(tmp_path.iterdir()) == before


# --- cookie keys shared by a fleet -------------------------------------------------------------


def test_cookie_key_file_is_created_then_shared(serve: Serve, tmp_path: Path) -> None:
    """The first server creates the key file (0600); a second one started with it keeps it and
    accepts a ClientHello2 whose cookie the first server issued."""
    key_file = tmp_path / "cookie.keys"
    first = serve(["--cookie-key-file", str(key_file), "--validation", "hrr"])
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    content = key_file.read_bytes()
    keys = [line for line in content.decode().splitlines() if line and line[0] != "#"]
    assert len(keys) == 1 and re.fullmatch(r"[0-9a-f]{64}", keys[0]), content
    second = serve(["--cookie-key-file", str(key_file), "--validation", "hrr"])
    assert key_file.read_bytes() == content

    client = PythonSSLClient(server_hostname="localhost")
    with socket.create_connection((first.host, first.port), timeout=10) as to_first:
        to_first.sendall(client.step())
        hello_retry = read_record(to_first)
    with socket.create_connection((second.host, second.port), timeout=10) as to_second:
        to_second.sendall(client.step(hello_retry))  # ClientHello2, to the other server
        while not client.handshake_done:
            data = to_second.recv(65536)
            assert data, "the second server closed during the handshake"
            finished = client.step(data)
        to_second.sendall(finished + client.send(REQUEST))
        reply = decrypt_all(client, read_until_closed(to_second))
    assert PAGE_TEXT.encode() in reply, reply

    (log,) = second.log_lines()
    assert log["hrr"] == "yes" and log["cookie"] == "verified" and log["error"] is None, log[0]
    first.stop()
    # The first sent the HRR and never heard from the client again, as a spoofed flood looks:
    # counted, not logged at INFO (issue 13).
    assert not [line for line in first.stderr if LOG_LINE.search(line)], first.output()
    second.stop()
    third = serve(["--cookie-key-file", str(key_file)])  # a restart reuses the file as it is
    third.stop()
    assert key_file.read_bytes() == content


def decrypt_all(client: PythonSSLClient, data: bytes) -> bytes:
    """The application data in ``data``, up to the server's close_notify.

    (``PythonSSLClient.receive`` never returns once close_notify has been read: its ``read()``
    then answers ``b""`` forever instead of raising SSLWantReadError.)
    """
    client.incoming.write(data)
    plaintext = b""
    while True:
        try:
            chunk = client.tls.read(65536)
        except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
            return plaintext
        if not chunk:
            return plaintext
        plaintext += chunk


# --- --cert / --key ----------------------------------------------------------------------------


def test_cert_and_key_files(serve: Serve, tmp_path: Path) -> None:
    credential = Credential.self_signed("localhost", "ecdsa-p384")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(credential.certificate_pem())
    key.write_bytes(
        credential.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = serve(["--cert", str(cert), "--key", str(key), "--validation", "hrr"])
    assert f"certificate {cert} for localhost" in server.stdout, server.output()
    assert f"SHA-256 fingerprint {credential.fingerprint}" in server.stdout, server.output()
    verify = ["-CAfile", str(cert), "-verify_return_error", "-verify_hostname", "localhost"]
    run = s_client(server, *verify)
    assert_page(run)
    assert "Verify return code: 0 (ok)" in run.stdout, run.stdout
    (log,) = server.log_lines()
    assert log["cookie"] == "verified", log[0]
    server.stop()


# --- several worker processes on one port ------------------------------------------------------


def test_workers_share_the_port_and_the_keys(serve: Serve) -> None:
    """``--workers 2``: SO_REUSEPORT spreads connections over both; each completes handshakes."""
    server = serve(["--workers", "2"])
    workers = server.wait_for(server.stdout, r"2 workers: (\d+) (\d+)")
    pids = {workers[1], workers[2]}
    for _ in range(24):
        assert_page(s_client(server))
    server.wait_for(server.stderr, LOG_LINE.pattern, 24)
    served_by = {m[1] for line in server.stderr if (m := re.search(r"\[(\d+)\] peer=", line))}
    assert served_by == pids, server.output()  # the kernel used both (odds of not: 2^-23)
    server.stop()


def test_a_killed_worker_comes_back(serve: Serve) -> None:
    """Issue 20: a worker that dies is restarted, and the port keeps being served."""
    server = serve(["--workers", "2"])
    workers = server.wait_for(server.stdout, r"2 workers: (\d+) (\d+)")
    os.kill(int(workers[1]), signal.SIGKILL)
    server.wait_for(server.stderr, rf"worker {workers[1]} exited \(-9\); restarting in 0.5 s")
    started = server.wait_for(server.stderr, r"worker (\d+) started")
    assert started[1] not in (workers[1], workers[2])
    for _ in range(12):
        assert_page(s_client(server))
    server.stop()


def test_workers_leave_when_their_parent_is_killed(serve: Serve) -> None:
    """SIGKILL to the parent (nothing can forward it): the workers notice within a second or
    two and stop, so no orphan keeps serving the port."""
    server = serve(["--workers", "2"])
    workers = server.wait_for(server.stdout, r"2 workers: (\d+) (\d+)")
    server.process.kill()
    server.process.wait(timeout=STOP_TIMEOUT)
    deadline = time.monotonic() + 10
    alive = {int(workers[1]), int(workers[2])}
    while alive and time.monotonic() < deadline:
        alive = {pid for pid in alive if _running(pid)}
        time.sleep(0.1)
    assert not alive, f"workers {alive} outlived their parent"


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat_file:
            return stat_file.read().rsplit(")", 1)[1].split()[0] != "Z"  # not a zombie
    except FileNotFoundError:
        return False


def test_workers_that_keep_dying_stop_the_server_with_a_failure(serve: Serve) -> None:
    """More than five deaths in a minute: exit status 1, for a supervisor to act on."""
    server = serve(["--workers", "2"])
    workers = server.wait_for(server.stdout, r"2 workers: (\d+) (\d+)")
    os.kill(int(workers[1]), signal.SIGKILL)
    for count in range(1, 6):  # each replacement, killed as soon as it starts
        started = server.wait_for(server.stderr, r"worker (\d+) started", count)
        os.kill(int(started[1]), signal.SIGKILL)
    assert server.process.wait(timeout=STOP_TIMEOUT + 30) == 1, server.output()
    server.wait_for(server.stderr, r"6 deaths in 60 s: stopping")


# --- HTTP/3 over QUIC ----------------------------------------------------------------------------


def gtlsclient_fetch(server: CliServer) -> str:
    """ngtcp2's HTTP/3 client fetching the page; its output (it exits 0 even on failure)."""
    run = subprocess.run(
        [
            require_peer("gtlsclient"),
            "--exit-on-all-streams-close",
            "--handshake-timeout=5s",
            server.host,
            str(server.port),
            f"https://localhost:{server.port}/",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return run.stdout + run.stderr


def test_quic_mode_serves_http3_through_the_stateless_hrr(serve: Serve) -> None:
    """``--quic``: ngtcp2's gtlsclient (GnuTLS, which refuses a cookie-only HRR) fetches the
    page through the stateless HRR, which names P-384 for it."""
    server = serve(["--quic", "--validation", "hrr"])
    assert server.mode == "h3"
    output = gtlsclient_fetch(server)
    assert "QUIC handshake has completed" in output and ":status: 200" in output, output
    line = server.wait_for(
        server.stderr, r"peer=\S+ quic .*hrr=yes cookie=verified .*group=secp384r1 alpn=h3"
    )
    assert "error" not in line[0], server.output()
    server.stop()


def test_quic_workers_share_the_port_the_cookie_keys_and_the_connection_id_secret(
    serve: Serve,
) -> None:
    """``--quic --workers 2``: the kernel spreads clients over both UDP sockets; each worker
    completes handshakes through the stateless HRR with the keys and secret they share."""
    server = serve(["--quic", "--workers", "2", "--validation", "hrr"])
    workers = server.wait_for(server.stdout, r"2 workers: (\d+) (\d+)")
    for _ in range(16):
        output = gtlsclient_fetch(server)
        assert ":status: 200" in output, output
    server.wait_for(server.stderr, r"quic .*cookie=verified", 16)
    served_by = {
        m[1]
        for line in server.stderr
        if (m := re.search(r"\[(\d+)\] peer=\S+ quic .*cookie=verified", line))
    }
    assert served_by == {workers[1], workers[2]}, server.output()  # odds of one only: 2^-15
    server.stop()


def test_a_key_log_that_cannot_be_written_exits_with_a_message(tmp_path: Path) -> None:
    """Refused at start, in one line and exit status 2 (a configuration error), rather than
    failing every handshake later (issues 20, 13)."""
    keylog = tmp_path / "missing" / "keys.log"
    run = serve_once(tmp_path, "--keylog", str(keylog))
    assert run.returncode == 2, run
    assert run.stderr.strip().splitlines() == [
        f"stateless13: cannot write the key log {keylog}: [Errno 2] No such file or directory:"
        f" '{keylog}'"
    ], run.stderr
