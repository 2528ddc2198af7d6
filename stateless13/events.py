"""Events a :class:`~stateless13.ServerConnection` reports, h11-style: frozen dataclasses."""

from __future__ import annotations

from dataclasses import dataclass

from .alerts import AlertDescription, AlertLevel, DecodeError, alert_description
from .client_auth import ClientCertificate
from .messages import CipherSuite, NamedGroup, SignatureScheme


@dataclass(frozen=True, slots=True)
class HandshakeComplete:
    cipher_suite: CipherSuite
    group: NamedGroup | None  #: None: a psk_ke handshake (ServerConfig.psk_ke), no key exchange
    signature_scheme: SignatureScheme | None  #: None when a PSK authenticated us: no certificate
    alpn_protocol: str | None
    server_name: str | None
    hello_retry: bool  #: a HelloRetryRequest was part of this handshake
    cookie_verified: bool  #: the handshake resumed from a stateless cookie
    cookie_payload: bytes | None  #: the application's bytes carried in that cookie
    resumed: bool = False  #: the client resumed a session with one of our tickets (a PSK)
    early_data: bool = False  #: its 0-RTT data was accepted (it came as EarlyData events)
    #: The external PSK (ServerConfig.external_psks) the client authenticated with, in this
    #: handshake or in the one whose ticket it resumed; None otherwise.
    psk_identity: bytes | None = None
    #: The certificate the client authenticated with (ServerConfig.client_auth), in this
    #: handshake or in the one whose ticket it resumed; None otherwise.
    client_certificate: ClientCertificate | None = None

    @property
    def key_exchange(self) -> str:
        """The group's name, or what a psk_ke handshake had instead, for people to read."""
        return "no key exchange (psk_ke)" if self.group is None else self.group.name


@dataclass(frozen=True, slots=True)
class ClientAuthenticated:
    """The client answered ``ServerConnection.request_client_certificate`` (RFC 8446 §4.6.2):
    with this certificate, verified and accepted, or None (it declined, and the request's
    ClientAuth allowed that)."""

    certificate: ClientCertificate | None


@dataclass(frozen=True, slots=True)
class ApplicationData:
    data: bytes


@dataclass(frozen=True, slots=True)
class EarlyData:
    """0-RTT data (RFC 8446 §2.3), before the handshake completes: the client sent it with its
    ClientHello, and an attacker may have replayed it (§8: our anti-replay makes that unlikely,
    not impossible): act on it only if doing so twice is harmless."""

    data: bytes


@dataclass(frozen=True, slots=True)
class AlertReceived:
    """The peer sent an alert other than close_notify; fatal ones end the connection."""

    #: The alert's number, comparable with AlertDescription's members (the compiled build gives
    #: a plain int: mypyc stores an IntEnum member as its int).
    description: int
    fatal: bool

    @property
    def name(self) -> str:
        """The alert's name (``illegal_parameter``), or its number if it is not one we know."""
        try:
            return AlertDescription(self.description).name
        except ValueError:
            return str(self.description)


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer is done: ``clean`` if it sent close_notify, False on a bare end of stream."""

    clean: bool


def alert_event(data: bytes) -> AlertReceived | ConnectionClosed:
    """The event a received alert record's content is (RFC 8446 §6): close_notify a clean close;
    user_canceled at warning level a warning (close_notify follows, §6.1); any other alert
    fatal, whatever its level says.  DecodeError if it is not two bytes."""
    if len(data) != 2:
        raise DecodeError(f"alert of {len(data)} bytes")
    level, description = data
    if description == AlertDescription.close_notify:
        return ConnectionClosed(clean=True)
    fatal = not (description == AlertDescription.user_canceled and level == AlertLevel.warning)
    return AlertReceived(alert_description(description), fatal=fatal)


Event = (
    HandshakeComplete
    | ApplicationData
    | EarlyData
    | ClientAuthenticated
    | AlertReceived
    | ConnectionClosed
)
