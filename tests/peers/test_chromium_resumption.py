"""Headless Chromium (BoringSSL) resumes a TLS 1.3 session with our server on a second navigation.

Chromium keeps connections alive and would carry a second navigation on the first connection, so
the server here answers each request with ``Connection: close`` and closes: every request needs a
new TLS connection.  The first page (``/``) sends Chromium on to ``/second`` with a
``<meta http-equiv="refresh">``, which ``--virtual-time-budget`` lets headless Chromium follow
before ``--dump-dom``.  Both navigations happen in one Chromium process, whose session cache is
in memory, so the connection that carries ``/second`` can offer a ticket from the first.

Chromium also preconnects: at each navigation it opens spare connections to the page's origin,
the first of them before the first connection has its tickets, and ``/second`` then goes out on
such a spare, a full handshake.  The profile turns that off (``network_prediction_options``: 2,
"never"), so each request gets the one connection it opens.

That it resumed is proven from the server's own reports, matched to the requests by the client's
address: the connection that served ``/`` made a full handshake (signed: a certificate went
out), the one that served ``/second`` resumed (no certificate, RFC 8446 §2.2), without early data
(our tickets promise none by default).  Through the stateless HelloRetryRequest (the fixture's
default, ``validation="hrr"``) every connection went through the HRR and its cookie, so the
resuming ClientHello2's binder was checked from the cookie and ClientHello2 alone; without it
(``validation="none"``) none saw an HRR, as Chromium's X25519MLKEM768 share fits the default
groups.  Chromium's NetLog is checked to agree, connection by connection (``SSL_CONNECT``'s
``is_resumed``, BoringSSL's ``SSL_session_reused``).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from pathlib import Path
from typing import Any

import h11

from stateless13 import NamedGroup
from stateless13.transports.asyncio_tcp import TLSStream
from stateless13.transports.common import ConnectionReport
from tests.peers.test_chromium import (
    chromium_get,
    handshake_reports,
    load_netlog,
    tls_connections,
)
from tests.peers.test_resumption_peers import STATELESS, validation
from tests.servers import ServerFactory

SECOND_PATH = "/second"
SECOND_TEXT = "Second navigation"
# An icon of its own, so that Chromium asks for no /favicon.ico: it does so after /second, on a
# third connection that it drops (a broken pipe for the server) when it exits after the dump.
NO_FAVICON = '<link rel="icon" href="data:,">'
FIRST_PAGE = (
    f"<!doctype html><title>first</title>{NO_FAVICON}"
    f'<meta http-equiv="refresh" content="0; url={SECOND_PATH}">'
    "<p>On to the second page</p>\n"
).encode()
# Virtual time only runs while nothing is being fetched, so this is no wait in real time: the
# refresh and /second take a fraction of it, then Chromium dumps the DOM of /second.
VIRTUAL_TIME_BUDGET = "--virtual-time-budget=5000"
# Chromium's "Preload pages" setting at "never": no preconnects (chrome/common/pref_names.h).
NO_PRECONNECT_PREFERENCES = {"net": {"network_prediction_options": 2}}

Peer = tuple[str, int]
Requests = dict[Peer, list[str]]
"""The request paths each connection was asked for, by the client's address."""


def closing_pages(requests: Requests) -> Callable[[TLSStream], Awaitable[None]]:
    """A handler that answers one request per connection and closes it, noting the path in
    ``requests`` under the client's address (the ``peer`` of the server's ConnectionReport)."""

    async def answer_and_close(stream: TLSStream) -> None:
        http = h11.Connection(h11.SERVER)
        while True:
            event = http.next_event()
            if event is h11.NEED_DATA:
                data = await stream.read()
                if not data:
                    break  # the client left without asking: nothing to answer
                http.receive_data(data)
            elif isinstance(event, h11.Request):
                path = event.target.decode("ascii", "replace")
                requests.setdefault(stream.peer, []).append(path)
                stream.write(response(http, stream, path))
                await stream.drain()
                break
            else:
                break  # h11 gives a Request first; anything else means no request
        await stream.close()

    return answer_and_close


def response(http: h11.Connection, stream: TLSStream, path: str) -> bytes:
    """``/``: the page that navigates on; ``/second``: whether the server resumed the session;
    anything else: 404.  All with ``Connection: close``."""
    if path == "/":
        status, body = 200, FIRST_PAGE
    elif path == SECOND_PATH:
        resumed = "yes" if stream.handshake.resumed else "no"
        page = f"<!doctype html>{NO_FAVICON}<p>{SECOND_TEXT}, resumed: {resumed}</p>\n"
        status, body = 200, page.encode()
    else:
        status, body = 404, b"404 Not Found\n"
    headers = [
        ("Content-Type", "text/html; charset=utf-8"),
        ("Content-Length", str(len(body))),
        ("Connection", "close"),
        ("Date", formatdate(usegmt=True)),
    ]
    data = http.send(h11.Response(status_code=status, headers=headers))
    data += http.send(h11.Data(data=body))
    data += http.send(h11.EndOfMessage())
    return data


def netlog_resumed(netlog: dict[str, Any]) -> dict[Peer, bool]:
    """Chromium's word, per TLS connection by its local address (the server's ``peer``):
    ``is_resumed`` from SSL_CONNECT, matched to TCP_CONNECT's ``local_address`` by source.
    (Its ``peer_signature_algorithm`` is no sign of a full handshake: a resumed session keeps
    the one of the handshake that made it.)"""
    names = {number: name for name, number in netlog["constants"]["logEventTypes"].items()}
    addresses: dict[int, Peer] = {}
    resumed: dict[int, bool] = {}
    for event in netlog["events"]:
        name = names.get(event["type"])
        source = event.get("source", {}).get("id")
        params = event.get("params", {})
        if name == "TCP_CONNECT" and "local_address" in params:
            host, _, port = params["local_address"].rpartition(":")
            addresses[source] = (host, int(port))
        elif name == "SSL_CONNECT" and "is_resumed" in params:
            resumed[source] = params["is_resumed"]
    return {addresses[source]: was_resumed for source, was_resumed in resumed.items()}


def report_of(reports: list[ConnectionReport], requests: Requests, path: str) -> ConnectionReport:
    """The server's report of the connection that was asked for ``path``."""
    (report,) = [report for report in reports if requests.get(report.peer) == [path]]
    return report


@STATELESS
def test_chromium_resumes_on_a_second_navigation(
    tls_server: ServerFactory, tmp_path: Path, stateless: bool
) -> None:
    """/ on a full handshake, /second on a resumed one: the server says so, and Chromium."""
    requests: Requests = {}
    server = tls_server(validation=validation(stateless), handler=closing_pages(requests))
    # chromium_get's --user-data-dir, made here first: Chromium starts with this preference.
    preferences = tmp_path / "profile" / "Default" / "Preferences"
    preferences.parent.mkdir(parents=True)
    preferences.write_text(json.dumps(NO_PRECONNECT_PREFERENCES))
    run = chromium_get(server, tmp_path, [VIRTUAL_TIME_BUDGET])
    netlog = load_netlog(tmp_path / "netlog.json")
    chromium_resumed = netlog_resumed(netlog)
    reports = handshake_reports(server, 2)
    detail = (
        f"DOM: {run.dom[:500]!r}\nstderr: {run.stderr[-2000:]}\n"
        f"requests: {requests}\nNetLog is_resumed: {chromium_resumed}\nreports: {server.reports}"
    )
    assert SECOND_TEXT in run.dom, detail  # Chromium followed the refresh and got /second

    # The server's word: two connections, / on a full handshake, /second on a resumed one.
    assert sorted(requests.values()) == [["/"], [SECOND_PATH]], detail
    assert len(reports) == len(server.reports) == 2, detail
    for report in reports:
        assert report.error is None, report
        assert report.handshake is not None, report
        assert report.validation == validation(stateless), report
        assert report.hello_retry is stateless and report.cookie_verified is stateless, report
        assert report.handshake.hello_retry is stateless, report
        assert report.handshake.cookie_verified is stateless, report
        assert report.handshake.group == NamedGroup.X25519MLKEM768, report
        assert report.handshake.server_name == "localhost", report
        assert not report.handshake.early_data, report
    first = report_of(reports, requests, "/")
    second = report_of(reports, requests, SECOND_PATH)
    assert first.handshake is not None and second.handshake is not None
    assert not first.handshake.resumed, first
    assert first.handshake.signature_scheme is not None, first  # a full handshake: signed
    assert second.handshake.resumed, second
    assert second.handshake.signature_scheme is None, second  # resumed: no certificate
    assert f"{SECOND_TEXT}, resumed: yes" in run.dom, detail

    # Chromium's word agrees, connection by connection: resumed or not, the HRR or none.
    assert chromium_resumed == {first.peer: False, second.peer: True}, detail
    completed = [c for c in tls_connections(netlog) if c.version is not None]
    assert len(completed) == 2, detail
    for connection in completed:
        assert connection.version == "TLS 1.3", connection
        assert connection.hrr_received is stateless, connection
        assert connection.client_hellos == (2 if stateless else 1), connection
