"""Server configuration: immutable, shared by connections, threads and (via key bytes) processes."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID, PublicKeyAlgorithmOID

from .alerts import LocalProtocolError
from .client_auth import ClientAuth
from .cookie import CookieKeyRing
from .messages import (
    MAX_HANDSHAKE_MESSAGE_SIZE,
    Certificate,
    CipherSuite,
    NamedGroup,
    SignatureScheme,
    push_certificate,
)
from .primitives import PrivateKey, signature_schemes_for
from .replay import ReplayFilter, ReplayStore
from .ticket import MAX_LIFETIME as MAX_TICKET_LIFETIME

#: Called with (app_payload, peer) when a cookie has been authenticated; return None to accept or
#: a reason (str) to refuse the ClientHello with an access_denied alert.
CookieVerifier = Callable[[bytes, "tuple[str, int] | None"], "str | None"]
#: Called with the server name a client asked for (None: no SNI), for every ClientHello: the
#: credentials to choose from (then by the client's signature algorithms), or None for the
#: choice by ``Credential.server_names`` (as ``ssl.SSLContext.sni_callback``).
SniCallback = Callable[["str | None"], "tuple[Credential, ...] | None"]


@dataclass(frozen=True)
class Credential:
    """A certificate chain (DER, leaf first) and the leaf's private key.

    ``server_names``: the names (lowercase host names, or wildcards ``*.example.com`` for one
    label, RFC 6125 §6.4.3) a client asking for them by SNI gets this credential for; by
    default, the leaf's subjectAltName DNS names.  ``()``: none, a fallback credential only.
    """

    certificate_chain: tuple[bytes, ...]
    private_key: PrivateKey
    server_names: tuple[str, ...] | None = None
    #: The TLS 1.3 schemes the key signs with, best first (from the key, once: negotiation reads
    #: it on every ClientHello).
    signature_schemes: tuple[SignatureScheme, ...] = field(init=False)
    #: The Certificate handshake message (§4.4.2) for this chain: the same bytes in every
    #: handshake (no request context, no per-certificate extensions), so encoded once.
    certificate_message: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.certificate_chain:
            raise LocalProtocolError("a Credential needs at least one certificate")
        leaf = x509.load_der_x509_certificate(self.certificate_chain[0])
        if leaf.public_key() != self.private_key.public_key():
            raise LocalProtocolError("the private key does not belong to the first certificate")
        if self.server_names is None:
            try:
                alternative = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
                names = tuple(alternative.value.get_values_for_type(x509.DNSName))
            except x509.ExtensionNotFound:
                names = ()
            object.__setattr__(self, "server_names", names)
        names = tuple(name.lower().rstrip(".") for name in self.server_names or ())
        for name in names:
            # A wildcard stands for one label under a parent of two labels at least (*.com: no).
            parent = name.removeprefix("*.")
            if not name or "*" in parent or (parent != name and "." not in parent):
                raise LocalProtocolError(f"server name {name!r}: a host name or *.parent.tld")
        object.__setattr__(self, "server_names", names)
        schemes = signature_schemes_for(
            self.private_key,
            rsassa_pss=leaf.public_key_algorithm_oid == PublicKeyAlgorithmOID.RSASSA_PSS,
        )
        if not schemes:
            raise LocalProtocolError("unsupported private key type for TLS 1.3")
        object.__setattr__(self, "signature_schemes", schemes)
        entries = tuple((der, ()) for der in self.certificate_chain)
        object.__setattr__(self, "certificate_message", push_certificate(Certificate(b"", entries)))

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the leaf certificate, as ``openssl x509 -fingerprint -sha256`` prints it."""
        return hashlib.sha256(self.certificate_chain[0]).digest().hex(":").upper()

    @classmethod
    def from_pem(
        cls, chain_pem: bytes, key_pem: bytes, password: bytes | None = None
    ) -> Credential:
        chain = tuple(
            c.public_bytes(serialization.Encoding.DER)
            for c in x509.load_pem_x509_certificates(chain_pem)
        )
        key = serialization.load_pem_private_key(key_pem, password)
        if not isinstance(
            key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey)
        ):
            raise LocalProtocolError(f"unsupported private key type {type(key).__name__}")
        return cls(chain, key)

    @classmethod
    def self_signed(cls, hostname: str = "localhost", key_type: str = "ecdsa-p256") -> Credential:
        """A fresh self-signed certificate for ``hostname`` (and 127.0.0.1, ::1 for localhost)."""
        key: PrivateKey
        if key_type == "ecdsa-p256":
            key = ec.generate_private_key(ec.SECP256R1())
        elif key_type == "ecdsa-p384":
            key = ec.generate_private_key(ec.SECP384R1())
        elif key_type == "ed25519":
            key = ed25519.Ed25519PrivateKey.generate()
        elif key_type == "rsa":
            key = rsa.generate_private_key(65537, 2048)
        else:
            raise LocalProtocolError(f"unknown key type {key_type!r}")
        names: list[x509.GeneralName] = [x509.DNSName(hostname)]
        if hostname == "localhost":
            names += [
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.IPAddress(ipaddress.ip_address("::1")),
            ]
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
        now = datetime.datetime.now(datetime.UTC)
        algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
        certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, algorithm)
        )
        return cls((certificate.public_bytes(serialization.Encoding.DER),), key)

    def certificate_pem(self) -> bytes:
        return b"".join(
            x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)
            for der in self.certificate_chain
        )


@dataclass(frozen=True)
class ExternalPsk:
    """A pre-shared key agreed out of band (RFC 8446 §2.2, RFC 9257): the client names it by
    ``identity`` in its pre_shared_key extension and proves it holds ``key`` with its binder.

    ``hash_name`` is the hash the key is used with (§4.2.11: SHA-256 when nothing else was
    agreed); only cipher suites with that hash can use it.  The key must be at least 16 bytes:
    RFC 9257 §6 asks for 128 bits of entropy, and a short key is open to offline guessing from
    one recorded binder.  An identity is 1 to 255 bytes (it rides in the tickets the handshake
    issues, so that a resumed session reports it too).
    """

    identity: bytes
    key: bytes = field(repr=False)
    hash_name: str = "sha256"

    def __post_init__(self) -> None:
        if not 0 < len(self.identity) < 256:
            raise LocalProtocolError("an external PSK identity is 1 to 255 bytes")
        if len(self.key) < 16:
            raise LocalProtocolError("an external PSK needs at least 16 bytes of key (RFC 9257)")
        if self.hash_name not in ("sha256", "sha384"):
            raise LocalProtocolError(f"external PSK hash {self.hash_name!r}: sha256 or sha384")


def load_external_psks(path: str | os.PathLike[str]) -> tuple[ExternalPsk, ...]:
    """External PSKs from a text file: one per line, ``IDENTITY HEX-KEY [sha256|sha384]``, the
    identity as UTF-8 text without spaces; blank lines and lines starting with ``#`` are
    skipped.  The file holds secrets: keep it readable by the server only.  OSError if it cannot
    be read; LocalProtocolError naming the line for anything else wrong."""
    psks = []
    for number, line in enumerate(Path(path).read_text("utf-8").splitlines(), 1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        try:
            if len(words) not in (2, 3):
                raise LocalProtocolError("expected IDENTITY HEX-KEY [sha256|sha384]")
            key = bytes.fromhex(words[1])
            hash_name = words[2] if len(words) == 3 else "sha256"
            psks.append(ExternalPsk(words[0].encode("utf-8"), key, hash_name))
        except ValueError as error:  # not hex, or what ExternalPsk refuses
            raise LocalProtocolError(f"line {number}: {error}") from None
    return tuple(psks)


def keylog_to_file(path: str | os.PathLike[str]) -> Callable[[str], None]:
    """A ``ServerConfig.keylog`` callback appending NSS key log lines to ``path`` (mode 0600).

    A path that cannot be written is refused here, at start.  If writing fails later (a full
    disk, the directory removed), the handshake carries on: the handshake reports the failure
    once on the ``stateless13`` logger and the lines are lost.
    """
    lock = threading.Lock()
    target = Path(path)

    def open_for_append() -> int:
        return os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    try:
        os.close(open_for_append())
    except OSError as error:
        raise LocalProtocolError(f"cannot write the key log {target}: {error}") from None

    def write(line: str) -> None:
        with lock, os.fdopen(open_for_append(), "a") as file:
            file.write(line + "\n")

    return write


DEFAULT_CIPHER_SUITES = (
    CipherSuite.TLS_AES_128_GCM_SHA256,
    CipherSuite.TLS_AES_256_GCM_SHA384,
    CipherSuite.TLS_CHACHA20_POLY1305_SHA256,
)
#: A hybrid post-quantum group first; then three classical groups of equal preference (one tier):
#: a client that sent a share for one of them keeps it in an ordinary handshake, and a stateless
#: HelloRetryRequest can name another of the three without demoting it (GnuTLS clients refuse the
#: cookie-only HRR, and share both x25519 and P-256: the HRR names P-384 for them).
DEFAULT_GROUPS: tuple[NamedGroup | tuple[NamedGroup, ...], ...] = (
    NamedGroup.X25519MLKEM768,
    (NamedGroup.x25519, NamedGroup.secp256r1, NamedGroup.secp384r1),
)


@dataclass(frozen=True)
class ServerConfig:
    """Everything a server needs; immutable, so one instance serves every connection.

    ``cipher_suites`` and ``groups`` are in the server's order of preference.  An entry of
    ``groups`` may be a tuple of groups the server prefers equally (a tier, as OpenSSL 3.5's
    ``-groups "a:b/c"``).  The server picks its first tier that has a group the client supports;
    within it, a group the client sent a key share for, else asks for one with a
    HelloRetryRequest (``negotiation.negotiate``, ``negotiation.group_to_request``).
    """

    credentials: tuple[Credential, ...]
    cookie_keys: CookieKeyRing = field(default_factory=CookieKeyRing.generate)
    cipher_suites: tuple[CipherSuite, ...] = DEFAULT_CIPHER_SUITES
    groups: tuple[NamedGroup | tuple[NamedGroup, ...], ...] = DEFAULT_GROUPS
    #: ALPN protocols in preference order; empty means the server ignores ALPN.
    alpn_protocols: tuple[bytes, ...] = ()
    #: Seconds a cookie stays valid, and how far in the future its issue time may be (clock skew
    #: between the servers that share the key ring).
    cookie_lifetime: float = 30.0
    cookie_clock_skew: float = 5.0
    cookie_verifier: CookieVerifier | None = None
    #: Make every stateless HelloRetryRequest name a group whenever the client supports one it
    #: sent no share for, even from a lower tier of ``groups`` (negotiation.group_to_request).
    #: An override: the default tiers already let GnuTLS clients, which refuse a cookie-only HRR,
    #: through; this is for a strict order (a flat ``groups``) that must still serve them.
    retry_names_a_group: bool = False
    #: Largest ClientHello accepted (bytes of the handshake message, header included).
    max_client_hello_size: int = 16384
    #: Early data (0-RTT) we refuse but must skip (RFC 8446 §4.2.10): at most this many bytes of
    #: record payload per connection, before ClientHello2 or the client's Finished; more is fatal.
    #: A client resuming a ticket from another server sends up to that server's
    #: max_early_data_size (OpenSSL's default: 16384) plus 17 bytes of overhead per record.
    max_early_data_skipped: int = 1 << 15
    #: Called with one NSS SSLKEYLOGFILE line per secret; None (the default) logs nothing.
    keylog: Callable[[str], None] | None = None
    #: NewSessionTickets sent after each handshake (RFC 8446 §4.6.1), as Python ssl's default of
    #: 2: a client that opens two connections at once can resume both.  0 sends none.  Sent only
    #: to clients that can use them (psk_dhe_ke among their psk_key_exchange_modes).
    tickets: int = 2
    #: Seconds a ticket resumes, from its issue (at most 7 days, §4.6.1).  Two hours, as OpenSSL's
    #: default: whoever holds a leaked ticket key can pass for this server to the clients of its
    #: live tickets (not read their traffic: resumption always makes a fresh key exchange).
    ticket_lifetime: int = 7200
    #: 0-RTT (RFC 8446 §2.3, §4.2.10): the most early data, in bytes, this server accepts from a
    #: client resuming one of its tickets; 0 (the default) refuses it (the client's early data is
    #: skipped and the handshake finishes in 1-RTT).  Early data can be replayed (§8): accept it
    #: only for requests that are safe to repeat.  Tickets issued with it promise it to clients.
    early_data: int = 0
    #: §8.3: the client's and our idea of when its ticket was issued may differ by this many
    #: seconds for its early data to be accepted (clock skew and network delay).
    early_data_window: float = 10.0
    #: §8.1: each ticket's early data is accepted once; the second offer of a ticket within
    #: twice the window finishes in 1-RTT.  A filter for 100,000 tickets per window is made when
    #: ``early_data`` is set and none is given (per process: see replay.py).
    early_data_replay: ReplayStore | None = None
    #: The keys that seal and open tickets (ticket.py): ``keys[0]`` seals, every key opens.
    #: Share them across a fleet as the cookie keys; rotate at most every ``ticket_lifetime``.
    ticket_keys: CookieKeyRing = field(default_factory=CookieKeyRing.generate)
    #: External PSKs (RFC 8446 §2.2): a client offering one of these identities, with a binder
    #: proving its key, is authenticated by it, without a certificate.  Examined before tickets.
    external_psks: tuple[ExternalPsk, ...] = ()
    #: Accept psk_ke (§4.2.9): a PSK handshake, resumed or external, without an (EC)DHE
    #: exchange, for clients that offer only that mode or share no group with us.  Off by
    #: default: such a session has no forward secrecy (whoever later learns the PSK reads it).
    psk_ke: bool = False
    #: Ask clients for a certificate and judge it (client_auth.py); None (the default) asks none.
    client_auth: ClientAuth | None = None
    #: Choose the credentials for a server name yourself (SniCallback).
    sni_callback: SniCallback | None = None
    #: A client asking for a name no credential has: served with all ``credentials`` (the
    #: default, as most servers do), or refused with unrecognized_name (RFC 6066 §3).
    refuse_unknown_server_names: bool = False
    #: Refuse a second use of a cookie (replay.py).  The one piece of shared, fixed-size state a
    #: server may opt into; None (the default) keeps the stateless path free of any state.
    replay_filter: ReplayStore | None = None
    #: ``groups`` as tiers in preference order (an entry that is a single group is a tier of one).
    group_tiers: tuple[tuple[NamedGroup, ...], ...] = field(init=False, repr=False)
    #: ``external_psks`` by identity.
    external_psk_index: dict[bytes, ExternalPsk] = field(init=False, repr=False)
    #: ``credentials`` by the names they serve: exact names, and wildcards by their parent.
    credentials_by_name: dict[str, tuple[Credential, ...]] = field(init=False, repr=False)
    credentials_by_parent: dict[str, tuple[Credential, ...]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.credentials and not self.external_psks:
            raise LocalProtocolError("ServerConfig needs a Credential or an external PSK")
        index = {psk.identity: psk for psk in self.external_psks}
        if len(index) != len(self.external_psks):
            raise LocalProtocolError("two external PSKs with the same identity")
        object.__setattr__(self, "external_psk_index", index)
        by_name: dict[str, tuple[Credential, ...]] = {}
        by_parent: dict[str, tuple[Credential, ...]] = {}
        for credential in self.credentials:
            for name in credential.server_names or ():
                if name.startswith("*."):
                    by_parent[name[2:]] = (*by_parent.get(name[2:], ()), credential)
                else:
                    by_name[name] = (*by_name.get(name, ()), credential)
        object.__setattr__(self, "credentials_by_name", by_name)
        object.__setattr__(self, "credentials_by_parent", by_parent)
        if not self.cipher_suites or not self.groups:
            raise LocalProtocolError("ServerConfig needs at least one cipher suite and one group")
        object.__setattr__(self, "cipher_suites", tuple(CipherSuite(s) for s in self.cipher_suites))
        tiers = tuple(
            tuple(NamedGroup(g) for g in entry)
            if isinstance(entry, tuple)
            else (NamedGroup(entry),)
            for entry in self.groups
        )
        flat = [group for tier in tiers for group in tier]
        if not all(tiers) or len(set(flat)) != len(flat):
            raise LocalProtocolError("groups: every tier needs a group, and no group twice")
        object.__setattr__(self, "groups", tuple(t if len(t) > 1 else t[0] for t in tiers))
        object.__setattr__(self, "group_tiers", tiers)
        for protocol in self.alpn_protocols:
            if not 0 < len(protocol) < 256:
                raise LocalProtocolError(f"invalid ALPN protocol {protocol!r}")
        if self.max_client_hello_size < 512:
            raise LocalProtocolError(
                "max_client_hello_size below 512 bytes would refuse ordinary clients"
            )
        if self.max_client_hello_size > 4 + MAX_HANDSHAKE_MESSAGE_SIZE:
            raise LocalProtocolError(
                f"max_client_hello_size above {4 + MAX_HANDSHAKE_MESSAGE_SIZE} bytes: larger"
                " handshake messages are refused whatever the setting"
            )
        if self.max_early_data_skipped < 0:
            raise LocalProtocolError("max_early_data_skipped cannot be negative")
        if not 0 <= self.tickets <= 16:
            raise LocalProtocolError("tickets: from 0 to 16 per handshake")
        if not 0 < self.ticket_lifetime <= MAX_TICKET_LIFETIME:
            raise LocalProtocolError(f"ticket_lifetime: 1 to {MAX_TICKET_LIFETIME} seconds")
        if not 0 <= self.early_data <= 0xFFFFFFFF or self.early_data_window <= 0:
            raise LocalProtocolError("early_data: 0 to 2^32-1 bytes, in a positive window")
        if self.early_data and self.early_data_replay is None:
            # A replayed ClientHello passes the age check (within early_data_window either way
            # of ours) for up to twice the window after the first use, when the client's clock
            # ran ahead: the filter must remember a ticket that long (a generation is 1 to 2).
            replay = ReplayFilter.for_capacity(100_000, window=2 * self.early_data_window)
            object.__setattr__(self, "early_data_replay", replay)

    @classmethod
    def self_signed(
        cls, hostname: str = "localhost", *, key_type: str = "ecdsa-p256", **options: object
    ) -> ServerConfig:
        """A config with a freshly generated self-signed certificate (for tests and demos)."""
        return cls(credentials=(Credential.self_signed(hostname, key_type),), **options)  # type: ignore[arg-type]

    @classmethod
    def from_pem_files(
        cls,
        certfile: str | os.PathLike[str],
        keyfile: str | os.PathLike[str],
        *,
        password: bytes | None = None,
        **options: object,
    ) -> ServerConfig:
        credential = Credential.from_pem(
            Path(certfile).read_bytes(), Path(keyfile).read_bytes(), password
        )
        return cls(credentials=(credential,), **options)  # type: ignore[arg-type]
