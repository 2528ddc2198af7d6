"""Independent TLS 1.3 clients (OpenSSL, GnuTLS, curl, tlslite-ng) against our TCP server.

Each peer runs as a real program on 127.0.0.1 against ``tls_server(...)`` (``validation="hrr"``
unless a test says otherwise).  The stateless front answers every first ClientHello with a
HelloRetryRequest carrying a cookie, so every successful run
shows that the peer echoed the cookie and that the server resumed from it.  From the server's
report we check the HRR, the cookie, the suite and the group; from the client's output that it
spoke TLS 1.3, that the request went in and that the page came back.

Which peer sends which key shares (PEERS.md): OpenSSL and curl (OpenSSL) one x25519 share;
gnutls-cli secp256r1 and x25519 (one share with ``--single-key-share``, its first group);
tlslite-ng secp256r1 and x25519.  The server's group list then decides whether the HRR carries a
key_share (the client has no share for the group) or only the cookie.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from stateless13 import CipherSuite, NamedGroup
from stateless13.transports.common import ConnectionReport
from tests.servers import PAGE_TEXT, RunningServer, ServerFactory, require_peer

REQUEST = b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n"
PEER_TIMEOUT = 10  # seconds; a run takes well under 1 s, this only bounds a hung peer
NO_PROXY_ENV = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
CLEAN_ENV = NO_PROXY_ENV | {"LC_ALL": "C"}

SUITES = (
    CipherSuite.TLS_AES_128_GCM_SHA256,
    CipherSuite.TLS_AES_256_GCM_SHA384,
    CipherSuite.TLS_CHACHA20_POLY1305_SHA256,
)
GROUPS = (NamedGroup.x25519, NamedGroup.secp256r1, NamedGroup.secp384r1)
KEY_TYPES = ("ecdsa-p384", "ed25519", "rsa")

OPENSSL_TEMP_KEY = {
    NamedGroup.x25519: "Server Temp Key: X25519",
    NamedGroup.secp256r1: "Server Temp Key: ECDH, prime256v1",
    NamedGroup.secp384r1: "Server Temp Key: ECDH, secp384r1",
}
OPENSSL_CURVES = {
    NamedGroup.x25519: "X25519",
    NamedGroup.secp256r1: "P-256",
    NamedGroup.secp384r1: "P-384",
}
GNUTLS_GROUPS = {
    NamedGroup.x25519: "X25519",
    NamedGroup.secp256r1: "SECP256R1",
    NamedGroup.secp384r1: "SECP384R1",
}
GNUTLS_CIPHERS = {
    CipherSuite.TLS_AES_128_GCM_SHA256: "AES-128-GCM",
    CipherSuite.TLS_AES_256_GCM_SHA384: "AES-256-GCM",
    CipherSuite.TLS_CHACHA20_POLY1305_SHA256: "CHACHA20-POLY1305",
}
GNUTLS_TLS13 = "NORMAL:-VERS-ALL:+VERS-TLS1.3"


@dataclass(frozen=True)
class PeerRun:
    returncode: int
    output: str  # stdout and stderr, interleaved

    @property
    def log(self) -> str:
        """What a failed assertion shows: the exit code and the output minus debug lines."""
        lines = [line for line in self.output.splitlines() if not line.startswith("|<")]
        return f"rc={self.returncode}\n" + "\n".join(lines[-60:])


def run_peer(
    args: Sequence[str], stdin: bytes | None = None, keep_stdin_open: bool = False
) -> PeerRun:
    """Run a peer to completion (bounded by PEER_TIMEOUT) and capture what it printed.

    ``keep_stdin_open`` feeds ``stdin`` through a pipe we keep open until the peer exits, so the
    peer never sees end-of-input (gnutls-cli sends close_notify when it does).
    """
    if keep_stdin_open:
        read_end, write_end = os.pipe()
        try:
            os.write(write_end, stdin or b"")
            process = subprocess.run(
                args,
                stdin=read_end,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=PEER_TIMEOUT,
                env=CLEAN_ENV,
            )
        finally:
            os.close(read_end)
            os.close(write_end)
    else:
        process = subprocess.run(
            args,
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=PEER_TIMEOUT,
            env=CLEAN_ENV,
        )
    return PeerRun(process.returncode, process.stdout.decode("utf-8", "replace"))


# --- the peers -----------------------------------------------------------------------------------


def openssl_get(server: RunningServer, *options: str, verify: bool = False) -> PeerRun:
    """``openssl s_client`` (PEERS.md §1); ``-msg`` so that each ClientHello shows."""
    args = [require_peer("openssl"), "s_client", "-connect", f"127.0.0.1:{server.port}"]
    args += ["-servername", "localhost", "-tls1_3", "-ign_eof", "-msg", *options]
    if verify:
        args += ["-CAfile", str(server.cert_path), "-verify_return_error"]
        args += ["-verify_hostname", "localhost"]
    return run_peer(args, REQUEST)


def assert_openssl_ok(
    run: PeerRun, suite: CipherSuite, group: NamedGroup, hellos: int, *, reused: bool = False
) -> None:
    """``reused``: s_client resumed the session it was given (``-sess_in``), not a new one."""
    assert run.returncode == 0, run.log
    session = "Reused" if reused else "New"
    assert f"{session}, TLSv1.3, Cipher is {suite.name}" in run.output, run.log
    assert OPENSSL_TEMP_KEY[group] in run.output, run.log
    assert PAGE_TEXT in run.output, run.log  # the request went in, the page came out
    # with an HRR: ClientHello1, then ClientHello2
    assert _client_hellos(run) == hellos, run.log


def _client_hellos(run: PeerRun) -> int:
    """ClientHellos sent, as ``-msg`` (or ``-trace``, which replaces it) shows them."""
    return sum(
        1
        for line in run.output.splitlines()
        if (line.startswith(">>> TLS 1.3, Handshake") and line.endswith("ClientHello"))
        or line.startswith("    ClientHello, Length=")
    )


def gnutls_get(
    server: RunningServer,
    *options: str,
    priority: str = GNUTLS_TLS13,
    single_key_share: bool = False,
    verify: bool = False,
    close_stdin: bool = False,
) -> PeerRun:
    """``gnutls-cli -d 4`` (PEERS.md §3); debug level 4 logs ``HELLO RETRY REQUEST``.

    gnutls-cli sends close_notify as soon as its stdin ends; by default stdin stays open and the
    run ends when the server closes after its reply (``close_stdin`` gives the PEERS.md recipe).
    ``options`` go to gnutls-cli as they are (e.g. ``--resume``).
    """
    args = [require_peer("gnutls-cli"), f"--port={server.port}", "--sni-hostname=localhost"]
    args += [f"--priority={priority}", "-d", "4"]
    if single_key_share:
        args.append("--single-key-share")
    if verify:
        args += [f"--x509cafile={server.cert_path}", "--verify-hostname=localhost"]
    else:
        args.append("--insecure")
    args += [*options, "127.0.0.1"]
    return run_peer(args, REQUEST, keep_stdin_open=not close_stdin)


def assert_gnutls_ok(run: PeerRun, suite: CipherSuite, group: NamedGroup, retry: bool) -> None:
    assert run.returncode == 0, run.log
    assert "- Handshake was completed" in run.output, run.log
    description = f"- Description: (TLS1.3-X.509)-(ECDHE-{GNUTLS_GROUPS[group]})-"
    assert description in run.output, run.log
    assert f"-({GNUTLS_CIPHERS[suite]})" in run.output, run.log
    assert ("HELLO RETRY REQUEST" in run.output) == retry, run.log
    assert PAGE_TEXT in run.output, run.log  # gnutls-cli exits 0 even with no reply: check it


def curl_get(server: RunningServer, *options: str) -> PeerRun:
    """``curl --tlsv1.3``, verifying our certificate for the name localhost (→ 127.0.0.1)."""
    args = [require_peer("curl"), "--silent", "--show-error", "--verbose", "--tlsv1.3"]
    args += ["--max-time", "5", "--noproxy", "*", "--cacert", str(server.cert_path)]
    args += ["--resolve", f"localhost:{server.port}:127.0.0.1", *options]
    args.append(f"https://localhost:{server.port}/")
    return run_peer(args)


def assert_curl_ok(run: PeerRun, suite: CipherSuite) -> None:
    assert run.returncode == 0, run.log
    assert f"SSL connection using TLSv1.3 / {suite.name}" in run.output, run.log
    assert "SSL certificate verify ok" in run.output, run.log
    assert PAGE_TEXT in run.output, run.log


def tlslite_get(server: RunningServer) -> PeerRun:
    """tlslite-ng's ``tls.py client`` (PEERS.md §5b): it needs a host name, not an address."""
    return run_peer([require_peer("tls.py"), "client", f"localhost:{server.port}"])


# --- what the server says ------------------------------------------------------------------------


def assert_stateless(
    server: RunningServer, suite: CipherSuite, group: NamedGroup
) -> ConnectionReport:
    """One connection: HRR with a cookie, the cookie verified, the expected suite and group."""
    report = server.only_report()
    assert report.error is None, report
    assert report.hello_retry and report.cookie_verified, report
    assert report.handshake is not None, report
    assert report.handshake.cipher_suite == suite, report
    assert report.handshake.group == group, report
    assert report.handshake.hello_retry and report.handshake.cookie_verified, report
    return report


def assert_stateful(server: RunningServer, group: NamedGroup, retry: bool) -> None:
    report = server.only_report()
    assert report.error is None, report
    assert report.handshake is not None, report
    assert report.handshake.group == group, report
    assert report.hello_retry is retry and report.handshake.hello_retry is retry, report
    assert not report.cookie_verified and not report.handshake.cookie_verified, report


AES128 = CipherSuite.TLS_AES_128_GCM_SHA256
#: What the default server's stateless HRR names for OpenSSL and curl, which share x25519 only:
#: P-256, of the same tier (README, "Key exchange groups").
P256 = NamedGroup.secp256r1


# --- openssl s_client ----------------------------------------------------------------------------


@pytest.mark.parametrize("compat", [True, False], ids=["compat", "no_middlebox"])
def test_openssl(tls_server: ServerFactory, compat: bool) -> None:
    server = tls_server()
    run = openssl_get(server, *(() if compat else ("-no_middlebox",)))
    assert_openssl_ok(run, AES128, P256, hellos=2)
    assert_stateless(server, AES128, P256)


def test_openssl_verifies_our_certificate(tls_server: ServerFactory) -> None:
    server = tls_server()
    run = openssl_get(server, verify=True)
    assert_openssl_ok(run, AES128, P256, hellos=2)
    assert "Verify return code: 0 (ok)" in run.output, run.log
    assert_stateless(server, AES128, P256)


def test_openssl_group_switch_hrr_carries_key_share(tls_server: ServerFactory) -> None:
    """Server prefers secp384r1, OpenSSL sent only x25519: the HRR must ask for secp384r1."""
    server = tls_server(groups=(NamedGroup.secp384r1, NamedGroup.x25519))
    run = openssl_get(server, "-trace")
    assert_openssl_ok(run, AES128, NamedGroup.secp384r1, hellos=2)
    hrr = run.output.split("gmt_unix_time=0xCF21AD74", 1)[1].split("ClientHello", 1)[0]
    assert "extension_type=key_share(51), length=2" in hrr, run.log  # selected_group only
    assert "extension_type=cookie_ext(44)" in hrr, run.log
    assert_stateless(server, AES128, NamedGroup.secp384r1)


# --- gnutls-cli ----------------------------------------------------------------------------------


def test_gnutls(tls_server: ServerFactory) -> None:
    """gnutls-cli shares secp256r1 and x25519; a server preferring secp384r1 asks for it."""
    server = tls_server(groups=(NamedGroup.secp384r1, NamedGroup.x25519))
    run = gnutls_get(server)
    assert_gnutls_ok(run, AES128, NamedGroup.secp384r1, retry=True)
    assert "HRR key share with SECP384R1" in run.output, run.log
    assert_stateless(server, AES128, NamedGroup.secp384r1)


def test_gnutls_verifies_our_certificate(tls_server: ServerFactory) -> None:
    server = tls_server(groups=(NamedGroup.secp384r1,))
    run = gnutls_get(server, verify=True)
    assert_gnutls_ok(run, AES128, NamedGroup.secp384r1, retry=True)
    assert "- Status: The certificate is trusted." in run.output, run.log
    assert_stateless(server, AES128, NamedGroup.secp384r1)


def test_gnutls_against_the_default_server(tls_server: ServerFactory) -> None:
    """gnutls-cli as it comes: it shares P-256 and x25519, both of the default classical tier,
    so the stateless HRR names the tier's third, P-384, rather than carry only the cookie."""
    server = tls_server()
    run = gnutls_get(server)
    assert_gnutls_ok(run, AES128, NamedGroup.secp384r1, retry=True)
    assert "HRR key share with SECP384R1" in run.output, run.log
    assert_stateless(server, AES128, NamedGroup.secp384r1)


def test_gnutls_refuses_a_cookie_only_hrr(tls_server: ServerFactory) -> None:
    """Why the tiers: with a strict order (x25519 first, then P-256; GnuTLS shared both) the
    stateless HRR can only carry the cookie (RFC 8446 §4.1.4 allows it) and GnuTLS aborts.
    After an HRR it builds ClientHello2's key_share from the HRR's group alone
    (lib/ext/key_share.c, key_share_send_params), so with none it fails with illegal_parameter."""
    server = tls_server(groups=(NamedGroup.x25519, NamedGroup.secp256r1))
    run = gnutls_get(server)
    assert "HELLO RETRY REQUEST" in run.output, run.log
    assert run.returncode == 1, run.log
    assert "*** Fatal error: An illegal parameter has been received." in run.output, run.log
    report = server.only_report()
    assert report.hello_retry and not report.cookie_verified, report
    assert report.handshake is None and report.error is not None, report


def test_gnutls_retry_names_a_group(tls_server: ServerFactory) -> None:
    """The override for a strict order: retry_names_a_group names the server's most preferred
    group that gnutls-cli supports but sent no share for, even a lower one: P-384."""
    strict = (NamedGroup.x25519, NamedGroup.secp256r1, NamedGroup.secp384r1)
    server = tls_server(groups=strict, retry_names_a_group=True)
    run = gnutls_get(server)
    assert_gnutls_ok(run, AES128, NamedGroup.secp384r1, retry=True)
    assert "HRR key share with SECP384R1" in run.output, run.log
    assert_stateless(server, AES128, NamedGroup.secp384r1)


def test_gnutls_close_notify_right_after_the_request(tls_server: ServerFactory) -> None:
    """The PEERS.md recipe: stdin ends at once, so gnutls-cli sends its Finished, the request
    and close_notify (its write side only) together.  TLS 1.3 closes each direction on its own
    (RFC 8446 §6.1): the server must still read the request and answer it."""
    server = tls_server(groups=(NamedGroup.secp384r1,))
    run = gnutls_get(server, close_stdin=True)
    report = server.only_report()
    assert report.error is None, report
    assert_gnutls_ok(run, AES128, NamedGroup.secp384r1, retry=True)


# --- curl ----------------------------------------------------------------------------------------


def test_curl(tls_server: ServerFactory) -> None:
    server = tls_server()
    run = curl_get(server)
    assert_curl_ok(run, AES128)
    assert_stateless(server, AES128, P256)


# --- tlslite-ng ----------------------------------------------------------------------------------


def test_tlslite_cli(tls_server: ServerFactory) -> None:
    """tls.py client sends GET / and discards the reply: the page is seen from the server side
    (the handler answered only after reading the whole request, and no error was reported).

    With kyber-py installed (the test extra, for tlsfuzzer) tlslite-ng offers X25519MLKEM768, our
    first preference: a second independent ML-KEM peer beside Chromium."""
    server = tls_server()
    run = tlslite_get(server)
    assert run.returncode == 0, run.log
    assert "Handshake success" in run.output, run.log
    assert "Version: TLS 1.3" in run.output, run.log
    assert "Group used for key exchange: x25519mlkem768\n" in run.output, run.log
    assert_stateless(server, AES128, NamedGroup.X25519MLKEM768)


# --- the matrix: every suite and every group through three peers ---------------------------------


@pytest.mark.parametrize("suite", SUITES, ids=lambda s: s.name)
def test_suite_openssl(tls_server: ServerFactory, suite: CipherSuite) -> None:
    server = tls_server(cipher_suites=(suite,))
    assert_openssl_ok(openssl_get(server), suite, P256, hellos=2)
    assert_stateless(server, suite, P256)


@pytest.mark.parametrize("suite", SUITES, ids=lambda s: s.name)
def test_suite_gnutls(tls_server: ServerFactory, suite: CipherSuite) -> None:
    """One secp256r1 share from gnutls-cli; the default server asks for x25519 in its HRR."""
    server = tls_server(cipher_suites=(suite,))
    run = gnutls_get(server, single_key_share=True)
    assert_gnutls_ok(run, suite, NamedGroup.x25519, retry=True)
    assert_stateless(server, suite, NamedGroup.x25519)


@pytest.mark.parametrize("suite", SUITES, ids=lambda s: s.name)
def test_suite_curl(tls_server: ServerFactory, suite: CipherSuite) -> None:
    server = tls_server(cipher_suites=(suite,))
    assert_curl_ok(curl_get(server), suite)
    assert_stateless(server, suite, P256)


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.name)
def test_group_openssl(tls_server: ServerFactory, group: NamedGroup) -> None:
    """OpenSSL shares x25519: a cookie-only HRR for x25519, a key_share HRR for the others."""
    server = tls_server(groups=(group,))
    assert_openssl_ok(openssl_get(server), AES128, group, hellos=2)
    assert_stateless(server, AES128, group)


# gnutls-cli with one share for a group the server does not take, so the HRR names the group.
GNUTLS_SINGLE_SHARE_PRIORITY = {
    NamedGroup.x25519: f"{GNUTLS_TLS13}:-GROUP-ALL:+GROUP-SECP256R1:+GROUP-X25519",
    NamedGroup.secp256r1: f"{GNUTLS_TLS13}:-GROUP-ALL:+GROUP-X25519:+GROUP-SECP256R1",
    NamedGroup.secp384r1: f"{GNUTLS_TLS13}:-GROUP-ALL:+GROUP-X25519:+GROUP-SECP384R1",
}


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.name)
def test_group_gnutls(tls_server: ServerFactory, group: NamedGroup) -> None:
    server = tls_server(groups=(group,))
    priority = GNUTLS_SINGLE_SHARE_PRIORITY[group]
    run = gnutls_get(server, priority=priority, single_key_share=True)
    assert_gnutls_ok(run, AES128, group, retry=True)
    assert f"HRR key share with {GNUTLS_GROUPS[group]}" in run.output, run.log
    assert_stateless(server, AES128, group)


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.name)
def test_group_curl(tls_server: ServerFactory, group: NamedGroup) -> None:
    server = tls_server(groups=(group,))
    assert_curl_ok(curl_get(server), AES128)
    assert_stateless(server, AES128, group)


def test_group_switch_curl(tls_server: ServerFactory) -> None:
    """curl offers x25519 (its share) then P-384; the server prefers P-384 and asks for it."""
    server = tls_server(groups=(NamedGroup.secp384r1, NamedGroup.x25519))
    assert_curl_ok(curl_get(server, "--curves", "X25519:P-384"), AES128)
    assert_stateless(server, AES128, NamedGroup.secp384r1)


# --- certificate key types -----------------------------------------------------------------------

SCHEME_NAMES = {
    "ecdsa-p384": ("ecdsa_secp384r1_sha384", "ECDSA-SECP384R1-SHA384"),
    "ed25519": ("ed25519", "EdDSA-Ed25519"),
    "rsa": ("rsa_pss_rsae_sha256", "RSA-PSS-RSAE-SHA256"),
}


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_key_type_openssl(tls_server: ServerFactory, key_type: str) -> None:
    server = tls_server(key_type=key_type)
    run = openssl_get(server, verify=True)
    assert_openssl_ok(run, AES128, P256, hellos=2)
    assert "Verify return code: 0 (ok)" in run.output, run.log
    report = assert_stateless(server, AES128, P256)
    assert report.handshake is not None and report.handshake.signature_scheme is not None
    assert report.handshake.signature_scheme.name == SCHEME_NAMES[key_type][0], report


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_key_type_gnutls(tls_server: ServerFactory, key_type: str) -> None:
    server = tls_server(key_type=key_type, groups=(NamedGroup.secp384r1,))
    run = gnutls_get(server, verify=True)
    assert_gnutls_ok(run, AES128, NamedGroup.secp384r1, retry=True)
    assert f"-({SCHEME_NAMES[key_type][1]})-" in run.output, run.log
    assert "- Status: The certificate is trusted." in run.output, run.log
    report = assert_stateless(server, AES128, NamedGroup.secp384r1)
    assert report.handshake is not None and report.handshake.signature_scheme is not None
    assert report.handshake.signature_scheme.name == SCHEME_NAMES[key_type][0], report


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_key_type_curl(tls_server: ServerFactory, key_type: str) -> None:
    server = tls_server(key_type=key_type)
    assert_curl_ok(curl_get(server), AES128)
    assert_stateless(server, AES128, P256)


# --- validation="none": an ordinary server, HRR only when the share does not fit ------------

FITS = {"fits": (NamedGroup.x25519,), "hrr": (NamedGroup.secp384r1,)}


@pytest.mark.parametrize("case", FITS)
def test_no_stateless_openssl(tls_server: ServerFactory, case: str) -> None:
    server = tls_server(validation="none", groups=FITS[case])
    group = FITS[case][0]
    assert_openssl_ok(openssl_get(server), AES128, group, hellos=1 if case == "fits" else 2)
    assert_stateful(server, group, retry=case == "hrr")


@pytest.mark.parametrize("case", FITS)
def test_no_stateless_gnutls(tls_server: ServerFactory, case: str) -> None:
    server = tls_server(validation="none", groups=FITS[case])
    group = FITS[case][0]
    assert_gnutls_ok(gnutls_get(server), AES128, group, retry=case == "hrr")
    assert_stateful(server, group, retry=case == "hrr")


@pytest.mark.parametrize("case", FITS)
def test_no_stateless_curl(tls_server: ServerFactory, case: str) -> None:
    server = tls_server(validation="none", groups=FITS[case])
    assert_curl_ok(curl_get(server), AES128)
    assert_stateful(server, FITS[case][0], retry=case == "hrr")


@pytest.mark.parametrize("case", FITS)
def test_no_stateless_tlslite(tls_server: ServerFactory, case: str) -> None:
    server = tls_server(validation="none", groups=FITS[case])
    group = FITS[case][0]
    run = tlslite_get(server)
    assert run.returncode == 0 and "Version: TLS 1.3" in run.output, run.log
    assert f"Group used for key exchange: {group.name}" in run.output, run.log
    assert_stateful(server, group, retry=case == "hrr")
