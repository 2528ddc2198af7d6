"""aioquic's own client against the drop-in ``serve()`` on 127.0.0.1, with a protocol of the
user's: the same ``QuicConnectionProtocol`` subclass, unchanged, under aioquic's ``serve`` and
ours, gets the same events and echoes the same bytes; ours ran our TLS (the report, and a key
log only our TLS writes), with the QuicConfiguration's settings.

aioquic's client cannot go past a HelloRetryRequest (it aborts the handshake: its last test
here), so it meets ``serve(retry=True)`` (a Retry, then an ordinary handshake) or
``validation="none"``; the stateless HRR with real clients (quic-go, Chromium) is in
tests/peers/test_aioquic_serve.py.
"""

from __future__ import annotations

import asyncio
import io
import ssl
import warnings
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aioquic.asyncio import serve as aioquic_serve
from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.logger import QuicLogger
from aioquic.quic.packet import QuicProtocolVersion
from aioquic.tls import SessionTicket
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from stateless13 import ClientAuth, Credential
from stateless13.transports.aioquic_serve import SettingNotHonoured, serve
from stateless13.transports.common import ConnectionReport
from stateless13.transports.quic_server import QuicServer
from tests.pki import Pki

ALPN = "echo"
TIMEOUT = 10.0  # seconds for a whole exchange; each takes well under 1 s


class EchoProtocol(QuicConnectionProtocol):
    """A user's raw-QUIC protocol, written for aioquic: echoes every stream, keeps its events."""

    instances: list[EchoProtocol] = []  # noqa: RUF012 (the test reads what the server made)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.events: list[events.QuicEvent] = []
        EchoProtocol.instances.append(self)

    def quic_event_received(self, event: events.QuicEvent) -> None:
        self.events.append(event)
        if isinstance(event, events.StreamDataReceived):
            self._quic.send_stream_data(event.stream_id, event.data, end_stream=event.end_stream)
            self.transmit()


class SizeRecordingClient(QuicConnectionProtocol):
    """aioquic's client protocol, noting the size of every datagram the server sends."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sizes: list[int] = []

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        self.sizes.append(len(data))
        super().datagram_received(data, addr)


def server_configuration(**fields: Any) -> QuicConfiguration:
    credential = Credential.self_signed("localhost")
    configuration = QuicConfiguration(is_client=False, alpn_protocols=[ALPN], **fields)
    configuration.certificate = x509.load_der_x509_certificate(credential.certificate_chain[0])
    configuration.private_key = credential.private_key
    return configuration


def client_configuration(**fields: Any) -> QuicConfiguration:
    fields.setdefault("alpn_protocols", [ALPN])
    return QuicConfiguration(
        is_client=True, verify_mode=ssl.CERT_NONE, server_name="localhost", **fields
    )


@dataclass
class Exchange:
    """One connection from aioquic's client, and what each side saw."""

    echoed: bytes
    client: SizeRecordingClient
    server_protocol: QuicConnectionProtocol | None
    reports: list[ConnectionReport] = field(default_factory=list)


Serve = Callable[..., Awaitable[Any]]


@pytest.fixture(autouse=True)
def _forget_the_protocols() -> Iterator[None]:
    """The class keeps the protocols the server made for the test to read; forgotten after
    each test, so no connection outlives it (test_quic counts those left in memory)."""
    yield
    EchoProtocol.instances.clear()


async def exchange(
    serve_function: Serve,
    configuration: QuicConfiguration,
    *,
    client: QuicConfiguration | None = None,
    payload: bytes = b"hello, stateless13",
    **serve_options: Any,
) -> Exchange:
    """Serve ``configuration``, connect aioquic's client, echo ``payload`` on a stream, close."""
    EchoProtocol.instances.clear()
    reports: list[ConnectionReport] = []
    if serve_function is serve:
        serve_options["on_report"] = reports.append
    server = await serve_function(
        "127.0.0.1", 0, configuration=configuration, create_protocol=EchoProtocol, **serve_options
    )
    try:
        port = server._transport.get_extra_info("sockname")[1]  # both servers keep it there
        async with connect(
            "127.0.0.1",
            port,
            configuration=client or client_configuration(),
            create_protocol=SizeRecordingClient,
        ) as protocol:
            assert isinstance(protocol, SizeRecordingClient)
            reader, writer = await protocol.create_stream()
            writer.write(payload)
            writer.write_eof()
            echoed = await reader.read()
        for _ in range(100):  # the client's CONNECTION_CLOSE reaches the server
            if not EchoProtocol.instances or EchoProtocol.instances[0]._closed.is_set():
                break
            await asyncio.sleep(0.01)
    finally:
        server.close()
    server_protocol = EchoProtocol.instances[0] if EchoProtocol.instances else None
    return Exchange(echoed, protocol, server_protocol, reports)


def run(coroutine: Awaitable[Exchange]) -> Exchange:
    async def bounded() -> Exchange:
        return await asyncio.wait_for(coroutine, TIMEOUT)

    return asyncio.run(bounded())


def kinds(protocol: QuicConnectionProtocol | None) -> list[str]:
    """The events the protocol got, but the connection IDs (random in number and order)."""
    assert isinstance(protocol, EchoProtocol)
    return [
        type(e).__name__
        for e in protocol.events
        if not isinstance(e, events.ConnectionIdIssued | events.ConnectionIdRetired)
    ]


# ---------------------------------------------------------------------------------------------


def test_the_same_protocol_gets_the_same_events_from_aioquics_serve_and_ours() -> None:
    theirs = run(exchange(aioquic_serve, server_configuration(), retry=True))
    ours = run(exchange(serve, server_configuration(), retry=True))
    assert theirs.echoed == ours.echoed == b"hello, stateless13"
    assert kinds(ours.server_protocol) == kinds(theirs.server_protocol)
    assert kinds(ours.server_protocol) == [
        "ProtocolNegotiated",
        "HandshakeCompleted",
        "StreamDataReceived",
        "ConnectionTerminated",
    ]
    assert isinstance(ours.server_protocol, EchoProtocol)
    completed = [e for e in ours.server_protocol.events if isinstance(e, events.HandshakeCompleted)]
    assert completed == [events.HandshakeCompleted(ALPN, False, False)]


@pytest.mark.parametrize(("retry", "validation"), [(True, "retry"), (False, "none")])
def test_our_tls_ran_and_reported(retry: bool, validation: str) -> None:
    options = {"retry": True} if retry else {"validation": "none"}
    server_log, client_log = io.StringIO(), io.StringIO()
    done = run(
        exchange(
            serve,
            server_configuration(secrets_log_file=server_log),
            client=client_configuration(secrets_log_file=client_log),
            **options,
        )
    )
    assert done.echoed == b"hello, stateless13"
    (report,) = done.reports
    assert report.validation == validation and report.error is None, report
    assert not report.hello_retry and not report.cookie_verified  # no HRR for aioquic's client
    assert report.handshake is not None and report.handshake.alpn_protocol == ALPN
    # The secrets log is our TLS's key log: aioquic's own never writes the EXPORTER_SECRET, and
    # its traffic secrets are the ones aioquic's client derived.
    lines = [line.split() for line in server_log.getvalue().splitlines()]
    assert [label for label, _, _ in lines] == [
        "SERVER_HANDSHAKE_TRAFFIC_SECRET",
        "CLIENT_HANDSHAKE_TRAFFIC_SECRET",
        "SERVER_TRAFFIC_SECRET_0",
        "CLIENT_TRAFFIC_SECRET_0",
        "EXPORTER_SECRET",
    ]
    client_random = done.client._quic.tls.client_random.hex()
    assert {random for _, random, _ in lines} == {client_random}
    client_lines = [line.split() for line in client_log.getvalue().splitlines()]
    client_secrets = {label: secret for label, _, secret in client_lines}
    for label, _, secret in lines[:4]:
        assert client_secrets[label] == secret, label


def test_the_configurations_transport_settings_are_honoured() -> None:
    logger = QuicLogger()
    configuration = server_configuration(
        idle_timeout=7.0,
        max_datagram_size=1400,
        max_data=3_000_000,
        max_stream_data=2_000_000,
        max_datagram_frame_size=65536,
        congestion_control_algorithm="cubic",
        quic_logger=logger,
    )
    client = client_configuration(max_datagram_size=1400)
    done = run(exchange(serve, configuration, client=client, payload=bytes(30_000), retry=True))
    assert done.echoed == bytes(30_000)
    remote = done.client._quic  # what our server's transport parameters told the client
    assert remote._remote_max_idle_timeout == 7.0
    assert remote._remote_max_data == 3_000_000
    assert remote._remote_max_stream_data_bidi_remote == 2_000_000
    assert remote._remote_max_datagram_frame_size == 65536
    assert max(done.client.sizes) == 1400  # 30 KB echoed in datagrams of max_datagram_size
    assert done.server_protocol is not None
    assert type(done.server_protocol._quic._loss._cc).__name__ == "CubicCongestionControl"
    (trace,) = logger.to_dict()["traces"]  # qlog: the connection's trace
    assert trace["vantage_point"]["type"] == "server"
    assert any(e["name"] == "transport:packet_received" for e in trace["events"])


def test_quic_v2() -> None:
    version = QuicProtocolVersion.VERSION_2
    client = client_configuration(original_version=version, supported_versions=[version])
    done = run(exchange(serve, server_configuration(), client=client, retry=True))
    assert done.echoed == b"hello, stateless13"
    assert done.client._quic._version == version
    assert done.reports[0].validation == "retry"


def test_stream_handler_gets_reader_and_writer_as_with_aioquic() -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write((await reader.read()).upper())
        writer.write_eof()

    tasks: list[asyncio.Task[None]] = []

    def stream_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tasks.append(asyncio.ensure_future(echo(reader, writer)))

    async def main() -> bytes:
        server = await serve(
            "127.0.0.1",
            0,
            configuration=server_configuration(),
            stream_handler=stream_handler,  # with aioquic's own QuicConnectionProtocol
            validation="none",
        )
        try:
            async with connect(
                "127.0.0.1", server.address[1], configuration=client_configuration()
            ) as client:
                reader, writer = await client.create_stream()
                writer.write(b"shout")
                writer.write_eof()
                return await reader.read()
        finally:
            server.close()

    assert asyncio.run(asyncio.wait_for(main(), TIMEOUT)) == b"SHOUT"


def test_session_ticket_callbacks_warn_and_our_tickets_resume() -> None:
    """aioquic's example passes a ticket store: never called (a warning says so), yet the client
    resumes with our stateless ticket, and the protocol's HandshakeCompleted says so."""
    store: list[SessionTicket] = []
    calls: list[str] = []

    def fetch(label: bytes) -> SessionTicket | None:
        calls.append("fetch")
        return None

    async def main() -> tuple[QuicServer, list[ConnectionReport], list[EchoProtocol]]:
        reports: list[ConnectionReport] = []
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            server = await serve(
                "127.0.0.1",
                0,
                configuration=server_configuration(),
                create_protocol=EchoProtocol,
                session_ticket_fetcher=fetch,
                session_ticket_handler=lambda ticket: calls.append("handle"),
                retry=True,
                on_report=reports.append,
            )
        (warning,) = caught
        assert warning.category is SettingNotHonoured
        assert "never called" in str(warning.message) and warning.filename == __file__
        EchoProtocol.instances.clear()
        try:
            for ticket in (None, "stored"):
                configuration = client_configuration(session_ticket=store[0] if ticket else None)
                async with connect(
                    "127.0.0.1",
                    server.address[1],
                    configuration=configuration,
                    session_ticket_handler=store.append,
                ) as client:
                    await client.ping()
                    await asyncio.sleep(0.05)  # our tickets follow the handshake
        finally:
            server.close()
        return server, reports, list(EchoProtocol.instances)

    _, reports, protocols = asyncio.run(asyncio.wait_for(main(), TIMEOUT))
    assert calls == [] and store
    assert [r.handshake is not None and r.handshake.resumed for r in reports] == [False, True]
    resumed = [e for e in protocols[1].events if isinstance(e, events.HandshakeCompleted)]
    assert resumed == [events.HandshakeCompleted(ALPN, False, True)]


def test_0rtt_through_tls_options() -> None:
    """``tls_options={"early_data": 1}``: aioquic's client resumes with our ticket and sends its
    stream in 0-RTT (queued before its first flight leaves); the server's HandshakeCompleted and
    its report say the early data was accepted, and the echo comes back."""
    store: list[SessionTicket] = []

    async def main() -> tuple[list[ConnectionReport], list[EchoProtocol], bytes]:
        reports: list[ConnectionReport] = []
        server = await serve(
            "127.0.0.1",
            0,
            configuration=server_configuration(),
            create_protocol=EchoProtocol,
            validation="none",
            tls_options={"early_data": 1},
            on_report=reports.append,
        )
        EchoProtocol.instances.clear()
        try:
            async with connect(
                "127.0.0.1",
                server.address[1],
                configuration=client_configuration(),
                session_ticket_handler=store.append,
            ) as client:
                await client.ping()
                await asyncio.sleep(0.05)  # our tickets follow the handshake
            async with connect(
                "127.0.0.1",
                server.address[1],
                configuration=client_configuration(session_ticket=store[0]),
                wait_connected=False,
            ) as client:
                reader, writer = await client.create_stream()  # queued: it leaves in 0-RTT
                writer.write(b"early")
                writer.write_eof()
                client.transmit()
                echoed = await reader.read()
        finally:
            server.close()
        return reports, list(EchoProtocol.instances), echoed

    reports, protocols, echoed = asyncio.run(asyncio.wait_for(main(), TIMEOUT))
    assert echoed == b"early" and store[0].max_early_data_size == 0xFFFFFFFF
    early = sorted(r.handshake is not None and r.handshake.early_data for r in reports)
    assert early == [False, True], reports  # reported as each connection ends
    completed = [e for e in protocols[1].events if isinstance(e, events.HandshakeCompleted)]
    assert completed == [events.HandshakeCompleted(ALPN, True, True)]
    received = [e for e in protocols[1].events if isinstance(e, events.StreamDataReceived)]
    assert protocols[1].events.index(received[0]) < protocols[1].events.index(completed[0])


def test_connection_id_length_cannot_be_honoured_and_says_so() -> None:
    async def main() -> None:
        server = await serve(
            "127.0.0.1", 0, configuration=server_configuration(connection_id_length=4)
        )
        server.close()

    with pytest.warns(SettingNotHonoured, match="connection_id_length=4"):
        asyncio.run(main())


def test_client_certificates_through_tls_options(pki: Pki) -> None:
    """aioquic's server never asks for a client certificate; ours does when told to."""
    client_auth = ClientAuth(trust_anchors=(pki.root.public_bytes(Encoding.DER),))
    client = client_configuration()
    client.load_cert_chain(pki.good.chain, pki.good.key)
    done = run(
        exchange(
            serve,
            server_configuration(),
            client=client,
            retry=True,
            tls_options={"client_auth": client_auth},
        )
    )
    (report,) = done.reports
    assert report.handshake is not None and report.handshake.client_certificate is not None
    assert report.handshake.client_certificate.subject == pki.good.subject


def test_aioquics_client_cannot_take_the_default_hrr() -> None:
    """Why aioquic's client needs ``retry=True``: it aborts on the stateless HRR that
    ``retry=False`` sends (and on any HRR: it sends shares for all its groups, so the HRR
    can only carry the cookie)."""

    async def main() -> QuicServer:
        server = await serve("127.0.0.1", 0, configuration=server_configuration())
        try:
            with pytest.raises(ConnectionError):
                async with connect(
                    "127.0.0.1", server.address[1], configuration=client_configuration()
                ) as client:
                    await client.ping()
        finally:
            server.close()
        return server

    server = asyncio.run(asyncio.wait_for(main(), TIMEOUT))
    assert server.stats.hrr_sent >= 1 and server.stats.accepted == 0


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.make(tmp_path_factory.mktemp("pki"))
