"""stateless13: a sans-I/O TLS 1.3 server that can answer with a stateless HelloRetryRequest.

Two tiers of public names, both documented and stable:

* For applications and byte-stream transports: ``ServerConfig``, ``stateless_accept`` and its
  results, ``ServerConnection`` and its events, the alerts and errors.
* For transports that frame the handshake themselves (QUIC; a datagram transport): the
  handshake without records, ``ServerHandshake`` and the actions it returns, and the
  message-level stateless front, ``answer_client_hello`` and its results.  For DTLS 1.3, the
  whole of it sans-I/O: ``DtlsListener`` (the stateless listener) and the ``DtlsConnection``
  it makes.  The adapters in ``stateless13.transports`` use nothing else.
"""

from .alerts import (
    AccessDenied,
    AlertDescription,
    AlertError,
    AlertLevel,
    BadRecordMac,
    DecodeError,
    DecryptError,
    HandshakeFailure,
    IllegalParameter,
    LocalProtocolError,
    MissingExtension,
    NoApplicationProtocol,
    ProtocolVersion,
    RecordOverflow,
    TLSError,
    UnexpectedMessage,
)
from .client_auth import ClientAuth, ClientCertificate
from .config import Credential, ExternalPsk, ServerConfig, keylog_to_file, load_external_psks
from .connection import ServerConnection
from .cookie import CookieKeyRing, peer_binding
from .dtls_connection import DtlsConnection
from .dtls_listener import (
    DtlsAccept,
    DtlsDrop,
    DtlsHeld,
    DtlsListener,
    DtlsListenerLimits,
    DtlsListenResult,
    DtlsReply,
)
from .events import (
    AlertReceived,
    ApplicationData,
    ClientAuthenticated,
    ConnectionClosed,
    EarlyData,
    Event,
    HandshakeComplete,
)
from .handshake import (
    Action,
    Direction,
    Epoch,
    HandshakeDone,
    HandshakeSummary,
    InstallSecret,
    LimitRecordSize,
    SendChangeCipherSpec,
    SendHandshake,
    ServerHandshake,
    SkipEarlyData,
)
from .messages import (
    CipherSuite,
    ClientHello,
    ExtensionType,
    HandshakeType,
    NamedGroup,
    SignatureScheme,
)
from .negotiation import select_alpn
from .replay import ReplayFilter, ReplayStore
from .retry import (
    CookieVerified,
    RetryRequest,
    answer_client_hello,
    client_hello_size,
    parse_client_hello,
)
from .stateless import (
    Accepted,
    AcceptResult,
    ClientHelloBuffer,
    HelloRetry,
    NeedMoreData,
    Rejected,
    stateless_accept,
)

__version__ = "0.1.0"

from . import handshake as _handshake

#: Whether this is the mypyc-compiled build of the core (setup.py): the same source and API as
#: the pure-Python one, faster; its modules are C extensions, not .py files.
COMPILED: bool = not (_handshake.__file__ or "").endswith(".py")

__all__ = [
    "COMPILED",
    # the second tier (see the module docstring)
    "Action",
    "CookieVerified",
    "ClientHello",
    "Direction",
    "ExtensionType",
    "HandshakeDone",
    "HandshakeSummary",
    "HandshakeType",
    "InstallSecret",
    "LimitRecordSize",
    "RetryRequest",
    "SendChangeCipherSpec",
    "SendHandshake",
    "ServerHandshake",
    "SkipEarlyData",
    "answer_client_hello",
    "client_hello_size",
    "parse_client_hello",
    "peer_binding",
    "select_alpn",
    # datagram transports: DTLS 1.3 (RFC 9147), its stateless listener and its associations
    "DtlsAccept",
    "DtlsConnection",
    "DtlsDrop",
    "DtlsHeld",
    "DtlsListenResult",
    "DtlsListener",
    "DtlsListenerLimits",
    "DtlsReply",
    # applications and byte-stream transports
    "AccessDenied",
    "AlertLevel",
    "BadRecordMac",
    "NoApplicationProtocol",
    "RecordOverflow",
    "Accepted",
    "AcceptResult",
    "AlertDescription",
    "AlertError",
    "AlertReceived",
    "ApplicationData",
    "CipherSuite",
    "ClientAuth",
    "ClientAuthenticated",
    "ClientCertificate",
    "ClientHelloBuffer",
    "ConnectionClosed",
    "CookieKeyRing",
    "Credential",
    "DecodeError",
    "DecryptError",
    "Epoch",
    "Event",
    "EarlyData",
    "ExternalPsk",
    "HandshakeComplete",
    "HandshakeFailure",
    "HelloRetry",
    "IllegalParameter",
    "LocalProtocolError",
    "MissingExtension",
    "NamedGroup",
    "NeedMoreData",
    "ProtocolVersion",
    "Rejected",
    "ReplayFilter",
    "ReplayStore",
    "ServerConfig",
    "ServerConnection",
    "SignatureScheme",
    "TLSError",
    "UnexpectedMessage",
    "keylog_to_file",
    "load_external_psks",
    "stateless_accept",
]
