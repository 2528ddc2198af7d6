"""Full TLS 1.3 handshakes, server side only: ``ServerConnection`` vs Python ``ssl``'s server.

    python -m bench.handshake [--seconds S] [--rounds N] [--json]

Only the server's calls are timed (creating the server object, feeding it ClientHello, taking its
flight; feeding it the client's Finished): the client's work happens between the timed parts.
The client is Python's ``ssl`` (OpenSSL 3.0) over memory BIOs wherever it can be; OpenSSL 3.0
has no X25519MLKEM768, so for that group the client is built from stateless13's own codec and
key schedule (:class:`CodecClient`) and only the server's cost is compared with itself.
Python ``ssl``'s server sends no session tickets in the main anchor (``num_tickets = 0``, since
stateless13 sends none); the default of 2 tickets is shown beside it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import os
import ssl
import time
from collections.abc import Callable
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, mlkem, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand

from stateless13 import (
    Accepted,
    CipherSuite,
    HandshakeComplete,
    HelloRetry,
    NamedGroup,
    ServerConfig,
    ServerConnection,
    stateless_accept,
)
from stateless13 import key_schedule as ks
from stateless13.messages import (
    ClientHello,
    ExtensionType,
    Finished,
    HandshakeType,
    pull_server_hello,
    push_client_hello,
    push_finished,
)
from stateless13.primitives import SUITES
from stateless13.record import ContentType, RecordProtection, frame_plaintext

from .common import (
    PEER,
    MemoryClient,
    Progress,
    Report,
    Row,
    alternate,
    emit,
    measured_rate,
    parser,
    pem_files,
    private_key_pem,
    python_ssl_client_context,
)


class Client(Protocol):
    def first(self) -> bytes: ...
    def finish(self, flight: bytes) -> bytes: ...


class PythonClient:
    """Python's ``ssl`` client (OpenSSL 3.0): x25519 key share, middlebox compatibility on."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self._client = MemoryClient(context)

    def first(self) -> bytes:
        return self._client.step()

    def finish(self, flight: bytes) -> bytes:
        return self._client.step(flight)


def _extension(ext_type: int, body: bytes) -> tuple[int, bytes]:
    return ext_type, body


def _u16_list(values: tuple[int, ...], length_size: int = 2) -> bytes:
    data = b"".join(value.to_bytes(2, "big") for value in values)
    return len(data).to_bytes(length_size, "big") + data


class CodecClient:
    """A minimal TLS 1.3 client from stateless13's codec and key schedule (benchmarks only).

    Sends a Chromium-like ClientHello1 with one key share for ``group`` (X25519MLKEM768: ML-KEM-768
    encapsulation key + X25519), checks the server's Finished, answers with its own.  It does
    not verify the certificate: only the server's cost is measured.
    """

    def __init__(self, group: NamedGroup = NamedGroup.X25519MLKEM768) -> None:
        self._x25519 = x25519.X25519PrivateKey.generate()
        share = self._x25519.public_key().public_bytes_raw()
        self._mlkem: mlkem.MLKEM768PrivateKey | None = None
        if group == NamedGroup.X25519MLKEM768:
            self._mlkem = mlkem.MLKEM768PrivateKey.generate()
            share = self._mlkem.public_key().public_bytes_raw() + share
        elif group != NamedGroup.x25519:
            raise ValueError(f"CodecClient speaks x25519 and X25519MLKEM768, not {group!r}")
        name = b"localhost"
        entry = group.to_bytes(2, "big") + len(share).to_bytes(2, "big") + share
        groups = tuple(dict.fromkeys((group, NamedGroup.x25519, NamedGroup.secp256r1)))
        extensions = (
            _extension(
                ExtensionType.server_name,
                (len(name) + 3).to_bytes(2, "big") + b"\x00" + len(name).to_bytes(2, "big") + name,
            ),
            _extension(ExtensionType.supported_groups, _u16_list(groups)),
            _extension(
                ExtensionType.signature_algorithms,
                _u16_list((0x0403, 0x0804, 0x0807, 0x0503, 0x0805, 0x0401)),
            ),
            _extension(ExtensionType.supported_versions, b"\x02\x03\x04"),
            _extension(ExtensionType.psk_key_exchange_modes, b"\x01\x01"),
            _extension(ExtensionType.key_share, len(entry).to_bytes(2, "big") + entry),
        )
        self.client_hello = push_client_hello(
            ClientHello(0x0303, os.urandom(32), os.urandom(32), (0x1301, 0x1302, 0x1303), b"\x00",
                        extensions)
        )  # fmt: skip

    def first(self) -> bytes:
        return frame_plaintext(ContentType.handshake, self.client_hello)

    def finish(self, flight: bytes) -> bytes:
        records = []
        offset = 0
        while offset < len(flight):
            length = int.from_bytes(flight[offset + 3 : offset + 5], "big")
            records.append((flight[offset : offset + 5], flight[offset + 5 : offset + 5 + length]))
            offset += 5 + length
        server_hello = records[0][1]
        hello = pull_server_hello(server_hello[4:])
        suite = SUITES[hello.cipher_suite]
        key_share = dict(hello.extensions)[ExtensionType.key_share][4:]
        peer_x25519 = x25519.X25519PublicKey.from_public_bytes(key_share[-32:])
        shared = self._x25519.exchange(peer_x25519)
        if self._mlkem is not None:
            shared = self._mlkem.decapsulate(key_share[:-32]) + shared
        transcript = hashlib.new(suite.hash_name, self.client_hello + server_hello)
        secrets = ks.derive_handshake_secrets(suite, shared, transcript.digest())
        reader = RecordProtection(suite, secrets.server)
        handshake = bytearray()
        for header, payload in records[1:]:
            if header[0] == ContentType.change_cipher_spec:
                continue
            content_type, data = reader.open(header, payload)
            assert content_type == ContentType.handshake
            handshake += data
        position = 0
        while position < len(handshake):
            end = position + 4 + int.from_bytes(handshake[position + 1 : position + 4], "big")
            message = bytes(handshake[position:end])
            if message[0] == HandshakeType.finished:
                expected = ks.finished_verify_data(suite, secrets.server, transcript.digest())
                assert message[4:] == expected, "server Finished does not verify"
            transcript.update(message)
            position = end
        verify_data = ks.finished_verify_data(suite, secrets.client, transcript.digest())
        writer = RecordProtection(suite, secrets.client)
        return writer.seal(ContentType.handshake, push_finished(Finished(verify_data)))


# ---------------------------------------------------------------------------------------------
# Server time only, in phases

#: Clients taken through the handshake together (see ``phased``).
BATCH = 20

#
# A batch of clients goes through the handshake one flight at a time: every client writes its
# flight (untimed), then the server answers all of them (timed), and so on.  Timing the server
# between two client steps of the *same* handshake would favour Python ssl's server: its client
# runs the same libssl and libcrypto code just before, and leaves it in the CPU caches, while our
# server's Python and cryptography's own OpenSSL come to them cold (measured: our handshake cost
# 0.42 ms interleaved with a Python ssl client and 0.30 ms after a client built on cryptography).

#: One server step: (what the step before left, the client's bytes) -> (what it leaves, its reply).
Step = Callable[[Any, bytes], tuple[Any, bytes]]


def phased(steps: list[Step], clients: list[Client]) -> float:
    """Seconds of server time to take ``clients`` through ``steps`` together, flight by flight."""
    incoming = [client.first() for client in clients]
    states: list[Any] = [None] * len(clients)
    spent = 0.0
    for index, step in enumerate(steps):
        start = time.perf_counter()
        results = [step(state, data) for state, data in zip(states, incoming, strict=True)]
        spent += time.perf_counter() - start
        states = [state for state, _ in results]
        if index + 1 < len(steps):
            replies = [reply for _, reply in results]
            incoming = [
                client.finish(reply) for client, reply in zip(clients, replies, strict=True)
            ]
    return spent


def ours_plain(config: ServerConfig) -> list[Step]:
    """An ordinary handshake (no stateless front): ServerConnection from ClientHello to Finished."""

    def hello(_: Any, first: bytes) -> tuple[Any, bytes]:
        connection = ServerConnection(config, peer=PEER)
        connection.receive_data(first)
        connection.next_event()
        return connection, connection.data_to_send()

    return [hello, _finished]


def _finished(connection: ServerConnection, last: bytes) -> tuple[Any, bytes]:
    connection.receive_data(last)
    event = connection.next_event()
    assert isinstance(event, HandshakeComplete), event
    return None, connection.data_to_send()


def ours_stateless(config: ServerConfig) -> list[Step]:
    """The stateless path: CH1 -> HelloRetry, CH2 -> Accepted, Finished -> HandshakeComplete."""

    def hello_1(_: Any, first: bytes) -> tuple[Any, bytes]:
        retry = stateless_accept(config, first, peer=PEER, now=time.time())
        assert isinstance(retry, HelloRetry), retry
        return None, retry.data_to_send

    def hello_2(_: Any, second: bytes) -> tuple[Any, bytes]:
        accepted = stateless_accept(config, second, peer=PEER, now=time.time(), after_retry=True)
        assert isinstance(accepted, Accepted), accepted
        return accepted.connection, accepted.data_to_send

    return [hello_1, hello_2, _finished]


def python_ssl_server(context: ssl.SSLContext) -> list[Step]:
    """Python ``ssl``'s server over memory BIOs, same measuring points as ours."""

    def hello(_: Any, first: bytes) -> tuple[Any, bytes]:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        server = context.wrap_bio(incoming, outgoing, server_side=True)
        incoming.write(first)
        with contextlib.suppress(ssl.SSLWantReadError):
            server.do_handshake()
        return (server, incoming, outgoing), outgoing.read()

    def finished(state: Any, last: bytes) -> tuple[Any, bytes]:
        server, incoming, outgoing = state
        incoming.write(last)
        server.do_handshake()
        return None, outgoing.read()

    return [hello, finished]


class CryptoFloor:
    """The cryptography one of our x25519 + ECDSA handshakes calls, and nothing else.

    The same ``cryptography`` and ``hashlib`` calls, as many of each, as ``ServerConnection``
    makes for a full handshake with this client and suite (counted from the code: key_schedule,
    record, primitives): x25519 peer key + keygen + exchange, 2 HKDF-Extract, 16
    HKDF-Expand(-Label), 4 AEAD keys, 1 encrypt (the flight) and 1 decrypt (the Finished),
    2 HMACs, the ECDSA signature, 5 transcript hashes.  No message is parsed or built.  No
    Python TLS server, however lean, can cost less with these primitives: the ratio of this row to
    Python ``ssl`` is the ceiling for the full-handshake ratio.

    The client still does its whole handshake between the timed phases, against Python ``ssl``'s
    server (:class:`AnchorFlightClient`, untimed), as in the other rows.
    """

    def __init__(self, config: ServerConfig) -> None:
        key = config.credentials[0].private_key
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        self._key = key
        self._hash = hashes.SHA384()  # TLS_AES_256_GCM_SHA384, what both sides negotiate

    def steps(self) -> list[Step]:
        def flight(_: Any, first: bytes) -> tuple[Any, bytes]:
            # The reply is the ClientHello itself: AnchorFlightClient turns it into a real flight.
            return self._server_flight(first), first

        def finished(state: Any, _: bytes) -> tuple[Any, bytes]:
            self._client_finished(*state)
            return None, b""

        return [flight, finished]

    def _expand(self, secret: bytes, length: int) -> bytes:
        return HKDFExpand(self._hash, length, b"tls13 label").derive(secret)

    def _server_flight(self, first: bytes) -> tuple[list[bytes], AESGCM, Any]:
        peer = x25519.X25519PublicKey.from_public_bytes(first[-32:])  # any 32 bytes will do
        private = x25519.X25519PrivateKey.generate()
        shared = private.exchange(peer)
        transcript = hashlib.sha384(first)
        transcript.update(private.public_key().public_bytes_raw() + os.urandom(32))
        handshake_secret = HKDF.extract(self._hash, bytes(48), shared)
        transcript.copy().digest()  # the context of the handshake secrets
        secrets = [self._expand(handshake_secret, 48) for _ in range(2)]  # client, server
        client_key, server_key = (self._traffic_key(secret) for secret in secrets)
        transcript.update(b"\x08" * 900)  # EncryptedExtensions + Certificate
        self._key.sign(b" " * 98 + transcript.copy().digest(), ec.ECDSA(hashes.SHA256()))
        finished_key = self._expand(secrets[1], 48)
        hmac.digest(finished_key, transcript.copy().digest(), "sha384")
        server_key.encrypt(bytes(12), b"\x0b" * 1100, b"\x17\x03\x03\x04\x5c")
        master = HKDF.extract(self._hash, self._expand(handshake_secret, 48), bytes(48))
        transcript.copy().digest()  # the context of the application secrets
        secrets += [self._expand(master, 48) for _ in range(3)]  # client, server, exporter
        self._traffic_key(secrets[3])  # application data, server to client
        return secrets, client_key, transcript

    def _client_finished(self, secrets: list[bytes], client_key: AESGCM, transcript: Any) -> None:
        with contextlib.suppress(InvalidTag):
            client_key.decrypt(bytes(12), bytes(69), b"\x17\x03\x03\x00\x45")
        finished_key = self._expand(secrets[0], 48)
        hmac.digest(finished_key, transcript.copy().digest(), "sha384")
        self._traffic_key(secrets[2])  # application data, client to server

    def _traffic_key(self, secret: bytes) -> AESGCM:
        """A record key and IV from a traffic secret (§7.3), as RecordProtection derives them."""
        self._expand(secret, 12)
        return AESGCM(self._expand(secret, 32))


class AnchorFlightClient:
    """A client whose flights come from Python ``ssl``'s server, whatever the server step sent."""

    def __init__(self, make_client: Callable[[], Client], anchor: ssl.SSLContext) -> None:
        self._client = make_client()
        self._anchor = anchor

    def first(self) -> bytes:
        return self._client.first()

    def finish(self, first: bytes) -> bytes:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        server = self._anchor.wrap_bio(incoming, outgoing, server_side=True)
        incoming.write(first)
        with contextlib.suppress(ssl.SSLWantReadError):
            server.do_handshake()
        return self._client.finish(outgoing.read())


def server_context(config: ServerConfig, tickets: int) -> ssl.SSLContext:
    credential = config.credentials[0]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.num_tickets = tickets
    with pem_files(credential.certificate_pem(), private_key_pem(credential.private_key)) as (
        cert_path,
        key_path,
    ):
        context.load_cert_chain(cert_path, key_path)
    return context


def run(seconds: float, rounds: int, *, progress: bool = True) -> Report:
    client_context = python_ssl_client_context()
    # The suite Python's ssl negotiates (its client's first choice), for a like-for-like run.
    suites = (CipherSuite.TLS_AES_256_GCM_SHA384, CipherSuite.TLS_AES_128_GCM_SHA256)
    configs = {
        "ECDSA P-256": ServerConfig.self_signed("localhost", cipher_suites=suites),
        "Ed25519": ServerConfig.self_signed("localhost", key_type="ed25519", cipher_suites=suites),
    }

    def rate(steps: list[Step], client: Callable[[], Client]) -> Callable[[], float]:
        """Handshakes per second of server time, 20 clients at a time through ``phased``."""

        def batch() -> tuple[int, float]:
            return BATCH, phased(steps, [client() for _ in range(BATCH)])

        return lambda: measured_rate(batch, seconds)

    def python_client() -> Client:
        return PythonClient(client_context)

    def codec_mlkem() -> Client:
        return CodecClient(NamedGroup.X25519MLKEM768)

    def codec_x25519() -> Client:
        return CodecClient(NamedGroup.x25519)

    plans: list[tuple[str, dict[str, Callable[[], float]]]] = []
    for certificate, config in configs.items():
        runners = {
            "ours": rate(ours_plain(config), python_client),
            "ssl": rate(python_ssl_server(server_context(config, 0)), python_client),
        }
        if certificate == "ECDSA P-256":
            runners["crypto floor"] = rate(
                CryptoFloor(config).steps(),
                functools.partial(AnchorFlightClient, python_client, server_context(config, 0)),
            )
            runners["ours stateless"] = rate(ours_stateless(config), python_client)
            runners["ssl 2 tickets"] = rate(
                python_ssl_server(server_context(config, 2)), python_client
            )
        plans.append((f"x25519, {certificate}", runners))
    for certificate, config in configs.items():
        runners = {"ours": rate(ours_plain(config), codec_mlkem)}
        if certificate == "ECDSA P-256":  # the same client with x25519: what ML-KEM adds
            runners["ours x25519"] = rate(ours_plain(config), codec_x25519)
        plans.append((f"X25519MLKEM768, {certificate}", runners))

    bar = Progress("handshake", rounds * sum(len(r) for _, r in plans), enabled=progress)
    report = Report(
        "handshake",
        "Full TLS 1.3 handshake, server side only, one core",
        {"seconds_per_round": seconds, "rounds": rounds, "suite": "TLS_AES_256_GCM_SHA384"},
    )
    anchor_name = "Python ssl server (0 tickets)"
    for label, runners in plans:
        measured = alternate(runners, rounds, bar)
        if "ssl" in measured:
            report.rows.append(
                Row(label, "handshakes/s", measured["ours"], anchor_name, measured["ssl"])
            )
        else:
            report.rows.append(
                Row(
                    label,
                    "handshakes/s",
                    measured["ours"],
                    note="client from stateless13's codec: OpenSSL 3.0 has no ML-KEM, no anchor",
                )
            )
        if "ssl 2 tickets" in measured:
            report.rows.append(
                Row(
                    f"{label}, anchor sends 2 tickets (its default)",
                    "handshakes/s",
                    measured["ours"],
                    "Python ssl server (2 tickets)",
                    measured["ssl 2 tickets"],
                )
            )
        if "ours x25519" in measured:
            report.rows.append(
                Row(
                    "x25519, ECDSA P-256, same codec client (for comparison)",
                    "handshakes/s",
                    measured["ours x25519"],
                    "ours, X25519MLKEM768",
                    measured["ours"],
                    note="ratio > 1: what ML-KEM-768 encapsulation costs the server",
                )
            )
        if "crypto floor" in measured:
            report.rows.append(
                Row(
                    f"{label}: the cryptography calls of one of our handshakes, alone",
                    "handshakes/s",
                    measured["crypto floor"],
                    anchor_name,
                    measured["ssl"],
                    note="no protocol code at all (CryptoFloor): the ceiling of the ratio above",
                )
            )
        if "ours stateless" in measured:
            report.rows.append(
                Row(
                    f"{label}, ours through the stateless HRR (CH1+CH2+Finished)",
                    "handshakes/s",
                    measured["ours stateless"],
                    anchor_name,
                    measured["ssl"],
                    note="ours answers two ClientHellos here, the anchor one",
                )
            )
    bar.close()
    report.notes.append(
        "Timed: the server's calls only (object creation, ClientHello in, flight out, Finished in);"
        f" the client's work is outside the clock.  {BATCH} clients go through each flight"
        " together (every client, then the server for all), so neither server finds its code in"
        " the caches because the client just ran it.  Both negotiate TLS_AES_256_GCM_SHA384 (Python"
        " ssl's client preference; ours configured to prefer it) and sign with the same key."
    )
    return report


def main(argv: list[str] | None = None) -> int:
    args = parser("handshake", __doc__.splitlines()[0]).parse_args(argv)
    emit(run(args.seconds, args.rounds, progress=not args.quiet), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
