"""The demo HTTP page (``stateless13.transports.demo.http_page``, what ``stateless13 serve`` runs
by default) as HTTP/1.1 clients see it, through ``tls_server``.

curl and Python's http.client (the stdlib client: an HTTP implementation independent of ours)
send several requests over one connection; HEAD gets GET's headers and no body; an unknown path
gets 404 and another method 405 with ``Allow``; a request that cannot be parsed gets 400, one
whose head runs past h11's 16 KiB limit 431, and both are followed by the server's close.  The
raw requests go through Python's ssl, so what came back is read byte for byte.  Every test also
checks the server's own account: how many connections, and that none ended in an error (a
handler that raised would be reported as one).
"""

from __future__ import annotations

import http.client
import os
import re
import socket
import ssl
import subprocess
import time

import pytest

from stateless13.transports.common import Limits
from tests.servers import PAGE_TEXT, RunningServer, ServerFactory, require_peer

PEER_TIMEOUT = 10  # seconds; every exchange takes well under 1 s, this only bounds a hung one
NO_PROXY_ENV = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}


def curl(server: RunningServer, *args: str) -> subprocess.CompletedProcess[bytes]:
    """curl, verifying our certificate for the name localhost (→ 127.0.0.1)."""
    command = [require_peer("curl"), "--silent", "--show-error", "--tlsv1.3", "--max-time", "5"]
    command += ["--noproxy", "*", "--cacert", str(server.cert_path)]
    command += ["--resolve", f"localhost:{server.port}:127.0.0.1", *args]
    return subprocess.run(command, capture_output=True, timeout=PEER_TIMEOUT, env=NO_PROXY_ENV)


def url(server: RunningServer, path: str = "/") -> str:
    return f"https://localhost:{server.port}{path}"


def client_context(server: RunningServer) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(server.cert_path))
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    return context


def exchange(server: RunningServer, request: bytes) -> bytes:
    """Send ``request`` and read until the server closes; TimeoutError if it does not."""
    with (
        socket.create_connection((server.host, server.port), timeout=PEER_TIMEOUT) as raw,
        client_context(server).wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(request)
        reply = b""
        while chunk := tls.recv(65536):
            reply += chunk
        return reply


def headers_of(response: bytes) -> dict[str, str]:
    """The header fields of one response (names in lower case)."""
    head = response.partition(b"\r\n\r\n")[0].decode()
    fields = (line.partition(":") for line in head.split("\r\n")[1:])
    return {name.strip().lower(): value.strip() for name, _, value in fields}


def assert_connections(server: RunningServer, count: int) -> None:
    """The server saw ``count`` connections, and none ended in an error."""
    reports = server.wait_reports(count + 1, timeout=1.0)  # time for an extra one to show
    assert len(reports) == count, reports
    for report in reports:
        assert report.error is None, report
        assert report.hello_retry and report.cookie_verified, report


# --- keep-alive --------------------------------------------------------------------------------


def test_curl_fetches_two_pages_over_one_connection(tls_server: ServerFactory) -> None:
    server = tls_server()
    write_out = "\nconnects=%{num_connects} status=%{http_code}\n"
    run = curl(server, "--verbose", "--write-out", write_out, url(server), url(server))
    assert run.returncode == 0, run.stderr.decode()
    output = run.stdout.decode()
    assert output.count(PAGE_TEXT) == 2, output
    # num_connects: the connections each transfer opened; the second used the first's
    assert re.findall(r"connects=(\d+) status=(\d+)", output) == [("1", "200"), ("0", "200")]
    assert re.search(r"Re-?using existing", run.stderr.decode(), re.IGNORECASE), run.stderr
    assert_connections(server, 1)


def test_python_http_client_sends_four_requests_over_one_connection(
    tls_server: ServerFactory,
) -> None:
    """GET, HEAD (a body left on the wire would be read as the next status line), the KeyUpdate
    page (OpenSSL answers the KeyUpdate, then the connection goes on), and a 404."""
    server = tls_server()
    connection = http.client.HTTPSConnection(
        "127.0.0.1", server.port, context=client_context(server), timeout=PEER_TIMEOUT
    )
    try:
        connection.request("GET", "/")
        page = connection.getresponse()
        body = page.read()
        assert page.status == 200 and PAGE_TEXT.encode() in body, (page.status, body)
        assert page.getheader("Content-Length") == str(len(body))
        assert page.getheader("Server") == "stateless13" and page.getheader("Date")
        first_socket = connection.sock  # http.client reconnects silently if the server closed

        connection.request("HEAD", "/")
        head = connection.getresponse()
        assert (head.status, head.read()) == (200, b"")
        assert head.getheader("Content-Length") == str(len(body))
        assert head.getheader("Content-Type") == page.getheader("Content-Type")
        assert connection.sock is first_socket

        connection.request("GET", "/keyupdate")
        after_key_update = connection.getresponse()
        assert (after_key_update.status, after_key_update.read()) == (200, body)
        assert connection.sock is first_socket

        connection.request("GET", "/missing")
        missing = connection.getresponse()
        assert missing.status == 404, missing.status
        missing.read()
        assert connection.sock is first_socket
    finally:
        connection.close()
    assert_connections(server, 1)


def test_pipelined_requests_are_answered_in_order_until_connection_close(
    tls_server: ServerFactory,
) -> None:
    server = tls_server()
    reply = exchange(
        server,
        b"GET /missing HTTP/1.1\r\nHost: localhost\r\n\r\n"
        b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    statuses = re.findall(rb"^HTTP/1\.1 (\d{3}) ", reply, re.MULTILINE)
    assert statuses == [b"404", b"200"], reply
    assert reply.endswith(b"</p>\n"), reply  # the page, then the server's close
    assert_connections(server, 1)


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",  # h11 keeps no HTTP/1.0 connection alive
    ],
    ids=["connection-close", "http-1.0"],
)
def test_the_server_closes_after_one_answer_when_asked(
    tls_server: ServerFactory, request_bytes: bytes
) -> None:
    server = tls_server()
    reply = exchange(server, request_bytes)
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n") and reply.count(b"HTTP/1.1 ") == 1, reply
    assert headers_of(reply)["connection"] == "close", reply
    assert PAGE_TEXT.encode() in reply, reply
    assert_connections(server, 1)


def test_an_idle_keep_alive_connection_ends_at_the_idle_timeout(tls_server: ServerFactory) -> None:
    server = tls_server(limits=Limits(idle_timeout=0.5))
    started = time.monotonic()
    reply = exchange(server, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    waited = time.monotonic() - started
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n") and PAGE_TEXT.encode() in reply, reply
    assert "connection" not in headers_of(reply), reply  # kept alive: no "Connection: close"
    assert 0.4 <= waited < 5, waited  # open until the idle timeout, then closed
    assert_connections(server, 1)


# --- methods and paths -------------------------------------------------------------------------


def test_curl_head_gets_the_headers_of_get_and_no_body(tls_server: ServerFactory) -> None:
    server = tls_server()
    get = curl(server, "--include", url(server))
    head = curl(server, "--head", url(server))
    assert get.returncode == 0 and head.returncode == 0, (get.stderr, head.stderr)
    body = get.stdout.partition(b"\r\n\r\n")[2]
    assert PAGE_TEXT.encode() in body, get.stdout
    assert head.stdout.startswith(b"HTTP/1.1 200 OK\r\n"), head.stdout
    get_fields, head_fields = headers_of(get.stdout), headers_of(head.stdout)
    assert head_fields["content-length"] == get_fields["content-length"] == str(len(body))
    assert head_fields["content-type"] == get_fields["content-type"]
    assert head_fields["server"] == "stateless13" and "date" in head_fields, head.stdout
    # curl reads no body after a HEAD whatever comes; on the wire nothing follows the headers
    reply = exchange(server, b"HEAD / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n") and reply.endswith(b"\r\n\r\n"), reply
    assert headers_of(reply)["content-length"] == str(len(body)), reply
    assert reply.count(b"\r\n\r\n") == 1, reply
    assert_connections(server, 3)


def test_curl_unknown_path_is_404(tls_server: ServerFactory) -> None:
    server = tls_server()
    run = curl(server, "--include", url(server, "/no/such/page"))
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(b"HTTP/1.1 404 Not Found\r\n"), run.stdout
    assert PAGE_TEXT.encode() not in run.stdout, run.stdout
    assert_connections(server, 1)


def test_curl_post_is_405_with_allow(tls_server: ServerFactory) -> None:
    server = tls_server()
    run = curl(server, "--include", "-X", "POST", "--data-binary", "a body", url(server))
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(b"HTTP/1.1 405 Method Not Allowed\r\n"), run.stdout
    assert headers_of(run.stdout)["allow"] == "GET, HEAD", run.stdout
    assert_connections(server, 1)


# --- requests that cannot be served ------------------------------------------------------------


def test_a_malformed_request_line_gets_400_then_the_close(tls_server: ServerFactory) -> None:
    server = tls_server()
    reply = exchange(server, b"this is not HTTP\r\nHost: localhost\r\n\r\n")  # returns: closed
    assert reply.startswith(b"HTTP/1.1 400 Bad Request\r\n"), reply
    assert headers_of(reply)["connection"] == "close", reply
    assert_connections(server, 1)


def test_a_request_head_past_h11s_limit_gets_431_then_the_close(tls_server: ServerFactory) -> None:
    """17,000 bytes of a head that never ends: two TLS records, both read by the server before
    it answers (more, still unread at its close, could turn the close into a reset)."""
    server = tls_server()
    head = b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Padding: "
    reply = exchange(server, head + b"a" * (17000 - len(head)))
    assert reply.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"), reply
    assert headers_of(reply)["connection"] == "close", reply
    assert_connections(server, 1)
