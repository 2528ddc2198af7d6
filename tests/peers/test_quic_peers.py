"""Real QUIC clients against ``serve_quic``: a stateless HRR inside QUIC Initials, then HTTP/3.

Peers: ngtcp2's ``gtlsclient`` (GnuTLS; judged by its stderr, it exits 0 on errors), a quic-go
client (``quicgoclient/main.go``, built once per session against Debian's quic-go 0.29), headless
Chromium over HTTP/3 (judged by the page and its NetLog, it exits 0 on errors) and aioquic's own
client (only where no HRR is sent: it aborts on any HRR).  Each runs through a UDP relay that
counts datagrams and bytes each way, so the tests also measure what each validation mode costs.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import selectors
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import QuicEvent

from stateless13 import Credential, NamedGroup, ServerConfig
from stateless13.transports.common import ConnectionReport
from stateless13.transports.quic_front import FrontStats, QuicOptions, Validation
from stateless13.transports.quic_server import (
    PAGE_TEXT,
    H3PageProtocol,
    ProtocolFactory,
    QuicServer,
    serve_quic,
    spki_pin,
)
from tests.servers import build_go_program, require_peer

HRR_RANDOM = bytes.fromhex("CF21AD74E59A6111BE1D8C021E65B891C2A211167ABB8C5E079E09E2C8A8339C")
GTLS_HRR = re.compile(r"cf 21 +ad 74 +e5 9a +61 11")
QUICGO_SOURCE = Path(__file__).with_name("quicgoclient") / "main.go"


# ---------------------------------------------------------------------------------------------
# The server, in a thread.


@dataclass
class QuicTestServer:
    host: str
    port: int
    spki: str
    server: QuicServer
    reports: list[ConnectionReport] = field(default_factory=list)

    @property
    def stats(self) -> FrontStats:
        return self.server.stats

    def wait_reports(self, count: int, timeout: float = 10.0) -> list[ConnectionReport]:
        deadline = time.monotonic() + timeout
        while len(self.reports) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return list(self.reports)

    def handshakes(self, count: int = 1) -> list[ConnectionReport]:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            done = [r for r in self.reports if r.handshake is not None]
            if len(done) >= count:
                return done
            time.sleep(0.02)
        raise AssertionError(f"{count} completed handshakes expected; reports: {self.reports}")


QuicServerFactory = Callable[..., QuicTestServer]


@pytest.fixture
def quic_server() -> Iterator[QuicServerFactory]:
    """``quic_server(Validation.HRR, options=None, create_protocol=H3PageProtocol,
    **config_options)``, on 127.0.0.1."""
    running: list[tuple[asyncio.AbstractEventLoop, threading.Thread, asyncio.Event]] = []

    def start(
        validation: Validation = Validation.HRR,
        options: QuicOptions | None = None,
        create_protocol: ProtocolFactory = H3PageProtocol,
        **config: Any,
    ) -> QuicTestServer:
        credential = Credential.self_signed("localhost")
        server_config = ServerConfig(credentials=(credential,), alpn_protocols=(b"h3",), **config)
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        stop = asyncio.Event()
        holder: list[QuicTestServer] = []

        async def main() -> None:
            server = await serve_quic(
                server_config,
                "127.0.0.1",
                0,
                validation=validation,
                options=options,
                create_protocol=create_protocol,
                on_report=lambda r: holder[0].reports.append(r),
            )
            holder.append(QuicTestServer(*server.address, spki_pin(credential), server))
            ready.set()
            async with server:
                await stop.wait()

        thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
        thread.start()
        assert ready.wait(10), "QUIC server did not start"
        running.append((loop, thread, stop))
        return holder[0]

    yield start
    for loop, thread, stop in running:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()


# ---------------------------------------------------------------------------------------------
# A UDP relay that counts, and can move the client to another address.


@dataclass(frozen=True)
class Datagram:
    at: float
    to_server: bool
    size: int
    kind: str  # Initial, 0-RTT, Handshake, Retry, 1-RTT, VN


def datagram_kind(data: bytes) -> str:
    if not data[0] & 0x80:
        return "1-RTT"
    if data[1:5] == b"\x00\x00\x00\x00":
        return "VN"
    return ("Initial", "0-RTT", "Handshake", "Retry")[(data[0] & 0x30) >> 4]


class UdpRelay:
    """client <-> 127.0.0.1:port <-> server, logging every datagram.

    ``move_after`` > 0: once the server has sent that many datagrams, the client's datagrams
    reach the server from ``127.0.0.2`` instead (a ClientHello2 from another address).
    """

    def __init__(self, server: tuple[str, int], move_after: int = 0) -> None:
        self.server = server
        self.move_after = move_after
        self.log: list[Datagram] = []
        self.listen = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.listen.bind(("127.0.0.1", 0))
        self.port = self.listen.getsockname()[1]
        self.upstream = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.upstream.bind(("127.0.0.1", 0))
        self.moved = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.moved.bind(("127.0.0.2", 0))
        self._client: Any = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        for sock in (self.listen, self.upstream, self.moved):
            selector.register(sock, selectors.EVENT_READ)
        while not self._stop.is_set():
            for key, _ in selector.select(0.05):
                assert isinstance(key.fileobj, socket.socket)  # we registered only sockets
                sock = key.fileobj
                data, addr = sock.recvfrom(65536)
                to_server = sock is self.listen
                self.log.append(
                    Datagram(time.monotonic(), to_server, len(data), datagram_kind(data))
                )
                if to_server:
                    self._client = addr
                    from_server = sum(1 for d in self.log if not d.to_server)
                    moved = self.move_after and from_server >= self.move_after
                    (self.moved if moved else self.upstream).sendto(data, self.server)
                elif self._client is not None:
                    self.listen.sendto(data, self._client)
        selector.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for sock in (self.listen, self.upstream, self.moved):
            sock.close()

    def __enter__(self) -> UdpRelay:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def totals(self) -> dict[str, int]:
        up = [d.size for d in self.log if d.to_server]
        down = [d.size for d in self.log if not d.to_server]
        return {
            "c2s_datagrams": len(up),
            "c2s_bytes": sum(up),
            "s2c_datagrams": len(down),
            "s2c_bytes": sum(down),
        }

    def first_flight(self) -> tuple[int, int]:
        """(client bytes before the server's first answer, server bytes until the client's next)."""
        first_answer = next(i for i, d in enumerate(self.log) if not d.to_server)
        client = sum(d.size for d in self.log[:first_answer] if d.to_server)
        server = 0
        for d in self.log[first_answer:]:
            if d.to_server:
                break
            server += d.size
        return client, server


# ---------------------------------------------------------------------------------------------
# The clients.


@dataclass
class PeerRun:
    ok: bool
    output: str
    hrr_seen: bool | None  # None: the peer cannot tell


def run_gtlsclient(port: int, *extra: str) -> PeerRun:
    gtlsclient = require_peer("gtlsclient")
    result = subprocess.run(
        [
            gtlsclient,
            "--exit-on-all-streams-close",
            "--handshake-timeout=5s",
            "--timeout=5s",
            *extra,
            "127.0.0.1",
            str(port),
            f"https://localhost:{port}/",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    output = result.stdout + result.stderr
    ok = all(
        marker in output
        for marker in ("QUIC handshake has completed", "Negotiated ALPN is h3", "[:status: 200]")
    )
    return PeerRun(ok, output, bool(GTLS_HRR.search(output)))


@pytest.fixture(scope="session")
def quicgoclient(tmp_path_factory: pytest.TempPathFactory) -> Path:
    gopath = Path("/usr/share/gocode")
    assert (gopath / "src/github.com/lucas-clemente/quic-go").is_dir(), (
        "quic-go is not installed: apt-get install golang-github-lucas-clemente-quic-go-dev"
    )
    # Built once per session: each module that imports this fixture gets its own instance.
    work = tmp_path_factory.getbasetemp() / "quicgoclient-build"
    binary = work / QUICGO_SOURCE.parent.name
    if not binary.exists():
        work.mkdir(exist_ok=True)
        build_go_program(QUICGO_SOURCE, work, gopath)
    return binary


def run_quicgo(binary: Path, port: int, *extra: str) -> PeerRun:
    result = subprocess.run(
        [str(binary), *extra, f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=30
    )
    output = result.stdout + result.stderr
    ok = (
        result.returncode == 0
        and "HANDSHAKE_DONE alpn h3 tls 0x0304" in output
        and "status 200" in output
        and PAGE_TEXT in output
    )
    return PeerRun(ok, output, None)


def load_netlog(path: Path) -> dict[str, Any]:
    text = path.read_text()
    try:
        return json.loads(text)  # type: ignore[no-any-return]
    except json.JSONDecodeError:  # written as it goes: the end of the events list may be missing
        return json.loads(text.rstrip().rstrip(",") + "]}")  # type: ignore[no-any-return]


@dataclass
class QuicSession:
    """One QUIC session in Chromium's NetLog (after PEERS.md's chromium_quic_netlog.py)."""

    handshake_complete: bool = False
    hrr_seen: bool = False
    hrr_cookie: bool = False
    client_hello1_bytes: int | None = None
    sent_initial_end: int = 0
    statuses: list[str] = field(default_factory=list)
    closed: str | None = None


def quic_sessions(netlog: dict[str, Any], destination: str) -> list[QuicSession]:
    names = {number: name for name, number in netlog["constants"]["logEventTypes"].items()}
    sessions: dict[int, QuicSession] = {}
    for event in netlog["events"]:
        name, params = names.get(event["type"], ""), event.get("params", {})
        source = event.get("source", {}).get("id")
        if name == "QUIC_SESSION" and event.get("phase") == 1:
            if f"{params.get('host')}:{params.get('port')}" == destination:
                sessions[source] = QuicSession()
            continue
        session = sessions.get(source)
        if session is None:
            continue
        if name == "QUIC_SESSION_CRYPTO_FRAME_SENT":
            if params.get("encryption_level") == "ENCRYPTION_INITIAL":
                end = params["offset"] + params["data_length"]
                session.sent_initial_end = max(session.sent_initial_end, end)
        elif name == "QUIC_SESSION_CRYPTO_FRAME_RECEIVED" and "bytes" in params:
            data = base64.b64decode(params["bytes"])
            if (
                params.get("encryption_level") == "ENCRYPTION_INITIAL"
                and params.get("offset") == 0
                and data[:1] == b"\x02"
                and data[6:38] == HRR_RANDOM
            ):
                session.hrr_seen = True
                session.hrr_cookie = b"\x00\x2c" in data[41:]
                session.client_hello1_bytes = session.sent_initial_end
        elif name == "QUIC_SESSION_CRYPTO_HANDSHAKE_COMPLETE":
            session.handshake_complete = True
        elif name == "HTTP3_HEADERS_DECODED":
            session.statuses += [
                h.split(": ", 1)[1] for h in params.get("headers", []) if h.startswith(":status: ")
            ]
        elif name == "QUIC_SESSION_CLOSED" and session.closed is None:
            session.closed = f"{params.get('quic_error')} {params.get('details')}"
    return list(sessions.values())


def run_chromium(
    port: int, spki: str, tmp_path: Path, *extra: str
) -> tuple[PeerRun, list[QuicSession]]:
    """Chromium fetching ``/`` (``extra``: more flags); its profile is ``profile-PORT`` and its
    NetLog ``netlog-PORT.json`` in ``tmp_path``."""
    chromium = require_peer("chromium")
    netlog = tmp_path / f"netlog-{port}.json"
    result = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / f'profile-{port}'}",
            f"--origin-to-force-quic-on=localhost:{port}",
            f"--ignore-certificate-errors-spki-list={spki}",
            "--host-resolver-rules=MAP localhost 127.0.0.1, MAP * ~NOTFOUND",
            f"--log-net-log={netlog}",
            "--net-log-capture-mode=Everything",
            *extra,
            "--dump-dom",
            f"https://localhost:{port}/",
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert netlog.exists(), f"no NetLog; rc={result.returncode}\n{result.stderr[-2000:]}"
    sessions = quic_sessions(load_netlog(netlog), f"localhost:{port}")
    ok = PAGE_TEXT in result.stdout and any(
        s.handshake_complete and "200" in s.statuses for s in sessions
    )
    output = f"DOM: {result.stdout[:600]!r}\nstderr: {result.stderr[-1500:]}\nsessions: {sessions}"
    return PeerRun(ok, output, any(s.hrr_seen for s in sessions)), sessions


class _H3Client(QuicConnectionProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.status: bytes | None = None
        self.body = b""
        self.done = asyncio.get_running_loop().create_future()

    def quic_event_received(self, event: QuicEvent) -> None:
        for h3_event in self.h3.handle_event(event):
            if isinstance(h3_event, HeadersReceived):
                self.status = dict(h3_event.headers).get(b":status")
            elif isinstance(h3_event, DataReceived):
                self.body += h3_event.data
            if getattr(h3_event, "stream_ended", False) and not self.done.done():
                self.done.set_result(None)


def run_aioquic(port: int) -> PeerRun:
    async def fetch() -> tuple[bytes | None, bytes]:
        configuration = QuicConfiguration(
            is_client=True,
            alpn_protocols=["h3"],
            verify_mode=ssl.CERT_NONE,
            server_name="localhost",
        )
        async with connect(
            "127.0.0.1", port, configuration=configuration, create_protocol=_H3Client
        ) as client:
            assert isinstance(client, _H3Client)
            stream_id = client._quic.get_next_available_stream_id()
            client.h3.send_headers(
                stream_id,
                [
                    (b":method", b"GET"),
                    (b":scheme", b"https"),
                    (b":authority", b"localhost"),
                    (b":path", b"/"),
                ],
                end_stream=True,
            )
            client.transmit()
            await asyncio.wait_for(client.done, 10)
            return client.status, client.body

    try:
        status, body = asyncio.run(asyncio.wait_for(fetch(), 20))
    except Exception as error:  # a peer failing is a result, reported with its reason
        return PeerRun(False, repr(error), False)
    return PeerRun(status == b"200" and PAGE_TEXT.encode() in body, repr((status, body)), False)


# ---------------------------------------------------------------------------------------------
# Handshakes through the stateless HRR.


def assert_report(
    server: QuicTestServer, group: NamedGroup, *, validation: str = "cookie"
) -> ConnectionReport:
    (report,) = server.handshakes(1)
    assert report.handshake is not None
    assert report.validation == validation, report
    assert report.handshake.group == group, report
    assert report.handshake.alpn_protocol == "h3", report
    if "cookie" in validation:
        assert report.hello_retry and report.cookie_verified, report
    assert server.server.connections <= 1
    return report


def test_gtlsclient_through_the_stateless_hrr(quic_server: QuicServerFactory) -> None:
    # GnuTLS refuses a cookie-only HRR, so the HRR names a group it sent no share for: P-384
    # (it shares x25519 and P-256).
    server = quic_server(retry_names_a_group=True)
    run = run_gtlsclient(server.port)
    assert run.ok and run.hrr_seen, run.output
    assert_report(server, NamedGroup.secp384r1)
    assert server.stats.hrr_sent == 1 and server.stats.accepted == 1


def test_gtlsclient_against_the_default_groups(quic_server: QuicServerFactory) -> None:
    # gtlsclient (GnuTLS) shares P-256 and x25519: the stateless HRR names P-384, the third of
    # the default classical tier, since GnuTLS refuses a cookie-only HRR.
    server = quic_server()
    run = run_gtlsclient(server.port)
    assert run.ok and run.hrr_seen, run.output
    assert_report(server, NamedGroup.secp384r1)


def test_gtlsclient_refuses_a_cookie_only_hrr(quic_server: QuicServerFactory) -> None:
    # Why the tiers: with a strict order (x25519, then P-256: it shared both) the HRR can only
    # carry the cookie, which GnuTLS 3.7 answers with illegal_parameter (CRYPTO_ERROR 0x12f),
    # and no connection is ever created.
    server = quic_server(groups=(NamedGroup.x25519, NamedGroup.secp256r1))
    run = run_gtlsclient(server.port)
    assert not run.ok and run.hrr_seen, run.output
    assert "CRYPTO_ERROR(0x12f)" in run.output, run.output
    assert server.stats.accepted == 0 and server.server.connections == 0


def test_gtlsclient_switches_from_p256_to_p384(quic_server: QuicServerFactory) -> None:
    server = quic_server(groups=(NamedGroup.secp384r1, NamedGroup.secp256r1))
    run = run_gtlsclient(server.port, "--groups=-GROUP-ALL:+GROUP-SECP256R1:+GROUP-SECP384R1")
    assert run.ok and run.hrr_seen, run.output
    assert_report(server, NamedGroup.secp384r1)


def test_gtlsclient_stateful_hrr_inside_one_connection(quic_server: QuicServerFactory) -> None:
    # Validation.NONE: a connection from the first Initial, and the core's ordinary HRR (no
    # cookie) when the key shares do not fit; ClientHello2 arrives on the same CRYPTO stream.
    server = quic_server(Validation.NONE, groups=(NamedGroup.secp384r1, NamedGroup.x25519))
    run = run_gtlsclient(server.port)
    assert run.ok and run.hrr_seen, run.output
    report = assert_report(server, NamedGroup.secp384r1, validation="none")
    assert report.hello_retry and not report.cookie_verified, report
    assert server.stats.hrr_sent == 0 and server.stats.accepted == 1


def test_quic_go_through_the_stateless_hrr(
    quic_server: QuicServerFactory, quicgoclient: Path
) -> None:
    server = quic_server()  # quic-go shares x25519: the HRR names its tier-mate P-256
    run = run_quicgo(quicgoclient, server.port)
    assert run.ok, run.output
    assert_report(server, NamedGroup.secp256r1)


def test_quic_go_switches_from_p256_to_p384(
    quic_server: QuicServerFactory, quicgoclient: Path
) -> None:
    server = quic_server(groups=(NamedGroup.secp384r1, NamedGroup.x25519, NamedGroup.secp256r1))
    run = run_quicgo(quicgoclient, server.port, "-curves", "p256,p384")
    assert run.ok, run.output
    assert_report(server, NamedGroup.secp384r1)


def test_chromium_http3_client_hellos_over_two_datagrams(
    quic_server: QuicServerFactory, tmp_path: Path
) -> None:
    # Chromium's ClientHello1 carries a 1216-byte X25519MLKEM768 share: about 1.9 KB, two
    # Initial datagrams, reassembled by the front; after the cookie-only HRR its ClientHello2
    # repeats the share and spans two datagrams as well.
    server = quic_server()
    run, sessions = run_chromium(server.port, server.spki, tmp_path)
    assert run.ok and run.hrr_seen, run.output
    hrr = [s for s in sessions if s.hrr_seen]
    assert all(s.hrr_cookie for s in hrr), sessions
    assert any((s.client_hello1_bytes or 0) > 1200 for s in hrr), sessions
    report = assert_report(server, NamedGroup.X25519MLKEM768)
    assert report.handshake is not None and report.handshake.server_name == "localhost"
    assert server.stats.pending >= 2  # a fragment of each ClientHello waited in the table
    assert len(server.server.front.table) == 0


def test_chromium_group_switch_to_p384(quic_server: QuicServerFactory, tmp_path: Path) -> None:
    server = quic_server(groups=(NamedGroup.secp384r1, NamedGroup.x25519))
    run, _ = run_chromium(server.port, server.spki, tmp_path)
    assert run.ok and run.hrr_seen, run.output
    assert_report(server, NamedGroup.secp384r1)


def test_client_hello2_from_another_address_is_refused(quic_server: QuicServerFactory) -> None:
    server = quic_server(retry_names_a_group=True)
    with UdpRelay((server.host, server.port), move_after=1) as relay:
        run = run_gtlsclient(relay.port)
    assert not run.ok and run.hrr_seen, run.output
    # decrypt_error: the cookie is bound to 127.0.0.1, ClientHello2 came from 127.0.0.2.
    assert "CRYPTO_ERROR(0x133)" in run.output, run.output
    assert server.stats.hrr_sent >= 1 and server.stats.closes_sent >= 1
    assert server.stats.accepted == 0 and server.server.connections == 0 and not server.reports


def test_a_client_that_stops_after_client_hello2_times_out(quic_server: QuicServerFactory) -> None:
    from tests.memory.test_quic import (
        aioquic_client,
        client_initial,
        hrr_cookie,
        open_initial,
        with_cookie,
    )

    server = quic_server(options=QuicOptions(handshake_timeout=0.5))
    _, datagrams = aioquic_client()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5)
        first = datagrams[0]
        dcid = first[6 : 6 + first[5]]
        hello = open_initial(first, dcid, sent_by_client=True)
        sock.sendto(first, (server.host, server.port))
        hrr = open_initial(sock.recvfrom(65536)[0], dcid, sent_by_client=False)
        client_hello = hello.crypto_at(0)
        sock.sendto(
            client_initial(
                key_cid=dcid,
                destination_cid=hrr.source_cid,
                source_cid=hello.source_cid,
                packet_number=1,
                crypto_offset=len(client_hello),
                crypto=with_cookie(client_hello, hrr_cookie(hrr.crypto_at(0))),
                ack=hrr.packet_number,
            ),
            (server.host, server.port),
        )
        assert sock.recvfrom(65536)  # the server's flight: the connection exists
        (report,) = server.wait_reports(1)
    assert report.error == "handshake timeout" and report.handshake is None, report
    assert report.validation == "cookie" and report.hello_retry, report
    deadline = time.monotonic() + 10
    while server.server.connections and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.server.connections == 0


# ---------------------------------------------------------------------------------------------
# Every validation mode, every peer that can do it, through the counting relay.

PEER_MODES = [
    *((peer, mode) for peer in ("gtlsclient", "quic-go", "chromium") for mode in Validation),
    ("aioquic", Validation.RETRY),
    ("aioquic", Validation.NONE),
]


@pytest.mark.parametrize(
    ("peer", "validation"), PEER_MODES, ids=lambda v: v.value if isinstance(v, Validation) else v
)
def test_validation_modes_measured(
    quic_server: QuicServerFactory,
    quicgoclient: Path,
    tmp_path: Path,
    peer: str,
    validation: Validation,
) -> None:
    # retry_names_a_group for GnuTLS; groups chosen so that no peer needs a key-share HRR in
    # "none"/"retry" (then the handshake has no HRR at all), as users would compare them.
    server = quic_server(validation, retry_names_a_group=peer == "gtlsclient")
    with UdpRelay((server.host, server.port)) as relay:
        if peer == "gtlsclient":
            run = run_gtlsclient(relay.port)
        elif peer == "quic-go":
            run = run_quicgo(quicgoclient, relay.port)
        elif peer == "chromium":
            run, _ = run_chromium(relay.port, server.spki, tmp_path)
        else:
            run = run_aioquic(relay.port)
        assert run.ok, run.output
        report = server.handshakes(1)[0]
        time.sleep(0.2)  # the last close
    totals = relay.totals()
    client_first, server_first = relay.first_flight()
    kinds = [d.kind for d in relay.log if not d.to_server]
    if validation in (Validation.RETRY, Validation.BOTH):
        assert kinds[0] == "Retry" and server_first < 3 * client_first
    if validation in (Validation.HRR, Validation.BOTH):
        assert report.hello_retry and report.cookie_verified, report
    assert server_first <= 3 * client_first, (client_first, server_first)
    group = report.handshake.key_exchange if report.handshake else "-"
    print(
        f"\nMEASURE peer={peer} validation={validation.value} "
        f"c2s={totals['c2s_datagrams']}/{totals['c2s_bytes']}B "
        f"s2c={totals['s2c_datagrams']}/{totals['s2c_bytes']}B "
        f"first_flight={client_first}B->{server_first}B "
        f"ratio={server_first / client_first:.2f} group={group}"
    )
