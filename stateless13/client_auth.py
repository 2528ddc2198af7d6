"""Client authentication (RFC 8446 §4.3.2, §4.4.2, §4.4.3): what the server asks for, and how it
judges the certificate the client answers with.

Path building and validation are cryptography's (``x509.verification``: RFC 5280 with the Web
PKI's rules for client certificates, as OpenSSL and Go apply them), never written here.  This
module maps its verdicts onto the RFC's alerts and gives the application the last word
(``ClientAuth.verify_callback``, OpenSSL's ``SSL_CTX_set_verify`` callback, Go's
``VerifyPeerCertificate``).  The handshake calls it (handshake.py), every transport alike.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import PublicKeyAlgorithmOID
from cryptography.x509.verification import (
    ClientVerifier,
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from .alerts import (
    AccessDenied,
    BadCertificate,
    CertificateExpired,
    LocalProtocolError,
    UnknownCa,
    UnsupportedCertificate,
    UnsupportedExtension,
)
from .messages import (
    CertificateRequest,
    Extensions,
    ExtensionType,
    SignatureScheme,
    certificate_authorities_body,
    push_certificate_request,
    signature_algorithms_body,
)
from .primitives import VERIFIABLE_SCHEMES

#: What our CertificateRequest's signature_algorithms lists: the schemes we verify a
#: CertificateVerify with, then RSASSA-PKCS1-v1_5, for the signatures in the certificates only
#: (§4.2.3: it also speaks for them without signature_algorithms_cert; CAs sign with it, and a
#: client such as GnuTLS withholds a chain whose signatures the list leaves out).  A
#: CertificateVerify with it is illegal_parameter.
REQUESTED_SCHEMES: tuple[SignatureScheme, ...] = (
    *VERIFIABLE_SCHEMES,
    SignatureScheme.rsa_pkcs1_sha256,
    SignatureScheme.rsa_pkcs1_sha384,
    SignatureScheme.rsa_pkcs1_sha512,
)
#: Certificates a client's chain may hold, its leaf included: each costs a parse, and a real
#: chain has two or three.
MAX_CLIENT_CHAIN = 10

_DER = serialization.Encoding.DER


@dataclass(frozen=True, slots=True)
class ClientCertificate:
    """The client's certificate, as the server judged it: what the application is told."""

    #: DER, leaf first, as the client sent them.
    chain: tuple[bytes, ...]
    #: DER, from the leaf to the trust anchor that vouched for it; empty when it was not
    #: verified here: a ``ClientAuth`` without trust anchors (its callback judged), or a session
    #: resumed from a ticket (which carries the leaf only, verified when the ticket was issued).
    verified_chain: tuple[bytes, ...]

    @property
    def certificate(self) -> x509.Certificate:
        """The leaf, parsed."""
        return x509.load_der_x509_certificate(self.chain[0])

    @property
    def subject(self) -> str:
        """The leaf's subject as RFC 4514 text, e.g. ``CN=alice,O=Example``."""
        return self.certificate.subject.rfc4514_string()


#: The application's last word on a client certificate, called once the client proved it holds
#: the key (its CertificateVerify verified) and, with trust anchors, once its chain validated:
#: None accepts; a reason (str) refuses with access_denied.
ClientVerifyCallback = Callable[[ClientCertificate], "str | None"]

_SUPPORTED_KEYS = (
    ec.EllipticCurvePublicKey,
    ed25519.Ed25519PublicKey,
    ed448.Ed448PublicKey,
    rsa.RSAPublicKey,
)


@dataclass(frozen=True)
class ClientAuth:
    """Ask clients for a certificate, and how to judge it (``ServerConfig.client_auth``).

    ``post_handshake_only``: never in the handshake, only when the application asks
    (``ServerConnection.request_client_certificate``, §4.6.2; OpenSSL's
    SSL_VERIFY_POST_HANDSHAKE), for the clients that offered post-handshake authentication.

    ``trust_anchors`` (DER certificates) are the CAs, or self-signed client certificates, a
    client's chain must lead to; with none, no chain is validated and ``verify_callback`` alone
    decides (it is then required: pinning by fingerprint, say).  ``required``: a client that
    sends no certificate gets certificate_required (§4.4.2.4); otherwise its handshake goes on
    unauthenticated.  ``certificate_authorities``: name the trust anchors in the request
    (§4.2.4), so that a client with several certificates picks one they issued.

    Only handshakes authenticated by a certificate ask (§4.3.2: never one resumed or made with an
    external PSK); a resumed session reports the client certificate of the session it resumes.
    """

    trust_anchors: tuple[bytes, ...] = ()
    required: bool = True
    verify_callback: ClientVerifyCallback | None = None
    certificate_authorities: bool = True
    post_handshake_only: bool = False
    #: The CertificateRequest of a handshake (empty context), the same bytes every time.
    certificate_request: bytes = field(init=False, repr=False)
    _store: Store | None = field(init=False, repr=False)
    _authority_names: tuple[bytes, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.trust_anchors and self.verify_callback is None:
            raise LocalProtocolError("ClientAuth needs trust anchors or a verify_callback")
        anchors = []
        for der in self.trust_anchors:
            try:
                anchors.append(x509.load_der_x509_certificate(der))
            except ValueError:
                raise LocalProtocolError("a trust anchor is not a DER certificate") from None
        object.__setattr__(self, "_store", Store(anchors) if anchors else None)
        names = tuple(a.subject.public_bytes() for a in anchors)
        object.__setattr__(self, "_authority_names", names if self.certificate_authorities else ())
        try:
            object.__setattr__(self, "certificate_request", self.request(b""))
        except OverflowError:
            raise LocalProtocolError(
                "the trust anchors' names overflow a CertificateRequest"
            ) from None

    @classmethod
    def from_pem(
        cls,
        cafile: str | os.PathLike[str] | None = None,
        *,
        capath: str | os.PathLike[str] | None = None,
        required: bool = True,
        verify_callback: ClientVerifyCallback | None = None,
        certificate_authorities: bool = True,
        post_handshake_only: bool = False,
    ) -> ClientAuth:
        """Trust anchors from a PEM file and/or every PEM file of a directory (as
        ``SSLContext.load_verify_locations``); OSError or LocalProtocolError if unusable."""
        files = [Path(cafile)] if cafile is not None else []
        if capath is not None:
            files += sorted(p for p in Path(capath).iterdir() if p.is_file())
        anchors: list[bytes] = []
        for path in files:
            try:
                certificates = x509.load_pem_x509_certificates(path.read_bytes())
            except ValueError:
                raise LocalProtocolError(f"{path}: no PEM certificate in it") from None
            anchors += [c.public_bytes(_DER) for c in certificates]
        if not anchors:
            raise LocalProtocolError("no trust anchor found")
        return cls(
            tuple(anchors), required, verify_callback, certificate_authorities, post_handshake_only
        )

    def request(self, context: bytes) -> bytes:
        """A CertificateRequest message with ``context`` (§4.3.2)."""
        extensions: Extensions = (
            (ExtensionType.signature_algorithms, signature_algorithms_body(REQUESTED_SCHEMES)),
        )
        if self._authority_names:
            body = certificate_authorities_body(self._authority_names)
            extensions += ((ExtensionType.certificate_authorities, body),)
        return push_certificate_request(CertificateRequest(context, extensions))

    def judge(
        self, entries: tuple[tuple[bytes, Extensions], ...], now: float
    ) -> tuple[ClientCertificate, x509.Certificate]:
        """The client's non-empty certificate_list, validated at ``now`` (seconds since the
        epoch): the certificate and its parsed leaf, or the alert for what is wrong."""
        if len(entries) > MAX_CLIENT_CHAIN:
            raise BadCertificate(f"a chain of {len(entries)} certificates (at most 10)")
        for _, extensions in entries:
            if extensions:  # §4.2: we asked for none (no status_request, no SCT)
                raise UnsupportedExtension("extensions in a client CertificateEntry")
        chain = tuple(der for der, _ in entries)
        try:
            certificates = [x509.load_der_x509_certificate(der) for der in chain]
        except ValueError:
            raise BadCertificate("a certificate of the chain does not parse") from None
        leaf = certificates[0]
        try:
            key = leaf.public_key()
        except (ValueError, UnsupportedAlgorithm):
            raise UnsupportedCertificate("the certificate's key is of no known type") from None
        if not isinstance(key, _SUPPORTED_KEYS):
            raise UnsupportedCertificate(f"a {type(key).__name__} cannot sign for TLS 1.3")
        verified: tuple[bytes, ...] = ()
        if self._store is not None:
            at = datetime.datetime.fromtimestamp(now, datetime.UTC)
            try:
                path = _verifier(self._store, at).verify(leaf, certificates[1:])
            except VerificationError as error:
                raise _alert_for(error) from None
            verified = tuple(c.public_bytes(_DER) for c in path.chain)
        return ClientCertificate(chain, verified), leaf

    def accept(self, certificate: ClientCertificate) -> None:
        """The application's word, once the client proved it holds the key."""
        if self.verify_callback is not None:
            refusal = self.verify_callback(certificate)
            if refusal is not None:
                raise AccessDenied(f"client certificate refused by the application: {refusal}")


def is_rsassa_pss(certificate: x509.Certificate) -> bool:
    """An id-RSASSA-PSS key, which only the rsa_pss_pss schemes may sign with (§4.2.3)."""
    return certificate.public_key_algorithm_oid == PublicKeyAlgorithmOID.RSASSA_PSS


def _verifier(store: Store, at: datetime.datetime) -> ClientVerifier:
    # As OpenSSL (Python's ssl) and Go judge a client certificate, not as the Web PKI judges a
    # server's: it need not name anything (no subjectAltName required), and it may be a CA
    # certificate (`openssl req -x509` makes one by default: a self-signed client certificate
    # trusted as its own anchor often is).  It must still lead to a trust anchor.
    end_entity = (
        ExtensionPolicy.webpki_defaults_ee()
        .may_be_present(x509.SubjectAlternativeName, Criticality.AGNOSTIC, None)
        .may_be_present(x509.BasicConstraints, Criticality.AGNOSTIC, None)
    )
    return (
        PolicyBuilder()
        .store(store)
        .time(at)
        .max_chain_depth(MAX_CLIENT_CHAIN)
        .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=end_entity)
        .build_client_verifier()
    )


def _alert_for(error: VerificationError) -> BadCertificate | CertificateExpired | UnknownCa:
    """cryptography says what failed in words; the RFC's alerts (§6.2) say it in codes."""
    reason = str(error)
    if "not valid at validation time" in reason:
        return CertificateExpired(f"client certificate: {reason}")
    if "candidates exhausted" in reason:
        return UnknownCa(f"client certificate: no chain to a trust anchor ({reason})")
    return BadCertificate(f"client certificate: {reason}")
