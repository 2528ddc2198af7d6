"""What an operator's mistakes and a hostile client's bytes must not do to the server (issue 20):
a key log that cannot be written never fails a handshake; a server name never reaches a log
line raw."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from stateless13 import HandshakeComplete, ServerConfig, keylog_to_file
from stateless13.messages import ExtensionType
from stateless13.transports.common import ConnectionReport
from tests.helpers import PythonSSLClient, stateless_handshake
from tests.memory.test_bad_input import (
    A,
    accept,
    assert_rejected,
    encode,
    parse,
    server_names,
    with_ext,
)


def complete(config: ServerConfig) -> HandshakeComplete:
    accepted = stateless_handshake(config, PythonSSLClient())
    (event,) = accepted.connection.events()
    assert isinstance(event, HandshakeComplete)
    return event


def test_a_key_log_file_that_cannot_be_written_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="key log"):
        keylog_to_file(tmp_path / "missing-directory" / "keys.log")


def test_a_key_log_that_fails_later_fails_no_handshake_and_is_reported_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "keys"
    folder.mkdir()
    keylog = keylog_to_file(folder / "keys.log")
    (folder / "keys.log").unlink()
    folder.rmdir()  # the disk went away under the server
    config = ServerConfig.self_signed(keylog=keylog)
    with caplog.at_level(logging.WARNING, logger="stateless13"):
        for _ in range(3):
            complete(config)
    warnings = [r for r in caplog.records if "key log" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]


def test_a_keylog_callback_that_raises_fails_no_handshake(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(line: str) -> None:
        raise RuntimeError("the application's bug")

    config = ServerConfig.self_signed(keylog=broken)
    with caplog.at_level(logging.WARNING, logger="stateless13"):
        complete(config)
        complete(config)
    assert sum("key log" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize(
    "name",
    [b"evil.example\nFAKE log line", b"a\rb", b"tab\there", b"nul\x00byte", b"sp ace", b"del\x7f"],
    ids=["newline", "carriage-return", "tab", "nul", "space", "del"],
)
def test_a_server_name_with_control_characters_or_spaces_is_refused(name: bytes) -> None:
    """RFC 6066 §3: a HostName is a DNS name; these bytes are never part of one."""
    hello = with_ext(parse(PythonSSLClient().step()), ExtensionType.server_name, server_names(name))
    assert_rejected(accept(encode(hello)), A.decode_error)


def test_the_log_line_escapes_what_a_server_name_could_smuggle() -> None:
    """Belt and braces: whatever reaches a report is printed escaped, on one line."""
    event = complete(ServerConfig.self_signed())
    odd = HandshakeComplete(
        event.cipher_suite,
        event.group,
        event.signature_scheme,
        "h2\nx",
        "a\nb=c\x1b[31m",
        event.hello_retry,
        event.cookie_verified,
        event.cookie_payload,
    )
    line = ConnectionReport(("192.0.2.1", 443), True, True, odd, 0.01).log_line()
    assert "\n" not in line and "\x1b" not in line
    assert "sni='a\\nb=c\\x1b[31m'" in line and "alpn='h2\\nx'" in line
