"""A new user's first five minutes, as the README and the server's banner tell them (issue 13).

* ``./serve --quic`` in a fresh copy of the repository (no ``.venv``) installs what every mode
  needs and serves HTTP/3; a ``.venv`` without aioquic gets it; the command itself, when aioquic
  is missing, says in one line how to install it.
* An operator's mistake gets one line, ``stateless13: ...``, on stderr and the exit status the
  ``--help`` epilog documents (2: configuration, 1: the address cannot be bound); no traceback.
* The commands the banner prints work as printed (TCP and QUIC; on 127.0.0.1 and ::1).
* The generated certificate's temporary directory is removed when the server exits.

Servers are started with ``./serve`` from a temporary working directory, as a user would; the
commands they print are taken from their output (tests/commands.py) and run as they are.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from stateless13 import Credential
from stateless13.cookie import MIN_KEY_SIZE
from stateless13.transports.cli import EXIT_RUNTIME, EXIT_USAGE, QUIC_REQUIREMENT
from tests.commands import (
    ROOT,
    WAIT,
    Process,
    banner_commands,
    docstring_commands,
    user_env,
)
from tests.servers import PAGE_TEXT, require_peer

SERVE = ROOT / "serve"
#: A fresh .venv: pip installs the package, cryptography, h11, aioquic and theirs.
INSTALL_TIMEOUT = 300.0
CLIENT_TIMEOUT = 30.0  # a fetch takes well under 1 s; gtlsclient's own idle timeout is 30 s
CHROMIUM_TIMEOUT = 90.0  # a headless start, the page and the exit: about 1 s
GTLSCLIENT_SUCCESS = ("QUIC handshake has completed", "Negotiated ALPN is h3", "[:status: 200]")
#: Some of aioquic's INFO lines for each connection (its "quic" logger).
AIOQUIC_INFO = re.compile(r"Negotiated protocol version|ALPN negotiated protocol|Duplicate CRYPTO")
SERVING = r"serving (\w+) on (\[[^\]]+\]|[^\s:]+):(\d+) "


class Server:
    """``./serve ARGS`` in ``cwd``, its temporary files in ``cwd/tmp`` (TMPDIR)."""

    def __init__(
        self,
        args: list[str],
        cwd: Path,
        serve: Path = SERVE,
        start_timeout: float = WAIT,
    ) -> None:
        self.tmp = cwd / "tmp"
        self.tmp.mkdir(exist_ok=True)
        self.process = Process([str(serve), *args], cwd=cwd, env=user_env(TMPDIR=str(self.tmp)))
        try:
            serving = self.process.wait_for(self.process.stdout, SERVING, start_timeout)
        except BaseException:
            self.process.kill()
            raise
        self.mode, self.host, self.port = serving[1], serving[2].strip("[]"), int(serving[3])
        # The whole banner: its last line is the second command (echo mode offers one).
        self.process.wait_for(self.process.stdout, r"^try: " if self.mode == "echo" else r"^  or: ")

    @property
    def commands(self) -> list[list[str]]:
        return banner_commands(self.process.stdout)

    def stop(self) -> None:
        """SIGTERM: exit status 0, no traceback."""
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait() == 0, self.process.output()
        assert "Traceback" not in self.process.output(), self.process.output()


@contextmanager
def serving(
    args: list[str], cwd: Path, serve: Path = SERVE, start_timeout: float = WAIT
) -> Iterator[Server]:
    server = Server(args, cwd, serve, start_timeout)
    try:
        yield server
    finally:
        server.process.kill()


def run(command: list[str], cwd: Path, timeout: float = CLIENT_TIMEOUT, **env: str) -> str:
    """Run a printed command to its end (it must exit by itself); its stdout and stderr."""
    require_peer(command[0])
    try:
        result = subprocess.run(
            command, cwd=cwd, env=user_env(**env), capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as expired:
        raise AssertionError(f"{command} did not exit within {timeout} s: {expired}") from None
    return f"$ {' '.join(command)}\nexit status {result.returncode}\n{result.stdout}{result.stderr}"


def assert_gtlsclient_fetched_the_page(output: str) -> None:
    assert all(marker in output for marker in GTLSCLIENT_SUCCESS), output[-4000:]


def chromium_dom(command: list[str], tmp_path: Path) -> str:
    """Run the banner's Chromium command; its output.  (Its exit status is 0 even when the page
    failed to load: the DOM is what tells.)  HOME points into tmp_path so that the test leaves
    nothing in the real one."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return run(command, tmp_path, CHROMIUM_TIMEOUT, HOME=str(home))


# --- ./serve --quic from a fresh copy of the repository -------------------------------------------


def fresh_copy(destination: Path) -> Path:
    """The repository's files as a clone would have them (tracked, and new ones not ignored, as
    they are in the working tree), without .venv or anything else that is ignored."""
    git = require_peer("git")
    listing = subprocess.run(
        [git, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    for name in filter(None, listing.split(b"\0")):
        source, target = ROOT / os.fsdecode(name), destination / os.fsdecode(name)
        if not source.is_symlink() and not source.exists():
            continue  # deleted in the working tree
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():  # stateless13/transports -> ../transports
            target.symlink_to(os.readlink(source))
        else:
            shutil.copy2(source, target)
    assert (destination / "serve").exists() and not (destination / ".venv").exists()
    return destination


def test_serve_quic_from_a_fresh_clone(tmp_path: Path) -> None:
    clone = fresh_copy(tmp_path / "clone")
    work = tmp_path / "work"
    work.mkdir()
    try:
        first_five_minutes(clone, work)
    finally:  # pytest keeps the last few temporary folders: not with a .venv each
        shutil.rmtree(clone / ".venv", ignore_errors=True)


def first_five_minutes(clone: Path, work: Path) -> None:
    """``./serve --quic`` in ``clone`` run from ``work``, as a user does it, step by step."""
    # 1. No .venv: ./serve --quic makes it, installs everything, serves HTTP/3.
    with serving(["--quic"], work, serve=clone / "serve", start_timeout=INSTALL_TIMEOUT) as server:
        assert any("serve: installing" in line for line in server.process.stderr)
        gtlsclient, _ = server.commands
        assert_gtlsclient_fetched_the_page(run(gtlsclient, work))
        server.process.wait_for(server.process.stderr, r"quic validation=none hrr=no")  # calm
        server.stop()
    assert (clone / ".venv/bin/python").exists()

    # 2. The examples' instructions hold in this copy: .venv made by ./serve, then its python.
    (example,) = docstring_commands(clone / "examples/memory_handshake.py")
    output = run(example, clone)
    assert "client received b'hello, client' over TLSv1.3" in output, output

    # 3. A .venv without aioquic (as the old ./serve made it): the command itself says how to
    # install it, in one line, exit status 2 ...
    python = clone / ".venv/bin/python"
    uninstall = [str(python), "-m", "pip", "uninstall", "-y", "-q", "aioquic"]
    subprocess.run(uninstall, capture_output=True, check=True, timeout=120)
    without = subprocess.run(
        [str(python), "-m", "stateless13", "serve", "--quic"],
        cwd=work,
        env=user_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert without.returncode == EXIT_USAGE, without
    assert without.stderr.splitlines() == [
        f"stateless13: --quic needs aioquic, which is not installed: {python} -m pip install"
        f" '{QUIC_REQUIREMENT}' (from a clone, ./serve installs it)"
    ], without.stderr
    # ... and ./serve installs it.
    with serving(["--quic"], work, serve=clone / "serve", start_timeout=INSTALL_TIMEOUT) as server:
        assert any("serve: installing" in line for line in server.process.stderr)
        gtlsclient, _ = server.commands
        assert_gtlsclient_fetched_the_page(run(gtlsclient, work))
        server.stop()


def test_the_quic_requirement_the_command_prints_is_the_quic_extra() -> None:
    with open(ROOT / "pyproject.toml", "rb") as file:
        extras = tomllib.load(file)["project"]["optional-dependencies"]
    assert extras["quic"] == [QUIC_REQUIREMENT]


# --- operator errors: one line, an exit status ----------------------------------------------------


def _pem_files(directory: Path, name: str, credential: Credential) -> tuple[str, str]:
    cert, key = f"{name}-cert.pem", f"{name}-key.pem"
    (directory / cert).write_bytes(credential.certificate_pem())
    (directory / key).write_bytes(
        credential.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert, key


def _missing_cert(d: Path) -> tuple[list[str], str]:
    _, key = _pem_files(d, "good", Credential.self_signed())
    return ["--cert", "missing.pem", "--key", key], "--cert missing.pem: No such file or directory"


def _cert_not_pem(d: Path) -> tuple[list[str], str]:
    _, key = _pem_files(d, "good", Credential.self_signed())
    (d / "notes.txt").write_text("not a certificate\n")
    return ["--cert", "notes.txt", "--key", key], "--cert notes.txt: no PEM certificate in it"


def _invalid_key(d: Path) -> tuple[list[str], str]:
    cert, _ = _pem_files(d, "good", Credential.self_signed())
    (d / "garbage.pem").write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    return ["--cert", cert, "--key", "garbage.pem"], "--key garbage.pem: no PEM private key in it"


def _unreadable_key(d: Path) -> tuple[list[str], str]:
    # A directory: unreadable even for root, whom file permissions do not stop.
    cert, _ = _pem_files(d, "good", Credential.self_signed())
    (d / "keys").mkdir()
    return ["--cert", cert, "--key", "keys"], "--key keys: Is a directory"


def _encrypted_key(d: Path) -> tuple[list[str], str]:
    credential = Credential.self_signed()
    cert, _ = _pem_files(d, "good", credential)
    (d / "encrypted.pem").write_bytes(
        credential.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    expected = "--key encrypted.pem: the key is encrypted; give it unencrypted"
    return ["--cert", cert, "--key", "encrypted.pem"], expected


def _key_of_another_certificate(d: Path) -> tuple[list[str], str]:
    cert, _ = _pem_files(d, "one", Credential.self_signed())
    _, key = _pem_files(d, "other", Credential.self_signed())
    expected = (
        f"--cert {cert}, --key {key}: the private key does not belong to the first certificate"
    )
    return ["--cert", cert, "--key", key], expected


def _cert_without_key(d: Path) -> tuple[list[str], str]:
    cert, _ = _pem_files(d, "good", Credential.self_signed())
    return ["--cert", cert], "--cert and --key go together, one --key for each --cert"


def _keylog_not_writable(d: Path) -> tuple[list[str], str]:
    keylog = "missing/keys.log"
    expected = f"cannot write the key log {keylog}: [Errno 2] No such file or directory: '{keylog}'"
    return ["--keylog", keylog], expected


def _cookie_keys_not_hex(d: Path) -> tuple[list[str], str]:
    (d / "cookie.keys").write_text("# cookie keys\nnot hex at all\n")
    return ["--cookie-key-file", "cookie.keys"], "--cookie-key-file cookie.keys:2: not a hex key"


def _cookie_key_too_short(d: Path) -> tuple[list[str], str]:
    (d / "cookie.keys").write_text("00112233\n")
    expected = f"--cookie-key-file cookie.keys: cookie keys must be at least {MIN_KEY_SIZE} bytes"
    return ["--cookie-key-file", "cookie.keys"], expected


def _cookie_keys_in_a_missing_folder(d: Path) -> tuple[list[str], str]:
    path = "missing/cookie.keys"
    return ["--cookie-key-file", path], f"--cookie-key-file {path}: No such file or directory"


def _not_a_port(d: Path) -> tuple[list[str], str]:
    expected = (
        "argument --port: 70000 is not a port (0 to 65535; 0: a free one)"
        " (see stateless13 serve --help)"
    )
    return ["--port", "70000"], expected


ErrorCase = Callable[[Path], tuple[list[str], str]]
CONFIGURATION_ERRORS: dict[str, ErrorCase] = {
    "missing certificate": _missing_cert,
    "certificate not PEM": _cert_not_pem,
    "invalid key": _invalid_key,
    "unreadable key": _unreadable_key,
    "encrypted key": _encrypted_key,
    "key of another certificate": _key_of_another_certificate,
    "certificate without key": _cert_without_key,
    "key log not writable": _keylog_not_writable,
    "cookie keys not hex": _cookie_keys_not_hex,
    "cookie key too short": _cookie_key_too_short,
    "cookie keys in a missing folder": _cookie_keys_in_a_missing_folder,
    "not a port": _not_a_port,
}


def assert_one_line_error(cwd: Path, args: list[str], status: int, message: str) -> None:
    """``./serve ARGS`` exits with ``status`` and says only ``stateless13: MESSAGE``; nothing
    started, nothing left in its temporary directory."""
    tmp = cwd / "tmp"
    tmp.mkdir(exist_ok=True)
    result = subprocess.run(
        [str(SERVE), *args],
        cwd=cwd,
        env=user_env(TMPDIR=str(tmp)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == status, result
    assert result.stderr.splitlines() == [f"stateless13: {message}"], result.stderr
    assert "serving" not in result.stdout, result.stdout
    assert list(tmp.iterdir()) == []  # a generated certificate's folder is removed too


@pytest.mark.parametrize("case", CONFIGURATION_ERRORS.values(), ids=CONFIGURATION_ERRORS.keys())
def test_a_configuration_error_is_one_line_and_status_2(tmp_path: Path, case: ErrorCase) -> None:
    args, message = case(tmp_path)
    assert_one_line_error(tmp_path, args, EXIT_USAGE, message)


@pytest.mark.parametrize(
    "transport,args",
    [("TCP", []), ("UDP", ["--quic"]), ("TCP", ["--workers", "2"]), ("UDP", ["--quic", "-v"])],
)
def test_a_port_in_use_is_one_line_and_status_1(
    tmp_path: Path, transport: str, args: list[str]
) -> None:
    kind = socket.SOCK_STREAM if transport == "TCP" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as taken:
        taken.bind(("127.0.0.1", 0))
        if kind == socket.SOCK_STREAM:
            taken.listen()
        port = taken.getsockname()[1]
        message = f"cannot listen on 127.0.0.1:{port} ({transport}): Address already in use"
        assert_one_line_error(tmp_path, [*args, "--port", str(port)], EXIT_RUNTIME, message)


def test_help_documents_the_exit_statuses(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(SERVE), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result
    epilog = result.stdout[result.stdout.index("exit status:") :]
    for status in (0, EXIT_RUNTIME, EXIT_USAGE):
        assert re.search(rf"^  {status}  \S", epilog, re.MULTILINE), epilog
    assert "-v, --verbose" in result.stdout, result.stdout


# --- the banner's commands, as printed ------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_tcp_banner_commands_work_as_printed(tmp_path: Path, host: str) -> None:
    with serving(["--host", host], tmp_path) as server:
        assert server.host == host
        s_client, curl = server.commands
        where = f"[{host}]:{server.port}" if ":" in host else f"{host}:{server.port}"
        assert s_client[:4] == ["openssl", "s_client", "-connect", where], s_client
        assert curl[-1] == f"https://{where}/", curl
        # "then type GET / HTTP/1.0 and Enter twice" (a terminal sends bare line feeds)
        client = Process(s_client, cwd=tmp_path, stdin=True)
        try:
            client.write("GET / HTTP/1.0\n\n")
            client.wait_for(client.stdout, re.escape(PAGE_TEXT))
            assert client.wait() == 0, client.output()  # the server closed: s_client leaves
        finally:
            client.kill()
        output = run(curl, tmp_path)
        assert "exit status 0" in output and PAGE_TEXT in output, output
        server.process.wait_for(server.process.stderr, r"validation=none hrr=no", count=2)  # calm
        server.stop()


def test_tcp_echo_banner_command_works_as_printed(tmp_path: Path) -> None:
    with serving(["--mode", "echo"], tmp_path) as server:
        (s_client,) = server.commands
        assert any(line.endswith("# type a line") for line in server.process.stdout)
        client = Process(s_client, cwd=tmp_path, stdin=True)
        try:
            client.write("echo this line\n")
            client.wait_for(client.stdout, r"^echo this line$")
            client.close_stdin()  # end of input: s_client sends close_notify and exits
            assert client.wait() == 0, client.output()
        finally:
            client.kill()
        server.stop()


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_quic_banner_commands_work_as_printed(tmp_path: Path, host: str) -> None:
    """gtlsclient (GnuTLS, against the default server) exits by itself with the page; Chromium
    gets the page whatever localhost resolves to; aioquic's INFO lines stay out of the log."""
    with serving(["--quic", "--host", host], tmp_path) as server:
        assert "retry-names-a-group" not in server.process.output()
        gtlsclient, chromium = server.commands
        assert gtlsclient[:3] == ["gtlsclient", "--exit-on-all-streams-close", host], gtlsclient
        assert f"--host-resolver-rules=MAP localhost {f'[{host}]' if ':' in host else host}" in (
            chromium
        )
        assert_gtlsclient_fetched_the_page(run(gtlsclient, tmp_path))
        output = chromium_dom(chromium, tmp_path)
        assert PAGE_TEXT in output and "X25519MLKEM768" in output, output[-4000:]
        server.process.wait_for(server.process.stderr, r" quic validation=none hrr=no", count=2)
        server.stop()
        log = server.process.stderr
        assert not [line for line in log if AIOQUIC_INFO.search(line)], "\n".join(log)


def test_verbose_shows_aioquic_info(tmp_path: Path) -> None:
    with serving(["--quic", "-v"], tmp_path) as server:
        gtlsclient, _ = server.commands
        assert_gtlsclient_fetched_the_page(run(gtlsclient, tmp_path))
        server.process.wait_for(server.process.stderr, r"ALPN negotiated protocol h3")
        server.process.wait_for(server.process.stderr, r" quic validation=none hrr=no")
        server.stop()


# --- the generated certificate's folder -----------------------------------------------------------


@pytest.mark.parametrize("args", [[], ["--quic"], ["--workers", "2"], ["--quic", "--workers", "2"]])
def test_the_generated_certificate_folder_is_removed_at_exit(
    tmp_path: Path, args: list[str]
) -> None:
    with serving(args, tmp_path) as server:
        written = server.process.wait_for(server.process.stdout, r"written to (\S+)/cert\.pem$")
        folder = Path(written[1])
        assert folder.parent == server.tmp and (folder / "cert.pem").exists()
        if "--workers" in args:
            # A worker that stops is not the owner: the folder stays for the others.  (-15: the
            # signal came before the worker's event loop took SIGTERM over.)
            workers = server.process.wait_for(server.process.stdout, r"2 workers: (\d+) (\d+)")
            os.kill(int(workers[1]), signal.SIGTERM)
            server.process.wait_for(
                server.process.stderr, rf"worker {workers[1]} exited \((0|-15)\); restarting"
            )
            server.process.wait_for(server.process.stderr, r"worker \d+ started")
            assert (folder / "cert.pem").exists()
        server.stop()
    assert not folder.exists()
    assert list(server.tmp.iterdir()) == []
