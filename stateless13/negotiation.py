"""What the server agrees to, decided from a ClientHello and the config alone (RFC 8446 §4.1.1).

Pure functions: the stateless path runs them on ClientHello1 to build the HelloRetryRequest and
again on ClientHello2 to resume, and compares the two outcomes through the cookie.
"""

from __future__ import annotations

import functools
import hashlib
import struct
from dataclasses import dataclass

from .alerts import (
    HandshakeFailure,
    IllegalParameter,
    MissingExtension,
    NoApplicationProtocol,
    ProtocolVersion,
    UnrecognizedName,
)
from .config import Credential, ServerConfig
from .messages import (
    DTLS12,
    DTLS13,
    GREASE,
    SSL3,
    TLS13,
    ClientHello,
    NamedGroup,
    SignatureScheme,
    is_grease,
)
from .primitives import DTLS_SUITES, SUITES, SuiteParams

#: Offered PSK identities examined, from the first: each may cost an AEAD open, and a client
#: has one or two tickets of ours to offer, not hundreds.
MAX_PSK_IDENTITIES = 8


@dataclass(slots=True)  # not frozen: built on every ClientHello1, and never shared
class Negotiated:
    suite: SuiteParams
    #: Our group, or None when the client offered a PSK and no group we have (then only a
    #: psk_ke handshake can go on: ``require_certificate_handshake`` says why not otherwise).
    group: NamedGroup | None
    client_share: bytes | None  # the client's key share for ``group``; None means HRR needed
    #: Our certificate and scheme, or None when the client offered a PSK and no scheme we sign
    #: with (a resumption needs neither).
    credential: Credential | None
    signature_scheme: SignatureScheme | None
    alpn_protocol: bytes | None
    server_name: str | None
    record_size_limit: int | None  # the client's (RFC 8449): the records we send it obey it


def check_client_hello(hello: ClientHello) -> None:
    """Rules every TLS 1.3 ClientHello must follow, whatever the server's configuration."""
    if hello.dtls:  # RFC 9147 §5.3: DTLS 1.2's version in the field, DTLS 1.3 in the extension
        if hello.legacy_version != DTLS12:
            raise ProtocolVersion(f"DTLS ClientHello.legacy_version 0x{hello.legacy_version:04x}")
        if hello.supported_versions is None or DTLS13 not in hello.supported_versions:
            raise ProtocolVersion("client does not offer DTLS 1.3 in supported_versions")
    elif hello.legacy_version <= SSL3:  # Appendix D.5: SSL 3.0 and anything older
        raise ProtocolVersion(f"ClientHello.legacy_version 0x{hello.legacy_version:04x}")
    elif hello.supported_versions is None or TLS13 not in hello.supported_versions:
        raise ProtocolVersion("client does not offer TLS 1.3 in supported_versions")
    if hello.legacy_compression_methods != b"\x00":
        raise IllegalParameter("legacy_compression_methods must be exactly [null]")
    # §9.2: without a PSK, a certificate and a key exchange are the only way: these two are
    # mandatory; supported_groups and key_share go together.
    if hello.pre_shared_key is None:
        if hello.signature_algorithms is None:
            raise MissingExtension("no signature_algorithms extension")
        if hello.supported_groups is None:
            raise MissingExtension("no supported_groups extension")
    if hello.key_share is None and hello.supported_groups is not None:
        raise MissingExtension("no key_share extension")
    if hello.supported_groups is None and hello.key_share is not None:
        raise MissingExtension("key_share without supported_groups")
    if hello.pre_shared_key is not None and hello.psk_key_exchange_modes is None:
        raise MissingExtension("pre_shared_key without psk_key_exchange_modes (§4.2.9)")
    seen: set[int] = set()
    for share in hello.key_share or ():
        if share.group in seen:
            raise IllegalParameter(f"two key shares for group 0x{share.group:04x}")
        seen.add(share.group)
        assert hello.supported_groups is not None
        if not is_grease(share.group) and share.group not in hello.supported_groups:
            raise IllegalParameter(
                f"key share for group 0x{share.group:04x} not in supported_groups"
            )


def suites_for(hello: ClientHello) -> dict[int, SuiteParams]:
    """The suites a handshake answering ``hello`` runs: DTLS 1.3's differ in their labels."""
    return DTLS_SUITES if hello.dtls else SUITES


def negotiate(
    config: ServerConfig, hello: ClientHello, *, after_retry: tuple[int, int] | None = None
) -> Negotiated:
    """Pick suite, group, certificate, signature scheme and ALPN by the server's preference.

    ``after_retry`` is the (suite, group) a HelloRetryRequest named (group 0: none, for a
    psk_ke handshake): ClientHello2 keeps them as long as this server still allows them, so a
    configuration rolled out between the two ClientHellos (another preference order) does not
    break the clients in flight.

    A client that offers a PSK may have no group or signature scheme in common with us (§9.2):
    then ``group`` or ``credential`` is None, and ``require_certificate_handshake`` raises the
    alert a full handshake would have had, if the PSK is not accepted.
    """
    check_client_hello(hello)
    offers_psk = hello.pre_shared_key is not None

    group: NamedGroup | None
    if after_retry is None:
        suite = _choose_suite(config, hello)
        group = _choose_group(config, hello)
        if group is None and not offers_psk:
            raise HandshakeFailure("no key exchange group in common")
    else:
        suite_id, group_id = after_retry
        if suite_id not in config.cipher_suites or suite_id not in hello.cipher_suites:
            raise HandshakeFailure(f"the HRR's cipher suite 0x{suite_id:04x} is no longer allowed")
        if group_id == 0:  # the HRR was for a psk_ke handshake
            group = None
        elif not any(group_id in tier for tier in config.group_tiers) or group_id not in (
            hello.supported_groups or ()
        ):
            raise HandshakeFailure(f"the HRR's group 0x{group_id:04x} is no longer allowed")
        else:
            group = NamedGroup(group_id)
        suite = suites_for(hello)[suite_id]
    client_share = None
    if group is not None:
        client_share = next(
            (s.key_exchange for s in hello.key_share or () if s.group == group), None
        )

    credential, scheme = _choose_credential(config, hello)
    if credential is None and not offers_psk:
        raise HandshakeFailure("no signature scheme in common with our certificates")

    alpn: bytes | None = None
    if config.alpn_protocols and hello.alpn_protocols is not None:
        alpn = select_alpn(config, hello)

    return Negotiated(
        suite,
        group,
        client_share,
        credential,
        scheme,
        alpn,
        hello.server_name,
        hello.record_size_limit,
    )


def require_certificate_handshake(hello: ClientHello, negotiated: Negotiated) -> None:
    """A full handshake (no PSK accepted) needs a group and a certificate: the alert a client
    that offered a PSK gets when it has neither in common with us (§9.2)."""
    if negotiated.group is None:
        if hello.supported_groups is None:
            raise MissingExtension("no supported_groups extension, and no PSK accepted")
        raise HandshakeFailure("no key exchange group in common, and no PSK accepted")
    if negotiated.credential is None:
        if hello.signature_algorithms is None:
            raise MissingExtension("no signature_algorithms extension, and no PSK accepted")
        raise HandshakeFailure("no signature scheme in common, and no PSK accepted")


def _choose_suite(config: ServerConfig, hello: ClientHello) -> SuiteParams:
    """Our most preferred suite the client offers; but when the client offers one of our
    external PSKs, our most preferred suite of that PSK's hash (§4.2.11: it is usable with no
    other), so that a client holding a SHA-384 PSK gets a SHA-384 suite."""
    psk_hash = _external_psk_hash(config, hello)
    first: SuiteParams | None = None
    suites = suites_for(hello)
    for code in config.cipher_suites:
        if code in hello.cipher_suites:
            suite = suites[code]
            if psk_hash is None or suite.hash_name == psk_hash:
                return suite
            if first is None:
                first = suite
    if first is None:
        raise HandshakeFailure("no cipher suite in common")
    return first


def _external_psk_hash(config: ServerConfig, hello: ClientHello) -> str | None:
    """The hash of the first offered identity that is one of our external PSKs, if any."""
    if hello.pre_shared_key is None or not config.external_psk_index:
        return None
    for identity in hello.pre_shared_key.identities[:MAX_PSK_IDENTITIES]:
        psk = config.external_psk_index.get(identity.identity)
        if psk is not None:
            return psk.hash_name
    return None


def _choose_group(config: ServerConfig, hello: ClientHello) -> NamedGroup | None:
    """Our first tier with a group the client supports; in it, the first group the client sent
    a share for (no HelloRetryRequest needed), else the first it supports; None if none.
    (Plain loops: this runs for every ClientHello1 of a flood.)"""
    supported = hello.supported_groups
    if supported is None:
        return None
    for tier in config.group_tiers:
        first: NamedGroup | None = None
        for group in tier:
            if group in supported:
                if _has_share(hello, group):
                    return group
                if first is None:
                    first = group
        if first is not None:
            return first
    return None


def _has_share(hello: ClientHello, group: int) -> bool:
    for share in hello.key_share or ():  # noqa: SIM110 (any() and a generator: slower here)
        if share.group == group:
            return True
    return False


def select_alpn(config: ServerConfig, hello: ClientHello) -> bytes:
    """Our most preferred ALPN protocol the client offers; no_application_protocol if none
    (RFC 7301 §3.2; a QUIC client must offer one, RFC 9001 §8.1)."""
    offered = hello.alpn_protocols or ()
    chosen = next((p for p in config.alpn_protocols if p in offered), None)
    if chosen is None:
        raise NoApplicationProtocol("no ALPN protocol in common")
    return chosen


def group_to_request(
    config: ServerConfig, hello: ClientHello, negotiated: Negotiated
) -> int | None:
    """The group a stateless HelloRetryRequest names in its key_share, or None for cookie-only.

    When the client sent no share for our group, that group.  When it did, RFC 8446 §4.1.4
    forbids naming it again, and a cookie-only HRR is correct; but GnuTLS clients (3.7, 3.8)
    refuse one.  So we name another group of the same tier (equal preference: it costs the
    client nothing in our ranking) that the client supports and sent no share for, and send a
    cookie-only HRR only when every such group would demote it (Chromium, which shares our
    hybrid post-quantum group, keeps it).  ``retry_names_a_group`` names a group of a lower tier
    too rather than send a cookie-only HRR.
    """
    if negotiated.group is None:  # a psk_ke handshake: no group to ask for
        return None
    if negotiated.client_share is None:
        return negotiated.group
    assert hello.supported_groups is not None
    supported = hello.supported_groups
    in_tier = False  # from the negotiated group's tier on
    for tier in config.group_tiers:
        if not in_tier:
            if negotiated.group not in tier:
                continue
            in_tier = True
        elif not config.retry_names_a_group:
            break
        for group in tier:
            if group in supported and not _has_share(hello, group):
                return group
    return None


def _choose_credential(
    config: ServerConfig, hello: ClientHello
) -> tuple[Credential | None, SignatureScheme | None]:
    """The credentials for the server name the client asked for (RFC 6066 §3), then the first
    of them that signs with a scheme the client accepts."""
    client_schemes = hello.signature_algorithms or ()
    for credential in _credentials_for(config, hello.server_name):
        for scheme in credential.signature_schemes:
            if scheme in client_schemes:
                return credential, scheme
    return None, None


def _credentials_for(config: ServerConfig, server_name: str | None) -> tuple[Credential, ...]:
    """The application's choice (``sni_callback``), else the credentials naming ``server_name``
    exactly, else by a wildcard, else all of them (or unrecognized_name, if so configured)."""
    if config.sni_callback is not None:
        chosen = config.sni_callback(server_name)
        if chosen is not None:
            return chosen
    if server_name is None:
        return config.credentials
    name = server_name.lower().rstrip(".")
    named = config.credentials_by_name.get(name)
    if named is None:
        named = config.credentials_by_parent.get(name.partition(".")[2])
    if named is not None:
        return named
    if config.refuse_unknown_server_names:
        raise UnrecognizedName(f"no certificate for server name {server_name!r}")
    return config.credentials


def client_hello_digest(hello: ClientHello) -> bytes:
    """SHA-256 over the ClientHello fields that ClientHello2 must repeat (RFC 8446 §4.1.2).

    ClientHello2 may change only key_share, early_data, cookie, pre_shared_key and padding.  We
    bind what the negotiation and the transcript depend on, with GREASE values left out (clients
    need not keep them) so a client that re-rolls GREASE is not refused.  Every field is length-
    or count-prefixed, so no two different ClientHellos feed the hash the same bytes.
    """
    session_id = hello.legacy_session_id
    compression = hello.legacy_compression_methods
    pieces = [
        hello.legacy_version.to_bytes(2, "big"),
        hello.random,
        bytes((len(session_id),)),
        session_id,
        bytes((len(compression),)),
        compression,
    ]
    # The four lists, each its count then its values, in one pack (one call, not four: this
    # runs for every ClientHello1 of a flood).
    suites = _without_grease(hello.cipher_suites)
    versions = _without_grease(hello.supported_versions or ())
    groups = _without_grease(hello.supported_groups or ())
    schemes = _without_grease(hello.signature_algorithms or ())
    counted = (
        len(suites), *suites, len(versions), *versions,
        len(groups), *groups, len(schemes), *schemes,
    )  # fmt: skip
    pieces.append(_uint16s(len(counted)).pack(*counted))
    # SNI and ALPN, an absent extension told apart from an empty one.
    alpn = hello.alpn_protocols
    for present, value in (
        (hello.server_name is not None, (hello.server_name or "").encode("ascii")),
        (alpn is not None, b"".join([bytes((len(p),)) + p for p in alpn or ()])),
    ):
        pieces.append(bytes((present,)) + len(value).to_bytes(3, "big") + value)
    if hello.record_size_limit is not None:  # only when present: older digests stay the same
        pieces.append(b"\x1c" + hello.record_size_limit.to_bytes(2, "big"))
    return hashlib.sha256(b"".join(pieces)).digest()


def _without_grease(values: tuple[int, ...]) -> tuple[int, ...]:
    if GREASE.isdisjoint(values):
        return values
    return tuple(v for v in values if v not in GREASE)


@functools.lru_cache(maxsize=512)
def _uint16s(count: int) -> struct.Struct:
    """``count`` 16-bit values."""
    return struct.Struct(f">{count}H")
