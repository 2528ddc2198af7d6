"""The fleet proof (issue 17, item 5): ``stateless13 serve`` nodes behind an unmodified nginx,
and HAProxy for TCP.

Every node is a ``stateless13 serve`` process of this checkout sharing one certificate and the
key files (``--cookie-key-file``, ``--ticket-key-file``; ``--cid-key-file`` for QUIC); nginx is
Debian's, with its stream module, running docs/fleet/nginx-tcp.conf and nginx-udp.conf as they
are written but for their addresses (``bench.fleet.balancer_config``), round robin, one worker;
HAProxy is Debian's, running docs/fleet/haproxy-tcp.cfg the same way (``haproxy_config``).
The tests start the balancers, the nodes and Redis and stop them by their PIDs; one that does
not start fails the test.  Each node's own log tells it apart (its port); every proof is read
from the nodes' reports, stat lines and key logs, with real clients: curl, ``openssl
s_client``, Python's ssl (OpenSSL), quic-go and ngtcp2's gtlsclient.

* TCP through HAProxy (``send-proxy-v2``: a PROXY protocol v2 header, as the wire shows) and
  through nginx (``proxy_protocol on``: v1, the only one nginx 1.22 sends): the node's report
  names the real client (``peer=127.0.0.2:PORT via=127.0.0.1:PORT``) and binds its cookie to
  it, a ClientHello1 answered by one node finishes on another and a replay from another address
  fails there (decrypt_error); a ticket issued by one node resumes on each of the two others.
* QUIC through nginx's UDP proxy (a session per client address and port), 0-RTT on and one
  Redis as the shared replay store: quic-go's NEW_TOKEN from one node lets its next connection,
  on another node, skip the Retry (``validation=token``), and that connection resumes the first
  node's ticket with its GET in 0-RTT (``resumed=0rtt``); the same first flight replayed
  through nginx lands on the third node, which refuses the 0-RTT because Redis saw the ticket
  (``replay_0rtt_replays=1``), while a node with its own per-process store accepts it.  A ticket
  gtlsclient got from one node resumes on another in 0-RTT.  Without a balancer's affinity (a
  relay of ours sends ClientHello2 elsewhere), ``--cid-key-file`` lets another node finish the
  handshake of the first one's stateless HRR.
* The documented key rotation (docs/SECURITY.md, "Keys"), rolled node by node with SIGHUP
  across three TCP and three QUIC nodes while clients keep connecting through nginx: no
  connection fails, every valid cookie, ticket and token is accepted; then the old keys are
  really gone (a ticket and a cookie of before no longer open).
* SIGHUP itself on ``serve --workers``: each worker reloads, a file that does not parse keeps
  its ring's keys and says why, a worker restarted later has the reloaded keys.
"""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aioquic.buffer import Buffer
from aioquic.quic.packet import QuicHeader, QuicPacketType, pull_quic_header

from bench.common import private_key_pem
from bench.fleet import (
    FLEET_DIR,
    NGINX_MODULE,
    TCP_CONF,
    UDP_CONF,
    Nginx,
    balancer_config,
    free_port,
    haproxy_config,
)
from stateless13 import CookieKeyRing, Credential
from stateless13.transports.proxy_protocol import ProxyHeader, ProxyHeaderParser
from stateless13.transports.quic_server import PAGE_TEXT as H3_PAGE_TEXT
from stateless13.transports.quic_tokens import SERVER_CID_LENGTH
from tests.commands import Process
from tests.helpers import PythonSSLClient, read_record, read_until_closed
from tests.peers.test_proxy_protocol_inbound import finish as finish_handshake_and_get
from tests.peers.test_quic_peers import quicgoclient as quicgoclient  # the fixture
from tests.peers.test_redis_replay import EPOCHS, RedisServer, redis_keys
from tests.peers.test_redis_replay import redis_server as redis_server  # the fixture
from tests.servers import PAGE_TEXT, require_peer

ROOT = Path(__file__).resolve().parents[2]
HAPROXY_CONF = FLEET_DIR / "haproxy-tcp.cfg"
BALANCER = "127.0.0.1"  # the balancers connect to the nodes from here; the only address listed
CLIENT_A, CLIENT_B = "127.0.0.2", "127.0.0.3"  # clients of nginx (loopback has all of 127/8)
REQUEST = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
WAIT = 20.0
#: A node's per-connection log line (ConnectionReport.log_line).
REPORT = re.compile(
    r"peer=(?P<peer>\S+) (?:via=(?P<via>\S+) )?(?:(?P<quic>quic) )?validation=(?P<validation>\S+)"
    r" hrr=(?P<hrr>yes|no) cookie=(?P<cookie>verified|none)"
    r"(?: suite=\S+ group=\S+ alpn=\S+ sni=\S+ resumed=(?P<resumed>yes|no|0rtt))?"
    r".*? duration=\S+(?: in=\S+)?(?: out=\S+)?(?: error=(?P<error>.*))?$"
)


# --- The fleet: nodes, balancers --------------------------------------------------------------


class Node(Process):
    """One ``stateless13 serve`` of the fleet; ``name`` (with its port) in every message.
    ``keylog``: its ``--keylog`` file, where it writes the secrets of each handshake it runs
    (CLIENT_EARLY_TRAFFIC_SECRET only for a ClientHello whose 0-RTT it accepts)."""

    def __init__(self, name: str, args: list[str], cwd: Path, keylog: Path | None = None) -> None:
        env = {k: v for k, v in os.environ.items() if k != "SSLKEYLOGFILE"}
        env |= {"PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        if keylog is not None:
            args = [*args, "--keylog", str(keylog)]
        super().__init__([sys.executable, "-m", "stateless13", "serve", *args], cwd, env)
        self.name = name
        self.port = 0
        self.keylog = keylog

    def started(self) -> Node:
        self.port = int(self.wait_for(self.stdout, r"serving \S+ on 127\.0\.0\.1:(\d+) ", WAIT)[1])
        self.name += f" (port {self.port})"
        return self

    def reports(self) -> list[re.Match[str]]:
        return [m for line in list(self.stderr) if (m := REPORT.search(line))]

    def line(self, pattern: str, count: int = 1) -> re.Match[str]:
        return self.wait_for(self.stderr, pattern, WAIT, count)

    def secrets(self, client_random: str) -> set[str]:
        """The labels of the key log lines this node wrote for the ClientHello with
        ``client_random`` (hex)."""
        assert self.keylog is not None, self.name
        text = self.keylog.read_text() if self.keylog.exists() else ""
        return {
            label
            for label, random, _ in (line.split() for line in text.splitlines() if line)
            if random == client_random
        }

    def stop(self) -> str:
        """SIGINT, a clean exit; the stat line it logged last."""
        self.send_signal(signal.SIGINT)
        assert self.wait(WAIT) == 0, self.output()
        assert "Traceback" not in self.output(), self.output()
        lines = [line for line in self.stderr if " stats " in line]
        assert lines, self.output()
        return lines[-1]


#: The global section the tests put before docs/fleet/haproxy-tcp.cfg: Debian's haproxy.cfg
#: less what needs root or a system (syslog, chroot, user, daemon, the stats socket).
HAPROXY_GLOBAL = "global\n    maxconn 4096\n"


def listening(port: int) -> bool:
    """Whether a TCP socket listens on 127.0.0.1:``port`` (/proc/net/tcp: state 0A)."""
    wanted = f"0100007F:{port:04X}"
    lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return any(f[1] == wanted and f[3] == "0A" for f in (line.split() for line in lines))


class HAProxy:
    """Debian's HAProxy in the foreground (``-db``), reading HAPROXY_GLOBAL then ``text`` (as
    :func:`haproxy_config` made it), its messages in ``directory``; up when the constructor
    returns (listening on 127.0.0.1:``port``), or the test fails.  Stopped by its PID."""

    def __init__(self, directory: Path, text: str, port: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.port = port
        (directory / "global.cfg").write_text(HAPROXY_GLOBAL)
        (directory / "haproxy-tcp.cfg").write_text(text)
        self.log_file = directory / "haproxy.log"
        command = [require_peer("haproxy"), "-db", "-f", str(directory / "global.cfg")]
        command += ["-f", str(directory / "haproxy-tcp.cfg")]
        with self.log_file.open("wb") as log:
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 15
        while not listening(port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"haproxy did not start ({self.process.returncode}):\n{self.log()}")
            time.sleep(0.02)

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM to its PID; SIGKILL if it lingers."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(10)


@dataclass
class Keys:
    """The fleet's key files and the keys first written to them."""

    cookie_file: Path
    ticket_file: Path
    cid_file: Path
    cookie: list[bytes]
    ticket: list[bytes]

    def write(self, cookie: list[bytes], ticket: list[bytes]) -> None:
        """New contents, each file replaced at once (a node never reads half of one)."""
        for path, keys in ((self.cookie_file, cookie), (self.ticket_file, ticket)):
            partial = path.with_suffix(".partial")
            partial.write_text("".join(f"{key.hex()}\n" for key in keys))
            os.replace(partial, path)


@dataclass
class Fleet:
    tcp: list[Node]
    quic: list[Node]
    nginx: Nginx
    tcp_port: int
    udp_port: int
    keys: Keys
    #: HAProxy in front of the TCP nodes too (docs/fleet/haproxy-tcp.cfg), if asked for.
    haproxy: HAProxy | None = None
    #: A QUIC node with the fleet's keys that no balancer sends anything to, if asked for.
    spare: Node | None = None

    @property
    def nodes(self) -> list[Node]:
        return self.tcp + self.quic + ([self.spare] if self.spare else [])

    def marks(self) -> list[int]:
        return [len(node.reports()) for node in self.nodes]

    def new_reports(self, marks: list[int], count: int) -> list[tuple[Node, re.Match[str]]]:
        """The ``count`` reports logged since ``marks`` (waited for), with their nodes."""
        deadline = time.monotonic() + WAIT
        while True:
            found = [
                (node, report)
                for node, mark in zip(self.nodes, marks, strict=True)
                for report in node.reports()[mark:]
            ]
            if len(found) >= count or time.monotonic() > deadline:
                assert len(found) == count, (found, self.outputs())
                return found
            time.sleep(0.02)

    def outputs(self) -> str:
        nodes = "\n\n".join(f"{n.name}:\n{n.output()}" for n in self.nodes)
        haproxy = f"\n\nhaproxy:\n{self.haproxy.log()}" if self.haproxy else ""
        return f"{nodes}\n\nnginx:\n{self.nginx.log()}{haproxy}"


def distinct_keys() -> list[bytes]:
    """Two fresh keys whose key ids differ (ids are a byte: they collide once in 256)."""
    while True:
        keys = [os.urandom(32), os.urandom(32)]
        if len(set(CookieKeyRing(keys).key_ids)) == 2:
            return keys


FleetFactory = Callable[..., Fleet]


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[FleetFactory]:
    """``fleet(tcp=3, quic=0, tcp_args=[...], quic_args=[...])``: the nodes (started at once),
    then nginx with the docs' configurations in front of them; ``haproxy=True``: HAProxy with
    its own in front of the TCP nodes too; ``keylog=True``: each node writes a key log;
    ``spare_args=[...]``: one more QUIC node with these arguments, outside the balancer."""
    started: list[Fleet] = []
    nodes: list[Node] = []
    credential = Credential.self_signed("localhost")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(credential.certificate_pem())
    key.write_bytes(private_key_pem(credential.private_key))

    def start(
        tcp: int = 3,
        quic: int = 0,
        tcp_args: tuple[str, ...] = (),
        quic_args: tuple[str, ...] = (),
        *,
        haproxy: bool = False,
        keylog: bool = False,
        spare_args: tuple[str, ...] | None = None,
    ) -> Fleet:
        keys = Keys(
            tmp_path / "cookie.keys",
            tmp_path / "ticket.keys",
            tmp_path / "cid.key",
            distinct_keys(),
            distinct_keys(),
        )
        keys.write(keys.cookie[:1], keys.ticket[:1])
        shared = ["--cert", str(cert), "--key", str(key), "--stats-interval", "3600"]
        shared += ["--cookie-key-file", str(keys.cookie_file)]
        shared += ["--ticket-key-file", str(keys.ticket_file)]
        tcp_nodes = [
            Node(
                f"tcp node {n + 1}",
                [*shared, "--proxy-protocol-from", BALANCER, *tcp_args],
                tmp_path,
                tmp_path / f"tcp{n + 1}.keylog" if keylog else None,
            )
            for n in range(tcp)
        ]
        quic_shared = [*shared, "--quic", "--cid-key-file", str(keys.cid_file)]
        quic_nodes = [
            Node(
                f"quic node {n + 1}",
                [*quic_shared, *quic_args],
                tmp_path,
                tmp_path / f"quic{n + 1}.keylog" if keylog else None,
            )
            for n in range(quic)
        ]
        spare = None
        if spare_args is not None:
            keylog_file = tmp_path / "spare.keylog" if keylog else None
            spare = Node("spare quic node", [*quic_shared, *spare_args], tmp_path, keylog_file)
        these = tcp_nodes + quic_nodes + ([spare] if spare else [])
        nodes.extend(these)
        for node in these:
            node.started()
        assert require_peer("nginx") and NGINX_MODULE.exists(), "./run-tests installs nginx"
        fragments, tcp_port, udp_port = {}, free_port(), free_port()
        if tcp_nodes:
            upstreams = [f"127.0.0.1:{n.port}" for n in tcp_nodes]
            fragments["tcp.conf"] = balancer_config(TCP_CONF, f"127.0.0.1:{tcp_port}", upstreams)
        if quic_nodes:
            upstreams = [f"127.0.0.1:{n.port}" for n in quic_nodes]
            fragments["udp.conf"] = balancer_config(UDP_CONF, f"127.0.0.1:{udp_port}", upstreams)
        nginx = Nginx(tmp_path / f"nginx{len(started)}", fragments, require_peer("nginx"))
        started.append(Fleet(tcp_nodes, quic_nodes, nginx, tcp_port, udp_port, keys, spare=spare))
        if haproxy:
            upstreams, port = [f"127.0.0.1:{n.port}" for n in tcp_nodes], free_port()
            text = haproxy_config(HAPROXY_CONF, f"127.0.0.1:{port}", upstreams)
            started[-1].haproxy = HAProxy(tmp_path / f"haproxy{len(started)}", text, port)
        return started[-1]

    yield start
    for running in started:
        running.nginx.stop()
        if running.haproxy is not None:
            running.haproxy.stop()
    for node in nodes:
        node.kill()


# --- Clients ----------------------------------------------------------------------------------


def connect(port: int, source: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def hello_retry(port: int, source: str, client: PythonSSLClient) -> bytes:
    """ClientHello1 through the balancer from ``source``: the node's HelloRetryRequest (and
    CCS), then the connection closed, as a client that comes back later on another connection."""
    with connect(port, source) as sock:
        sock.sendall(client.step())
        return read_record(sock) + read_record(sock)


def finish(port: int, source: str, client: PythonSSLClient, client_hello2: bytes) -> str:
    """ClientHello2 on a new connection through the balancer, the handshake to its end, GET /: the
    body of the answer."""
    with connect(port, source) as sock:
        sock.sendall(client_hello2)
        return finish_handshake_and_get(sock, client)


def refused(port: int, source: str, client_hello2: bytes) -> bytes:
    """ClientHello2 through the balancer from ``source``: what the node answered before closing."""
    with connect(port, source) as sock:
        sock.sendall(client_hello2)
        return read_until_closed(sock)


def curl(port: int, source: str) -> subprocess.CompletedProcess[str]:
    """curl from ``source`` through the balancer; its own port is the last line
    (``%{local_port}``)."""
    args = [require_peer("curl"), "--silent", "--show-error", "--tlsv1.3", "--insecure"]
    args += ["--max-time", "20", "--noproxy", "*", "--interface", source]
    args += ["--resolve", f"localhost:{port}:127.0.0.1", "--write-out", "\n%{local_port}"]
    args += [f"https://localhost:{port}/"]
    return subprocess.run(args, capture_output=True, text=True, timeout=30)


def s_client(port: int, *options: str) -> subprocess.CompletedProcess[str]:
    """``openssl s_client`` through the balancer fetching the page (``-ign_eof``: until it
    closes)."""
    args = [require_peer("openssl"), "s_client", "-connect", f"127.0.0.1:{port}"]
    args += ["-servername", "localhost", "-tls1_3", "-ign_eof", *options]
    return subprocess.run(args, input=REQUEST.decode(), capture_output=True, text=True, timeout=20)


def page_fetched(run: subprocess.CompletedProcess[str], how: str) -> bool:
    return run.returncode == 0 and f"{how}, TLSv1.3" in run.stdout and PAGE_TEXT in run.stdout


def gtlsclient(port: int, *options: str) -> str:
    """ngtcp2's HTTP/3 client through nginx: its output (it exits 0 on failures too)."""
    args = [require_peer("gtlsclient"), "--exit-on-all-streams-close", "--handshake-timeout=5s"]
    args += [*options, "127.0.0.1", str(port), f"https://localhost:{port}/"]
    run = subprocess.run(args, capture_output=True, text=True, timeout=30)
    return run.stdout + run.stderr


def quicgo(binary: Path, port: int, connections: int = 2, *options: str) -> tuple[bool, str]:
    """quic-go's GETs, each on a new connection (a new UDP socket: a new nginx session), with
    one token store (``-resume``: one session cache too, the GETs after the first in 0-RTT):
    whether every one got the page, and its output."""
    run = subprocess.run(
        [str(binary), "-connections", str(connections), *options, f"127.0.0.1:{port}"],
        capture_output=True,
        text=True,
        timeout=40,
    )
    output = run.stdout + run.stderr
    ok = run.returncode == 0 and output.count("status 200") == connections
    return ok and output.count(H3_PAGE_TEXT) == connections, output


def stat_field(line: str, name: str) -> int:
    match = re.search(rf" {name}=(\d+)", line)
    assert match is not None, (name, line)
    return int(match[1])


# --- TCP through HAProxy (PROXY protocol v2) and nginx (v1) -----------------------------------


def first_proxy_header(balancer: str, directory: Path) -> tuple[ProxyHeader, tuple[str, int], int]:
    """What ``balancer`` (``haproxy`` or ``nginx``, running its docs/fleet file with one upstream:
    a socket of ours) sends first on its connection upstream when a client connects from
    127.0.0.2, as it comes on the wire: the PROXY header, the client's address and port, and the
    balancer's port."""
    with socket.socket() as upstream:
        upstream.bind(("127.0.0.1", 0))
        upstream.listen(1)
        upstream.settimeout(WAIT)
        port, target = free_port(), [f"127.0.0.1:{upstream.getsockname()[1]}"]
        front: HAProxy | Nginx
        if balancer == "haproxy":
            text = haproxy_config(HAPROXY_CONF, f"127.0.0.1:{port}", target)
            front = HAProxy(directory, text, port)
        else:
            text = balancer_config(TCP_CONF, f"127.0.0.1:{port}", target)
            front = Nginx(directory, {"tcp.conf": text}, require_peer("nginx"))
        try:
            with connect(port, CLIENT_A) as client:
                accepted, _ = upstream.accept()
                with accepted:
                    accepted.settimeout(WAIT)
                    parser, header = ProxyHeaderParser(), None
                    while header is None:
                        data = accepted.recv(4096)
                        assert data, f"{balancer} closed before its PROXY header was complete"
                        header = parser.feed(data)
                    return header, client.getsockname()[:2], port
        finally:
            front.stop()


@pytest.mark.parametrize("balancer", ["haproxy", "nginx"])
def test_tcp_through_a_balancer_cookies_bind_the_real_client_and_tickets_resume_anywhere(
    fleet: FleetFactory, balancer: str, tmp_path: Path
) -> None:
    """Three TCP nodes, ``--validation hrr`` (every client gets the stateless HRR), behind
    HAProxy running docs/fleet/haproxy-tcp.cfg (``send-proxy-v2``: PROXY protocol version 2)
    or nginx running docs/fleet/nginx-tcp.conf (``proxy_protocol on``: version 1, the only one
    nginx 1.22 sends).  On the wire each sends the version its file says, naming the client;
    the node's report names the client the balancer saw, its cookie is bound to that client
    wherever it is opened, and a ticket opens on every node."""
    version = {"haproxy": 2, "nginx": 1}[balancer]
    header, source, listen = first_proxy_header(balancer, tmp_path / f"{balancer}-wire")
    assert (header.version, header.protocol) == (version, "TCP4"), header
    assert header.source == source and header.destination == ("127.0.0.1", listen), header
    print(f"\n{balancer} sends PROXY protocol v{header.version}: {header}")

    fleet_ = fleet(tcp=3, tcp_args=("--validation", "hrr"), haproxy=balancer == "haproxy")
    port = fleet_.haproxy.port if fleet_.haproxy is not None else fleet_.tcp_port

    # curl from 127.0.0.2: the node names it (its port as curl saw it), the balancer as via.
    marks = fleet_.marks()
    got = curl(port, CLIENT_A)
    assert got.returncode == 0 and PAGE_TEXT in got.stdout, (got, fleet_.outputs())
    curl_port = got.stdout.rpartition("\n")[2]
    ((node, report),) = fleet_.new_reports(marks, 1)
    assert report["peer"] == f"{CLIENT_A}:{curl_port}", report[0]
    assert report["via"] is not None and report["via"].startswith(f"{BALANCER}:"), report[0]
    assert (report["validation"], report["hrr"], report["cookie"]) == ("hrr", "yes", "verified")
    assert report["error"] is None, report[0]
    print(f"curl {CLIENT_A}:{curl_port} -> {balancer} -> {node.name}: {report[0]}")

    # Python's ssl (OpenSSL) from 127.0.0.2: ClientHello1 answered by one node (round robin),
    # the same ClientHello2 then sent from 127.0.0.3 (refused where it lands: the cookie is
    # bound to 127.0.0.2) and from 127.0.0.2 (completed by a third node).
    client = PythonSSLClient()
    marks = fleet_.marks()
    client_hello2 = client.step(hello_retry(port, CLIENT_A, client))
    assert refused(port, CLIENT_B, client_hello2)[:1] == b"\x15"  # an alert
    assert PAGE_TEXT in finish(port, CLIENT_A, client, client_hello2)
    (replayed_on, replayed), (completed_on, completed) = sorted(
        fleet_.new_reports(marks, 2), key=lambda found: found[1]["error"] is None
    )
    assert replayed["peer"].startswith(f"{CLIENT_B}:") and replayed["error"] is not None
    assert replayed["error"].startswith("'decrypt_error: cookie does not authenticate")
    assert completed["peer"].startswith(f"{CLIENT_A}:") and completed["via"] is not None
    assert completed["cookie"] == "verified" and completed["error"] is None, completed[0]
    assert replayed_on is not completed_on

    # openssl s_client: a full handshake on one node saves its ticket; both others resume it.
    session_file = tmp_path / "session.pem"
    marks = fleet_.marks()
    assert page_fetched(s_client(port, "-sess_out", str(session_file)), "New")
    ((issuer, issued),) = fleet_.new_reports(marks, 1)
    assert issued["resumed"] == "no" and issued["error"] is None, issued[0]
    resumers = []
    for _ in range(2):
        marks = fleet_.marks()
        run = s_client(port, "-sess_in", str(session_file))
        assert page_fetched(run, "Reused"), run.stdout + run.stderr
        ((node, report),) = fleet_.new_reports(marks, 1)
        assert report["resumed"] == "yes" and report["cookie"] == "verified", report[0]
        assert report["error"] is None, report[0]
        resumers.append(node)
    assert {issuer, *resumers} == set(fleet_.tcp), "issued on one node, resumed on the two others"
    print(f"ticket issued by {issuer.name}, resumed on {resumers[0].name} and {resumers[1].name}")

    stats = [node.stop() for node in fleet_.tcp]
    # The node that sent the HRR of the ClientHello above never heard from that client again.
    left = [
        node for node, line in zip(fleet_.tcp, stats, strict=True) if "left_after_hrr=1" in line
    ]
    assert len(left) == 1 and left[0] not in (replayed_on, completed_on), stats
    assert sum(stat_field(line, "proxied") for line in stats) == 7, stats
    assert all("cookie_keys=1 ticket_keys=1 key_reloads=0" in line for line in stats), stats


# --- QUIC through nginx's UDP proxy -----------------------------------------------------------


class CapturingRelay:
    """The clients' side of nginx, in miniature: each client address and port gets a socket of
    its own toward ``upstream``, from 127.0.0.2 (so that nginx sees each client connection as
    the session it would be), every datagram passes both ways, and what each client sent is
    kept: ``sent()``, the datagrams of each client address and port, in the order they came."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listen = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.listen.bind(("127.0.0.1", 0))
        self.port = self.listen.getsockname()[1]
        self._outgoing: dict[tuple[str, int], socket.socket] = {}  # client: its socket
        self._clients: dict[socket.socket, tuple[str, int]] = {}
        self._sent: dict[tuple[str, int], list[bytes]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for sock in select.select([self.listen, *self._clients], [], [], 0.05)[0]:
                data, address = sock.recvfrom(65536)
                if sock is not self.listen:
                    self.listen.sendto(data, self._clients[sock])
                    continue
                client = (str(address[0]), int(address[1]))
                if client not in self._outgoing:
                    outgoing = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    outgoing.bind((CLIENT_A, 0))
                    self._outgoing[client], self._clients[outgoing] = outgoing, client
                    self._sent[client] = []
                self._sent[client].append(data)
                self._outgoing[client].sendto(data, self.upstream)

    def sent(self) -> list[list[bytes]]:
        return list(self._sent.values())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for sock in [self.listen, *self._clients]:
            sock.close()


def quic_packets(datagram: bytes) -> list[QuicHeader]:
    """The headers of the QUIC packets coalesced in ``datagram`` (RFC 9000 §12.2)."""
    headers, start = [], 0
    while start < len(datagram):
        buffer = Buffer(data=datagram[start:])
        headers.append(pull_quic_header(buffer, host_cid_length=SERVER_CID_LENGTH))
        start += headers[-1].packet_length
    return headers


def first_flight(datagrams: list[bytes]) -> list[bytes]:
    """What a QUIC client sent before it learned the server's connection ID: its datagrams to
    the Destination Connection ID of its first Initial (its ClientHello, and the 0-RTT packets
    sent with it)."""
    chosen = quic_packets(datagrams[0])[0].destination_cid
    return [d for d in datagrams if quic_packets(d)[0].destination_cid == chosen]


def replay(datagrams: list[bytes], target: tuple[str, int], source: str) -> socket.socket:
    """``datagrams`` sent again, as they are, to ``target`` from a new socket on ``source``;
    the socket (whatever comes back is never read: the replayer holds no key)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((source, 0))
    for datagram in datagrams:
        sock.sendto(datagram, target)
    return sock


def handshake_secrets(node: Node, client_random: str) -> set[str]:
    """The key log labels ``node`` wrote for that ClientHello, once it answered it (its
    application secrets, which come last; the decision on 0-RTT comes before)."""
    deadline = time.monotonic() + WAIT
    while "EXPORTER_SECRET" not in (labels := node.secrets(client_random)):
        assert time.monotonic() < deadline, f"{node.name} never answered {client_random}"
        time.sleep(0.02)
    return labels


def test_quic_through_nginx_a_token_and_0rtt_from_one_node_work_on_another_and_a_replay_fails(
    fleet: FleetFactory, quicgoclient: Path, redis_server: RedisServer, tmp_path: Path
) -> None:
    """Three QUIC nodes behind nginx's UDP proxy, ``--validation retry`` (a new client's first
    Initial gets a Retry), ``--early-data`` on, one Redis as their ``--replay-store`` (started by
    the test, vouched for as new: a brand-new fleet).  (A Retry, not the stateless HRR: quic-go
    0.29 sends an illegal ClientHello2 when its 0-RTT meets an HRR, and gtlsclient, ngtcp2
    0.12.1, aborts when it resumes through any HRR: docs/QUIC.md, "0-RTT".)

    * gtlsclient: a ticket it saved from one node resumes on another, its request in 0-RTT.
    * quic-go, through nginx and a relay of ours that keeps what it sends: a Retry and a full
      handshake on node A, which sends tickets and a NEW_TOKEN token; its next connection, on
      node B, skips the Retry with that token and resumes A's ticket with its GET in 0-RTT,
      which B accepts (``validation=token ... resumed=0rtt``) after the shared store saw the
      ticket's first use.
    * That connection's first flight (its Initial with the ClientHello, its 0-RTT packets)
      sent again as it is, from another address, through nginx: it lands on node C, which finds
      the ticket used in Redis and refuses the 0-RTT (``replay_0rtt_replays=1``; its key log
      has this ClientHello's handshake secrets but no early one; the replayer holds no key, so
      the handshake goes no further).  The same datagrams sent to a node of the same keys with
      its own per-process store, outside the balancer: accepted (its key log has the early
      secret), as every node would without the shared store."""
    zero_rtt = ("--validation", "retry", "--early-data", "1")
    fleet_ = fleet(
        tcp=0,
        quic=3,
        quic_args=(*zero_rtt, "--replay-store", redis_server.url),
        keylog=True,
        spare_args=zero_rtt,
    )
    port, spare = fleet_.udp_port, fleet_.spare
    assert spare is not None

    # gtlsclient: a full handshake on one node, its session and the transport parameters that
    # 0-RTT needs saved; on another node, after a Retry, that ticket resumed with its request in
    # 0-RTT.  (Without --tp-file, gtlsclient crashes resuming a ticket that allows 0-RTT.)
    saved = [f"--session-file={tmp_path / 'quic-session.pem'}", f"--tp-file={tmp_path / 'tp'}"]
    marks = fleet_.marks()
    output = gtlsclient(port, *saved)
    assert "QUIC handshake has completed" in output and ":status: 200" in output, output
    ((issuer, issued),) = fleet_.new_reports(marks, 1)
    assert issued["resumed"] == "no" and issued["error"] is None, issued[0]
    marks = fleet_.marks()
    output = gtlsclient(port, *saved)
    assert "QUIC handshake has completed" in output and ":status: 200" in output, output
    ((resumer, resumed),) = fleet_.new_reports(marks, 1)
    assert resumed["resumed"] == "0rtt" and resumed["error"] is None, resumed[0]
    assert resumed["validation"] == "retry" and resumer is not issuer, resumed[0]
    print(f"\ngtlsclient: ticket from {issuer.name}, 0-RTT on {resumer.name}: {resumed[0]}")

    # quic-go: two connections, each a new UDP socket (a new nginx session: the next node), one
    # token store and one session cache.
    relay = CapturingRelay(("127.0.0.1", port))
    try:
        marks = fleet_.marks()
        ok, output = quicgo(quicgoclient, relay.port, 2, "-resume")
    finally:
        relay.close()
    assert ok, output + fleet_.outputs()
    assert output.count("TOKEN_SENT") == 1, output
    assert output.index("TOKEN_SENT") > output.index("CONNECTION 2"), output
    assert re.findall(r"RESUMED \S+ EARLY_DATA \S+", output) == [
        "RESUMED false EARLY_DATA false",
        "RESUMED true EARLY_DATA true",
    ], output
    by_validation = {
        report["validation"]: (n, report) for n, report in fleet_.new_reports(marks, 2)
    }
    (node_a, first), (node_b, second) = by_validation["retry"], by_validation["token"]
    assert (first["hrr"], first["resumed"], first["error"]) == ("no", "no", None), first[0]
    assert (second["hrr"], second["resumed"], second["error"]) == ("no", "0rtt", None), second[0]
    assert node_a is not node_b
    print(f"quic-go: NEW_TOKEN and ticket from {node_a.name}, taken on {node_b.name}: {second[0]}")

    # Node B's early secret names the ClientHello it accepted 0-RTT from.
    assert node_b.keylog is not None
    (client_random,) = {
        line.split()[1]
        for line in node_b.keylog.read_text().splitlines()
        if line.startswith("CLIENT_EARLY_TRAFFIC_SECRET ")
    }
    flight = first_flight(relay.sent()[1])
    kinds = [header.packet_type for datagram in flight for header in quic_packets(datagram)]
    assert kinds[0] == QuicPacketType.INITIAL and QuicPacketType.ZERO_RTT in kinds, kinds

    # The replay, through nginx from 127.0.0.3: node C, the next in nginx's round robin.
    (node_c,) = [node for node in fleet_.quic if node not in (node_a, node_b)]
    with replay(flight, ("127.0.0.1", port), CLIENT_B):
        refused = handshake_secrets(node_c, client_random)
    assert "CLIENT_HANDSHAKE_TRAFFIC_SECRET" in refused, refused
    assert "CLIENT_EARLY_TRAFFIC_SECRET" not in refused, refused
    # The same datagrams to the spare node (its own store), from nginx's address as if
    # through it: accepted.
    with replay(flight, ("127.0.0.1", spare.port), BALANCER):
        accepted = handshake_secrets(spare, client_random)
    assert "CLIENT_EARLY_TRAFFIC_SECRET" in accepted, accepted
    print(f"the replay of that first flight: refused by {node_c.name}, accepted by {spare.name}")

    stats = {node: node.stop() for node in fleet_.nodes}
    store = {
        node: {
            f: stat_field(stats[node], f"replay_0rtt_{f}") for f in ("errors", "refused", "replays")
        }
        for node in fleet_.quic
    }
    # B: the first use (accepted); C: the replay, seen by Redis; nothing the store could not
    # vouch for anywhere.
    assert store[node_c] == {"errors": 0, "refused": 0, "replays": 1}, stats[node_c]
    assert store[node_b] == store[node_a] == {"errors": 0, "refused": 0, "replays": 0}, stats
    assert all(" replay_0rtt=up " in stats[node] for node in (node_b, node_c)), stats
    assert "replay_0rtt" not in stats[spare], stats[spare]
    # quic-go's second connection and the two replays took the NEW_TOKEN token (the replays
    # carry it: it is bound to nginx's address, which the replay came from as well).
    print(f"{node_c.name}: {' '.join(f'replay_0rtt_{k}={v}' for k, v in store[node_c].items())}")
    # Redis itself holds the two first uses (gtlsclient's ticket and quic-go's), hashed; the
    # replay added nothing.
    used = [key for key in redis_keys(redis_server, "stateless13:0rtt:*") if key not in EPOCHS]
    assert len(used) == 2, used
    assert stat_field(stats[node_b], "tokens_accepted") == 1, stats[node_b]
    assert stat_field(stats[node_c], "tokens_accepted") == 1, stats[node_c]
    assert stat_field(stats[spare], "tokens_accepted") == 1, stats[spare]
    assert all(stat_field(line, "tokens_ignored") == 0 for line in stats.values()), stats
    # gtlsclient's two connections (it stores tokens, never sends them) and quic-go's first.
    assert sum(stat_field(stats[node], "retry_sent") for node in fleet_.quic) == 3, stats


class SwitchingRelay:
    """A balancer without affinity, in miniature: the client's first datagram goes to
    ``first``, every later one to ``then`` (as when a balancer lost its session for the client,
    or the client's port changed, between ClientHello1 and ClientHello2); every answer back."""

    def __init__(self, first: tuple[str, int], then: tuple[str, int]) -> None:
        self.upstreams = (first, then)
        self.forwarded = 0
        self.listen = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.listen.bind(("127.0.0.1", 0))
        self.port = self.listen.getsockname()[1]
        self.upstream = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.upstream.bind(("127.0.0.1", 0))
        self.client: tuple[str, int] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for sock in select.select([self.listen, self.upstream], [], [], 0.05)[0]:
                data, address = sock.recvfrom(65536)
                if sock is self.listen:
                    self.client = address
                    self.upstream.sendto(data, self.upstreams[min(self.forwarded, 1)])
                    self.forwarded += 1
                elif self.client is not None:
                    self.listen.sendto(data, self.client)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.listen.close()
        self.upstream.close()


def test_quic_cid_key_file_lets_another_node_finish_the_stateless_hrr(
    fleet: FleetFactory, quicgoclient: Path
) -> None:
    """Two nodes sharing ``--cid-key-file`` (and the cookie keys): quic-go's ClientHello1 gets
    the stateless HRR from one, its ClientHello2 (sent to our connection ID) reaches the other,
    which derives the client's Initial keys from that ID, opens the cookie and completes."""
    fleet_ = fleet(tcp=0, quic=2, quic_args=("--validation", "hrr"))
    first, then = fleet_.quic
    relay = SwitchingRelay(("127.0.0.1", first.port), ("127.0.0.1", then.port))
    try:
        marks = fleet_.marks()
        ok, output = quicgo(quicgoclient, relay.port, connections=1)
        assert ok, output + fleet_.outputs()
        ((node, report),) = fleet_.new_reports(marks, 1)
    finally:
        relay.close()
    assert node is then, report[0]
    assert report["hrr"] == "yes" and report["cookie"] == "verified", report[0]
    assert report["error"] is None, report[0]
    first_stats, then_stats = first.stop(), then.stop()
    assert stat_field(first_stats, "hrr_sent") >= 1 and stat_field(first_stats, "completed") == 0
    assert stat_field(then_stats, "completed") == 1, then_stats


# --- Key rotation, rolled across the fleet while clients connect -----------------------------


class ClientLoop(threading.Thread):
    """One kind of client connecting through nginx again and again until stopped; ``step(n)``
    makes the n-th try and says what went wrong (None: all went well).  Anything it raises is
    a failure too."""

    def __init__(self, name: str, step: Callable[[int], str | None]) -> None:
        super().__init__(name=name, daemon=True)
        self.step = step
        self.tries = 0  # started
        self.failures: list[str] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            self.tries += 1
            try:
                problem = self.step(self.tries)
            except Exception as error:  # a client that breaks is a failure to report, not a hang
                problem = f"{type(error).__name__}: {error}"
            if problem is not None:
                self.failures.append(f"{self.name} #{self.tries}: {problem}")


def fresh_tries(loops: list[ClientLoop], count: int) -> None:
    """Wait until every loop has started ``count`` more tries from now."""
    marks = [loop.tries for loop in loops]
    deadline = time.monotonic() + 60
    while any(loop.tries < mark + count for loop, mark in zip(loops, marks, strict=True)):
        assert all(loop.is_alive() for loop in loops)
        assert time.monotonic() < deadline, [(loop.name, loop.tries) for loop in loops]
        time.sleep(0.05)


def described(keys: list[bytes]) -> str:
    """How a node's log line names a ring of these keys: ``2 keys, ids 3a (sealing) 91``."""
    ids = [f"{key_id:02x}" for key_id in CookieKeyRing(keys).key_ids]
    head = f"{len(ids)} key{'s' if len(ids) > 1 else ''}, ids {ids[0]} (sealing)"
    return " ".join([head, *ids[1:]])


#: Seconds between two nodes' reloads, while the clients go on.
ROLL_PAUSE = 0.3


def test_key_rotation_rolled_node_by_node_fails_no_valid_cookie_ticket_or_token(
    fleet: FleetFactory, quicgoclient: Path, tmp_path: Path
) -> None:
    """docs/SECURITY.md's rotation, done as docs/FLEET.md says, on three TCP and three QUIC
    nodes sharing two key files (cookies, which also seal QUIC's Retry and NEW_TOKEN tokens;
    tickets): each phase is written to the files, then the nodes are sent SIGHUP one after the
    other, so that for most of each phase the nodes hold different rings.  Meanwhile, through
    nginx and without a pause:

    * Python's ssl takes a HelloRetryRequest from one node and finishes on another (a cookie
      sealed under one node's ring, opened under another's);
    * ``openssl s_client`` makes a full handshake (``--validation hrr``: a cookie) and saves the
      ticket, then resumes the ticket it saved on its previous try (any node, any phase);
    * quic-go connects twice: a Retry token, then its NEW_TOKEN on the next node.

    Phase 3 (drop the old key) waits "a lifetime" after phase 2, compressed: until every client
    holds only what was sealed after phase 2 (a real fleet waits 30 s for cookies and tokens of
    Retry, 2 hours for tickets, 24 hours for NEW_TOKEN tokens, or lets those clients pay a full
    handshake or a validation round trip).  Every try must succeed, every node's report must be
    free of errors, every resumption must resume and every quic-go token be taken.  Then the
    old keys must be gone: a ticket and a cookie sealed before the rotation no longer open."""
    fleet_ = fleet(
        tcp=3, quic=3, tcp_args=("--validation", "hrr"), quic_args=("--validation", "retry")
    )
    tcp_port, udp_port = fleet_.tcp_port, fleet_.udp_port
    old_cookie, new_cookie = fleet_.keys.cookie
    old_ticket, new_ticket = fleet_.keys.ticket

    # Before: a ticket and a cookie under the old keys, kept for the end.
    stale_session = tmp_path / "stale.pem"
    assert page_fetched(s_client(tcp_port, "-sess_out", str(stale_session)), "New")
    stale_client = PythonSSLClient()
    stale_hello2 = stale_client.step(hello_retry(tcp_port, CLIENT_A, stale_client))

    marks = fleet_.marks()
    counts = {"hops": 0, "full": 0, "resumed": 0, "quic": 0}

    def cookie_hop(_: int) -> str | None:
        client = PythonSSLClient()
        client_hello2 = client.step(hello_retry(tcp_port, CLIENT_A, client))
        body = finish(tcp_port, CLIENT_A, client, client_hello2)
        counts["hops"] += 1
        return None if PAGE_TEXT in body else f"got {body!r}"

    def tickets(number: int) -> str | None:
        run = s_client(tcp_port, "-sess_out", str(tmp_path / f"session{number}.pem"))
        if not page_fetched(run, "New"):
            return f"full handshake: {run.stdout[-600:]} {run.stderr[-600:]}"
        counts["full"] += 1
        if number > 1:
            run = s_client(tcp_port, "-sess_in", str(tmp_path / f"session{number - 1}.pem"))
            if not page_fetched(run, "Reused"):
                return f"resumption: {run.stdout[-600:]} {run.stderr[-600:]}"
            counts["resumed"] += 1
        return None

    def tokens(_: int) -> str | None:
        ok, output = quicgo(quicgoclient, udp_port)
        if not ok or output.count("TOKEN_SENT") != 1:
            return output[-1500:]
        counts["quic"] += 1
        return None

    loops = [ClientLoop(name, step) for name, step in [("cookie hops", cookie_hop),
             ("s_client tickets", tickets), ("quic-go tokens", tokens)]]  # fmt: skip
    for loop in loops:
        loop.start()
    try:
        fresh_tries(loops, 1)
        phases = [
            ([old_cookie, new_cookie], [old_ticket, new_ticket]),  # 1. the new key second
            ([new_cookie, old_cookie], [new_ticket, old_ticket]),  # 2. the new key first
            ([new_cookie], [new_ticket]),  # 3. the old key dropped
        ]
        rolling = [node for pair in zip(fleet_.tcp, fleet_.quic, strict=True) for node in pair]
        for number, (cookie_keys, ticket_keys) in enumerate(phases, 1):
            if number == 3:  # "a lifetime later": what the clients hold is all from phase 2
                fresh_tries(loops, 2)
            fleet_.keys.write(cookie_keys, ticket_keys)
            for node in rolling:
                node.send_signal(signal.SIGHUP)
                for option, keys in (("cookie", cookie_keys), ("ticket", ticket_keys)):
                    node.line(
                        rf"keys reloaded: --{option}-key-file \S+: {re.escape(described(keys))}$"
                    )
                time.sleep(ROLL_PAUSE)
            fresh_tries(loops, 1)  # every client connected with the whole fleet in this phase
    finally:
        for loop in loops:
            loop.stopping.set()
        for loop in loops:
            loop.join(60)
    assert not [f for loop in loops for f in loop.failures], [loop.failures for loop in loops]
    print(f"\nduring the rotation: {counts} ({[(loop.name, loop.tries) for loop in loops]})")
    assert min(counts.values()) >= 3, counts

    # Every try as the nodes saw it: no error anywhere, every resumption resumed, every token
    # taken (the first connection of each quic-go run validated by a Retry, its second by the
    # token from another node).
    expected = counts["hops"] + counts["full"] + counts["resumed"] + 2 * counts["quic"]
    reports = [report for _, report in fleet_.new_reports(marks, expected)]
    assert not [r[0] for r in reports if r["error"] is not None]
    tcp_reports = [r for r in reports if r["quic"] is None]
    quic_reports = [r for r in reports if r["quic"] is not None]
    assert all(r["cookie"] == "verified" for r in tcp_reports)  # --validation hrr: every one
    assert sum(r["peer"].startswith(f"{CLIENT_A}:") for r in tcp_reports) == counts["hops"]
    assert sum(r["resumed"] == "yes" for r in tcp_reports) == counts["resumed"]
    validations = sorted(r["validation"] for r in quic_reports)
    assert validations == ["retry"] * counts["quic"] + ["token"] * counts["quic"], validations

    # The old keys are gone: the ticket of before makes a full handshake, the cookie of before
    # fails (decrypt_error, whatever its age: the key id is unknown).
    marks = fleet_.marks()
    assert page_fetched(s_client(tcp_port, "-sess_in", str(stale_session)), "New")
    assert refused(tcp_port, CLIENT_A, stale_hello2)[:1] == b"\x15"
    stale = sorted((report for _, report in fleet_.new_reports(marks, 2)), key=lambda r: r[0])
    assert [(r["resumed"], r["error"]) for r in stale if r["error"] is None] == [("no", None)]
    (failed,) = [r["error"] for r in stale if r["error"] is not None]
    assert failed.startswith("'decrypt_error: cookie sealed under unknown key id"), failed

    for node in fleet_.nodes:
        line = node.stop()
        assert "cookie_keys=1 ticket_keys=1 key_reloads=6 key_reload_failures=0" in line, line
        if node in fleet_.quic:
            assert stat_field(line, "tokens_ignored") == 0, line


# --- SIGHUP itself ----------------------------------------------------------------------------


def test_sighup_reaches_every_worker_and_a_bad_file_keeps_its_keys(tmp_path: Path) -> None:
    """``serve --workers 2``: SIGHUP to the parent; each worker reads both files again.  The
    ticket file now holds only a new key: taken (a ticket of before no longer resumes).  The
    cookie file no longer parses: its ring keeps its key (cookies still work) and the log says
    why.  A worker killed afterwards comes back with the keys its siblings hold."""
    cookie_file, ticket_file = tmp_path / "cookie.keys", tmp_path / "ticket.keys"
    cookie_key, (old_ticket, new_ticket) = os.urandom(32), distinct_keys()
    cookie_file.write_text(cookie_key.hex() + "\n")
    ticket_file.write_text(old_ticket.hex() + "\n")
    args = ["--workers", "2", "--validation", "hrr", "--stats-interval", "3600"]
    args += ["--cookie-key-file", str(cookie_file), "--ticket-key-file", str(ticket_file)]
    server = Node("serve --workers 2", args, tmp_path).started()
    try:
        workers = server.wait_for(server.stdout, r"2 workers: (\d+) (\d+)", WAIT)
        old_session, new_session = tmp_path / "old.pem", tmp_path / "new.pem"
        assert page_fetched(s_client(server.port, "-sess_out", str(old_session)), "New")

        ticket_file.write_text(new_ticket.hex() + "\n")
        cookie_file.write_text("not a key\n")
        server.send_signal(signal.SIGHUP)
        for pid in workers[1], workers[2]:
            server.line(
                rf"\[{pid}\] keys reloaded: --ticket-key-file \S+: "
                + re.escape(described([new_ticket]))
                + "$"
            )
            server.line(
                rf"\[{pid}\] keys NOT reloaded: --cookie-key-file \S+:1: not a hex key; keeping "
                + re.escape(described([cookie_key]))
                + "$"
            )
        marks = len(server.reports())
        run = s_client(server.port, "-sess_in", str(old_session))
        assert page_fetched(run, "New"), run.stdout  # the old ticket key is gone
        assert page_fetched(s_client(server.port, "-sess_out", str(new_session)), "New")
        server.wait_for(server.stderr, REPORT.pattern, WAIT, marks + 2)
        for report in server.reports()[marks:]:
            assert report["resumed"] == "no" and report["cookie"] == "verified", report[0]
            assert report["error"] is None, report[0]

        os.kill(int(workers[1]), signal.SIGKILL)
        restarted = server.line(r"worker (\d+) started")[1]
        for _ in range(6):  # the kernel spreads them over both workers
            run = s_client(server.port, "-sess_in", str(new_session))
            assert page_fetched(run, "Reused"), run.stdout + server.output()
        print(f"\nworker {restarted} (restarted) resumed {server.output().count(f'[{restarted}]')}")
        server.send_signal(signal.SIGINT)
        assert server.wait(WAIT) == 0, server.output()
    finally:
        server.kill()
    (stats,) = [line for line in server.stderr if f"[{workers[2]}]" in line and " stats " in line]
    assert "cookie_keys=1 ticket_keys=1 key_reloads=1 key_reload_failures=1" in stats, stats


def test_sighup_without_key_files_says_so_and_serves_on(tmp_path: Path) -> None:
    """Keys of the process (or from the environment) are read at start only: SIGHUP says so,
    and does not stop the server (its default action would)."""
    server = Node("serve", ["--validation", "hrr", "--stats-interval", "3600"], tmp_path).started()
    try:
        server.send_signal(signal.SIGHUP)
        server.line(r"SIGHUP: no key file to read again")
        assert page_fetched(s_client(server.port), "New")
        line = server.stop()
        assert "key_reloads" not in line, line
    finally:
        server.kill()


def test_fleet_md_shows_the_configurations_the_tests_run() -> None:
    """docs/FLEET.md shows docs/fleet/nginx-*.conf and haproxy-tcp.cfg as they are, and they
    hold one listen (bind) line and three upstream servers each (what ``balancer_config`` and
    ``haproxy_config`` replace)."""
    text = (ROOT / "docs" / "FLEET.md").read_text()
    for conf in (TCP_CONF, UDP_CONF):
        assert f"```nginx\n{conf.read_text()}```" in text, conf
        assert balancer_config(conf, "127.0.0.1:1", ["127.0.0.1:2"] * 3).count("127.0.0.1:2") == 3
    assert f"```haproxy\n{HAPROXY_CONF.read_text()}```" in text
    config = haproxy_config(HAPROXY_CONF, "127.0.0.1:1", ["127.0.0.1:2"] * 3)
    assert config.count("127.0.0.1:2 send-proxy-v2") == 3 and "bind 127.0.0.1:1\n" in config


@pytest.mark.parametrize(
    "args, content, message",
    [
        ([], None, "--cid-key-file is for --quic (it keys QUIC's connection IDs)"),
        (["--quic"], "not hex\n", "not one hex key of at least 16 bytes on a line of its own"),
        (["--quic"], "00ff\n", "not one hex key of at least 16 bytes on a line of its own"),
    ],
)
def test_a_cid_key_file_that_cannot_be_used_stops_the_command(
    tmp_path: Path, args: list[str], content: str | None, message: str
) -> None:
    path = tmp_path / "cid.key"
    if content is not None:
        path.write_text(content)
    done = subprocess.run(
        [sys.executable, "-m", "stateless13", "serve", *args, "--cid-key-file", str(path)],
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2 and message in done.stderr, done
    assert "Traceback" not in done.stderr
