"""Commands as a user types them: the ones the examples' docstrings and the server's banner print.

The tests take those command lines from where the user reads them (``docstring_commands``,
``banner_commands``) and run them as they are, only putting in the port the server printed; a
``Process`` runs one in the background and collects its output line by line.
"""

from __future__ import annotations

import ast
import contextlib
import os
import re
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
WAIT = 15.0  # seconds for an expected line; every step takes well under 1 s


def user_env(**changes: str) -> dict[str, str]:
    """This environment as a user's shell would have it: no PYTHONPATH (the package must come
    from where the instructions installed it) and no proxy (the servers are local)."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name != "PYTHONPATH" and "proxy" not in name.lower()
    }
    return env | changes


def docstring_commands(example: Path) -> list[list[str]]:
    """The command lines in an example's docstring (its lines indented by four spaces), split as
    a shell splits them, ``# ...`` comments dropped."""
    docstring = ast.get_docstring(ast.parse(example.read_text()), clean=True)
    assert docstring, f"{example} has no docstring"
    lines = [line for line in docstring.splitlines() if re.match(r" {4}\S", line)]
    return [shlex.split(line, comments=True) for line in lines]


def banner_commands(stdout: Sequence[str]) -> list[list[str]]:
    """The commands the server's banner offers (``try: ...`` and ``  or: ...``), split as a shell
    splits them, ``# ...`` comments dropped."""
    return [
        shlex.split(match[1], comments=True)
        for line in stdout
        if (match := re.fullmatch(r"(?:try|  or): (.*)", line))
    ]


def with_port(command: Sequence[str], port: int) -> list[str]:
    """``command`` with the placeholder ``PORT`` replaced by ``port``, as the user would."""
    return [argument.replace("PORT", str(port)) for argument in command]


class Process:
    """A command running in the background; its stdout and stderr collected line by line."""

    def __init__(
        self,
        command: Sequence[str],
        cwd: Path,
        env: dict[str, str] | None = None,
        stdin: bool = False,
    ) -> None:
        self.command = list(command)
        self.process = subprocess.Popen(
            self.command,
            cwd=cwd,
            env=env if env is not None else user_env(),
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._readers = [
            threading.Thread(target=self._collect, args=(stream, lines), daemon=True)
            for stream, lines in (
                (self.process.stdout, self.stdout),
                (self.process.stderr, self.stderr),
            )
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _collect(stream: IO[str], lines: list[str]) -> None:
        for line in stream:
            lines.append(line.rstrip("\n"))

    def wait_for(
        self, lines: list[str], pattern: str, timeout: float = WAIT, count: int = 1
    ) -> re.Match[str]:
        """The ``count``-th line of ``lines`` matching ``pattern``, waited for up to ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            exited = self.process.poll() is not None
            if exited:
                self.join_readers()
            matches = [m for line in list(lines) if (m := re.search(pattern, line))]
            if len(matches) >= count:
                return matches[count - 1]
            if exited or time.monotonic() > deadline:
                raise AssertionError(f"no line matching {pattern!r}:\n{self.output()}")
            time.sleep(0.01)

    def write(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text)
        self.process.stdin.flush()

    def close_stdin(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()

    def send_signal(self, signum: int = signal.SIGTERM) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = WAIT) -> int:
        """Wait for the exit (a hang fails the test); the exit status."""
        try:
            status = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running after {timeout} s:\n{self.output()}") from None
        self.join_readers()
        return status

    def join_readers(self) -> None:
        for reader in self._readers:
            reader.join(WAIT)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(WAIT)
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):  # unsent input of a process that is gone
                self.process.stdin.close()

    def output(self) -> str:
        return (
            f"$ {shlex.join(self.command)}\nstdout:\n"
            + "\n".join(self.stdout)
            + "\nstderr:\n"
            + "\n".join(self.stderr)
        )
