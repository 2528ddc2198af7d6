"""aioquic's ``serve()`` on stateless13: the same call, our TLS, the stateless first Initial.

An aioquic server changes one line, and keeps its ``QuicConfiguration`` and its
``QuicConnectionProtocol`` subclass (HTTP/3 through ``H3Connection``, or raw QUIC) as they are::

    from aioquic.asyncio import serve                          # before
    from stateless13.transports.aioquic_serve import serve     # after

    server = await serve("::", 4433, configuration=configuration,
                         create_protocol=HttpServerProtocol)

:func:`serve` reads the ``QuicConfiguration`` as aioquic does (what it honours, what it cannot,
and what it adds are in its docstring and in docs/QUIC.md, "Drop-in for aioquic's serve()"), and
runs ``quic_server``'s :class:`~.quic_server.QuicServer`: the stateless front answers a new
client's first Initial (a HelloRetryRequest whose cookie carries the connection, or a Retry),
then the user's protocol gets the connection and the same events aioquic gives it.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from aioquic.asyncio.protocol import QuicConnectionProtocol, QuicStreamHandler
from aioquic.quic.configuration import QuicConfiguration
from aioquic.tls import SessionTicketFetcher, SessionTicketHandler
from cryptography.hazmat.primitives.serialization import Encoding

from stateless13 import CipherSuite, Credential, LocalProtocolError, ServerConfig

from .common import ConnectionReport, Validation
from .quic_front import QuicOptions
from .quic_server import QuicServer, serve_quic
from .quic_tokens import SERVER_CID_LENGTH

#: aioquic's default ``QuicConfiguration.connection_id_length``.
_AIOQUIC_CID_LENGTH = 8


class SettingNotHonoured(UserWarning):
    """An aioquic setting this server cannot honour; the message says what happens instead."""


def server_config(configuration: QuicConfiguration, **options: Any) -> ServerConfig:
    """Our TLS settings from an aioquic server's ``QuicConfiguration``.

    Its certificate, chain and private key become the :class:`~stateless13.Credential`;
    ``alpn_protocols`` ours (QUIC needs one, RFC 9001 §8.1: an empty list is refused);
    ``cipher_suites``, if set, ours (else our defaults); ``secrets_log_file`` our key log, in
    NSS format (``ServerConfig.keylog``).  ``options``: any other ``ServerConfig`` field
    (``cookie_keys`` and ``ticket_keys`` shared by a fleet, ``groups``, ``tickets``,
    ``client_auth``...); one the configuration sets is refused with LocalProtocolError.
    """
    if configuration.is_client:
        raise LocalProtocolError("a server needs QuicConfiguration(is_client=False)")
    if configuration.certificate is None or configuration.private_key is None:
        raise LocalProtocolError(
            "the QuicConfiguration has no certificate or private key (load_cert_chain)"
        )
    if not configuration.alpn_protocols:
        raise LocalProtocolError(
            "QuicConfiguration.alpn_protocols is empty: QUIC needs ALPN (RFC 9001 §8.1)"
        )
    chain = [configuration.certificate, *configuration.certificate_chain]
    derived: dict[str, Any] = {
        "credentials": (
            Credential(
                certificate_chain=tuple(c.public_bytes(Encoding.DER) for c in chain),
                private_key=configuration.private_key,
            ),
        ),
        "alpn_protocols": tuple(p.encode("ascii") for p in configuration.alpn_protocols),
    }
    if configuration.cipher_suites:
        try:
            suites = tuple(CipherSuite(int(s)) for s in configuration.cipher_suites)
        except ValueError as error:
            raise LocalProtocolError(f"QuicConfiguration.cipher_suites: {error}") from None
        derived["cipher_suites"] = suites
    if configuration.secrets_log_file is not None:
        derived["keylog"] = _secrets_log(configuration.secrets_log_file)
    clash = sorted(derived.keys() & options.keys())
    if clash:
        raise LocalProtocolError(f"{', '.join(clash)}: set by the QuicConfiguration already")
    return ServerConfig(**derived, **options)


def _secrets_log(file: TextIO) -> Callable[[str], None]:
    """Our key log into aioquic's ``secrets_log_file``: a line per secret, flushed, as aioquic."""

    def write(line: str) -> None:
        file.write(line + "\n")
        file.flush()

    return write


def connection_configuration(configuration: QuicConfiguration) -> QuicConfiguration:
    """What our connections run with: a copy of the caller's configuration with our connection IDs
    (``SERVER_CID_LENGTH`` bytes: they carry the client's first one through the stateless HRR)
    and no ``secrets_log_file`` (our TLS writes the key log: :func:`server_config`)."""
    return dataclasses.replace(
        configuration, connection_id_length=SERVER_CID_LENGTH, secrets_log_file=None
    )


def _validation(retry: bool, validation: Validation | str | None) -> Validation:
    if validation is None:
        return Validation.RETRY if retry else Validation.HRR
    chosen = Validation.parse(validation, tuple(Validation))
    if retry and chosen not in (Validation.RETRY, Validation.BOTH):
        raise LocalProtocolError(f"retry=True asks for a Retry, validation={chosen.value!r} not")
    return chosen


def _warn_not_honoured(
    configuration: QuicConfiguration,
    session_ticket_fetcher: SessionTicketFetcher | None,
    session_ticket_handler: SessionTicketHandler | None,
) -> None:
    if session_ticket_fetcher is not None or session_ticket_handler is not None:
        warnings.warn(
            "session_ticket_fetcher and session_ticket_handler are never called: stateless13's "
            "session tickets are sealed by ServerConfig.ticket_keys and need no store; clients "
            "resume with them, in 0-RTT only with tls_options={'early_data': 1}",
            SettingNotHonoured,
            stacklevel=3,
        )
    if configuration.connection_id_length not in (_AIOQUIC_CID_LENGTH, SERVER_CID_LENGTH):
        warnings.warn(
            f"connection_id_length={configuration.connection_id_length}: this server's connection"
            f" IDs are always {SERVER_CID_LENGTH} bytes (they carry the client's first one"
            " through the stateless HRR)",
            SettingNotHonoured,
            stacklevel=3,
        )


async def serve(
    host: str,
    port: int,
    *,
    configuration: QuicConfiguration,
    create_protocol: Callable[..., QuicConnectionProtocol] = QuicConnectionProtocol,
    session_ticket_fetcher: SessionTicketFetcher | None = None,
    session_ticket_handler: SessionTicketHandler | None = None,
    retry: bool = False,
    stream_handler: QuicStreamHandler | None = None,
    validation: Validation | str | None = None,
    options: QuicOptions | None = None,
    on_report: Callable[[ConnectionReport], None] | None = None,
    tls_options: Mapping[str, Any] | None = None,
) -> QuicServer:
    """Start a QUIC server at ``host``:``port``, as ``aioquic.asyncio.serve`` does, with
    stateless13's TLS in place of aioquic's and its stateless front before each connection.

    aioquic's arguments keep their meaning:

    * ``configuration``: a server ``QuicConfiguration`` with a certificate and private key
      (``load_cert_chain``) and ``alpn_protocols``.  Honoured: the certificate, its chain and key
      (our ``Credential``), ``alpn_protocols``, ``cipher_suites`` (ours by default),
      ``secrets_log_file`` (written by our TLS, NSS format, EXPORTER_SECRET too),
      ``supported_versions`` (the front's too), and everything the connection itself reads:
      ``idle_timeout``, ``max_datagram_size``, ``max_data``, ``max_stream_data``,
      ``max_datagram_frame_size``, ``congestion_control_algorithm``, ``initial_rtt`` and
      ``quic_logger`` (qlog: a connection's trace starts when the connection does, so the
      front's stateless replies, HRR or Retry, are in ``server.stats``, not in qlog).
      ``connection_id_length`` cannot be honoured: our connection IDs are 20 bytes (a warning
      if it is neither aioquic's default nor 20).  ``server_name``, ``session_ticket``,
      ``token``, ``original_version``, ``quantum_readiness_test``, and ``verify_mode`` and the
      CA fields, are a client's: aioquic's server does not read them either (it never asks
      for a client certificate; ours does with ``tls_options={"client_auth": ClientAuth(...)}``).
    * ``create_protocol``: the user's ``QuicConnectionProtocol`` subclass (or factory), called
      as aioquic calls it, ``create_protocol(connection, stream_handler=stream_handler)``; it
      gets the same events (``ProtocolNegotiated``, ``HandshakeCompleted``,
      ``StreamDataReceived``, ...).  The connection is a ``StatelessQuicConnection``.
    * ``session_ticket_fetcher``, ``session_ticket_handler``: cannot be honoured (a
      :class:`SettingNotHonoured` warning): our tickets are sealed, stateless
      (``ServerConfig.tickets``, ``ticket_keys``), so there is no store to call; clients
      resume with them, in 0-RTT only with ``tls_options={"early_data": 1}`` (aioquic's server
      accepts 0-RTT whenever its store holds the ticket; early data can be replayed).
    * ``retry=True``: a Retry first, then an ordinary handshake (``Validation.RETRY``), as
      aioquic.  ``retry=False`` (the default): the stateless HelloRetryRequest
      (``Validation.HRR``), where aioquic validates nothing.  aioquic's own client cannot go
      past a HelloRetryRequest (it aborts the handshake): serve it with ``retry=True``, or
      ``validation="adaptive"`` or ``"none"``.
    * ``stream_handler``: passed to ``create_protocol``, as aioquic does.

    Added, all optional: ``validation`` (any :class:`Validation`; ``retry=True`` allows only
    ``"retry"`` and ``"both"``), ``options`` (:class:`QuicOptions`: limits, the handshake
    timeout; its ``idle_timeout`` and ``supported_versions`` come from ``configuration``),
    ``on_report`` (one :class:`ConnectionReport` per connection: ``validation``,
    ``hello_retry``, ``cookie_verified``, our ``HandshakeComplete``; also logged on the
    ``stateless13.server`` logger) and ``tls_options`` (more ``ServerConfig`` fields:
    :func:`server_config`).

    Returns our :class:`QuicServer`: ``close()`` as aioquic's, and ``address``, ``stats``,
    ``connections``, ``wait_closed()``.  LocalProtocolError for a configuration we cannot serve.
    """
    config = server_config(configuration, **(tls_options or {}))
    chosen = _validation(retry, validation)
    _warn_not_honoured(configuration, session_ticket_fetcher, session_ticket_handler)
    options = dataclasses.replace(
        options or QuicOptions(),
        idle_timeout=configuration.idle_timeout,
        supported_versions=tuple(configuration.supported_versions),
    )
    return await serve_quic(
        config,
        host,
        port,
        validation=chosen,
        options=options,
        create_protocol=functools.partial(create_protocol, stream_handler=stream_handler),
        on_report=on_report,
        configuration=connection_configuration(configuration),
    )


__all__ = [
    "SettingNotHonoured",
    "connection_configuration",
    "serve",
    "server_config",
]
