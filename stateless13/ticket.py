"""The session ticket (RFC 8446 §4.6.1): the resumption state, sealed for the client.

A ticket is to resumption what the cookie is to the HelloRetryRequest: the server keeps nothing,
the client carries the state, sealed under a key ring that every process of a fleet loads.  It is
a token of its own kind (:data:`TICKET_TOKEN_KIND`) of :meth:`CookieKeyRing.seal_token`, bound to
no address (a client resumes from wherever it is), so a ticket never opens as a cookie or as a
QUIC token, nor they as a ticket.  The server's own ticket keys (``ServerConfig.ticket_keys``)
are a ring apart from the cookie keys: they live days, cookies seconds.

Plaintext, format 3 (big-endian):

    format u8 | issued_at u64 (ms since the epoch) | lifetime u32 (s) | cipher_suite u16
    | age_add u32 | max_early_data u32 | psk <1..255> | alpn <0..255> | server_name <0..255>
    | external_psk_identity <0..255> | client_certificate <0..2^16-1>
    | early_data_context <0..2^16-1>

ALPN, the server name, the external PSK identity and the client's certificate (its leaf, DER)
are empty when the handshake had none (none of them can be empty).  The early data context is
the transport's, opaque here (QUIC's transport parameters, RFC 9000 §7.4.1), empty over TCP.  A
plaintext that is not exactly this, or of another format, does not open: tickets of formats 1
and 2 (without the last fields) get a full handshake.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .alerts import AlertError, DecryptError
from .cookie import CookieKeyRing

TICKET_FORMAT = 3
#: Our byte among the key ring's token kinds (QUIC's Retry token is 1).
TICKET_TOKEN_KIND = 0x10
#: §4.6.1: a ticket lives at most seven days.
MAX_LIFETIME = 7 * 24 * 3600

_HEADER = struct.Struct(">BQIHII")


@dataclass(slots=True)
class TicketState:
    """What a resumption needs from the handshake that issued the ticket."""

    issued_at_ms: int
    lifetime: int  # seconds
    cipher_suite: int
    age_add: int
    max_early_data: int  # 0: no early data with this ticket
    psk: bytes  # HKDF-Expand-Label(resumption_master_secret, "resumption", nonce)
    alpn_protocol: bytes | None
    server_name: str | None
    #: The external PSK that authenticated the session the ticket continues (directly or through
    #: earlier tickets), so that a resumption reports who the client is.
    external_psk_identity: bytes | None = None
    #: The leaf certificate (DER) the client authenticated with (client_auth.py), carried so a
    #: resumed session reports who the client is; its chain was verified when it was issued.
    client_certificate: bytes | None = None
    #: What the transport of the issuing connection remembered for 0-RTT, beyond TLS (QUIC: the
    #: transport parameters the client's early data may rely on, RFC 9000 §7.4.1); b"" over TCP.
    early_data_context: bytes = b""

    def expired(self, now: float) -> bool:
        """Past its lifetime by the server's clock (or issued in the future: not ours to trust)."""
        age_ms = int(now * 1000) - self.issued_at_ms
        return not 0 <= age_ms <= self.lifetime * 1000

    def client_age_ms(self, obfuscated_ticket_age: int) -> int:
        """The ticket's age as the client counts it (§4.2.11.1)."""
        return (obfuscated_ticket_age - self.age_add) % (1 << 32)


def encode_ticket_state(state: TicketState) -> bytes:
    alpn = state.alpn_protocol or b""
    name = (state.server_name or "").encode("ascii")
    external = state.external_psk_identity or b""
    certificate = state.client_certificate or b""
    return b"".join(
        (
            _HEADER.pack(
                TICKET_FORMAT,
                state.issued_at_ms,
                state.lifetime,
                state.cipher_suite,
                state.age_add,
                state.max_early_data,
            ),
            bytes((len(state.psk),)),
            state.psk,
            bytes((len(alpn),)),
            alpn,
            bytes((len(name),)),
            name,
            bytes((len(external),)),
            external,
            len(certificate).to_bytes(2, "big"),
            certificate,
            len(state.early_data_context).to_bytes(2, "big"),
            state.early_data_context,
        )
    )


def decode_ticket_state(data: bytes) -> TicketState:
    """Parse an authenticated plaintext; DecryptError if it is not format 3, exactly."""
    if len(data) < _HEADER.size or data[0] != TICKET_FORMAT:
        raise DecryptError(f"not a ticket of format {TICKET_FORMAT}")
    _, issued_at_ms, lifetime, suite, age_add, max_early_data = _HEADER.unpack_from(data)
    fields = []
    position = _HEADER.size
    # psk, alpn, server_name, external_psk_identity (1-byte lengths); client_certificate and
    # early_data_context (2)
    for length_size in (1, 1, 1, 1, 2, 2):
        end = position + length_size
        if end > len(data):
            raise DecryptError("ticket plaintext malformed")
        length = int.from_bytes(data[position:end], "big")
        if end + length > len(data):
            raise DecryptError("ticket plaintext malformed")
        fields.append(data[end : end + length])
        position = end + length
    psk, alpn, name, external, certificate, early_data_context = fields
    if position != len(data) or not psk:
        raise DecryptError("ticket plaintext malformed")
    return TicketState(
        issued_at_ms=issued_at_ms,
        lifetime=lifetime,
        cipher_suite=suite,
        age_add=age_add,
        max_early_data=max_early_data,
        psk=psk,
        alpn_protocol=alpn or None,
        server_name=name.decode("ascii") if name else None,
        external_psk_identity=external or None,
        client_certificate=certificate or None,
        early_data_context=early_data_context,
    )


def seal_ticket(keys: CookieKeyRing, state: TicketState) -> bytes:
    return keys.seal_token(TICKET_TOKEN_KIND, encode_ticket_state(state), b"")


def open_ticket(keys: CookieKeyRing, identity: bytes) -> TicketState | None:
    """The state sealed in ``identity``, or None for anything that is not one of our tickets
    (another server's, a rotated-out key, tampered, truncated): the client then gets a full
    handshake, never an error (§4.2.11)."""
    try:
        return decode_ticket_state(keys.open_token(TICKET_TOKEN_KIND, identity, b""))
    except AlertError:
        return None
