"""Session tickets alone: issuing one, accepting one offered, and their bytes (issue 15).

    python -m bench.tickets [--seconds S] [--rounds N] [--json]

Per operation, in both builds of the core (bench/builds.py), each figure in a fresh worker
process per round after one untimed run there, with the same calls, in the same order, as
stateless13/handshake.py makes them; a round's figure is its median batch of 20 calls (a batch
that a preemption or a garbage collection hit is an outlier, not an average's share):

* issue one ticket: what ``ServerHandshake._send_new_session_tickets`` does per ticket: the
  age_add from os.urandom, ``key_schedule.resumption_psk``, ``TicketState``,
  ``ticket.seal_ticket`` under ``config.ticket_keys``, ``messages.push_new_session_ticket``.
  The resumption master secret, once per handshake whatever the number of tickets, apart.
* accept one offered ticket: what ``ServerHandshake._accepted_psk`` does for the identity it
  accepts: the look-up among the external PSKs (``config.external_psk_index``), which misses,
  ``ticket.open_ticket``, the checks (lifetime, age, suite, hash, server name; not the client
  certificate's, which returns at once when the config requires none),
  ``key_schedule.early_secret``, ``Transcript.digest_with`` of ClientHello2 truncated before
  its binders, ``key_schedule.psk_binder``, ``hmac.compare_digest``.  On a real ClientHello2:
  Python's ``ssl`` client (OpenSSL 3) offering a ticket our server issued, after our stateless
  HelloRetryRequest, checked to resume through ``stateless_accept``; the transcript before it
  (message_hash(ClientHello1) + HRR) rebuilt from its cookie, as the stateless path does.
* ``seal_ticket`` and ``open_ticket`` alone: the AES-GCM-SIV part of the two.

The same cost with an anchor: a full handshake with 2 tickets minus one with none, halved, per
handshake (phased as in bench.handshake, its servers and Python ``ssl`` clients), for ours in
both builds and for Python ``ssl``'s server (``num_tickets`` 2 and 0: OpenSSL's per-ticket
cost).  That includes what the micro figures leave out (the resumption master secret, halved;
protecting the records; OpenSSL's session object) and is a small difference of two large
figures: the two servers' handshakes alternate batch by batch in one worker, so that drift
hits both.  0-RTT is not measured: Python ``ssl``'s server has none to compare with.

The bytes (no timing): the NewSessionTickets of real handshakes with Python ``ssl`` clients,
decrypted with the server's key log, ours and Python ``ssl``'s server's, per suite, with and
without a server name and ALPN.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hmac
import os
import ssl
import statistics
import struct
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from stateless13 import (
    Accepted,
    CipherSuite,
    HandshakeComplete,
    HelloRetry,
    ServerConfig,
    stateless_accept,
)
from stateless13 import key_schedule as ks
from stateless13.messages import (
    ClientHello,
    HandshakeType,
    NewSessionTicket,
    pull_new_session_ticket,
    push_new_session_ticket,
)
from stateless13.primitives import SUITES, SuiteParams
from stateless13.record import ContentType, RecordProtection
from stateless13.retry import CookieVerified, answer_client_hello
from stateless13.ticket import TicketState, open_ticket, seal_ticket
from stateless13.transcript import Transcript, rebuild_after_retry

from .builds import BUILDS, Measurement, Workers, benchmark_main, builds
from .common import (
    PEER,
    MemoryClient,
    Progress,
    Report,
    Row,
    Table,
    alternate,
    python_ssl_client_context,
)
from .handshake import (
    BATCH,
    CLIENTS,
    SERVERS,
    SUITE_PREFERENCE,
    Client,
    PythonClient,
    Step,
    ours_plain,
    phased,
    python_ssl_server,
    resuming_clients,
    server_context,
)

#: The suites measured, by their hash.
SUITE_OF_HASH = {
    "SHA-256": CipherSuite.TLS_AES_128_GCM_SHA256,
    "SHA-384": CipherSuite.TLS_AES_256_GCM_SHA384,
}
#: The micro measurements' calls per timed batch: short (about 0.1 to 0.3 ms), so that most
#: batches run without a preemption, and the median batch is one of those.
OPS_PER_BATCH = 20
#: The difference of handshakes (2 tickets - 0) runs this many round lengths, and at least
#: MIN_PAIRS pairs of batches (one of each server): a short round must still see tickets.
DIFFERENCE_SCALE = 5
MIN_PAIRS = 10
#: handshake.py's struct for age_add (four random bytes, big-endian).
_AGE_ADD = struct.Struct(">I")


# ---------------------------------------------------------------------------------------------
# A real ClientHello2 offering one of our tickets


def handshake_payload(records: bytes) -> bytes:
    """The handshake bytes of plaintext ``records`` (compatibility CCS records skipped)."""
    found = bytearray()
    offset = 0
    while offset < len(records):
        length = int.from_bytes(records[offset + 3 : offset + 5], "big")
        if records[offset] == ContentType.handshake:
            found += records[offset + 5 : offset + 5 + length]
        offset += 5 + length
    return bytes(found)


@dataclass
class Offered:
    """What ``ServerHandshake._accepted_psk`` gets for a ClientHello2 offering one ticket."""

    config: ServerConfig
    suite: SuiteParams
    hello: ClientHello  # ClientHello2, parsed
    message: bytes  # ClientHello2, the whole handshake message
    transcript: Transcript  # what precedes it: message_hash(ClientHello1) + HRR
    ticket: TicketState  # the offered ticket, opened (for issuing alike ones)


def offered_ticket(hash_name: str) -> Offered:
    """Python ssl's ClientHello2 resuming a ticket of ours, after our stateless HRR; checked."""
    config = ServerConfig.self_signed("localhost", cipher_suites=(SUITE_OF_HASH[hash_name],))
    client = resuming_clients(ours_plain(config))()  # a ticket from a full handshake of ours
    now = time.time()
    retry = stateless_accept(config, client.first(), peer=PEER, now=now)
    assert isinstance(retry, HelloRetry), retry
    second = client.finish(retry.data_to_send)
    accepted = stateless_accept(config, second, peer=PEER, now=now, after_retry=True)
    assert isinstance(accepted, Accepted), accepted
    accepted.connection.receive_data(client.finish(accepted.data_to_send))
    event = accepted.connection.next_event()
    assert isinstance(event, HandshakeComplete) and event.resumed, event

    verified = answer_client_hello(config, handshake_payload(second), peer=PEER, now=now)
    assert isinstance(verified, CookieVerified), verified
    suite = SUITES[verified.retry.cipher_suite]
    offered = verified.hello.pre_shared_key
    assert offered is not None and len(offered.identities) == 1, offered
    ticket = open_ticket(config.ticket_keys, offered.identities[0].identity)
    assert ticket is not None
    transcript = rebuild_after_retry(
        suite, verified.retry.client_hello_hash, verified.hello_retry_request
    )
    return Offered(config, suite, verified.hello, verified.message, transcript, ticket)


# ---------------------------------------------------------------------------------------------
# One operation each, made as handshake.py makes it


def accept(offered: Offered) -> Callable[[], object]:
    """``_accepted_psk`` for its first offered identity, which resumes: the accepted ticket."""
    hello, message, transcript, suite = (
        offered.hello, offered.message, offered.transcript, offered.suite
    )  # fmt: skip
    keys, external_psks = offered.config.ticket_keys, offered.config.external_psk_index

    def once() -> object:
        psks = hello.pre_shared_key
        assert psks is not None
        identity = psks.identities[0]
        if external_psks.get(identity.identity) is not None:  # misses: the identity is a ticket
            raise AssertionError("an external PSK")
        now = time.time()
        ticket = open_ticket(keys, identity.identity)
        if (
            ticket is None
            or ticket.expired(now)
            or ticket.client_age_ms(identity.obfuscated_ticket_age) > ticket.lifetime * 1000
            or ticket.cipher_suite not in SUITES
            or SUITES[ticket.cipher_suite].hash_name != suite.hash_name
            or ticket.server_name != hello.server_name
        ):
            raise AssertionError("the offered ticket does not resume")
        early = ks.early_secret(suite, ticket.psk)
        truncated = message[: len(message) - psks.binders_size]
        # external=False, its default: a resumption binder ("res binder").
        expected = ks.psk_binder(suite, early, transcript.digest_with(truncated))
        if not hmac.compare_digest(expected, psks.binders[0]):
            raise AssertionError("the binder does not verify")
        return ticket

    return once


def _resumption_master(suite: SuiteParams) -> bytes:
    transcript = Transcript(suite)
    transcript.update(os.urandom(600))
    return ks.resumption_master_secret(suite, os.urandom(suite.hash_len), transcript.digest())


def issue(offered: Offered) -> Callable[[], object]:
    """One iteration of ``_send_new_session_tickets``' loop: one NewSessionTicket message."""
    config, suite, like = offered.config, offered.suite, offered.ticket
    resumption_master = _resumption_master(suite)
    # Once per handshake in handshake.py, before the loop:
    issued_at_ms = int(time.time() * 1000)
    lifetime = config.ticket_lifetime
    early_data = config.early_data
    extensions = ()
    number = 0

    def once() -> object:
        nonce = bytes((number,))
        age_add = _AGE_ADD.unpack(os.urandom(4))[0]
        ticket = TicketState(
            issued_at_ms=issued_at_ms,
            lifetime=lifetime,
            cipher_suite=suite.code,
            age_add=age_add,
            max_early_data=early_data,
            psk=ks.resumption_psk(suite, resumption_master, nonce),
            alpn_protocol=like.alpn_protocol,
            server_name=like.server_name,
            # The external PSK identity and the client certificate: None, their defaults (this
            # session had neither).
        )
        sealed = seal_ticket(config.ticket_keys, ticket)
        return push_new_session_ticket(
            NewSessionTicket(lifetime, age_add, nonce, sealed, extensions)
        )

    message = once()
    assert isinstance(message, bytes)
    body = pull_new_session_ticket(message[4:])
    assert open_ticket(config.ticket_keys, body.ticket) is not None
    return once


def resumption_master(offered: Offered) -> Callable[[], object]:
    """Once per handshake that sends tickets: Derive-Secret(master, "res master", transcript)."""
    suite = offered.suite
    master = os.urandom(suite.hash_len)
    transcript = Transcript(suite)
    transcript.update(os.urandom(600))

    def once() -> object:
        return ks.resumption_master_secret(suite, master, transcript.digest())

    return once


def seal_alone(offered: Offered) -> Callable[[], object]:
    keys, ticket = offered.config.ticket_keys, offered.ticket
    return lambda: seal_ticket(keys, ticket)


def open_alone(offered: Offered) -> Callable[[], object]:
    psks = offered.hello.pre_shared_key
    assert psks is not None
    keys, identity = offered.config.ticket_keys, psks.identities[0].identity
    return lambda: open_ticket(keys, identity)


#: The micro measurements: operation name -> (what it times, its maker).
OPERATIONS: dict[str, tuple[str, Callable[[Offered], Callable[[], object]]]] = {
    "issue": ("issue one ticket (PSK, seal, NewSessionTicket)", issue),
    "accept": ("accept one offered ticket (open, checks, binder)", accept),
    "seal": ("of which seal_ticket alone (encode, AES-GCM-SIV)", seal_alone),
    "open": ("of which open_ticket alone (AES-GCM-SIV, decode)", open_alone),
    "resumption master": ("resumption master secret (once per handshake)", resumption_master),
}

#: The micro measurements made: (operation, hash).
MICRO = (
    ("issue", "SHA-384"),
    ("accept", "SHA-384"),
    ("seal", "SHA-384"),
    ("open", "SHA-384"),
    ("resumption master", "SHA-384"),
    ("issue", "SHA-256"),
    ("accept", "SHA-256"),
)


def micro(operation: str, hash_name: str, seconds: float) -> Measurement:
    """µs per call of one operation: the median batch of the round."""
    once = OPERATIONS[operation][1](offered_ticket(hash_name))
    calls = range(OPS_PER_BATCH)
    clock = time.perf_counter

    def measure() -> float:
        spent = []
        deadline = clock() + seconds
        while True:
            start = clock()
            for _ in calls:
                once()
            end = clock()
            spent.append(end - start)
            if end >= deadline:
                return 1e6 * statistics.median(spent) / OPS_PER_BATCH

    return measure


# ---------------------------------------------------------------------------------------------
# Per ticket inside a full handshake: (2 tickets - none) / 2, ours and Python ssl's server


def per_ticket(server: str, seconds: float) -> Measurement:
    """µs per ticket of ``server`` ("ours" or "ssl"): server time per handshake with 2 tickets
    minus with none, halved; batches of the two alternate in this process."""
    config = ServerConfig.self_signed("localhost", cipher_suites=SUITE_PREFERENCE)
    servers = (SERVERS[server](config), SERVERS[f"{server} 2 tickets"](config))
    client = CLIENTS["python ssl"]
    _check_tickets_sent(servers)

    def measure() -> float:
        differences: list[float] = []
        deadline = time.perf_counter() + seconds * DIFFERENCE_SCALE
        while len(differences) < MIN_PAIRS or time.perf_counter() < deadline:
            spent = [0.0, 0.0]
            first = len(differences) % 2  # which goes first alternates
            for index in (first, 1 - first):
                spent[index] = phased_batch(servers[index], client)
            differences.append((spent[1] - spent[0]) / BATCH / 2)
        # The median pair: a batch that a preemption or a garbage collection hit is an outlier.
        return 1e6 * statistics.median(differences)

    return measure


def phased_batch(steps: list[Step], client: Callable[[], Client]) -> float:
    """Server seconds to take a batch of clients through ``steps`` (bench.handshake.phased)."""
    return phased(steps, [client() for _ in range(BATCH)])


def _check_tickets_sent(servers: tuple[list[Step], list[Step]]) -> None:
    """The server without tickets sends nothing after the client's Finished, the other 2."""
    for expected, steps in zip((0, 2), servers, strict=True):
        client = PythonClient(python_ssl_client_context())
        state, flight = steps[0](None, client.first())
        _, after = steps[1](state, client.finish(flight))
        assert bool(after) == bool(expected), (expected, after)


def measurement(name: str, seconds: float) -> Measurement:
    kind, argument = name.split("; ")
    if kind == "per ticket":
        return per_ticket(argument, seconds)
    return micro(kind, argument, seconds)


# ---------------------------------------------------------------------------------------------
# Bytes: NewSessionTickets of real handshakes, decrypted with the server's key log


def _records(data: bytes) -> list[tuple[bytes, bytes]]:
    found = []
    offset = 0
    while offset < len(data):
        length = int.from_bytes(data[offset + 3 : offset + 5], "big")
        found.append((data[offset : offset + 5], data[offset + 5 : offset + 5 + length]))
        offset += 5 + length
    return found


def _messages(after: bytes, suite: SuiteParams, secret: bytes) -> list[bytes]:
    """The handshake messages in the protected records ``after`` the handshake."""
    reader = RecordProtection(suite, secret)
    data = bytearray()
    for header, payload in _records(after):
        content_type, plain = reader.open(header, payload)
        assert content_type == ContentType.handshake, content_type
        data += plain
    messages = []
    position = 0
    while position < len(data):
        end = position + 4 + int.from_bytes(data[position + 1 : position + 4], "big")
        messages.append(bytes(data[position:end]))
        position = end
    return messages


def _secret(lines: list[str], label: str) -> bytes:
    return bytes.fromhex(next(line.split()[2] for line in lines if line.startswith(label + " ")))


@dataclass
class Sent:
    """What a server sent after a handshake: its tickets, their messages, the bytes on the wire."""

    tickets: list[bytes]
    messages: list[bytes]
    wire: int  # bytes of the records after the client's Finished


def sent_tickets(
    ours: bool, suite: CipherSuite, server_name: str | None, alpn: str | None, early_data: int = 0
) -> Sent:
    """One full handshake with a Python ssl client; the server's NewSessionTickets, decrypted
    and checked to be taken by the client."""
    client_context = python_ssl_client_context()
    if alpn is not None:
        client_context.set_alpn_protocols([alpn])
    lines: list[str] = []
    alpns = (alpn.encode(),) if alpn is not None else ()
    config = ServerConfig.self_signed(
        "localhost", cipher_suites=(suite,), alpn_protocols=alpns, early_data=early_data
    )
    with tempfile.TemporaryDirectory(prefix="stateless13-tickets-") as directory:
        keylog = Path(directory) / "keylog"
        if ours:
            steps = ours_plain(_with_keylog(config, lines.append))
        else:
            context = server_context(config, 2)
            context.keylog_filename = str(keylog)
            if alpn is not None:
                context.set_alpn_protocols([alpn])
            steps = python_ssl_server(context)
        client = MemoryClient(client_context, server_hostname=server_name)
        state, flight = steps[0](None, client.step())
        _, after = steps[1](state, client.step(flight))
        if not ours:
            lines = keylog.read_text().splitlines()
    negotiated = client.tls.cipher()
    assert negotiated is not None and negotiated[0] == suite.name, (negotiated, suite)
    assert client.tls.selected_alpn_protocol() == alpn, client.tls.selected_alpn_protocol()
    messages = _messages(after, SUITES[suite], _secret(lines, "SERVER_TRAFFIC_SECRET_0"))
    assert [m[0] for m in messages] == [HandshakeType.new_session_ticket] * 2, messages
    client.incoming.write(after)
    with contextlib.suppress(ssl.SSLWantReadError):
        client.tls.read(1)
    session = client.tls.session
    assert session is not None and session.has_ticket, "the client took no ticket"
    tickets = [pull_new_session_ticket(message[4:]).ticket for message in messages]
    return Sent(tickets, messages, len(after))


def _with_keylog(config: ServerConfig, keylog: Callable[[str], None]) -> ServerConfig:
    return dataclasses.replace(config, keylog=keylog)


def _sizes(values: list[int]) -> str:
    low, high = min(values), max(values)
    return str(low) if low == high else f"{low}-{high}"


def bytes_table() -> Table:
    rows = []
    for hash_name, suite in SUITE_OF_HASH.items():
        for server_name in (None, "localhost"):
            for alpn in (None, "h2"):
                ours = sent_tickets(True, suite, server_name, alpn)
                # Python's ssl has no way to set TLS 1.3 suites: its server picks AES-256-GCM.
                anchor = (
                    sent_tickets(False, suite, server_name, alpn)
                    if suite == CipherSuite.TLS_AES_256_GCM_SHA384
                    else None
                )
                rows.append(_bytes_row(hash_name, server_name, alpn, "", ours, anchor))
    zero_rtt = sent_tickets(True, CipherSuite.TLS_AES_128_GCM_SHA256, "localhost", None, 16384)
    rows.append(_bytes_row("SHA-256", "localhost", None, ", 0-RTT allowed", zero_rtt, None))
    return Table(
        "bytes: NewSessionTickets after a full handshake (2 of each server), decrypted",
        ["suite hash", "server name", "ALPN", "ticket", "NewSessionTicket", "2 tickets, wire",
         "OpenSSL ticket", "OpenSSL NST", "OpenSSL 2, wire"],
        rows,
    )  # fmt: skip


def _bytes_row(
    hash_name: str,
    server_name: str | None,
    alpn: str | None,
    extra: str,
    ours: Sent,
    anchor: Sent | None,
) -> list[str | int]:
    row: list[str | int] = [
        hash_name + extra,
        server_name or "-",
        alpn or "-",
        _sizes([len(t) for t in ours.tickets]),
        _sizes([len(m) for m in ours.messages]),
        ours.wire,
    ]
    if anchor is None:
        return [*row, "-", "-", "-"]
    return [
        *row,
        _sizes([len(t) for t in anchor.tickets]),
        _sizes([len(m) for m in anchor.messages]),
        anchor.wire,
    ]


# ---------------------------------------------------------------------------------------------
# The report

ANCHOR = "Python ssl server: (2 tickets - 0) / 2"


def run(seconds: float, rounds: int, *, progress: bool = True) -> Report:
    with builds() as trees:
        workers = Workers("tickets", trees, seconds)
        runners: dict[str, Measurement] = {}
        for operation, hash_name in MICRO:
            for build in BUILDS:
                name = f"{operation}; {hash_name}"
                runners[f"{name}; {build}"] = workers.measure(name, build)
        for build in BUILDS:
            runners[f"per ticket; {build}"] = workers.measure("per ticket; ours", build)
        runners["anchor"] = workers.anchor("per ticket; ssl")
        bar = Progress("tickets", rounds * len(runners), enabled=progress)
        measured = alternate(runners, rounds, bar)
        bar.close()

    report = Report(
        "tickets",
        "Session tickets: issue and accept, per operation, one core; ticket bytes",
        {
            "seconds_per_round": seconds,
            "rounds": rounds,
            "client": "Python ssl",
            "per ticket": f"{BATCH} clients per flight, x25519, ECDSA P-256, AES-256-GCM-SHA384,"
            f" {DIFFERENCE_SCALE}x the round length",
        },
    )
    for operation, hash_name in MICRO:
        for build in BUILDS:
            what = OPERATIONS[operation][0]
            report.rows.append(
                Row(
                    f"{what}, {hash_name}: {build} build",
                    "µs",
                    measured[f"{operation}; {hash_name}; {build}"],
                    higher_is_better=False,
                )
            )
    anchor = measured["anchor"]
    for build in BUILDS:
        report.rows.append(
            Row(
                f"per ticket in a full handshake, (2 tickets - 0) / 2: {build} build",
                "µs",
                measured[f"per ticket; {build}"],
                ANCHOR,
                anchor,
                higher_is_better=False,
                note="ratio above 1: ours costs more per ticket",
            )
        )
    report.tables.append(bytes_table())
    report.notes.append(
        "Micro figures: the calls of handshake.py's ticket code, made from the benchmark (the"
        " loop around them interpreted in both builds); per round, the median batch of"
        f" {OPS_PER_BATCH} calls.  Every figure comes from a fresh worker process per round"
        " (bench/builds.py), the anchor's too, after one untimed run there."
    )
    report.notes.append(
        "Per ticket in a full handshake: batches of handshakes with 2 tickets and with none"
        " alternate in one worker; the figure is the median pair's difference of server time"
        f" per handshake, halved (anchor rounds, µs: {_rounds(anchor)})."
    )
    return report


def _rounds(values: list[float]) -> str:
    spread = max(values) - min(values) if len(values) > 1 else 0.0
    listed = ", ".join(f"{value:.1f}" for value in values)
    return f"{listed}; median {statistics.median(values):.1f}, range {spread:.1f}"


def main(argv: list[str] | None = None) -> int:
    return benchmark_main("tickets", __doc__.splitlines()[0], measurement, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
