"""The cryptography behind each negotiated code point, all of it from ``cryptography``.

One table per negotiable thing: cipher suites (AEAD + hash), key-exchange groups, and signature
schemes.  Nothing here knows about messages or state; the handshake asks for what it negotiated.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import (
    ec,
    ed448,
    ed25519,
    mlkem,
    padding,
    rsa,
    x25519,
)
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .alerts import DecryptError, IllegalParameter
from .messages import CipherSuite, NamedGroup, SignatureScheme

if TYPE_CHECKING:
    from hashlib import _Hash as HashObject

# ---------------------------------------------------------------------------------------------
# Cipher suites (RFC 8446 §B.4)

AEAD = AESGCM | ChaCha20Poly1305


@dataclass(frozen=True, slots=True)
class SuiteParams:
    code: CipherSuite  # the code point
    hash_name: str  # hashlib name
    hash_len: int
    hash_block_size: int  # the hash's block, HMAC's B (RFC 2104)
    # hashlib's constructor itself: hashlib.new(name) looks the name up on every call (2.5x
    # the cost of a constructor), and the key schedule makes about 40 hash objects a handshake.
    new_hash: Callable[[bytes], HashObject]
    key_len: int
    aead: Callable[[bytes], AEAD]
    # HKDF-Expand-Label's prefix: "tls13 ", or "dtls13" in DTLS 1.3 (RFC 9147 §5.9), so a DTLS
    # key schedule is the TLS one run over DTLS_SUITES.
    label_prefix: bytes = b"tls13 "

    def digest(self, data: bytes) -> bytes:
        return self.new_hash(data).digest()


SUITES: dict[int, SuiteParams] = {
    CipherSuite.TLS_AES_128_GCM_SHA256: SuiteParams(
        CipherSuite.TLS_AES_128_GCM_SHA256, "sha256", 32, 64, hashlib.sha256, 16, AESGCM
    ),
    CipherSuite.TLS_AES_256_GCM_SHA384: SuiteParams(
        CipherSuite.TLS_AES_256_GCM_SHA384, "sha384", 48, 128, hashlib.sha384, 32, AESGCM
    ),
    CipherSuite.TLS_CHACHA20_POLY1305_SHA256: SuiteParams(
        CipherSuite.TLS_CHACHA20_POLY1305_SHA256, "sha256", 32, 64, hashlib.sha256, 32,
        ChaCha20Poly1305,
    ),
}  # fmt: skip

#: The same suites for DTLS 1.3: every label of their key schedule starts "dtls13" (RFC 9147 §5.9).
DTLS_SUITES: dict[int, SuiteParams] = {
    code: dataclasses.replace(suite, label_prefix=b"dtls13") for code, suite in SUITES.items()
}

# ---------------------------------------------------------------------------------------------
# Key exchange (RFC 8446 §4.2.8; X25519MLKEM768 from draft-ietf-tls-ecdhe-mlkem)


class KeyExchange:
    """One server-side key exchange: given the client's share, produce ours and the secret."""

    def __init__(self, group: NamedGroup, private_key: object | None = None) -> None:
        self.group = group
        self._private_key = private_key  # injected only by tests reproducing a trace

    def respond(self, client_share: bytes) -> tuple[bytes, bytes]:
        """Return (server key_exchange bytes, shared secret); IllegalParameter on a bad share."""
        try:
            if self.group == NamedGroup.x25519:
                return self._x25519(client_share)
            if self.group == NamedGroup.X25519MLKEM768:
                return self._x25519_mlkem768(client_share)
            return self._ecdhe(client_share)
        except ValueError as exc:  # cryptography's verdict on a bad point or key
            raise IllegalParameter(f"invalid {self.group.name} key share: {exc}") from None

    def _x25519(self, client_share: bytes) -> tuple[bytes, bytes]:
        if len(client_share) != 32:
            raise IllegalParameter(f"x25519 key share of {len(client_share)} bytes")
        private = (
            x25519.X25519PrivateKey.generate()
            if self._private_key is None
            else cast(x25519.X25519PrivateKey, self._private_key)
        )
        peer = x25519.X25519PublicKey.from_public_bytes(client_share)
        shared = private.exchange(peer)  # raises ValueError on an all-zero result (RFC 7748 §6.1)
        return private.public_key().public_bytes_raw(), shared

    def _ecdhe(self, client_share: bytes) -> tuple[bytes, bytes]:
        curve: ec.EllipticCurve = (
            ec.SECP256R1() if self.group == NamedGroup.secp256r1 else ec.SECP384R1()
        )
        expected = 1 + 2 * ((curve.key_size + 7) // 8)
        if len(client_share) != expected or client_share[0] != 4:
            raise IllegalParameter(f"{self.group.name} key share is not an uncompressed point")
        peer = ec.EllipticCurvePublicKey.from_encoded_point(curve, client_share)
        private = (
            ec.generate_private_key(curve)
            if self._private_key is None
            else cast(ec.EllipticCurvePrivateKey, self._private_key)
        )
        shared = private.exchange(ec.ECDH(), peer)
        public = private.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        return public, shared

    def _x25519_mlkem768(self, client_share: bytes) -> tuple[bytes, bytes]:
        # Client: ML-KEM-768 encapsulation key (1184) || X25519 (32).
        # Server: ML-KEM-768 ciphertext (1088) || X25519 (32).  Secret: ML-KEM || X25519.
        if len(client_share) != 1184 + 32:
            raise IllegalParameter(f"X25519MLKEM768 key share of {len(client_share)} bytes")
        encapsulation_key = mlkem.MLKEM768PublicKey.from_public_bytes(client_share[:1184])
        mlkem_secret, ciphertext = encapsulation_key.encapsulate()
        x_public, x_secret = self._x25519(client_share[1184:])
        return ciphertext + x_public, mlkem_secret + x_secret


# ---------------------------------------------------------------------------------------------
# Signatures (RFC 8446 §4.2.3, §4.4.3)

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey

# rsae and pss schemes sign alike (PSS, MGF1 with the same hash, salt of the hash's length);
# they differ in the key's type in the certificate (§4.2.3).
_PSS_HASHES: dict[int, type[hashes.HashAlgorithm]] = {
    SignatureScheme.rsa_pss_rsae_sha256: hashes.SHA256,
    SignatureScheme.rsa_pss_rsae_sha384: hashes.SHA384,
    SignatureScheme.rsa_pss_rsae_sha512: hashes.SHA512,
    SignatureScheme.rsa_pss_pss_sha256: hashes.SHA256,
    SignatureScheme.rsa_pss_pss_sha384: hashes.SHA384,
    SignatureScheme.rsa_pss_pss_sha512: hashes.SHA512,
}


def signature_schemes_for(
    key: PrivateKey, *, rsassa_pss: bool = False
) -> tuple[SignatureScheme, ...]:
    """The TLS 1.3 schemes this key can sign with, in our order of preference.

    ``rsassa_pss``: the certificate's key is an id-RSASSA-PSS key, not rsaEncryption, which only
    the rsa_pss_pss_* schemes may name (§4.2.3); clients refuse an rsae signature from it.
    """
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return (SignatureScheme.ed25519,)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if isinstance(key.curve, ec.SECP256R1):
            return (SignatureScheme.ecdsa_secp256r1_sha256,)
        if isinstance(key.curve, ec.SECP384R1):
            return (SignatureScheme.ecdsa_secp384r1_sha384,)
        return ()
    if isinstance(key, rsa.RSAPrivateKey):
        if rsassa_pss:
            return (
                SignatureScheme.rsa_pss_pss_sha256,
                SignatureScheme.rsa_pss_pss_sha384,
                SignatureScheme.rsa_pss_pss_sha512,
            )
        return (
            SignatureScheme.rsa_pss_rsae_sha256,
            SignatureScheme.rsa_pss_rsae_sha384,
            SignatureScheme.rsa_pss_rsae_sha512,
        )
    return ()


_ECDSA: dict[int, ec.ECDSA] = {
    SignatureScheme.ecdsa_secp256r1_sha256: ec.ECDSA(hashes.SHA256()),
    SignatureScheme.ecdsa_secp384r1_sha384: ec.ECDSA(hashes.SHA384()),
}


#: The schemes a client's CertificateVerify may use (§4.2.3, §4.4.3), our order: those we can
#: verify.  Not RSASSA-PKCS1-v1_5 (§4.2.3: never in TLS 1.3 handshake signatures).
VERIFIABLE_SCHEMES: tuple[SignatureScheme, ...] = (
    SignatureScheme.ecdsa_secp256r1_sha256,
    SignatureScheme.ecdsa_secp384r1_sha384,
    SignatureScheme.ecdsa_secp521r1_sha512,
    SignatureScheme.ed25519,
    SignatureScheme.ed448,
    SignatureScheme.rsa_pss_rsae_sha256,
    SignatureScheme.rsa_pss_rsae_sha384,
    SignatureScheme.rsa_pss_rsae_sha512,
    SignatureScheme.rsa_pss_pss_sha256,
    SignatureScheme.rsa_pss_pss_sha384,
    SignatureScheme.rsa_pss_pss_sha512,
)
_ECDSA_CURVES: dict[int, tuple[type[ec.EllipticCurve], ec.ECDSA]] = {
    SignatureScheme.ecdsa_secp256r1_sha256: (ec.SECP256R1, ec.ECDSA(hashes.SHA256())),
    SignatureScheme.ecdsa_secp384r1_sha384: (ec.SECP384R1, ec.ECDSA(hashes.SHA384())),
    SignatureScheme.ecdsa_secp521r1_sha512: (ec.SECP521R1, ec.ECDSA(hashes.SHA512())),
}
_RSASSA_PSS_SCHEMES = frozenset(
    (
        SignatureScheme.rsa_pss_pss_sha256,
        SignatureScheme.rsa_pss_pss_sha384,
        SignatureScheme.rsa_pss_pss_sha512,
    )
)


def verify(
    key: CertificatePublicKeyTypes, scheme: int, data: bytes, signature: bytes, *, rsassa_pss: bool
) -> None:
    """Check a peer's signature with ``scheme`` (one of VERIFIABLE_SCHEMES): illegal_parameter
    if the scheme does not fit the certificate's key (§4.2.3: the ECDSA schemes name the curve,
    rsa_pss_pss the RSASSA-PSS key type), decrypt_error if the signature is wrong (§4.4.3)."""
    try:
        if scheme in _ECDSA_CURVES:
            curve, ecdsa = _ECDSA_CURVES[scheme]
            if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, curve):
                raise IllegalParameter(f"scheme 0x{scheme:04x} does not fit the certificate's key")
            key.verify(signature, data, ecdsa)
        elif (scheme == SignatureScheme.ed25519 and isinstance(key, ed25519.Ed25519PublicKey)) or (
            scheme == SignatureScheme.ed448 and isinstance(key, ed448.Ed448PublicKey)
        ):
            key.verify(signature, data)
        elif (
            scheme in _PSS_HASHES
            and isinstance(key, rsa.RSAPublicKey)
            and (scheme in _RSASSA_PSS_SCHEMES) == rsassa_pss
        ):
            hash_type = _PSS_HASHES[scheme]
            key.verify(
                signature,
                data,
                padding.PSS(mgf=padding.MGF1(hash_type()), salt_length=hash_type().digest_size),
                hash_type(),
            )
        else:
            raise IllegalParameter(f"scheme 0x{scheme:04x} does not fit the certificate's key")
    except InvalidSignature:
        raise DecryptError("the CertificateVerify signature does not verify") from None


def sign(key: PrivateKey, scheme: int, data: bytes) -> bytes:
    """Sign with ``scheme``, one of ``signature_schemes_for(key)`` (negotiation picks it so).

    Dispatches on the scheme, not on the key's type: isinstance against cryptography's abstract
    key classes costs more than a dict lookup, once per handshake.
    """
    if scheme == SignatureScheme.ed25519:
        return cast(ed25519.Ed25519PrivateKey, key).sign(data)
    ecdsa = _ECDSA.get(scheme)
    if ecdsa is not None:
        return cast(ec.EllipticCurvePrivateKey, key).sign(data, ecdsa)
    hash_type = _PSS_HASHES[scheme]
    key = cast(rsa.RSAPrivateKey, key)
    return key.sign(
        data,
        padding.PSS(mgf=padding.MGF1(hash_type()), salt_length=padding.PSS.DIGEST_LENGTH),
        hash_type(),
    )
