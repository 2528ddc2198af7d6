"""A small PKI for client-certificate tests: a root CA, an intermediate, and client certificates
good and bad, made with cryptography's builder (the tests' own, never the server's code).

``Pki.make(tmp_path)`` writes each as PEM files (the leaf's chain file holds the leaf then the
intermediate, as clients send it), so that real peers (``-cert``/``-key``, ``load_cert_chain``)
and in-memory clients use the same certificates.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Key = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
NOW = datetime.datetime.now(datetime.UTC)
DAY = datetime.timedelta(days=1)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "stateless13 tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _certificate(
    subject: str,
    key: Key,
    issuer: tuple[x509.Certificate, Key] | None,
    *,
    ca: bool,
    valid: tuple[datetime.datetime, datetime.datetime] = (NOW - DAY, NOW + 30 * DAY),
    client_auth: bool = True,
) -> x509.Certificate:
    if issuer is None:  # self-signed
        issuer_name, issuer_key = _name(subject), key
    else:
        issuer_name, issuer_key = issuer[0].subject, issuer[1]
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
    else:
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client_auth else ExtendedKeyUsageOID.SERVER_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    algorithm = None if isinstance(issuer_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(issuer_key, algorithm)


def _pem(*certificates: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)


def _key_pem(key: Key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass
class ClientIdentity:
    """A client certificate and its key, as PEM files: ``chain`` is leaf + intermediate."""

    name: str
    certificate: x509.Certificate
    chain: Path
    key: Path

    @property
    def subject(self) -> str:
        return self.certificate.subject.rfc4514_string()


@dataclass
class Pki:
    root: x509.Certificate
    ca_file: Path  # the root alone: what the server trusts
    good: ClientIdentity  # ECDSA P-256, issued by the intermediate
    rsa: ClientIdentity  # RSA 2048, issued by the intermediate
    expired: ClientIdentity
    not_for_clients: ClientIdentity  # extendedKeyUsage serverAuth only
    untrusted: ClientIdentity  # a chain to another root

    @classmethod
    def make(cls, directory: Path) -> Pki:
        directory.mkdir(parents=True, exist_ok=True)
        root_key = ec.generate_private_key(ec.SECP256R1())
        root = _certificate("Test Root CA", root_key, None, ca=True)
        intermediate_key = ec.generate_private_key(ec.SECP256R1())
        intermediate = _certificate(
            "Test Intermediate", intermediate_key, (root, root_key), ca=True
        )
        other_key = ec.generate_private_key(ec.SECP256R1())
        other_root = _certificate("Other Root CA", other_key, None, ca=True)
        ca_file = directory / "client-ca.pem"
        ca_file.write_bytes(_pem(root))

        def identity(
            name: str,
            key: Key,
            issuer: tuple[x509.Certificate, Key] = (intermediate, intermediate_key),
            **options: object,
        ) -> ClientIdentity:
            leaf = _certificate(name, key, issuer, ca=False, **options)  # type: ignore[arg-type]
            chain = directory / f"{name}.chain.pem"
            links = (leaf, issuer[0]) if issuer[0] is not other_root else (leaf,)
            chain.write_bytes(_pem(*links))
            key_path = directory / f"{name}.key"
            key_path.write_bytes(_key_pem(key))
            return ClientIdentity(name, leaf, chain, key_path)

        def p256() -> ec.EllipticCurvePrivateKey:
            return ec.generate_private_key(ec.SECP256R1())

        return cls(
            root=root,
            ca_file=ca_file,
            good=identity("alice", p256()),
            rsa=identity("bob-rsa", rsa.generate_private_key(65537, 2048)),
            expired=identity("expired", p256(), valid=(NOW - 30 * DAY, NOW - DAY)),
            not_for_clients=identity("server-only", p256(), client_auth=False),
            untrusted=identity("mallory", p256(), (other_root, other_key)),
        )
