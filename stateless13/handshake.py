"""The server handshake (RFC 8446 §2, §4), without records: handshake bytes in, actions out.

Read it top to bottom as the RFC's steps.  The handshake knows nothing about TLS records or QUIC
packets: it takes handshake bytes tagged with the epoch they arrived in and returns actions —
handshake bytes to send per epoch, traffic secrets to install, the end of the handshake.  The
record layer (record.py) turns those into TLS records; a QUIC stack turns them into CRYPTO frames.

Two ways in:
  * ``ServerHandshake(config)``: an ordinary server.  It sends a HelloRetryRequest only when the
    client sent no key share for the group it picked, and then keeps the retry state in memory.
  * ``ServerHandshake.resume_from_cookie(...)``: the stateless path.  ClientHello2 carries a
    cookie that holds what the server would otherwise have remembered (cookie.py); retry.py
    built it with the HelloRetryRequest and opened it again, and the handshake is rebuilt from
    it and ClientHello2 alone.

Each check raises the AlertError subclass naming the alert to send, with a reason.
"""

from __future__ import annotations

import hmac
import logging
import os
import struct
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from cryptography import x509

from . import key_schedule as ks
from .alerts import (
    CertificateRequired,
    DecodeError,
    DecryptError,
    IllegalParameter,
    LocalProtocolError,
    UnexpectedMessage,
)
from .client_auth import ClientAuth, ClientCertificate, is_rsassa_pss
from .config import Credential, ExternalPsk, ServerConfig
from .cookie import CookieState
from .events import HandshakeComplete
from .key_schedule import Direction, Epoch
from .messages import (
    DTLS12,
    SUPPORTED_VERSIONS_DTLS13_BODY,
    SUPPORTED_VERSIONS_TLS13_BODY,
    TLS12,
    CertificateVerify,
    CipherSuite,
    ClientHello,
    EncryptedExtensions,
    Extensions,
    ExtensionType,
    Finished,
    HandshakeType,
    KeyUpdate,
    NamedGroup,
    NewSessionTicket,
    PskIdentity,
    ServerHello,
    SignatureScheme,
    alpn_body,
    build_hello_retry_request,
    early_data_ticket_body,
    key_share_server_body,
    pre_shared_key_server_body,
    pull_certificate,
    pull_certificate_verify,
    pull_finished,
    pull_key_update,
    push_certificate_verify,
    push_encrypted_extensions,
    push_finished,
    push_key_update,
    push_new_session_ticket,
    push_server_hello,
    record_size_limit_body,
    split_handshake,
)
from .negotiation import (
    MAX_PSK_IDENTITIES,
    Negotiated,
    client_hello_digest,
    negotiate,
    require_certificate_handshake,
)
from .primitives import SUITES, VERIFIABLE_SCHEMES, KeyExchange, SuiteParams, sign, verify
from .retry import CookieVerified, parse_client_hello
from .ticket import TicketState, open_ticket, seal_ticket
from .transcript import Transcript, rebuild_after_retry

# ---------------------------------------------------------------------------------------------
# Actions: what the handshake asks its transport to do, in order.  Not frozen (a frozen
# dataclass's __init__ costs several times as much, and a handshake makes a dozen of them);
# nothing modifies an action once made.


@dataclass(slots=True)
class SendHandshake:
    epoch: Epoch
    data: bytes


@dataclass(slots=True)
class SendChangeCipherSpec:
    """Middlebox compatibility (RFC 8446 §D.4): a TLS-record transport sends a dummy CCS here."""


@dataclass(slots=True)
class InstallSecret:
    direction: Direction
    epoch: Epoch
    suite: SuiteParams
    secret: bytes


@dataclass(slots=True)
class LimitRecordSize:
    """The client's record_size_limit (RFC 8449): no protected record we send may carry more
    than ``limit`` bytes of TLSInnerPlaintext (content, content type and padding).  QUIC has no
    records and ignores it."""

    limit: int


@dataclass(slots=True)
class SkipEarlyData:
    """The client offered 0-RTT, which we refuse: its early data records follow and are skipped.

    After a HelloRetryRequest they are the application_data records before ClientHello2; after a
    ServerHello, the records that do not open under the client's handshake key (RFC 8446
    §4.2.10).  At most ``limit`` bytes of record payload; the first record that opens ends it.
    A QUIC transport has nothing to do: its 0-RTT packets are dropped for want of keys.
    """

    limit: int


@dataclass(slots=True)
class AcceptEarlyData:
    """The client's 0-RTT data is accepted: at most ``limit`` bytes of it (§4.2.10), read with
    the early key the actions installed before this one, until its EndOfEarlyData."""

    limit: int


@dataclass(slots=True)
class HandshakeSummary:
    """What was agreed; the transport turns it into a HandshakeComplete event."""

    cipher_suite: CipherSuite
    group: NamedGroup | None  # None: a psk_ke handshake, without a key exchange
    signature_scheme: SignatureScheme | None  # None when a PSK authenticated us (no certificate)
    alpn_protocol: bytes | None
    server_name: str | None
    hello_retry: bool  # a HelloRetryRequest was sent (statefully or statelessly)
    cookie_verified: bool  # the handshake was resumed from a cookie
    cookie_payload: bytes | None  # the application's bytes from the cookie, if resumed from one
    resumed: bool  # a PSK from one of our tickets was accepted
    early_data: bool  # its 0-RTT data was accepted
    #: The external PSK the client authenticated with, in this handshake or in the one that
    #: issued the ticket it resumed; None if none.
    psk_identity: bytes | None
    #: The certificate the client authenticated with (ServerConfig.client_auth), in this
    #: handshake or in the one that issued the ticket it resumed; None if none.
    client_certificate: ClientCertificate | None = None

    def event(self) -> HandshakeComplete:
        """What the application is told: the one conversion, for every transport."""
        return HandshakeComplete(
            cipher_suite=self.cipher_suite,
            group=self.group,
            signature_scheme=self.signature_scheme,
            alpn_protocol=None
            if self.alpn_protocol is None
            else self.alpn_protocol.decode("ascii", "replace"),
            server_name=self.server_name,
            hello_retry=self.hello_retry,
            cookie_verified=self.cookie_verified,
            cookie_payload=self.cookie_payload,
            resumed=self.resumed,
            early_data=self.early_data,
            psk_identity=self.psk_identity,
            client_certificate=self.client_certificate,
        )


@dataclass(slots=True)
class HandshakeDone:
    summary: HandshakeSummary


@dataclass(slots=True)
class PostHandshakeAuthDone:
    """A post-handshake authentication (§4.6.2) finished: the client's certificate, verified,
    or None if it declined (only when the certificate is optional)."""

    certificate: ClientCertificate | None


Action = (
    AcceptEarlyData
    | PostHandshakeAuthDone
    | SendHandshake
    | SendChangeCipherSpec
    | InstallSecret
    | LimitRecordSize
    | SkipEarlyData
    | HandshakeDone
)

#: What we accept, told to a client that sent record_size_limit: full-size TLS 1.3 records.
OUR_RECORD_SIZE_LIMIT = (1 << 14) + 1
#: psk_key_exchange_modes (§4.2.9): PSK with (EC)DHE, what we resume with when the client
#: offers it; PSK alone, only when the config allows it (``ServerConfig.psk_ke``).
PSK_KE = 0
PSK_DHE_KE = 1
_AGE_ADD = struct.Struct(">I")


@dataclass(slots=True)
class AcceptedPsk:
    """The PSK the client is admitted with: its index among the offered identities, its early
    secret, and what it is: one of our tickets or an external PSK."""

    index: int
    early_secret: bytes
    identity: PskIdentity
    ticket: TicketState | None
    external: ExternalPsk | None

    @property
    def client_certificate(self) -> ClientCertificate | None:
        """The ticket's client certificate: its leaf, verified when the ticket was issued."""
        if self.ticket is None or self.ticket.client_certificate is None:
            return None
        return ClientCertificate((self.ticket.client_certificate,), ())

    @property
    def external_identity(self) -> bytes | None:
        if self.external is not None:
            return self.external.identity
        assert self.ticket is not None
        return self.ticket.external_psk_identity


class Entropy(Protocol):
    """Where the handshake's randomness comes from (a protocol, not a base class: a compiled
    class cannot be subclassed by interpreted code).

    Tests that replay RFC 8448 substitute fixed values; nobody else needs to touch this.
    """

    def random(self, n: int) -> bytes: ...

    def key_exchange(self, group: NamedGroup) -> KeyExchange: ...

    def sign(self, credential: Credential, scheme: int, data: bytes) -> bytes: ...


class SystemEntropy:
    """The operating system's randomness and fresh keys: what every real handshake uses."""

    def random(self, n: int) -> bytes:
        return os.urandom(n)

    def key_exchange(self, group: NamedGroup) -> KeyExchange:
        return KeyExchange(group)

    def sign(self, credential: Credential, scheme: int, data: bytes) -> bytes:
        return sign(credential.private_key, scheme, data)


_ENTROPY: Entropy = SystemEntropy()

logger = logging.getLogger("stateless13")
#: Key log callbacks that have failed (each is reported once).
_FAILED_KEYLOGS: weakref.WeakSet[Callable[[str], None]] = weakref.WeakSet()


# ---------------------------------------------------------------------------------------------
# States: each holds only what the next step needs (rustls).


@dataclass(slots=True)
class ExpectClientHello:
    pass


@dataclass(slots=True)
class ExpectRetriedClientHello:
    """After a stateful HRR; the stateless path carries the same ``retry`` inside the cookie."""

    retry: CookieState
    hello_retry_request: bytes


@dataclass(slots=True)
class ExpectFinished:
    suite: SuiteParams
    transcript: Transcript
    exporter_secret: bytes
    client_handshake_secret: bytes
    client_application_secret: bytes
    server_application_secret: bytes
    master_secret: bytes  # for the resumption master secret, once the client's Finished is in
    summary: HandshakeSummary


@dataclass(slots=True)
class ExpectClientCertificate:
    """We asked for a certificate (§4.3.2): the client's Certificate comes first (§4.4.2)."""

    after: ExpectFinished  # the state once the client authenticated (or chose not to)


@dataclass(slots=True)
class ExpectClientCertificateVerify:
    """The client sent a certificate the chain validation accepted: now its proof (§4.4.3)."""

    after: ExpectFinished
    certificate: ClientCertificate
    leaf: x509.Certificate


@dataclass(slots=True)
class ExpectEndOfEarlyData:
    """0-RTT accepted: the client's early data, then its EndOfEarlyData (§4.5)."""

    after: ExpectFinished  # the state once EndOfEarlyData is in


@dataclass(slots=True)
class PostHandshakeAuth:
    """Our CertificateRequest after the handshake (§4.6.2), until the client's Finished."""

    context: bytes
    client_auth: ClientAuth
    transcript: Transcript  # the handshake's, then the CertificateRequest and the answers
    certificate: ClientCertificate | None = None
    leaf: x509.Certificate | None = None
    certificate_received: bool = False


@dataclass(slots=True)
class Connected:
    suite: SuiteParams
    client_application_secret: bytes
    server_application_secret: bytes
    exporter_secret: bytes
    summary: HandshakeSummary
    #: The transcript to the client's Finished: the context of a post-handshake authentication
    #: (§4.4), kept only when the client offered post_handshake_auth.
    transcript: Transcript | None = None
    authentication: PostHandshakeAuth | None = None


@dataclass(slots=True)
class Failed:
    pass


State = (
    ExpectClientHello
    | ExpectRetriedClientHello
    | ExpectEndOfEarlyData
    | ExpectClientCertificate
    | ExpectClientCertificateVerify
    | ExpectFinished
    | Connected
    | Failed
)

# The epoch each state's messages must arrive in.
_EXPECTED_EPOCH: dict[type, Epoch] = {
    ExpectClientHello: Epoch.INITIAL,
    ExpectRetriedClientHello: Epoch.INITIAL,
    ExpectEndOfEarlyData: Epoch.ZERO_RTT,
    ExpectClientCertificate: Epoch.HANDSHAKE,
    ExpectClientCertificateVerify: Epoch.HANDSHAKE,
    ExpectFinished: Epoch.HANDSHAKE,
    Connected: Epoch.ONE_RTT,
}


# ---------------------------------------------------------------------------------------------


class ServerHandshake:
    """One server handshake.  ``receive`` takes handshake bytes and returns the actions to take."""

    def __init__(
        self,
        config: ServerConfig,
        *,
        peer: tuple[str, int] | None = None,
        encrypted_extensions: Extensions = (),
        entropy: Entropy | None = None,
        clock: Callable[[], float] | None = None,
        dtls: bool = False,
        early_data_context: bytes = b"",
        admits_early_data: Callable[[bytes], bool] | None = None,
        end_of_early_data: bool = True,
    ) -> None:
        self.config = config
        self.peer = peer
        #: Sealed in the tickets this handshake issues: what the transport's 0-RTT relies on
        #: beyond TLS (QUIC: the transport parameters, RFC 9000 §7.4.1), opaque here.
        self._early_data_context = early_data_context
        #: Judges the context a ticket offered with 0-RTT remembered; False refuses the early
        #: data (1-RTT goes on).  By default it must be ours, byte for byte, so that a ticket
        #: issued over one transport never brings 0-RTT over another.
        self._admits_early_data = admits_early_data or (
            lambda remembered: remembered == early_data_context
        )
        #: False: the client ends its early data without EndOfEarlyData (QUIC, RFC 9001 §8.3),
        #: so the key of its handshake messages is installed with the early one.
        self._end_of_early_data = end_of_early_data
        #: DTLS 1.3 (RFC 9147): its ClientHello's legacy_cookie, its versions, its key schedule's
        #: labels, no middlebox compatibility and no EndOfEarlyData.  The messages in and out
        #: are TLS-format handshake messages either way (§5.2: so is the transcript).
        self.dtls = dtls
        # Seconds since the epoch: tickets' issue times and ages.
        self._clock = clock or time.time
        self.state: State = ExpectClientHello()
        # Extensions the transport adds to EncryptedExtensions (e.g. QUIC transport parameters).
        self._extra_encrypted_extensions = encrypted_extensions
        self._entropy = entropy or _ENTROPY
        self._buffer = bytearray()
        self._buffer_epoch = Epoch.INITIAL
        self._actions: list[Action] = []
        # All this handshake keeps of the ClientHello: its random (for the key log) and whether it
        # asked for middlebox compatibility (for the CCS).
        self.client_random: bytes | None = None
        self._compat_mode = False
        self._compat_ccs_sent = False
        # The client's psk_key_exchange_modes (§4.2.9), and whether it can resume a ticket in a
        # mode we accept.
        self._psk_modes: tuple[int, ...] = ()
        self._tickets_usable = False
        #: The client offered post-handshake authentication (§4.2.6).
        self.post_handshake_auth = False
        #: This handshake sent a (stateful) HelloRetryRequest, whatever became of it.
        self.hello_retry_sent = False

    # -- the public surface ---------------------------------------------------------------------

    @property
    def expected_epoch(self) -> Epoch | None:
        return _EXPECTED_EPOCH.get(type(self.state))

    @property
    def summary(self) -> HandshakeSummary | None:
        """What was agreed, once the server's flight is out."""
        state = self.state
        if isinstance(state, (ExpectClientCertificate, ExpectClientCertificateVerify)):
            return state.after.summary
        return state.summary if isinstance(state, (ExpectFinished, Connected)) else None

    @property
    def complete(self) -> bool:
        return isinstance(self.state, Connected)

    @property
    def partial_message(self) -> bool:
        """Part of a handshake message is buffered: §5.1 forbids any other record until its end."""
        return bool(self._buffer)

    def receive(self, epoch: Epoch, data: bytes) -> list[Action]:
        """Feed handshake bytes that arrived in ``epoch``; return the actions they caused."""
        try:
            if data:
                if epoch != self._buffer_epoch and self._buffer:
                    raise UnexpectedMessage("handshake message split across a key change")
                self._buffer_epoch = epoch
                self._buffer += data
            while (framed := split_handshake(self._buffer)) is not None:
                msg_type, length = framed
                message = bytes(self._buffer[:length])
                del self._buffer[:length]
                self._dispatch(epoch, msg_type, message)
                if self._buffer and msg_type in _ENDS_ITS_RECORD:
                    raise UnexpectedMessage(f"handshake data after message type {msg_type}")
            if self._buffer and self._buffer_epoch != self.expected_epoch:
                raise UnexpectedMessage("handshake message split across a key change")
        except Exception:
            self.state = Failed()
            self._actions.clear()
            raise
        return self.take_actions()

    def take_actions(self) -> list[Action]:
        actions, self._actions = self._actions, []
        return actions

    def request_key_update(self, update_requested: bool = False) -> list[Action]:
        """Rotate our sending key (§4.6.3), optionally asking the client to rotate too."""
        state = self.state
        if not isinstance(state, Connected):
            raise LocalProtocolError("key update before the handshake completed")
        self._send_key_update(state, update_requested)
        return self.take_actions()

    def request_client_certificate(self, client_auth: ClientAuth | None = None) -> list[Action]:
        """Ask the client for a certificate now (§4.6.2), judged by ``client_auth`` (default:
        the config's).  Its answer comes as a PostHandshakeAuthDone action; one request at a
        time."""
        state = self.state
        if not isinstance(state, Connected):
            raise LocalProtocolError("a certificate is requested after the handshake")
        if not self.post_handshake_auth or state.transcript is None:
            raise LocalProtocolError("the client did not offer post_handshake_auth")
        if state.authentication is not None:
            raise LocalProtocolError("a certificate request is already pending")
        client_auth = client_auth or self.config.client_auth
        if client_auth is None:
            raise LocalProtocolError("no ClientAuth to judge the certificate with")
        context = self._entropy.random(16)  # §4.6.2: unique within the connection
        message = client_auth.request(context)
        transcript = state.transcript.copy(state.suite)
        transcript.update(message)
        state.authentication = PostHandshakeAuth(context, client_auth, transcript)
        self._send(Epoch.ONE_RTT, message)
        return self.take_actions()

    def export_keying_material(self, label: bytes, context: bytes, length: int) -> bytes:
        state = self.state
        if not isinstance(state, Connected):
            raise LocalProtocolError("keying material is available after the handshake")
        return ks.export_keying_material(state.suite, state.exporter_secret, label, context, length)

    # -- dispatch --------------------------------------------------------------------------------

    def _dispatch(self, epoch: Epoch, msg_type: int, message: bytes) -> None:
        handler = _HANDLERS.get((type(self.state), msg_type))
        if handler is None:
            raise UnexpectedMessage(
                f"handshake message type {msg_type} in state {type(self.state).__name__}"
            )
        if epoch != self.expected_epoch:
            raise UnexpectedMessage(f"handshake message type {msg_type} in the wrong epoch")
        handler(self, message)

    def _send(self, epoch: Epoch, message: bytes) -> None:
        self._actions.append(SendHandshake(epoch, message))

    def _install(
        self, direction: Direction, epoch: Epoch, suite: SuiteParams, secret: bytes
    ) -> None:
        self._actions.append(InstallSecret(direction, epoch, suite, secret))

    def _keylog(self, label: str, secret: bytes) -> None:
        keylog = self.config.keylog
        if keylog is None or self.client_random is None:
            return
        try:
            keylog(f"{label} {self.client_random.hex()} {secret.hex()}")
        except Exception as error:  # a debugging aid must never fail a handshake
            if keylog not in _FAILED_KEYLOGS:  # so say it once, not once per line
                _FAILED_KEYLOGS.add(keylog)
                logger.warning("key log failed, its lines are lost from now on: %r", error)

    def _remember(self, hello: ClientHello) -> None:
        self.client_random = hello.random
        # RFC 9147 §5: DTLS 1.3 has no compatibility mode; a session id is echoed, no CCS sent.
        self._compat_mode = bool(hello.legacy_session_id) and not hello.dtls
        self.post_handshake_auth = hello.post_handshake_auth
        modes = self._psk_modes = hello.psk_key_exchange_modes or ()
        self._tickets_usable = PSK_DHE_KE in modes or (self.config.psk_ke and PSK_KE in modes)

    def _send_compat_change_cipher_spec(self) -> None:
        # §D.4: only when the client asked for compatibility mode, and only once.
        if self._compat_mode and not self._compat_ccs_sent:
            self._compat_ccs_sent = True
            self._actions.append(SendChangeCipherSpec())

    # -- §4.1.2 ClientHello ---------------------------------------------------------------------

    def _process_client_hello(self, message: bytes) -> None:
        hello = parse_client_hello(message, self.config.max_client_hello_size, dtls=self.dtls)
        self._remember(hello)
        negotiated = negotiate(self.config, hello)
        transcript = Transcript(negotiated.suite)
        psk = self._accepted_psk(hello, message, transcript, negotiated)
        negotiated = self._key_exchange_for(hello, negotiated, psk)
        if negotiated.group is not None and negotiated.client_share is None:
            self._send_hello_retry_request(hello, message, negotiated)
            early_data = False
        else:
            transcript.update(message)
            early_data = self._send_server_flight(
                hello, negotiated, transcript, hello_retry=False, cookie=None, psk=psk
            )
        if hello.early_data and not early_data:  # §4.2.10: refused 0-RTT is skipped
            self._actions.append(SkipEarlyData(self.config.max_early_data_skipped))

    def _send_hello_retry_request(
        self, hello: ClientHello, message: bytes, negotiated: Negotiated
    ) -> None:
        """§4.1.4, stateful: keep in memory what the stateless path would put in the cookie."""
        assert negotiated.group is not None
        retry = CookieState(
            issued_at=0,
            cipher_suite=negotiated.suite.code,
            group=negotiated.group,
            key_share_requested=True,
            client_hello_hash=negotiated.suite.digest(message),
            client_hello_digest=client_hello_digest(hello),
        )
        hrr = build_hello_retry_request(
            hello.legacy_session_id, negotiated.suite.code, negotiated.group, None, dtls=hello.dtls
        )
        self._send(Epoch.INITIAL, hrr)
        self.hello_retry_sent = True
        self._send_compat_change_cipher_spec()
        self.state = ExpectRetriedClientHello(retry, hrr)

    def _process_retried_client_hello(self, message: bytes) -> None:
        state = self.state
        assert isinstance(state, ExpectRetriedClientHello)
        hello = parse_client_hello(message, self.config.max_client_hello_size, dtls=self.dtls)
        if hello.cookie is not None:
            raise IllegalParameter("cookie in ClientHello2 although our HelloRetryRequest had none")
        self._continue_after_retry(hello, message, state.retry, state.hello_retry_request, None)

    @classmethod
    def resume_from_cookie(
        cls,
        config: ServerConfig,
        verified: CookieVerified,
        *,
        peer: tuple[str, int] | None,
        encrypted_extensions: Extensions = (),
        entropy: Entropy | None = None,
        clock: Callable[[], float] | None = None,
        early_data_context: bytes = b"",
        admits_early_data: Callable[[bytes], bool] | None = None,
        end_of_early_data: bool = True,
    ) -> ServerHandshake:
        """Carry on from ClientHello2 and its cookie (``retry.answer_client_hello`` opened and
        checked it): hold ClientHello2 to ClientHello1, rebuild the transcript, answer.

        The actions (the server's first flight) are waiting in ``take_actions()``.  Never with
        0-RTT (§4.1.2: ClientHello2 offers none); the early data arguments are for the tickets
        it issues.
        """
        handshake = cls(
            config,
            peer=peer,
            encrypted_extensions=encrypted_extensions,
            entropy=entropy,
            clock=clock,
            dtls=verified.hello.dtls,
            early_data_context=early_data_context,
            admits_early_data=admits_early_data,
            end_of_early_data=end_of_early_data,
        )
        handshake._remember(verified.hello)
        handshake._compat_ccs_sent = True  # the CCS, if any, went out with the HRR
        handshake._continue_after_retry(
            verified.hello,
            verified.message,
            verified.retry,
            verified.hello_retry_request,
            verified.cookie_payload,
        )
        return handshake

    def _continue_after_retry(
        self,
        hello: ClientHello,
        message: bytes,
        retry: CookieState,
        hello_retry_request: bytes,
        cookie_payload: bytes | None,
    ) -> None:
        """§4.1.2: ClientHello2 must be ClientHello1 with only the allowed changes."""
        self._remember(hello)
        expected = retry.client_hello_digest  # all of it, or its first 16 bytes (a DTLS cookie)
        if not hmac.compare_digest(client_hello_digest(hello)[: len(expected)], expected):
            raise IllegalParameter("ClientHello2 changed fields it must repeat from ClientHello1")
        if hello.early_data:
            raise IllegalParameter("early_data in ClientHello2")
        # Keep the HRR's suite and group (handshake_failure if this server no longer allows them).
        negotiated = negotiate(self.config, hello, after_retry=(retry.cipher_suite, retry.group))
        if retry.key_share_requested:
            # §4.1.2: the HRR named a group, so the client replaced its shares with one for it.
            shares = hello.key_share or ()
            if len(shares) != 1 or shares[0].group != retry.group:
                raise IllegalParameter(
                    f"ClientHello2 must carry exactly one key share, for group 0x{retry.group:04x}"
                )
        elif negotiated.group is not None and negotiated.client_share is None:
            # A cookie-only HRR: the client repeats its key_share, so our group's share is there.
            raise IllegalParameter(f"ClientHello2 dropped its key share for 0x{retry.group:04x}")
        transcript = rebuild_after_retry(
            negotiated.suite, retry.client_hello_hash, hello_retry_request
        )
        # The binders of ClientHello2 cover message_hash(CH1) + HRR + CH2 (§4.2.11.2).
        psk = self._accepted_psk(hello, message, transcript, negotiated)
        negotiated = self._key_exchange_for(hello, negotiated, psk)
        transcript.update(message)
        self._send_server_flight(
            hello, negotiated, transcript, hello_retry=True, cookie=cookie_payload, psk=psk
        )

    # -- §4.2.11 pre_shared_key: one of our tickets, or an external PSK ------------------------

    def _accepted_psk(
        self, hello: ClientHello, message: bytes, transcript: Transcript, negotiated: Negotiated
    ) -> AcceptedPsk | None:
        """The first offered PSK (of the first MAX_PSK_IDENTITIES) that is one of our external
        PSKs for this suite's hash, or one of our live tickets for this suite's hash and server
        name, its binder verified; None (a full handshake) if none is, or if the client offers
        no PSK mode we can use.

        ``transcript`` holds what precedes ``message`` (nothing, or message_hash(CH1) + HRR).  A
        PSK we cannot use is skipped, never an error (§4.2.11); a binder that does not verify
        is decrypt_error (§4.2.11.2).
        """
        offered = hello.pre_shared_key
        if offered is None or not self._psk_mode_usable(negotiated):
            return None
        suite = negotiated.suite
        now: float | None = None
        for index, identity in enumerate(offered.identities[:MAX_PSK_IDENTITIES]):
            external = self.config.external_psk_index.get(identity.identity)
            ticket: TicketState | None = None
            if external is not None:
                if external.hash_name != suite.hash_name:  # §4.2.11: the PSK's own hash
                    continue
                key = external.key
            else:
                if now is None:
                    now = self._clock()
                ticket = open_ticket(self.config.ticket_keys, identity.identity)
                if (
                    ticket is None
                    or ticket.expired(now)
                    or ticket.client_age_ms(identity.obfuscated_ticket_age) > ticket.lifetime * 1000
                    or ticket.cipher_suite not in SUITES
                    or SUITES[ticket.cipher_suite].hash_name != suite.hash_name  # §4.2.11
                    or ticket.server_name != hello.server_name  # §4.6.1: the same server name
                    or not self._ticket_authenticates_enough(ticket, now)
                ):
                    continue
                key = ticket.psk
            early = ks.early_secret(suite, key)
            truncated = message[: len(message) - offered.binders_size]
            expected = ks.psk_binder(
                suite, early, transcript.digest_with(truncated), external=external is not None
            )
            if not hmac.compare_digest(expected, offered.binders[index]):
                raise DecryptError(f"the binder of PSK identity {index} does not verify")
            return AcceptedPsk(index, early, identity, ticket, external)
        return None

    def _ticket_authenticates_enough(self, ticket: TicketState, now: float) -> bool:
        """A server that now requires client certificates resumes only sessions that had one,
        still valid (else a full handshake asks for one): a config change never lets a client
        skip authentication."""
        client_auth = self.config.client_auth
        if client_auth is None or not client_auth.required:
            return True
        if ticket.client_certificate is None:
            return False
        leaf = x509.load_der_x509_certificate(ticket.client_certificate)
        return leaf.not_valid_after_utc.timestamp() >= now

    def _psk_mode_usable(self, negotiated: Negotiated) -> bool:
        """§4.2.9: a mode the client offers and we accept: psk_dhe_ke with a group in common,
        or psk_ke when the config allows it."""
        modes = self._psk_modes
        return (PSK_DHE_KE in modes and negotiated.group is not None) or (
            self.config.psk_ke and PSK_KE in modes
        )

    def _key_exchange_for(
        self, hello: ClientHello, negotiated: Negotiated, psk: AcceptedPsk | None
    ) -> Negotiated:
        """Without a PSK, a certificate handshake, which needs a group and a certificate.  With
        one, psk_dhe_ke whenever the client offers it and we share a group (forward secrecy),
        else psk_ke: no group, no key share."""
        if psk is None:
            require_certificate_handshake(hello, negotiated)
            return negotiated
        if PSK_DHE_KE not in self._psk_modes or negotiated.group is None:
            # Made for this ClientHello alone (never shared): changed in place.
            negotiated.group = None
            negotiated.client_share = None
        return negotiated

    def _accepts_early_data(
        self, hello: ClientHello, negotiated: Negotiated, psk: AcceptedPsk, hello_retry: bool
    ) -> bool:
        """§4.2.10: the client's 0-RTT data is accepted only with the first PSK it offered, a
        ticket that allows it, no HRR, the ticket's own suite and ALPN, a transport context the
        transport admits (QUIC: no transport parameter below what the ticket remembered, RFC
        9000 §7.4.1), an age that agrees with ours (§8.3) and a first use of the ticket's early
        data (§8.1).  Anything else: refused, skipped, and the handshake goes on in 1-RTT."""
        ticket = psk.ticket
        replay = self.config.early_data_replay
        if not (
            ticket is not None  # 0-RTT with an external PSK is not built
            and not hello.dtls  # DTLS 1.3's 0-RTT (epoch 1, no EndOfEarlyData) is not built
            and hello.early_data
            and self.config.early_data
            and replay is not None
            and not hello_retry
            and psk.index == 0
            and ticket.max_early_data
            and ticket.cipher_suite == negotiated.suite.code
            and ticket.alpn_protocol == negotiated.alpn_protocol
            and self._admits_early_data(ticket.early_data_context)
        ):
            return False
        now = self._clock()
        client_age_ms = ticket.client_age_ms(psk.identity.obfuscated_ticket_age)
        our_age_ms = now * 1000 - ticket.issued_at_ms
        if abs(our_age_ms - client_age_ms) > self.config.early_data_window * 1000:
            return False
        return replay.first_use(psk.identity.identity, now)

    # -- §4.1.3 ServerHello through §4.4.4 Finished ----------------------------------------------

    def _send_server_flight(
        self,
        hello: ClientHello,
        negotiated: Negotiated,
        transcript: Transcript,
        *,
        hello_retry: bool,
        cookie: bytes | None,
        psk: AcceptedPsk | None,
    ) -> bool:
        """ServerHello to our Finished; whether the client's 0-RTT data is accepted."""
        suite = negotiated.suite
        early_data = psk is not None and self._accepts_early_data(
            hello, negotiated, psk, hello_retry
        )
        if early_data:
            assert psk is not None
            client_early = ks.client_early_traffic_secret(
                suite, psk.early_secret, transcript.digest()
            )
            self._keylog("CLIENT_EARLY_TRAFFIC_SECRET", client_early)
            # What the ticket promised, or less if the config lowered it since.
            assert psk.ticket is not None
            early_limit = min(psk.ticket.max_early_data, self.config.early_data)
        shared_secret = self._send_server_hello(hello, negotiated, transcript, psk)
        self._send_compat_change_cipher_spec()

        secrets = ks.derive_handshake_secrets(
            suite, shared_secret, transcript.digest(), None if psk is None else psk.early_secret
        )
        self._keylog("SERVER_HANDSHAKE_TRAFFIC_SECRET", secrets.server)
        self._keylog("CLIENT_HANDSHAKE_TRAFFIC_SECRET", secrets.client)
        self._install(Direction.ENCRYPT, Epoch.HANDSHAKE, suite, secrets.server)
        if early_data:  # the client's early data first, then its handshake messages (§2.3)
            self._install(Direction.DECRYPT, Epoch.ZERO_RTT, suite, client_early)
            self._actions.append(AcceptEarlyData(early_limit))
        if not early_data or not self._end_of_early_data:
            # Without EndOfEarlyData (QUIC) the client's 0-RTT and Handshake packets interleave.
            self._install(Direction.DECRYPT, Epoch.HANDSHAKE, suite, secrets.client)
        if negotiated.record_size_limit is not None:  # from EncryptedExtensions on
            self._actions.append(LimitRecordSize(negotiated.record_size_limit))

        self._send_encrypted(transcript, self._encrypted_extensions(negotiated, early_data))
        # §4.3.2: never in a PSK handshake (the PSK authenticated the client too).
        client_auth = self.config.client_auth if psk is None else None
        if client_auth is not None and client_auth.post_handshake_only:
            client_auth = None
        if client_auth is not None:
            self._send_encrypted(transcript, client_auth.certificate_request)
        if psk is None:  # §2.2: a PSK handshake authenticates with the PSK, not a certificate
            assert negotiated.credential is not None
            self._send_encrypted(transcript, negotiated.credential.certificate_message)
            self._send_certificate_verify(negotiated, transcript)
        self._send_encrypted(
            transcript,
            push_finished(
                Finished(ks.finished_verify_data(suite, secrets.server, transcript.digest()))
            ),
        )

        application = ks.derive_application_secrets(suite, secrets, transcript.digest())
        self._keylog("SERVER_TRAFFIC_SECRET_0", application.server)
        self._keylog("CLIENT_TRAFFIC_SECRET_0", application.client)
        self._keylog("EXPORTER_SECRET", application.exporter)
        self._install(Direction.ENCRYPT, Epoch.ONE_RTT, suite, application.server)
        expect_finished = ExpectFinished(
            suite=suite,
            transcript=transcript,
            exporter_secret=application.exporter,
            client_handshake_secret=secrets.client,
            client_application_secret=application.client,
            server_application_secret=application.server,
            master_secret=application.master_secret,
            summary=HandshakeSummary(
                cipher_suite=suite.code,
                group=negotiated.group,
                signature_scheme=None if psk is not None else negotiated.signature_scheme,
                alpn_protocol=negotiated.alpn_protocol,
                server_name=negotiated.server_name,
                hello_retry=hello_retry,
                cookie_verified=cookie is not None,
                cookie_payload=cookie,
                resumed=psk is not None and psk.ticket is not None,
                early_data=early_data,
                psk_identity=None if psk is None else psk.external_identity,
                client_certificate=None if psk is None else psk.client_certificate,
            ),
        )
        if early_data and self._end_of_early_data:
            self.state = ExpectEndOfEarlyData(expect_finished)
        elif client_auth is not None:
            self.state = ExpectClientCertificate(expect_finished)
        else:
            self.state = expect_finished
        return early_data

    def _send_server_hello(
        self,
        hello: ClientHello,
        negotiated: Negotiated,
        transcript: Transcript,
        psk: AcceptedPsk | None,
    ) -> bytes:
        extensions: Extensions
        versions = (
            ExtensionType.supported_versions,
            SUPPORTED_VERSIONS_DTLS13_BODY if hello.dtls else SUPPORTED_VERSIONS_TLS13_BODY,
        )
        if negotiated.group is None:  # psk_ke: no (EC)DHE, its input is zeros (§7.1)
            shared_secret = bytes(negotiated.suite.hash_len)
            extensions = (versions,)
        else:
            assert negotiated.client_share is not None
            exchange = self._entropy.key_exchange(negotiated.group)
            server_share, shared_secret = exchange.respond(negotiated.client_share)
            extensions = (
                (ExtensionType.key_share, key_share_server_body(negotiated.group, server_share)),
                versions,
            )
        if psk is not None:
            extensions += ((ExtensionType.pre_shared_key, pre_shared_key_server_body(psk.index)),)
        message = push_server_hello(
            ServerHello(
                random=self._entropy.random(32),
                legacy_session_id_echo=hello.legacy_session_id,
                cipher_suite=negotiated.suite.code,
                extensions=extensions,
                legacy_version=DTLS12 if hello.dtls else TLS12,
            )
        )
        transcript.update(message)
        self._send(Epoch.INITIAL, message)
        return shared_secret

    def _encrypted_extensions(self, negotiated: Negotiated, early_data: bool) -> bytes:
        extensions: list[tuple[int, bytes]] = []
        if early_data:  # §4.2.10: an empty early_data extension accepts the client's 0-RTT
            extensions.append((ExtensionType.early_data, b""))
        if negotiated.alpn_protocol is not None:
            extensions.append(
                (
                    ExtensionType.application_layer_protocol_negotiation,
                    alpn_body(negotiated.alpn_protocol),
                )
            )
        extensions.extend(self._extra_encrypted_extensions)
        if negotiated.record_size_limit is not None:  # RFC 8449 §4: answer with ours
            extensions.append(
                (ExtensionType.record_size_limit, record_size_limit_body(OUR_RECORD_SIZE_LIMIT))
            )
        if negotiated.server_name is not None:  # RFC 6066 §3: acknowledge with an empty server_name
            extensions.append((ExtensionType.server_name, b""))
        return push_encrypted_extensions(EncryptedExtensions(tuple(extensions)))

    def _send_encrypted(self, transcript: Transcript, message: bytes) -> None:
        transcript.update(message)
        self._send(Epoch.HANDSHAKE, message)

    def _send_certificate_verify(self, negotiated: Negotiated, transcript: Transcript) -> None:
        # §4.4.3: 64 spaces, the context string, a zero byte, then the transcript hash.
        content = b" " * 64 + b"TLS 1.3, server CertificateVerify\x00" + transcript.digest()
        assert negotiated.credential is not None and negotiated.signature_scheme is not None
        signature = self._entropy.sign(negotiated.credential, negotiated.signature_scheme, content)
        self._send_encrypted(
            transcript,
            push_certificate_verify(CertificateVerify(negotiated.signature_scheme, signature)),
        )

    # -- §4.5 EndOfEarlyData -------------------------------------------------------------------

    def _process_end_of_early_data(self, message: bytes) -> None:
        state = self.state
        assert isinstance(state, ExpectEndOfEarlyData)
        if len(message) != 4:
            raise DecodeError(f"EndOfEarlyData of {len(message) - 4} bytes")
        after = state.after
        after.transcript.update(message)
        self._install(
            Direction.DECRYPT, Epoch.HANDSHAKE, after.suite, after.client_handshake_secret
        )
        self.state = after

    # -- §4.4.2, §4.4.3 the client's Certificate and CertificateVerify ---------------------------

    def _process_client_certificate(self, message: bytes) -> None:
        state = self.state
        assert isinstance(state, ExpectClientCertificate)
        client_auth = self.config.client_auth
        assert client_auth is not None
        judged = self._judge_certificate(client_auth, b"", state.after.transcript, message)
        if judged is None:
            self.state = state.after
        else:
            self.state = ExpectClientCertificateVerify(state.after, *judged)

    def _process_client_certificate_verify(self, message: bytes) -> None:
        state = self.state
        assert isinstance(state, ExpectClientCertificateVerify)
        client_auth = self.config.client_auth
        assert client_auth is not None
        after = state.after
        self._check_certificate_verify(
            client_auth, state.certificate, state.leaf, after.transcript, message
        )
        after.summary.client_certificate = state.certificate
        self.state = after

    def _judge_certificate(
        self, client_auth: ClientAuth, context: bytes, transcript: Transcript, message: bytes
    ) -> tuple[ClientCertificate, x509.Certificate] | None:
        """§4.4.2: the client's Certificate for our request with ``context``: judged, or None
        when it sent none and may (§4.4.2.4: certificate_required when it may not)."""
        certificate = pull_certificate(message[4:])
        if certificate.request_context != context:  # §4.4.2: the request's own context
            raise IllegalParameter("a client Certificate with another request's context")
        transcript.update(message)
        if not certificate.certificate_list:
            if client_auth.required:
                raise CertificateRequired("the client sent no certificate")
            return None
        return client_auth.judge(certificate.certificate_list, self._clock())

    def _check_certificate_verify(
        self,
        client_auth: ClientAuth,
        certificate: ClientCertificate,
        leaf: x509.Certificate,
        transcript: Transcript,
        message: bytes,
    ) -> None:
        """§4.4.3: the client's proof that it holds the key, then the application's word."""
        certificate_verify = pull_certificate_verify(message[4:])
        scheme = certificate_verify.algorithm
        if scheme not in VERIFIABLE_SCHEMES:  # listed for a CertificateVerify (§4.2.3)
            raise IllegalParameter(f"CertificateVerify with scheme 0x{scheme:04x}, not allowed")
        # 64 spaces, the context string, a zero byte, then the transcript hash.
        content = b" " * 64 + b"TLS 1.3, client CertificateVerify\x00" + transcript.digest()
        verify(
            leaf.public_key(),
            scheme,
            content,
            certificate_verify.signature,
            rsassa_pss=is_rsassa_pss(leaf),
        )
        client_auth.accept(certificate)  # the application's word, on a proven identity
        transcript.update(message)

    # -- §4.6.2 post-handshake authentication ----------------------------------------------------

    def _pending_authentication(self) -> tuple[Connected, PostHandshakeAuth]:
        state = self.state
        assert isinstance(state, Connected)
        if state.authentication is None:
            raise UnexpectedMessage("a client authentication message we did not ask for")
        return state, state.authentication

    def _process_post_handshake_certificate(self, message: bytes) -> None:
        _, pending = self._pending_authentication()
        if pending.certificate_received:
            raise UnexpectedMessage("a second Certificate for one CertificateRequest")
        pending.certificate_received = True
        judged = self._judge_certificate(
            pending.client_auth, pending.context, pending.transcript, message
        )
        if judged is not None:
            pending.certificate, pending.leaf = judged

    def _process_post_handshake_certificate_verify(self, message: bytes) -> None:
        _, pending = self._pending_authentication()
        if pending.certificate is None or pending.leaf is None:
            raise UnexpectedMessage("CertificateVerify without a certificate before it")
        self._check_certificate_verify(
            pending.client_auth, pending.certificate, pending.leaf, pending.transcript, message
        )
        pending.leaf = None  # verified: a second CertificateVerify is unexpected

    def _process_post_handshake_finished(self, message: bytes) -> None:
        state, pending = self._pending_authentication()
        if not pending.certificate_received or pending.leaf is not None:
            raise UnexpectedMessage("Finished before the client's Certificate (and its proof)")
        finished = pull_finished(message[4:])
        if len(finished.verify_data) != state.suite.hash_len:
            raise DecodeError(f"Finished of {len(finished.verify_data)} bytes")
        # §4.4: its base key is the client's current application traffic secret.
        expected = ks.finished_verify_data(
            state.suite, state.client_application_secret, pending.transcript.digest()
        )
        if not hmac.compare_digest(finished.verify_data, expected):
            raise DecryptError("client Finished (post-handshake authentication) does not verify")
        state.authentication = None
        self._actions.append(PostHandshakeAuthDone(pending.certificate))

    # -- §4.4.4 the client's Finished ----------------------------------------------------------

    def _process_client_finished(self, message: bytes) -> None:
        state = self.state
        assert isinstance(state, ExpectFinished)
        finished = pull_finished(message[4:])
        if len(finished.verify_data) != state.suite.hash_len:  # §4.4.4: Hash.length bytes
            raise DecodeError(f"Finished of {len(finished.verify_data)} bytes")
        expected = ks.finished_verify_data(
            state.suite, state.client_handshake_secret, state.transcript.digest()
        )
        if not hmac.compare_digest(finished.verify_data, expected):
            raise DecryptError("client Finished does not verify")
        self._install(
            Direction.DECRYPT, Epoch.ONE_RTT, state.suite, state.client_application_secret
        )
        self._actions.append(HandshakeDone(state.summary))
        tickets = self.config.tickets and self._tickets_usable
        if tickets or self.post_handshake_auth:  # both go on from the client's Finished
            state.transcript.update(message)
        if tickets:
            self._send_new_session_tickets(state)
        self.state = Connected(
            suite=state.suite,
            client_application_secret=state.client_application_secret,
            server_application_secret=state.server_application_secret,
            exporter_secret=state.exporter_secret,
            summary=state.summary,
            transcript=state.transcript if self.post_handshake_auth else None,
        )

    # -- §4.6.1 NewSessionTicket -----------------------------------------------------------------

    def _send_new_session_tickets(self, state: ExpectFinished) -> None:
        """``config.tickets`` tickets, each its own PSK (its nonce) sealed with what a
        resumption needs; the transcript runs to the client's Finished."""
        suite = state.suite
        resumption_master = ks.resumption_master_secret(
            suite, state.master_secret, state.transcript.digest()
        )
        summary = state.summary
        issued_at_ms = int(self._clock() * 1000)
        lifetime = self.config.ticket_lifetime
        early_data = self.config.early_data
        extensions: Extensions = (
            ((ExtensionType.early_data, early_data_ticket_body(early_data)),) if early_data else ()
        )
        for number in range(self.config.tickets):
            nonce = bytes((number,))
            age_add = _AGE_ADD.unpack(self._entropy.random(4))[0]
            ticket = TicketState(
                issued_at_ms=issued_at_ms,
                lifetime=lifetime,
                cipher_suite=suite.code,
                age_add=age_add,
                max_early_data=early_data,
                psk=ks.resumption_psk(suite, resumption_master, nonce),
                alpn_protocol=summary.alpn_protocol,
                server_name=summary.server_name,
                external_psk_identity=summary.psk_identity,
                client_certificate=None
                if summary.client_certificate is None
                else summary.client_certificate.chain[0],
                early_data_context=self._early_data_context,
            )
            sealed = seal_ticket(self.config.ticket_keys, ticket)
            self._send(
                Epoch.ONE_RTT,
                push_new_session_ticket(
                    NewSessionTicket(lifetime, age_add, nonce, sealed, extensions)
                ),
            )

    # -- §4.6.3 KeyUpdate ------------------------------------------------------------------------

    def _process_key_update(self, message: bytes) -> None:
        state = self.state
        assert isinstance(state, Connected)
        update = pull_key_update(message[4:])
        state.client_application_secret = ks.next_traffic_secret(
            state.suite, state.client_application_secret
        )
        self._install(
            Direction.DECRYPT, Epoch.ONE_RTT, state.suite, state.client_application_secret
        )
        if update.request_update:
            # §4.6.3: answer with our own KeyUpdate(update_not_requested) before sending more.
            self._send_key_update(state, False)

    def _send_key_update(self, state: Connected, update_requested: bool) -> None:
        """Send KeyUpdate under the current key, then switch to the next sending key."""
        self._send(Epoch.ONE_RTT, push_key_update(KeyUpdate(update_requested)))
        state.server_application_secret = ks.next_traffic_secret(
            state.suite, state.server_application_secret
        )
        self._install(
            Direction.ENCRYPT, Epoch.ONE_RTT, state.suite, state.server_application_secret
        )


# §5.1: a message that can precede a key change must end its record.  (Finished is also caught
# by the epoch check below; ClientHello must end its record even when an HRR follows.)
_ENDS_ITS_RECORD = (
    HandshakeType.client_hello,
    HandshakeType.end_of_early_data,
    HandshakeType.finished,
    HandshakeType.key_update,
)

_Handler = Callable[[ServerHandshake, bytes], None]

# The whole state machine: (state, message) -> step.  Anything else is unexpected_message.
_HANDLERS: dict[tuple[type, int], _Handler] = {
    (ExpectClientHello, HandshakeType.client_hello): ServerHandshake._process_client_hello,
    (
        ExpectRetriedClientHello,
        HandshakeType.client_hello,
    ): ServerHandshake._process_retried_client_hello,
    (
        ExpectEndOfEarlyData,
        HandshakeType.end_of_early_data,
    ): ServerHandshake._process_end_of_early_data,
    (
        ExpectClientCertificate,
        HandshakeType.certificate,
    ): ServerHandshake._process_client_certificate,
    (
        ExpectClientCertificateVerify,
        HandshakeType.certificate_verify,
    ): ServerHandshake._process_client_certificate_verify,
    (ExpectFinished, HandshakeType.finished): ServerHandshake._process_client_finished,
    (Connected, HandshakeType.key_update): ServerHandshake._process_key_update,
    (Connected, HandshakeType.certificate): ServerHandshake._process_post_handshake_certificate,
    (
        Connected,
        HandshakeType.certificate_verify,
    ): ServerHandshake._process_post_handshake_certificate_verify,
    (Connected, HandshakeType.finished): ServerHandshake._process_post_handshake_finished,
}

__all__ = [
    "AcceptEarlyData",
    "Action",
    "PostHandshakeAuthDone",
    "Direction",
    "Entropy",
    "Epoch",
    "HandshakeDone",
    "HandshakeSummary",
    "InstallSecret",
    "LimitRecordSize",
    "SendChangeCipherSpec",
    "SendHandshake",
    "ServerHandshake",
    "SkipEarlyData",
]
