"""stateless13: a sans-I/O TLS 1.3 server that can answer with a stateless HelloRetryRequest."""

from .alerts import (
    AlertDescription,
    AlertError,
    DecodeError,
    DecryptError,
    HandshakeFailure,
    IllegalParameter,
    LocalProtocolError,
    MissingExtension,
    ProtocolVersion,
    TLSError,
    UnexpectedMessage,
)
from .config import Credential, ServerConfig, keylog_to_file
from .connection import ServerConnection
from .cookie import CookieKeyRing
from .events import AlertReceived, ApplicationData, ConnectionClosed, Event, HandshakeComplete
from .handshake import Epoch
from .messages import CipherSuite, NamedGroup, SignatureScheme
from .replay import ReplayFilter
from .stateless import Accepted, AcceptResult, HelloRetry, NeedMoreData, Rejected, stateless_accept

__version__ = "0.1.0"

__all__ = [
    "Accepted",
    "AcceptResult",
    "AlertDescription",
    "AlertError",
    "AlertReceived",
    "ApplicationData",
    "CipherSuite",
    "ConnectionClosed",
    "CookieKeyRing",
    "Credential",
    "DecodeError",
    "DecryptError",
    "Epoch",
    "Event",
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
    "ServerConfig",
    "ServerConnection",
    "SignatureScheme",
    "TLSError",
    "UnexpectedMessage",
    "keylog_to_file",
    "stateless_accept",
]
