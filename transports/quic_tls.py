"""stateless13's handshake inside aioquic: a TLS engine for ``QuicConnection``, and the connection.

:class:`QuicTLS` stands in for ``aioquic.tls.Context``: CRYPTO bytes of one epoch go in,
``SendHandshake`` actions become CRYPTO data of their epoch, ``InstallSecret`` actions become
aioquic packet keys, our ``AlertError`` becomes aioquic's ``tls.Alert`` (so the connection closes
with CRYPTO_ERROR + the alert).  A ClientHello with a non-empty legacy_session_id is refused with
PROTOCOL_VIOLATION (RFC 9001 §8.4), so no middlebox CCS is ever asked for; a TLS KeyUpdate is
refused with unexpected_message (RFC 9001 §6); a client without ALPN gets no_application_protocol
(RFC 9001 §8.1).

0-RTT (``ServerConfig.early_data``; RFC 9001 §4.6): the handshake is told that QUIC sends no
EndOfEarlyData (RFC 9001 §8.3) and is given our transport parameters that 0-RTT relies on
(:class:`~.quic_tokens.ZeroRttParameters`), which it seals in each ticket and, when a client
resumes one with early data, compares with this connection's: any lower refuses the early data.
Accepted, its ``InstallSecret`` for the 0-RTT epoch gives aioquic the key of the client's 0-RTT
packets; refused (and always after an HRR, which the core decides), no key is installed, the
EncryptedExtensions say nothing of early data, and aioquic drops those packets.

Client certificates (``ServerConfig.client_auth``) need nothing of their own: the handshake asks
in its flight and the client's Certificate and CertificateVerify come as Handshake-epoch CRYPTO
data before its Finished, as over TCP; a refusal is an ``AlertError`` like any other.
Post-handshake authentication is not available over QUIC (RFC 9001 §4.4): a client's
post_handshake_auth offer is ignored (``ServerHandshake.post_handshake_auth`` stays False, so
the core keeps no transcript for it and refuses ``request_client_certificate``),
:meth:`QuicTLS.request_client_certificate` raises ``LocalProtocolError``, and any TLS message
after the handshake is unexpected_message.

:class:`StatelessQuicConnection` is aioquic's ``QuicConnection`` with that engine, optionally
picking up after a stateless HRR from a :class:`ConnectionStart` (which private attributes of
aioquic it sets, and the aioquic versions tested, are in docs/QUIC.md).  Its ``on_event`` sees
every event as the protocol takes it, so the server keeps its report without asking anything of
the protocol (any aioquic ``QuicConnectionProtocol``).  When its handshake completes it sends the
client one NEW_TOKEN frame (RFC 9000 §19.7), which aioquic's server never sends.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

from aioquic import tls
from aioquic.buffer import Buffer
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection, QuicConnectionError, QuicReceiveContext
from aioquic.quic.packet import QuicErrorCode, QuicFrameType
from aioquic.quic.packet_builder import QuicDeliveryState, QuicPacketBuilder
from aioquic.quic.recovery import QuicPacketSpace

from stateless13 import (
    Action,
    AlertError,
    ClientAuth,
    ClientHello,
    CookieVerified,
    Epoch,
    ExtensionType,
    HandshakeDone,
    HandshakeSummary,
    IllegalParameter,
    InstallSecret,
    LocalProtocolError,
    MissingExtension,
    SendHandshake,
    ServerConfig,
    ServerHandshake,
    TLSError,
    UnexpectedMessage,
    client_hello_size,
    parse_client_hello,
    select_alpn,
)

from .quic_tokens import ZeroRttParameters


def check_quic_client_hello(config: ServerConfig, hello: ClientHello) -> None:
    """What QUIC adds to a ClientHello's rules; raises QuicConnectionError or AlertError.

    Among them an ALPN protocol in common, which QUIC requires (RFC 9001 §8.1)."""
    if hello.legacy_session_id:
        raise QuicConnectionError(
            error_code=QuicErrorCode.PROTOCOL_VIOLATION,
            frame_type=QuicFrameType.CRYPTO,
            reason_phrase="ClientHello has a non-empty legacy_session_id (RFC 9001 §8.4)",
        )
    if not any(t == ExtensionType.quic_transport_parameters for t, _ in hello.extensions):
        raise MissingExtension("no quic_transport_parameters extension (RFC 9001 §8.2)")
    select_alpn(config, hello)


#: Why a QUIC server never asks for a client certificate after the handshake.
NO_POST_HANDSHAKE_AUTH = (
    "post-handshake authentication is not available over QUIC (RFC 9001 §4.4): ask for the "
    "client certificate in the handshake (ServerConfig.client_auth)"
)


def _aioquic_alert(error: AlertError) -> tls.Alert:
    alert = tls.Alert(str(error))
    try:
        alert.description = tls.AlertDescription(int(error.description))
    except ValueError:
        alert.description = tls.AlertDescription.internal_error
    return alert


class QuicTLS(tls.Context):
    """stateless13's ``ServerHandshake`` behind the interface ``QuicConnection`` expects.

    ``verified``: the front already opened ClientHello2's cookie (the stateless HRR went out
    before the connection existed); the first ClientHello here must be that very message.
    ``None``: an ordinary handshake, with a stateful HRR only when the key shares do not fit.
    """

    def __init__(
        self,
        config: ServerConfig,
        *,
        peer: tuple[str, int],
        verified: CookieVerified | None,
    ) -> None:
        super().__init__(is_client=False)
        self.config = config
        self.peer = peer
        self.verified = verified
        #: Created from the (whole) ClientHello.
        self.server_handshake: ServerHandshake | None = None
        #: Set by the connection before each call: the epoch of the CRYPTO data passed in.
        self.receive_epoch = tls.Epoch.INITIAL
        self.summary: HandshakeSummary | None = None
        self.error: AlertError | None = None
        self.client_random = b""
        self.legacy_session_id = b""
        self._hello = bytearray()

    def handle_message(self, input_data: bytes, output_buf: dict[tls.Epoch, Buffer]) -> None:
        if self.error is not None:
            # Failed already: aioquic still passes CRYPTO data that came before its
            # CONNECTION_CLOSE went out (the rest of a client's flight: a CertificateVerify
            # after a refused Certificate).  The first alert stays the one reported.
            raise _aioquic_alert(self.error)
        try:
            actions = self._receive(Epoch(self.receive_epoch.value), bytes(input_data))
        except AlertError as error:
            self.error = error
            raise _aioquic_alert(error) from error
        except TLSError as error:  # LocalProtocolError: a bug on our side, not the peer's
            raise tls.AlertInternalError(str(error)) from error
        if self.server_handshake is not None:
            # RFC 9001 §4.4: a QUIC server never requests a certificate after the handshake,
            # whatever the client offered (set again after each ClientHello, which sets it).
            self.server_handshake.post_handshake_auth = False
        self._apply(actions, output_buf)

    def request_client_certificate(self, client_auth: ClientAuth | None = None) -> NoReturn:
        """Always refused: RFC 9001 §4.4 forbids post-handshake authentication over QUIC (the
        client certificate is asked for in the handshake, ``ServerConfig.client_auth``)."""
        raise LocalProtocolError(NO_POST_HANDSHAKE_AUTH)

    def _receive(self, epoch: Epoch, data: bytes) -> list[Action]:
        if self.server_handshake is not None:
            if epoch == Epoch.ONE_RTT:
                raise UnexpectedMessage("TLS message after the handshake (RFC 9001 §6)")
            return self.server_handshake.receive(epoch, data)
        if epoch != Epoch.INITIAL:
            raise UnexpectedMessage("handshake data before the ClientHello")
        self._hello += data
        size = client_hello_size(self._hello, self.config.max_client_hello_size)
        if size is None or len(self._hello) < size:
            return []
        if len(self._hello) > size:
            raise UnexpectedMessage("handshake data after the ClientHello")
        message = bytes(self._hello)
        self._hello.clear()
        return self._start(message)

    def _start(self, message: bytes) -> list[Action]:
        """The whole ClientHello is here: check it as QUIC does, then start the handshake."""
        hello = parse_client_hello(message, self.config.max_client_hello_size)
        self.client_random = hello.random
        self.legacy_session_id = hello.legacy_session_id
        self.received_extensions = [(t, d) for t, d in hello.extensions]
        check_quic_client_hello(self.config, hello)
        if self.alpn_cb is not None:  # parses the transport parameters; may set ours anew
            self.alpn_cb(select_alpn(self.config, hello).decode("ascii", "replace"))
        extensions = tuple((int(t), bytes(d)) for t, d in self.handshake_extensions)
        # What 0-RTT relies on, as this connection's transport parameters say it (RFC 9000 §7.4.1).
        ours = ZeroRttParameters.of(
            dict(extensions).get(ExtensionType.quic_transport_parameters, b"")
        )
        if self.verified is not None:
            if message != self.verified.message:  # the front opened this one's cookie, once
                raise IllegalParameter("ClientHello2 is not the one whose cookie was opened")
            self.server_handshake = ServerHandshake.resume_from_cookie(
                self.config,
                self.verified,
                peer=self.peer,
                encrypted_extensions=extensions,
                early_data_context=ours.encode(),
                admits_early_data=ours.admits,
                end_of_early_data=False,
            )
            return self.server_handshake.take_actions()
        self.server_handshake = ServerHandshake(
            self.config,
            peer=self.peer,
            encrypted_extensions=extensions,
            early_data_context=ours.encode(),
            admits_early_data=ours.admits,
            end_of_early_data=False,
        )
        return self.server_handshake.receive(Epoch.INITIAL, message)

    def _apply(self, actions: list[Action], output_buf: dict[tls.Epoch, Buffer]) -> None:
        for action in actions:
            if isinstance(action, SendHandshake):
                output_buf[tls.Epoch(action.epoch.value)].push_bytes(action.data)
            elif isinstance(action, InstallSecret):
                self.update_traffic_key_cb(
                    tls.Direction(action.direction.value),
                    tls.Epoch(action.epoch.value),
                    tls.CipherSuite(int(action.suite.code)),
                    action.secret,
                )
            elif isinstance(action, HandshakeDone):
                self.summary = action.summary
                # What aioquic's HandshakeCompleted event reports (a ticket of ours resumed).
                self._session_resumed = action.summary.resumed
                self.state = tls.State.SERVER_POST_HANDSHAKE
            # SendChangeCipherSpec: never asked for, as the session id is empty (QUIC has none).
            # AcceptEarlyData: its limit is for records; flow control bounds 0-RTT (RFC 9001
            # §4.6.1).  SkipEarlyData: the 0-RTT packets drop for want of a key.
        handshake = self.server_handshake
        if handshake is not None and handshake.summary is not None:
            summary = handshake.summary
            # What aioquic's HandshakeCompleted event reports.
            self.early_data_accepted = summary.early_data
            if summary.alpn_protocol is not None:
                self.alpn_negotiated = summary.alpn_protocol.decode("ascii", "replace")
            if self.state == tls.State.SERVER_EXPECT_CLIENT_HELLO:
                self.state = tls.State.SERVER_EXPECT_FINISHED


@dataclass(frozen=True, slots=True)
class ResumePoint:
    """Where a connection built from ClientHello2 picks up after the stateless HRR."""

    client_crypto_offset: int  # len(ClientHello1)
    server_crypto_offset: int  # len(HRR)
    next_packet_number: int
    cookie: CookieVerified  # ClientHello2 and its opened cookie: the handshake resumes from it


@dataclass(frozen=True, slots=True)
class ConnectionStart:
    """Everything the front learned that a new connection needs (and nothing kept elsewhere)."""

    key_cid: bytes  # the client's Initial keys derive from it
    host_cid: bytes  # our CID: initial_source_connection_id
    original_dcid: bytes
    retry_scid: bytes | None
    resume: ResumePoint | None  # None: an ordinary handshake on a fresh CRYPTO stream
    address_validated: bool
    validation: str  # "cookie", "retry", "retry+cookie", "token" or "none": for reports
    datagrams: tuple[bytes, ...]  # to feed the connection, in order
    version: int


#: A NEW_TOKEN frame's type and length fields, at most (RFC 9000 §19.7: two varints).
_NEW_TOKEN_FRAME_OVERHEAD = 1 + 8


class StatelessQuicConnection(QuicConnection):
    """aioquic's QuicConnection with :class:`QuicTLS`, optionally resuming after a stateless HRR.

    ``new_token``: called once, when the handshake completes, for the token of the NEW_TOKEN
    frame then sent (``InitialFront.new_token``; None from it, or no callable: no frame)."""

    def __init__(
        self,
        *,
        configuration: QuicConfiguration,
        server_config: ServerConfig,
        peer: tuple[str, int],
        start: ConnectionStart,
        new_token: Callable[[], bytes | None] | None = None,
    ) -> None:
        super().__init__(
            configuration=configuration,
            original_destination_connection_id=start.original_dcid,
            retry_source_connection_id=start.retry_scid,
        )
        self.start = start
        self.peer = peer
        self.server_config = server_config
        self.quic_tls: QuicTLS | None = None
        #: Called with each event as the protocol takes it (``next_event``), before the protocol
        #: handles it: the server's report (quic_server.ServerConnection).
        self.on_event: Callable[[events.QuicEvent], None] | None = None
        # Our CID is the one the front chose (the HRR's SCID): initial_source_connection_id.
        self._host_cids[0].cid = start.host_cid
        self.host_cid = start.host_cid
        self._local_initial_source_connection_id = start.host_cid
        self._new_token_source = new_token
        #: The token of our NEW_TOKEN frame, once the handshake has completed.
        self.new_token: bytes | None = None
        #: True once the client acknowledged the frame (it is sent again while it is lost).
        self.new_token_acknowledged = False
        self._new_token_pending = False

    def _initialize(self, peer_cid: bytes) -> None:
        # Initial keys from the key CID: after a stateless HRR the client sends to our CID, but
        # keeps the keys of its original DCID (RFC 9001 §5.2).
        super()._initialize(self.start.key_cid)
        engine = QuicTLS(
            self.server_config,
            peer=self.peer,
            verified=None if self.start.resume is None else self.start.resume.cookie,
        )
        engine.handshake_extensions = self.tls.handshake_extensions  # our transport parameters
        engine.alpn_cb = self._alpn_handler
        engine.update_traffic_key_cb = self._update_traffic_key
        self.tls = engine
        self.quic_tls = engine
        resume = self.start.resume
        if resume is not None:
            stream = self._crypto_streams[tls.Epoch.INITIAL]
            stream.receiver._buffer_start = resume.client_crypto_offset
            stream.receiver.highest_offset = resume.client_crypto_offset
            stream.sender._buffer_start = resume.server_crypto_offset
            stream.sender._buffer_stop = resume.server_crypto_offset
            stream.sender.highest_offset = resume.server_crypto_offset
            self._packet_number = resume.next_packet_number
        if self.start.address_validated:
            for path in self._network_paths:
                path.is_validated = True

    def next_event(self) -> events.QuicEvent | None:
        event = super().next_event()
        if event is not None and self.on_event is not None:
            self.on_event(event)
        return event

    def _handle_crypto_frame(
        self, context: QuicReceiveContext, frame_type: int, buf: Buffer
    ) -> None:
        if self.quic_tls is not None:
            self.quic_tls.receive_epoch = context.epoch
        super()._handle_crypto_frame(context, frame_type, buf)
        if self._handshake_complete and self._new_token_source is not None:
            # The client's Finished is in: HANDSHAKE_DONE is pending, and our token goes with it.
            source, self._new_token_source = self._new_token_source, None
            self.new_token = source()
            self._new_token_pending = self.new_token is not None

    # NEW_TOKEN (RFC 9000 §19.7) is written by hand: aioquic's server never sends one and has no
    # hook for a frame of our own, so it rides on the step of _write_application that runs for
    # every 1-RTT packet once the handshake is complete (the connection limits, just after
    # HANDSHAKE_DONE and the connection IDs), and is registered with the loss recovery as
    # aioquic registers HANDSHAKE_DONE: sent again, the same token, until it is acknowledged.

    def _write_connection_limits(self, builder: QuicPacketBuilder, space: QuicPacketSpace) -> None:
        if self._new_token_pending and self._handshake_complete:
            self._write_new_token_frame(builder)
        super()._write_connection_limits(builder=builder, space=space)

    def _write_new_token_frame(self, builder: QuicPacketBuilder) -> None:
        token = self.new_token
        assert token is not None
        buf = builder.start_frame(  # raises QuicPacketBuilderStop, as for aioquic's frames
            QuicFrameType.NEW_TOKEN,
            capacity=_NEW_TOKEN_FRAME_OVERHEAD + len(token),
            handler=self._on_new_token_delivery,
        )
        buf.push_uint_var(len(token))
        buf.push_bytes(token)
        self._new_token_pending = False
        frames = builder.quic_logger_frames  # set while a packet is being built
        if self._quic_logger is not None and frames is not None:
            frames.append(self._quic_logger.encode_new_token_frame(token))

    def _on_new_token_delivery(self, delivery: QuicDeliveryState) -> None:
        if delivery == QuicDeliveryState.ACKED:
            self.new_token_acknowledged = True
        elif not self.new_token_acknowledged:
            self._new_token_pending = True


__all__ = [
    "NO_POST_HANDSHAKE_AUTH",
    "ConnectionStart",
    "QuicTLS",
    "ResumePoint",
    "StatelessQuicConnection",
    "check_quic_client_hello",
]
