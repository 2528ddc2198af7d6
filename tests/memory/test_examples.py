"""Every example runs as its docstring says: the command lines are taken from the docstring and
run as they are, from the top of the repository, without PYTHONPATH (tests/commands.py).

The examples that need a real client run in tests/peers/test_examples_tcp.py and
tests/peers/test_quic_example.py; tests/peers/test_first_run.py runs this one from a fresh copy
of the repository, after ``./serve`` made its ``.venv``.
"""

from __future__ import annotations

import subprocess

from tests.commands import EXAMPLES, ROOT, docstring_commands, user_env

#: Where each example's commands are run.
TESTED_IN = {
    "memory_handshake.py": "tests/memory/test_examples.py",
    "asyncio_echo_server.py": "tests/peers/test_examples_tcp.py",
    "blocking_server.py": "tests/peers/test_examples_tcp.py",
    "quic_server.py": "tests/peers/test_quic_example.py",
    "aioquic_http3_server.py": "tests/peers/test_aioquic_serve.py",
}


def test_every_example_is_run_by_a_test() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(TESTED_IN)


def test_every_example_says_how_to_run_it_with_the_venv_python() -> None:
    """``python examples/X.py`` cannot import the package (it is installed in .venv, and the
    script's folder is examples/), so every docstring starts with the .venv's interpreter."""
    for name, test_file in TESTED_IN.items():
        commands = docstring_commands(EXAMPLES / name)
        assert commands, f"{name}: no command line in its docstring"
        assert commands[0] == [".venv/bin/python", f"examples/{name}"], commands
        assert "./serve" in (EXAMPLES / name).read_text(), f"{name}: where .venv comes from"
        assert (ROOT / test_file).exists(), test_file


def test_memory_handshake_example() -> None:
    (command,) = docstring_commands(EXAMPLES / "memory_handshake.py")
    assert (ROOT / command[0]).exists(), f"{command[0]} missing: ./serve --help makes it"
    run = subprocess.run(
        command, cwd=ROOT, env=user_env(), capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    assert "cookie verified by another config" in run.stdout, run.stdout
    assert "client received b'hello, client' over TLSv1.3" in run.stdout, run.stdout
