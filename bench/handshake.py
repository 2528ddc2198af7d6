"""Full TLS 1.3 handshakes, server side only: ``ServerConnection`` vs Python ``ssl``'s server.

    python -m bench.handshake [--seconds 0.25] [--rounds 3] [--json]

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
import hashlib
import os
import ssl
import time
from collections.abc import Callable
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

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
# One handshake, server time only


def ours_plain(config: ServerConfig, client: Client) -> float:
    """An ordinary handshake (no stateless front): ServerConnection from ClientHello to Finished."""
    first = client.first()
    start = time.perf_counter()
    connection = ServerConnection(config, peer=PEER)
    connection.receive_data(first)
    connection.next_event()
    flight = connection.data_to_send()
    spent = time.perf_counter() - start
    last = client.finish(flight)
    start = time.perf_counter()
    connection.receive_data(last)
    event = connection.next_event()
    connection.data_to_send()
    spent += time.perf_counter() - start
    assert isinstance(event, HandshakeComplete), event
    return spent


def ours_stateless(config: ServerConfig, client: Client) -> float:
    """The stateless path: CH1 -> HelloRetry, CH2 -> Accepted, Finished -> HandshakeComplete."""
    first = client.first()
    start = time.perf_counter()
    retry = stateless_accept(config, first, peer=PEER, now=time.time())
    spent = time.perf_counter() - start
    assert isinstance(retry, HelloRetry), retry
    second = client.finish(retry.data_to_send)
    start = time.perf_counter()
    accepted = stateless_accept(config, second, peer=PEER, now=time.time(), after_retry=True)
    spent += time.perf_counter() - start
    assert isinstance(accepted, Accepted), accepted
    last = client.finish(accepted.data_to_send)
    start = time.perf_counter()
    connection = accepted.connection
    connection.receive_data(last)
    event = connection.next_event()
    connection.data_to_send()
    spent += time.perf_counter() - start
    assert isinstance(event, HandshakeComplete), event
    return spent


def python_ssl_server(context: ssl.SSLContext, client: Client) -> float:
    """Python ``ssl``'s server over memory BIOs, same measuring points as ours."""
    first = client.first()
    start = time.perf_counter()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    server = context.wrap_bio(incoming, outgoing, server_side=True)
    incoming.write(first)
    with contextlib.suppress(ssl.SSLWantReadError):
        server.do_handshake()
    flight = outgoing.read()
    spent = time.perf_counter() - start
    last = client.finish(flight)
    start = time.perf_counter()
    incoming.write(last)
    server.do_handshake()
    outgoing.read()
    spent += time.perf_counter() - start
    return spent


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

    def rate(
        server: Callable[[Any, Client], float], target: Any, client: Callable[[], Client]
    ) -> Callable[[], float]:
        """Handshakes per second of server time, ``server(target, client())`` at a time."""

        def batch() -> tuple[int, float]:
            return 20, sum(server(target, client()) for _ in range(20))

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
            "ours": rate(ours_plain, config, python_client),
            "ssl": rate(python_ssl_server, server_context(config, 0), python_client),
        }
        if certificate == "ECDSA P-256":
            runners["ours stateless"] = rate(ours_stateless, config, python_client)
            runners["ssl 2 tickets"] = rate(
                python_ssl_server, server_context(config, 2), python_client
            )
        plans.append((f"x25519, {certificate}", runners))
    for certificate, config in configs.items():
        runners = {"ours": rate(ours_plain, config, codec_mlkem)}
        if certificate == "ECDSA P-256":  # the same client with x25519: what ML-KEM adds
            runners["ours x25519"] = rate(ours_plain, config, codec_x25519)
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
        " the client's work is outside the clock.  Both negotiate TLS_AES_256_GCM_SHA384 (Python"
        " ssl's client preference; ours configured to prefer it) and sign with the same key."
    )
    return report


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.splitlines()[0], seconds=0.25, rounds=3).parse_args(argv)
    emit(run(args.seconds, args.rounds, progress=not args.quiet), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
