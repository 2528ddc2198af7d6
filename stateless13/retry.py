"""The stateless HelloRetryRequest at the message level (RFC 8446 §4.1.4, §4.2.2): one ClientHello
handshake message in, an answer out, nothing kept.

Every transport frames the same step: ``stateless_accept`` takes it out of TLS records, the QUIC
front out of CRYPTO frames.  So the ClientHello's header checks, the cookie's sealing and opening
(once per ClientHello2), its age, the application's verdict, the replay filter and the rebuilt
HelloRetryRequest exist here only.

* ClientHello1 (no cookie) -> :class:`RetryRequest`: the HRR message, its cookie holding all the
  server must remember.
* ClientHello2 (a cookie) -> :class:`CookieVerified`: the cookie authenticated for this peer, is
  fresh and was accepted; ``ServerHandshake.resume_from_cookie`` carries on from it.

Anything else raises the :class:`~stateless13.alerts.AlertError` naming the alert to send.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .alerts import (
    AccessDenied,
    DecryptError,
    IllegalParameter,
    MissingExtension,
    UnexpectedMessage,
)
from .config import ServerConfig
from .cookie import SHORT_DIGEST_SIZE, CookieState, check_cookie_age, peer_binding
from .messages import ClientHello, HandshakeType, build_hello_retry_request, pull_client_hello
from .negotiation import (
    client_hello_digest,
    group_to_request,
    negotiate,
    require_certificate_handshake,
)

#: A transport's own rules for a ClientHello (QUIC: transport parameters, no session id); runs
#: after parsing, before any cryptography.  It raises to refuse.
ClientHelloCheck = Callable[[ClientHello], None]


@dataclass(slots=True)  # not frozen: made for every ClientHello1; nothing changes it
class RetryRequest:
    """Send ``hello_retry_request`` (a handshake message: frame it as the transport does)."""

    hello: ClientHello  # ClientHello1, parsed
    hello_retry_request: bytes


@dataclass(slots=True)
class CookieVerified:
    """ClientHello2 whose cookie is good: resume with ``ServerHandshake.resume_from_cookie``."""

    hello: ClientHello  # ClientHello2, parsed
    message: bytes  # ClientHello2, the whole handshake message
    retry: CookieState  # what the cookie carried (the HRR's choice, ClientHello1's hash, payload)
    hello_retry_request: bytes  # the HRR the client saw, rebuilt from the cookie

    @property
    def cookie_payload(self) -> bytes:
        return self.retry.app_payload


def client_hello_size(prefix: bytes | bytearray, max_size: int) -> int | None:
    """The size of the ClientHello message starting ``prefix``, once its 4-byte header is in.

    Refuses as early as the bytes allow: a wrong message type from the first byte, a size over
    ``max_size`` (bytes of the message, header included) from the header.
    """
    if prefix and prefix[0] != HandshakeType.client_hello:
        raise UnexpectedMessage(f"expected ClientHello, got handshake type {prefix[0]}")
    if len(prefix) < 4:
        return None
    size = 4 + int.from_bytes(prefix[1:4], "big")
    if size > max_size:
        raise IllegalParameter(f"ClientHello of {size} bytes exceeds the {max_size} limit")
    return size


def parse_client_hello(message: bytes, max_size: int, *, dtls: bool = False) -> ClientHello:
    """A whole ClientHello handshake message (header included) -> ClientHello; ``dtls``: a
    DTLS 1.3 one (RFC 9147 §5.3), reassembled into TLS's format as its transcript is (§5.2)."""
    size = client_hello_size(message, max_size)
    if size != len(message):
        raise UnexpectedMessage(f"a ClientHello of {size} bytes in a message of {len(message)}")
    return pull_client_hello(message[4:], dtls=dtls)


def answer_client_hello(
    config: ServerConfig,
    message: bytes,
    *,
    peer: tuple[str, int] | None,
    now: float,
    cookie_payload: bytes = b"",
    after_retry: bool = False,
    check: ClientHelloCheck | None = None,
    hello: ClientHello | None = None,
    dtls: bool = False,
) -> RetryRequest | CookieVerified:
    """Answer one whole ClientHello message without keeping anything.

    ``peer`` is bound into the cookie (its IP address; None binds nothing), ``now`` is the cookie
    clock.  ``cookie_payload`` (at most 64 bytes) rides in the cookie and comes back in
    ``CookieVerified.cookie_payload``.  ``after_retry``: the transport knows it already sent this
    client an HRR, so a ClientHello without a cookie is refused (missing_extension).  ``hello``:
    ``message`` parsed by ``parse_client_hello``, if the transport had to parse it first.
    ``dtls``: a DTLS 1.3 ClientHello (the cookie then binds the client's port too, and one that
    does not open is illegal_parameter: RFC 9147 §5.1).
    """
    if hello is None:
        hello = parse_client_hello(message, config.max_client_hello_size, dtls=dtls)
    if check is not None:
        check(hello)
    if hello.cookie is None:
        if after_retry:
            raise MissingExtension("ClientHello2 does not echo the cookie")
        return RetryRequest(
            hello,
            hello_retry_request_for(
                config, hello, message, peer=peer, now=now, cookie_payload=cookie_payload
            ),
        )
    try:
        retry = open_cookie(config, hello.cookie, peer=peer, now=now, dtls=hello.dtls)
    except DecryptError as error:
        if not hello.dtls:
            raise
        raise IllegalParameter(f"{error} (RFC 9147 §5.1: an invalid cookie)") from None
    # The HRR the client saw, rebuilt from what it echoes (session id, cookie) and the cookie.
    hello_retry_request = build_hello_retry_request(
        hello.legacy_session_id,
        retry.cipher_suite,
        retry.group if retry.key_share_requested else None,
        hello.cookie,
        dtls=hello.dtls,
    )
    return CookieVerified(hello, message, retry, hello_retry_request)


def hello_retry_request_for(
    config: ServerConfig,
    hello: ClientHello,
    raw_hello: bytes,
    *,
    peer: tuple[str, int] | None,
    now: float,
    cookie_payload: bytes = b"",
) -> bytes:
    """The stateless HelloRetryRequest for ClientHello1, with everything to resume in its cookie.

    Always sent, even when the client's key share would do: the point is to make the client prove
    it receives at its address before the server does any expensive work or keeps anything.
    """
    negotiated = negotiate(config, hello)
    if negotiated.group is None and not config.psk_ke:
        # Only a psk_ke handshake could go on, and this server does not make them.
        require_certificate_handshake(hello, negotiated)
    requested_group = group_to_request(config, hello, negotiated)
    state = CookieState(
        issued_at=int(now),
        cipher_suite=negotiated.suite.code,
        # What the HRR asks for, else our group, else 0 (no NamedGroup): a psk_ke handshake.
        group=requested_group if requested_group is not None else negotiated.group or 0,
        key_share_requested=requested_group is not None,
        client_hello_hash=negotiated.suite.digest(raw_hello),
        client_hello_digest=client_hello_digest(hello)[: SHORT_DIGEST_SIZE if hello.dtls else None],
        app_payload=cookie_payload,
    )
    cookie = config.cookie_keys.seal(state, _binding(peer, hello.dtls))
    return build_hello_retry_request(
        hello.legacy_session_id, negotiated.suite.code, requested_group, cookie, dtls=hello.dtls
    )


def _binding(peer: tuple[str, int] | None, dtls: bool) -> bytes:
    """What a cookie is bound to: the client's IP; over DTLS its port too, as the datagram
    "connection" is the address pair (RFC 9147 §5.1 shows the IP; DTLSv1_listen binds both), and
    a tag so that a TLS cookie never opens as a DTLS one nor the reverse."""
    if not dtls:
        return peer_binding(peer)
    port = b"" if peer is None else peer[1].to_bytes(2, "big")
    return b"dtls" + port + peer_binding(peer)


def open_cookie(
    config: ServerConfig,
    cookie: bytes,
    *,
    peer: tuple[str, int] | None,
    now: float,
    dtls: bool = False,
) -> CookieState:
    """Authenticate the cookie for ``peer``, check its age, ask the application, refuse a replay."""
    retry = config.cookie_keys.open(cookie, _binding(peer, dtls))
    check_cookie_age(retry, now, config.cookie_lifetime, config.cookie_clock_skew)
    if config.cookie_verifier is not None:
        refusal = config.cookie_verifier(retry.app_payload, peer)
        if refusal is not None:
            raise AccessDenied(f"cookie refused by the application: {refusal}")
    if config.replay_filter is not None and not config.replay_filter.first_use(cookie, now):
        raise IllegalParameter("cookie already used (replay)")
    return retry
