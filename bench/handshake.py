"""Full TLS 1.3 handshakes, server side only: both builds of ``ServerConnection`` vs Python ``ssl``.

    python -m bench.handshake [--seconds S] [--rounds N] [--json]

Only the server's calls are timed (creating the server object, feeding it ClientHello, taking its
flight; feeding it the client's Finished): the client's work happens between the timed parts.
The client is Python's ``ssl`` (OpenSSL 3.0) over memory BIOs wherever it can be; OpenSSL 3.0
has no X25519MLKEM768, so for that group the client is built from stateless13's own codec and
key schedule (:class:`CodecClient`) and only the server's cost is compared with itself.
In the main comparison neither server sends session tickets (ours ``tickets=0``, the anchor
``num_tickets = 0``); beside it both send 2 (their defaults), and both resume: a client offers a
ticket each server issued, psk_dhe_ke, and each server sends 2 new tickets.

Both builds of the core (bench/builds.py: mypyc-compiled and pure Python) are measured in the
same alternating rounds as the anchors, every measurement in a fresh worker process per round
(the anchors too, so that all start from the same state).  The main case (x25519, ECDSA P-256,
TLS_AES_256_GCM_SHA384) is measured two ways: *phased*, 20 clients through each flight together,
and *interleaved*, one client at a time (see ``phased``); the other cases phased only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import os
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, mlkem, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

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
from stateless13.key_schedule import KeyedHmac
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

from .builds import BUILDS, Measurement, Workers, benchmark_main, builds
from .common import (
    PEER,
    MemoryClient,
    Progress,
    Report,
    Row,
    alternate,
    measured_rate,
    pem_files,
    private_key_pem,
    python_ssl_client_context,
)


class Client(Protocol):
    def first(self) -> bytes: ...
    def finish(self, flight: bytes) -> bytes: ...


class PythonClient:
    """Python's ``ssl`` client (OpenSSL 3.0): x25519 key share, middlebox compatibility on;
    with a ``session`` (of the same context) it offers that session's ticket."""

    def __init__(self, context: ssl.SSLContext, session: ssl.SSLSession | None = None) -> None:
        self._client = MemoryClient(context, session=session)

    def first(self) -> bytes:
        return self._client.step()

    def finish(self, flight: bytes) -> bytes:
        return self._client.step(flight)

    def session(self, after_handshake: bytes) -> ssl.SSLSession:
        """The session, once the server's bytes after the handshake (its tickets) are read."""
        self._client.incoming.write(after_handshake)
        with contextlib.suppress(ssl.SSLWantReadError):
            self._client.tls.read(1)
        session = self._client.tls.session
        assert session is not None and session.has_ticket, "the server sent no ticket"
        return session

    @property
    def resumed(self) -> bool:
        return self._client.tls.session_reused


def resuming_clients(steps: list[Step]) -> Callable[[], Client]:
    """Clients that resume a session of the server of ``steps``: one full handshake takes its
    tickets, then every client offers that session (both servers resume one ticket again and
    again: neither keeps single-use tickets for 1-RTT resumption).  The first resumption is
    checked to be one."""

    def through(client: PythonClient) -> bytes:
        data, state = client.first(), None
        for index, step in enumerate(steps):
            state, reply = step(state, data)
            if index + 1 < len(steps):
                data = client.finish(reply)
        return reply

    context = _client_context()
    first = PythonClient(context)
    session = first.session(through(first))
    check = PythonClient(context, session)
    through(check)
    assert check.resumed, "the client did not resume"
    return lambda: PythonClient(context, session)


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
# Phased, the default: a batch of clients goes through the handshake one flight at a time:
# every client writes its flight (untimed), then the server answers all of them (timed), and so
# on.  It resembles a loaded server: between two flights of one connection it runs other
# connections' flights, and its client is another process or machine, which cannot warm the
# server's caches.  Interleaved, one client at a time (``phased`` with a batch of 1: client step,
# server step, client step...), favours Python ssl's server: its in-process client runs the very
# libssl and libcrypto code the server runs next and leaves it in the CPU caches, while our
# server's Python and cryptography's own OpenSSL come to them cold (measured: our handshake cost
# 0.42 ms interleaved with a Python ssl client and 0.30 ms after a client built on cryptography).
# Both ways are reported for the main case.

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
    record, primitives): x25519 peer key + keygen + exchange; the HMACs of the key schedule as
    it makes them (``KeyedHmac``: 11 keys, 20 messages, for its 2 HKDF-Extract, 16
    HKDF-Expand-Label and 2 Finished MACs); 4 AEAD keys, 1 encrypt (the flight) and 1 decrypt
    (the Finished); the ECDSA signature; the transcript hash's updates and digests.  No message
    is parsed or built.  No Python TLS server, however lean, can cost less with these
    primitives: the ratio of this row to Python ``ssl`` is the ceiling for the full-handshake
    ratio.  It runs in the compiled build, whose ``KeyedHmac`` is the cheaper one.

    The client still does its whole handshake between the timed phases, against Python ``ssl``'s
    server (:class:`AnchorFlightClient`, untimed), as in the other rows.
    """

    def __init__(self, config: ServerConfig) -> None:
        key = config.credentials[0].private_key
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        self._key = key
        self._suite = SUITES[CipherSuite.TLS_AES_256_GCM_SHA384]  # what both sides negotiate
        # Keyed once per suite by the key schedule too (HKDF-Extract's salt without a PSK).
        self._handshake_salt = KeyedHmac(self._suite, bytes(48))

    def steps(self) -> list[Step]:
        def flight(_: Any, first: bytes) -> tuple[Any, bytes]:
            # The reply is the ClientHello itself: AnchorFlightClient turns it into a real flight.
            return self._server_flight(first), first

        def finished(state: Any, _: bytes) -> tuple[Any, bytes]:
            self._client_finished(*state)
            return None, b""

        return [flight, finished]

    def _server_flight(self, first: bytes) -> tuple[list[bytes], AESGCM, Any]:
        suite = self._suite
        peer = x25519.X25519PublicKey.from_public_bytes(first[-32:])  # any 32 bytes will do
        private = x25519.X25519PrivateKey.generate()
        shared = private.exchange(peer)
        transcript = suite.new_hash(b"")
        transcript.update(first)
        transcript.update(private.public_key().public_bytes_raw() + os.urandom(32))
        hello_hash = transcript.copy().digest()
        handshake = KeyedHmac(suite, self._handshake_salt.digest(shared))
        # client and server handshake traffic secrets, and the master secret's salt
        client_hs, server_hs, master_salt = (handshake.digest(hello_hash) for _ in range(3))
        server_key, client_key = self._traffic_key(server_hs), self._traffic_key(client_hs)
        transcript.update(b"\x08" * 900)  # EncryptedExtensions + Certificate
        self._key.sign(b" " * 98 + transcript.copy().digest(), ec.ECDSA(hashes.SHA256()))
        transcript.update(b"\x0f" * 76)  # CertificateVerify
        self._finished_mac(server_hs, transcript)
        transcript.update(b"\x14" * 52)  # Finished
        server_key.encrypt(bytes(12), b"\x0b" * 1100, b"\x17\x03\x03\x04\x5c")
        master = KeyedHmac(suite, KeyedHmac(suite, master_salt).digest(bytes(48)))
        application_hash = transcript.copy().digest()
        # client and server application traffic secrets, exporter master secret
        secrets = [master.digest(application_hash) for _ in range(3)]
        self._traffic_key(secrets[1])  # application data, server to client
        return [client_hs, secrets[0]], client_key, transcript

    def _client_finished(self, secrets: list[bytes], client_key: AESGCM, transcript: Any) -> None:
        with contextlib.suppress(InvalidTag):
            client_key.decrypt(bytes(12), bytes(69), b"\x17\x03\x03\x00\x45")
        self._finished_mac(secrets[0], transcript)
        self._traffic_key(secrets[1])  # application data, client to server

    def _finished_mac(self, traffic_secret: bytes, transcript: Any) -> None:
        """finished_key from the traffic secret, then its HMAC of the transcript (§4.4.4)."""
        finished_key = KeyedHmac(self._suite, traffic_secret).digest(b"finished")
        KeyedHmac(self._suite, finished_key).digest(transcript.copy().digest())

    def _traffic_key(self, secret: bytes) -> AESGCM:
        """A record key and IV from a traffic secret (§7.3), as RecordProtection derives them."""
        keyed = KeyedHmac(self._suite, secret)
        keyed.digest(b"iv")
        return AESGCM(keyed.digest(b"key")[:32])


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


# ---------------------------------------------------------------------------------------------
# The measurements, by name: each made in a worker process (bench/builds.py)

#: The certificates: their label -> ServerConfig's key type.
KEY_TYPES = {"ECDSA P-256": "ecdsa-p256", "Ed25519": "ed25519"}

#: The ways of taking clients through the handshake (see ``phased``): clients per flight.
WAYS = {"phased": BATCH, "interleaved": 1}

#: The suite Python's ssl negotiates (its client's first choice), ours configured to prefer it.
SUITE_PREFERENCE = (CipherSuite.TLS_AES_256_GCM_SHA384, CipherSuite.TLS_AES_128_GCM_SHA256)


@functools.cache
def _client_context() -> ssl.SSLContext:
    return python_ssl_client_context()


#: The servers, by name: their steps for a config.
SERVERS: dict[str, Callable[[ServerConfig], list[Step]]] = {
    "ours": lambda config: ours_plain(dataclasses.replace(config, tickets=0)),
    "ours 2 tickets": lambda config: ours_plain(dataclasses.replace(config, tickets=2)),
    "ours stateless": lambda config: ours_stateless(dataclasses.replace(config, tickets=0)),
    "ssl": lambda config: python_ssl_server(server_context(config, 0)),
    "ssl 2 tickets": lambda config: python_ssl_server(server_context(config, 2)),
    "crypto floor": lambda config: CryptoFloor(config).steps(),
}

#: The client that resumes a session of the server measured (made for it: ``resuming_clients``).
RESUMING = "python ssl resuming"

#: The clients, by name.
CLIENTS: dict[str, Callable[[], Client]] = {
    "python ssl": lambda: PythonClient(_client_context()),
    "codec x25519": functools.partial(CodecClient, NamedGroup.x25519),
    "codec X25519MLKEM768": functools.partial(CodecClient, NamedGroup.X25519MLKEM768),
}


@dataclass(frozen=True)
class Case:
    """One measurement: handshakes per second of a server's time, with a client and a way."""

    server: str  # a key of SERVERS
    certificate: str = "ECDSA P-256"  # a key of KEY_TYPES
    client: str = "python ssl"  # a key of CLIENTS
    way: str = "phased"  # a key of WAYS

    @property
    def name(self) -> str:
        """What ``--worker`` takes: every field, so that the worker makes the same measurement."""
        return "; ".join((self.server, self.certificate, self.client, self.way))

    @classmethod
    def from_name(cls, name: str) -> Case:
        return cls(*name.split("; "))


def measurement(name: str, seconds: float) -> Measurement:
    """The measurement ``Case.from_name(name)``: handshakes per second of server time."""
    case = Case.from_name(name)
    config = ServerConfig.self_signed(
        "localhost", key_type=KEY_TYPES[case.certificate], cipher_suites=SUITE_PREFERENCE
    )
    steps = SERVERS[case.server](config)
    client = CLIENTS[case.client] if case.client != RESUMING else resuming_clients(steps)
    if case.server == "crypto floor":  # no protocol code answers the client: Python ssl does
        client = functools.partial(AnchorFlightClient, client, server_context(config, 0))
    clients_per_flight = WAYS[case.way]

    def batch() -> tuple[int, float]:
        clients = [client() for _ in range(clients_per_flight)]
        return clients_per_flight, phased(steps, clients)

    return lambda: measured_rate(batch, seconds)


# ---------------------------------------------------------------------------------------------
# The report

ANCHOR = "Python ssl server (0 tickets)"
NO_ANCHOR = "client from stateless13's codec: OpenSSL 3.0 has no ML-KEM, no anchor"


@dataclass(frozen=True)
class Comparison:
    """A row to report from a plan's measurements: ours (by runner name) against an anchor."""

    case: str
    ours: str
    anchor_name: str = ""
    anchor: str | None = None
    note: str = ""


@dataclass
class Plan:
    """Measurements alternated in the same rounds, and the rows made of them."""

    runners: dict[str, Measurement] = field(default_factory=dict)
    rows: list[Comparison] = field(default_factory=list)


def plans(workers: Workers) -> list[Plan]:
    """What is measured together: the main case each way, then Ed25519, then ML-KEM."""

    def each_build(plan: Plan, key: str, case: Case) -> None:
        for build in BUILDS:
            plan.runners[f"{key}{build}"] = workers.measure(case.name, build)

    made = []
    main_case = "x25519, ECDSA P-256"
    for way in WAYS:
        plan = Plan()
        each_build(plan, "", Case("ours", way=way))
        plan.runners["ssl"] = workers.anchor(Case("ssl", way=way).name)
        # In the compiled build: its KeyedHmac is the cheaper form of the primitive.
        floor = Case("crypto floor", way=way).name
        plan.runners["crypto floor"] = workers.measure(floor, "compiled")
        plan.rows += [Comparison(f"{way}: {build} build", build, ANCHOR, "ssl") for build in BUILDS]
        plan.rows.append(
            Comparison(
                f"{way}: crypto floor (no protocol code)",
                "crypto floor",
                ANCHOR,
                "ssl",
                note="the cryptography calls of one of our handshakes, alone (CryptoFloor): "
                f"the ceiling of the {way} ratios of both builds",
            )
        )
        if way == "phased":
            plan.runners["ssl 2 tickets"] = workers.anchor(Case("ssl 2 tickets").name)
            each_build(plan, "2 tickets ", Case("ours 2 tickets"))
            plan.runners["ssl resumed"] = workers.anchor(
                Case("ssl 2 tickets", client=RESUMING).name
            )
            each_build(plan, "resumed ", Case("ours 2 tickets", client=RESUMING))
            each_build(plan, "stateless ", Case("ours stateless"))
            for build in BUILDS:
                plan.rows.append(
                    Comparison(
                        f"{main_case}, both send 2 tickets (the defaults): {build} build",
                        f"2 tickets {build}",
                        "Python ssl server (2 tickets)",
                        "ssl 2 tickets",
                    )
                )
            for build in BUILDS:
                plan.rows.append(
                    Comparison(
                        f"{main_case}, resumed (psk_dhe_ke), both send 2 tickets: {build} build",
                        f"resumed {build}",
                        "Python ssl server resuming (2 tickets)",
                        "ssl resumed",
                        note="one ticket of each server offered again and again",
                    )
                )
            for build in BUILDS:
                plan.rows.append(
                    Comparison(
                        f"{main_case}, ours through the stateless HRR (CH1+CH2+Finished): "
                        f"{build} build",
                        f"stateless {build}",
                        ANCHOR,
                        "ssl",
                        note="ours answers two ClientHellos here, the anchor one",
                    )
                )
        made.append(plan)

    ed25519 = Plan()
    each_build(ed25519, "", Case("ours", "Ed25519"))
    ed25519.runners["ssl"] = workers.anchor(Case("ssl", "Ed25519").name)
    ed25519.rows += [
        Comparison(f"x25519, Ed25519: {build} build", build, ANCHOR, "ssl") for build in BUILDS
    ]
    made.append(ed25519)

    for certificate in KEY_TYPES:
        mlkem = Plan()
        each_build(mlkem, "", Case("ours", certificate, "codec X25519MLKEM768"))
        mlkem.rows += [
            Comparison(f"X25519MLKEM768, {certificate}: {build} build", build, note=NO_ANCHOR)
            for build in BUILDS
        ]
        if certificate == "ECDSA P-256":  # the same client with x25519: what ML-KEM adds
            each_build(mlkem, "x25519 ", Case("ours", certificate, "codec x25519"))
            mlkem.rows += [
                Comparison(
                    f"{main_case}, same codec client (for comparison): {build} build",
                    f"x25519 {build}",
                    f"{build} build, X25519MLKEM768",
                    build,
                    note="ratio > 1: what ML-KEM-768 encapsulation costs the server",
                )
                for build in BUILDS
            ]
        made.append(mlkem)
    return made


def run(seconds: float, rounds: int, *, progress: bool = True) -> Report:
    report = Report(
        "handshake",
        "Full TLS 1.3 handshake, server side only, one core",
        {
            "seconds_per_round": seconds,
            "rounds": rounds,
            "suite": "TLS_AES_256_GCM_SHA384",
            "main case": "x25519, ECDSA P-256",
            "phased": f"{BATCH} clients per flight",
        },
    )
    with builds() as trees:
        measured_plans = plans(Workers("handshake", trees, seconds))
        bar = Progress(
            "handshake", rounds * sum(len(plan.runners) for plan in measured_plans),
            enabled=progress,
        )  # fmt: skip
        for plan in measured_plans:
            measured = alternate(plan.runners, rounds, bar)
            for row in plan.rows:
                report.rows.append(
                    Row(
                        row.case,
                        "handshakes/s",
                        measured[row.ours],
                        row.anchor_name,
                        None if row.anchor is None else measured[row.anchor],
                        note=row.note,
                    )
                )
        bar.close()
    report.notes.append(
        "Timed: the server's calls only (object creation, ClientHello in, flight out, Finished in);"
        " the client's work is outside the clock.  Both negotiate TLS_AES_256_GCM_SHA384 (Python"
        " ssl's client preference; ours configured to prefer it) and sign with keys of the same"
        " type.  Every figure comes from a fresh worker process per round (bench/builds.py), the"
        " anchors' too, after one untimed run in that process."
    )
    report.notes.append(
        f"phased: {BATCH} clients go through each flight together (every client, then the server"
        " for all of them).  It resembles a loaded server: between two flights of one connection"
        " a loaded server runs other connections' flights, and its client is another process or"
        " machine, so the client cannot warm the server's caches.  interleaved: one client at a"
        " time (client step, server step, client step...): Python ssl's in-process client warms"
        " the very libssl/libcrypto code the ssl server runs next, while our Python and"
        " cryptography's own OpenSSL come to theirs cold."
    )
    return report


def main(argv: list[str] | None = None) -> int:
    return benchmark_main("handshake", __doc__.splitlines()[0], measurement, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
