"""The anchor: OpenSSL's ``SSL_stateless()`` driven through ctypes over memory BIOs (libssl.so.3).

One ``SSL_CTX`` with the certificate, TLS 1.3 only, cookie callbacks set; a fresh ``SSL`` object
per ClientHello (``SSL_new``, two memory BIOs, ``BIO_write``, ``SSL_stateless``, ``BIO_read``,
``SSL_free``), as ``../shared/research/openssl_stateless.md`` measured it.  The cookie callbacks
are Python: HMAC-SHA256(random key, the client's packed IP address), 32 bytes, checked with
``hmac.compare_digest`` — the same binding our cookie carries as associated data.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import hmac
import os
import socket
from typing import Any

from stateless13.messages import HELLO_RETRY_REQUEST_RANDOM

from .common import PEER, pem_files

_SSL_CTRL_SET_MIN_PROTO_VERSION = 123
_SSL_CTRL_SET_MAX_PROTO_VERSION = 124
_TLS1_3_VERSION = 0x0304
_SSL_FILETYPE_PEM = 1
_SSL_OP_CIPHER_SERVER_PREFERENCE = 1 << 22
_SSL_OP_NO_TICKET = 1 << 14

#: The same preference order as stateless13's default ServerConfig.
MATCHED_SUITES = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"

_GENERATE_CB = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_ubyte), ctypes.POINTER(ctypes.c_size_t)
)
_VERIFY_CB = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_ubyte), ctypes.c_size_t
)


def _load(name: str) -> ctypes.CDLL:
    try:
        return ctypes.CDLL(f"lib{name}.so.3")
    except OSError:
        found = ctypes.util.find_library(name)
        if found is None:
            raise
        return ctypes.CDLL(found)


class _Lib:
    """The few libssl/libcrypto functions the anchor needs, with their C signatures."""

    def __init__(self) -> None:
        ssl = _load("ssl")
        crypto = _load("crypto")
        vp, ip, sz = ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t

        def bind(lib: ctypes.CDLL, name: str, restype: Any, *argtypes: Any) -> Any:
            function = getattr(lib, name)
            function.restype = restype
            function.argtypes = list(argtypes)
            return function

        self.TLS_server_method = bind(ssl, "TLS_server_method", vp)
        self.SSL_CTX_new = bind(ssl, "SSL_CTX_new", vp, vp)
        self.SSL_CTX_free = bind(ssl, "SSL_CTX_free", None, vp)
        self.SSL_CTX_ctrl = bind(ssl, "SSL_CTX_ctrl", ctypes.c_long, vp, ip, ctypes.c_long, vp)
        self.SSL_CTX_set_options = bind(
            ssl, "SSL_CTX_set_options", ctypes.c_uint64, vp, ctypes.c_uint64
        )
        self.SSL_CTX_get_options = bind(ssl, "SSL_CTX_get_options", ctypes.c_uint64, vp)
        self.SSL_CTX_set_ciphersuites = bind(
            ssl, "SSL_CTX_set_ciphersuites", ip, vp, ctypes.c_char_p
        )
        self.SSL_CTX_use_certificate_chain_file = bind(
            ssl, "SSL_CTX_use_certificate_chain_file", ip, vp, ctypes.c_char_p
        )
        self.SSL_CTX_use_PrivateKey_file = bind(
            ssl, "SSL_CTX_use_PrivateKey_file", ip, vp, ctypes.c_char_p, ip
        )
        self.SSL_CTX_check_private_key = bind(ssl, "SSL_CTX_check_private_key", ip, vp)
        self.SSL_CTX_set_stateless_cookie_generate_cb = bind(
            ssl, "SSL_CTX_set_stateless_cookie_generate_cb", None, vp, _GENERATE_CB
        )
        self.SSL_CTX_set_stateless_cookie_verify_cb = bind(
            ssl, "SSL_CTX_set_stateless_cookie_verify_cb", None, vp, _VERIFY_CB
        )
        self.SSL_new = bind(ssl, "SSL_new", vp, vp)
        self.SSL_free = bind(ssl, "SSL_free", None, vp)
        self.SSL_set_bio = bind(ssl, "SSL_set_bio", None, vp, vp, vp)
        self.SSL_stateless = bind(ssl, "SSL_stateless", ip, vp)
        self.SSL_get_error = bind(ssl, "SSL_get_error", ip, vp, ip)
        self.BIO_s_mem = bind(crypto, "BIO_s_mem", vp)
        self.BIO_new = bind(crypto, "BIO_new", vp, vp)
        self.BIO_write = bind(crypto, "BIO_write", ip, vp, ctypes.c_char_p, ip)
        self.BIO_read = bind(crypto, "BIO_read", ip, vp, vp, ip)
        self.BIO_ctrl_pending = bind(crypto, "BIO_ctrl_pending", sz, vp)
        self.ERR_get_error = bind(crypto, "ERR_get_error", ctypes.c_ulong)
        self.ERR_peek_error = bind(crypto, "ERR_peek_error", ctypes.c_ulong)
        self.ERR_clear_error = bind(crypto, "ERR_clear_error", None)
        self.ERR_error_string_n = bind(
            crypto, "ERR_error_string_n", None, ctypes.c_ulong, ctypes.c_char_p, sz
        )

    def errors(self) -> str:
        messages = []
        while code := self.ERR_get_error():
            buffer = ctypes.create_string_buffer(256)
            self.ERR_error_string_n(code, buffer, 256)
            messages.append(buffer.value.decode(errors="replace"))
        return "; ".join(messages) or "no error queued"


_LIB: _Lib | None = None


def lib() -> _Lib:
    global _LIB
    if _LIB is None:
        _LIB = _Lib()
    return _LIB


def is_hello_retry_request(output: bytes) -> bool:
    """A plaintext handshake record holding a ServerHello whose random is the HRR magic."""
    return (
        len(output) >= 43
        and output[0] == 22  # handshake record
        and output[5] == 2  # server_hello
        and output[11:43] == HELLO_RETRY_REQUEST_RANDOM
    )


class OpenSSLStateless:
    """``SSL_stateless()`` with a fresh SSL object per call, one SSL_CTX for all of them.

    ``suites`` None keeps OpenSSL's default TLS 1.3 suites and client-preference order;
    otherwise the given list is used in server-preference order.
    """

    def __init__(
        self,
        certificate_pem: bytes,
        key_pem: bytes,
        *,
        suites: str | None = MATCHED_SUITES,
        peer: tuple[str, int] = PEER,
    ) -> None:
        self._lib = lib()
        self._peer = peer
        self._hmac_key = os.urandom(32)
        self._output = ctypes.create_string_buffer(64 * 1024)
        library = self._lib
        ctx = library.SSL_CTX_new(library.TLS_server_method())
        if not ctx:
            raise RuntimeError(f"SSL_CTX_new: {library.errors()}")
        self._ctx = ctx
        library.SSL_CTX_ctrl(ctx, _SSL_CTRL_SET_MIN_PROTO_VERSION, _TLS1_3_VERSION, None)
        library.SSL_CTX_ctrl(ctx, _SSL_CTRL_SET_MAX_PROTO_VERSION, _TLS1_3_VERSION, None)
        if suites is not None:
            library.SSL_CTX_set_options(ctx, _SSL_OP_CIPHER_SERVER_PREFERENCE)
            if library.SSL_CTX_set_ciphersuites(ctx, suites.encode()) != 1:
                raise RuntimeError(f"SSL_CTX_set_ciphersuites: {library.errors()}")
        with pem_files(certificate_pem, key_pem) as (cert_path, key_path):
            if library.SSL_CTX_use_certificate_chain_file(ctx, cert_path.encode()) != 1:
                raise RuntimeError(f"certificate: {library.errors()}")
            if library.SSL_CTX_use_PrivateKey_file(ctx, key_path.encode(), _SSL_FILETYPE_PEM) != 1:
                raise RuntimeError(f"private key: {library.errors()}")
        if library.SSL_CTX_check_private_key(ctx) != 1:
            raise RuntimeError(f"key does not match: {library.errors()}")
        # Keep the ctypes callback objects alive as long as the SSL_CTX.
        self._generate = _GENERATE_CB(self._generate_cookie)
        self._verify = _VERIFY_CB(self._verify_cookie)
        library.SSL_CTX_set_stateless_cookie_generate_cb(ctx, self._generate)
        library.SSL_CTX_set_stateless_cookie_verify_cb(ctx, self._verify)

    def close(self) -> None:
        if self._ctx:
            self._lib.SSL_CTX_free(self._ctx)
            self._ctx = None

    def __del__(self) -> None:
        self.close()

    # -- the application cookie: HMAC over the client's address ------------------------------

    def _binding(self) -> bytes:
        return socket.inet_pton(socket.AF_INET, self._peer[0])

    def _generate_cookie(self, ssl: object, cookie: Any, cookie_len: Any) -> int:
        mac = hmac.digest(self._hmac_key, self._binding(), hashlib.sha256)
        ctypes.memmove(cookie, mac, len(mac))
        cookie_len[0] = len(mac)
        return 1

    def _verify_cookie(self, ssl: object, cookie: Any, cookie_len: int) -> int:
        mac = hmac.digest(self._hmac_key, self._binding(), hashlib.sha256)
        return int(hmac.compare_digest(ctypes.string_at(cookie, cookie_len), mac))

    # -- one ClientHello, one fresh SSL object ------------------------------------------------

    def answer(self, data: bytes, *, retry_after_ccs: bool = False) -> tuple[int, bytes]:
        """(SSL_stateless's return code, what it wrote) for ``data`` on a fresh SSL object.

        With ``retry_after_ccs``, a -1 with an empty error queue (OpenSSL consumed the client's
        compatibility CCS and "returns an error", see the research note) is called once more,
        as any caller of SSL_stateless must.
        """
        library = self._lib
        ssl = library.SSL_new(self._ctx)
        incoming = library.BIO_new(library.BIO_s_mem())
        outgoing = library.BIO_new(library.BIO_s_mem())
        library.SSL_set_bio(ssl, incoming, outgoing)
        library.BIO_write(incoming, data, len(data))
        rc = library.SSL_stateless(ssl)
        if rc < 0 and retry_after_ccs and not library.ERR_peek_error():
            rc = library.SSL_stateless(ssl)
        written = library.BIO_read(outgoing, self._output, len(self._output))
        output = self._output.raw[:written] if written > 0 else b""
        library.SSL_free(ssl)  # frees both BIOs
        return rc, output

    def hello_retry(self, client_hello: bytes) -> bytes:
        """The HRR (+ CCS) for ClientHello1; raises unless OpenSSL really produced an HRR."""
        rc, output = self.answer(client_hello)
        if rc != 0 or not is_hello_retry_request(output):
            raise RuntimeError(
                f"SSL_stateless gave rc={rc}, {len(output)} bytes, no HRR: {self._lib.errors()}"
            )
        return output

    def resume(self, client_hello_2: bytes) -> bytes:
        """The server flight for ClientHello2 (after one of our HRRs); raises unless rc == 1."""
        rc, output = self.answer(client_hello_2, retry_after_ccs=True)
        if rc != 1 or not output or output[0] != 22 or is_hello_retry_request(output):
            raise RuntimeError(
                f"SSL_stateless(CH2) gave rc={rc}, {len(output)} bytes: {self._lib.errors()}"
            )
        return output
