"""What the socket adapters share: their limits and the one report each connection produces."""

from __future__ import annotations

from dataclasses import dataclass

from stateless13 import HandshakeComplete


class HandshakeError(Exception):
    """The handshake did not complete: refused by TLS, timed out, or over a limit."""


@dataclass(frozen=True)
class Limits:
    """Every limit a socket server enforces, in one place (all documented in the README)."""

    #: Seconds from accept to a completed handshake, including the wait between the
    #: HelloRetryRequest and ClientHello2: a slow-loris client is cut off here.
    handshake_timeout: float = 10.0
    #: Seconds without a byte from the client once the handshake is done.
    idle_timeout: float = 300.0
    #: Connections still handshaking at once; more are closed at accept, before any read.
    max_concurrent_handshakes: int = 1024
    #: Bytes buffered from a client before its handshake completes (ClientHello records, CCS).
    max_handshake_buffer: int = 65536
    #: Bytes read from the socket at a time (and so the most buffered per read after the
    #: handshake: the application reads at its own pace, the adapter never reads ahead more).
    read_size: int = 65536

    def __post_init__(self) -> None:
        if min(self.handshake_timeout, self.idle_timeout) <= 0:
            raise ValueError("timeouts must be positive")
        if self.max_concurrent_handshakes < 1 or self.read_size < 1:
            raise ValueError("limits must be positive")


@dataclass(frozen=True)
class ConnectionReport:
    """One line of the connection log: what happened to one client, however it ended."""

    peer: tuple[str, int]
    hello_retry_sent: bool
    cookie_verified: bool
    handshake: HandshakeComplete | None
    duration: float  # seconds from accept to close
    error: str | None = None  # the alert (or timeout/limit) and its reason, if it failed

    def log_line(self) -> str:
        host, port = self.peer[0], self.peer[1]
        parts = [f"peer={host}:{port}", f"hrr={'yes' if self.hello_retry_sent else 'no'}"]
        parts.append(f"cookie={'verified' if self.cookie_verified else 'none'}")
        if self.handshake is not None:
            h = self.handshake
            parts += [
                f"suite={h.cipher_suite.name}",
                f"group={h.group.name}",
                f"alpn={h.alpn_protocol or '-'}",
                f"sni={h.server_name or '-'}",
            ]
        parts.append(f"duration={self.duration * 1000:.1f}ms")
        if self.error is not None:
            parts.append(f"error={self.error!r}")
        return " ".join(parts)
