"""The transcript hash (RFC 8446 §4.4.1), including the one place a HelloRetryRequest is folded in.

After a HelloRetryRequest the transcript does not start with ClientHello1 but with a synthetic
``message_hash`` message holding Hash(ClientHello1).  That is what makes a stateless server
possible: Hash(ClientHello1) fits in a cookie, and :func:`rebuild_after_retry` turns it (plus the
HelloRetryRequest, which the server can rebuild deterministically) back into the transcript.
"""

from __future__ import annotations

from .messages import HandshakeType
from .primitives import SuiteParams


class Transcript:
    """A running hash of handshake messages (each with its 4-byte header)."""

    __slots__ = ("_hash",)

    def __init__(self, suite: SuiteParams) -> None:
        self._hash = suite.new_hash(b"")

    def update(self, message: bytes) -> None:
        self._hash.update(message)

    def digest(self) -> bytes:
        """The hash so far; the transcript can keep growing afterwards."""
        return self._hash.copy().digest()

    def copy(self, suite: SuiteParams) -> Transcript:
        """A transcript of ``suite`` (this one's) that goes on from here on its own (a
        post-handshake authentication's, §4.4)."""
        other = Transcript(suite)
        other._hash = self._hash.copy()
        return other

    def digest_with(self, data: bytes) -> bytes:
        """The hash of the transcript followed by ``data``, leaving the transcript as it is (a
        PSK binder covers part of a ClientHello the transcript takes whole)."""
        hash_ = self._hash.copy()
        hash_.update(data)
        return hash_.digest()


def message_hash(client_hello_1_hash: bytes) -> bytes:
    """The synthetic handshake message that replaces ClientHello1 (§4.4.1)."""
    return bytes((HandshakeType.message_hash, 0, 0, len(client_hello_1_hash))) + client_hello_1_hash


def rebuild_after_retry(
    suite: SuiteParams, client_hello_1_hash: bytes, hello_retry_request: bytes
) -> Transcript:
    """Transcript-Hash(message_hash(Hash(CH1)) || HelloRetryRequest): the state before CH2.

    Both the stateful retry (which hashed CH1 itself) and the stateless one (which reads the hash
    from the cookie) start the second flight here, so they cannot drift apart.
    """
    transcript = Transcript(suite)
    transcript.update(message_hash(client_hello_1_hash))
    transcript.update(hello_retry_request)
    return transcript
