"""Alerts and the typed errors that carry them (RFC 8446 §6).

Every check that fails raises a subclass of :class:`AlertError` at the place it fails, with a
reason for humans; the class says which alert goes on the wire.  Misuse of the API by the
application raises :class:`LocalProtocolError` instead, which never sends anything.
"""

from __future__ import annotations

from enum import IntEnum
from typing import ClassVar


class AlertLevel(IntEnum):
    warning = 1
    fatal = 2


class AlertDescription(IntEnum):
    close_notify = 0
    unexpected_message = 10
    bad_record_mac = 20
    record_overflow = 22
    handshake_failure = 40
    bad_certificate = 42
    unsupported_certificate = 43
    certificate_revoked = 44
    certificate_expired = 45
    certificate_unknown = 46
    illegal_parameter = 47
    unknown_ca = 48
    access_denied = 49
    decode_error = 50
    decrypt_error = 51
    protocol_version = 70
    insufficient_security = 71
    internal_error = 80
    inappropriate_fallback = 86
    user_canceled = 90
    missing_extension = 109
    unsupported_extension = 110
    unrecognized_name = 112
    bad_certificate_status_response = 113
    unknown_psk_identity = 115
    certificate_required = 116
    no_application_protocol = 120


def alert_description(value: int) -> AlertDescription | int:
    """A received alert's description: the enum member, or the number if we do not know it."""
    try:
        return AlertDescription(value)
    except ValueError:
        return value


class TLSError(Exception):
    """Base of every error this library raises on purpose."""


class LocalProtocolError(TLSError, ValueError):
    """The application used the API wrongly: ``send`` before the handshake, a configuration
    that cannot work, a cookie payload over its limit.  Never sends anything.  Also a
    ``ValueError``, as a bad argument is."""


class AlertError(TLSError):
    """The peer broke the protocol; ``description`` is the alert we send, ``reason`` says why."""

    description: ClassVar[AlertDescription] = AlertDescription.internal_error

    def __init__(self, reason: str) -> None:
        super().__init__(f"{self.description.name}: {reason}")
        self.reason = reason


class UnexpectedMessage(AlertError):
    description = AlertDescription.unexpected_message


class BadRecordMac(AlertError):
    description = AlertDescription.bad_record_mac


class RecordOverflow(AlertError):
    description = AlertDescription.record_overflow


class HandshakeFailure(AlertError):
    description = AlertDescription.handshake_failure


class IllegalParameter(AlertError):
    description = AlertDescription.illegal_parameter


class AccessDenied(AlertError):
    description = AlertDescription.access_denied


class BadCertificate(AlertError):
    description = AlertDescription.bad_certificate


class UnsupportedCertificate(AlertError):
    description = AlertDescription.unsupported_certificate


class CertificateExpired(AlertError):
    description = AlertDescription.certificate_expired


class UnknownCa(AlertError):
    description = AlertDescription.unknown_ca


class CertificateRequired(AlertError):
    description = AlertDescription.certificate_required


class UnsupportedExtension(AlertError):
    description = AlertDescription.unsupported_extension


class UnrecognizedName(AlertError):
    description = AlertDescription.unrecognized_name


class DecodeError(AlertError):
    description = AlertDescription.decode_error


class DecryptError(AlertError):
    description = AlertDescription.decrypt_error


class ProtocolVersion(AlertError):
    description = AlertDescription.protocol_version


class MissingExtension(AlertError):
    description = AlertDescription.missing_extension


class NoApplicationProtocol(AlertError):
    description = AlertDescription.no_application_protocol
