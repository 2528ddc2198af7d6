"""External PSKs (``ServerConfig.external_psks``, RFC 8446 §2.2) and psk_ke (``psk_ke=True``,
§4.2.9) with real, independent clients over TCP.

Each client is given an identity and a key out of band and offers them in its pre_shared_key
extension.  That the PSK authenticated it is proven from the server's own reports, not only
from the client's word: ``HandshakeComplete.psk_identity`` names the PSK, ``signature_scheme``
is None (no Certificate, no CertificateVerify went out), ``resumed`` is False (it was not one of
our tickets), and ``group`` says whether an (EC)DHE exchange took place (psk_dhe_ke) or not
(psk_ke: None).  Both ways in where a peer allows it: through the stateless HelloRetryRequest
(``validation="hrr"``: the binder of ClientHello2 is checked from the cookie and ClientHello2
alone) and without it (``validation="none"``).

Peers and what they can do:

* ``openssl s_client -psk_identity ID -psk HEX`` (OpenSSL 3.0) offers psk_dhe_ke, and psk_ke as
  well with ``-allow_no_dhe_kex``; we still choose psk_dhe_ke then, with a group.  Its ``-psk``
  key is a SHA-256 PSK only (s_client builds its session with TLS_AES_128_GCM_SHA256): limited
  to TLS_AES_256_GCM_SHA384 it still offers it, bound with SHA-256 (decrypt_error from a SHA-384
  PSK of ours), or, after our HRR for that suite, aborts with internal_error ("bad psk"); so it
  is not our SHA-384 peer.  It says ``Reused`` for any PSK handshake, external or resumed.
* ``gnutls-cli --pskusername ID --pskkey HEX`` (GnuTLS 3.7.9): ``+ECDHE-PSK`` offers psk_dhe_ke,
  ``+PSK`` psk_ke alone.  A psk_ke-only ClientHello still carries key shares, groups and
  signature algorithms, so a server without psk_ke does not fail it: it ignores the PSK and
  makes a certificate handshake, which gnutls-cli accepts if it trusts the certificate (in TLS
  1.3 its KX priority items choose PSK modes only).  Only with no group in common (FFDHE only)
  does the handshake fail, with handshake_failure.  GnuTLS 3.7.9 computes every external PSK's
  binder with SHA-256, whatever the suite (fixed upstream in 2025 by
  gnutls_psk_allocate_client_credentials2): limited to AES-256-GCM it sends a 32-byte binder
  that cannot verify as a SHA-384 PSK's, so it is not a SHA-384 peer either (pinned below).
* tlslite-ng's ``tls.py client --psk HEX --psk-ident ID --psk-sha384`` is: the SHA-384 external
  PSK tests use it, with ``--cipherlist aes256gcm`` (offered both suites, it gets
  TLS_AES_128_GCM_SHA256, our preference, which a SHA-384 PSK cannot use: a certificate
  handshake).

Resumption after an external-PSK handshake: all three take one of our tickets and resume with it
(s_client ``-sess_out``/``-sess_in``, ``gnutls-cli --resume``, ``tls.py --resumption``); the
resumed connection's report says ``resumed=True`` and still names the external PSK, which rides
in the ticket: s_client resuming without any ``-psk`` option proves that.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from stateless13 import CipherSuite, ExternalPsk, NamedGroup
from stateless13.transports.common import ConnectionReport
from tests.peers.test_cli import CliServer, Serve, s_client
from tests.peers.test_cli import serve as serve  # the fixture: `serve(args)` starts the CLI
from tests.peers.test_cli_peers import (
    GNUTLS_GROUPS,
    GNUTLS_TLS13,
    PeerRun,
    assert_gnutls_ok,
    assert_openssl_ok,
    gnutls_get,
    openssl_get,
    run_peer,
)
from tests.peers.test_resumption_peers import (
    GNUTLS_GROUP,
    GNUTLS_HRR,
    GNUTLS_RESUMED,
    OPENSSL_GROUP,
    STATELESS,
    validation,
)
from tests.servers import PAGE_TEXT, RunningServer, ServerFactory, require_peer

AES128 = CipherSuite.TLS_AES_128_GCM_SHA256
AES256 = CipherSuite.TLS_AES_256_GCM_SHA384

IDENTITY = b"sensor-17"
KEY = bytes.fromhex("6a1f0c93d2b84e7715c0a9e3f28d4b6150e7c2a9d8f31b0c4e5a6978b2c1d0e3")
PSK = ExternalPsk(IDENTITY, KEY)
IDENTITY_384 = b"gateway-384"
KEY_384 = bytes(range(0x40, 0x70))  # 48 bytes
PSK_384 = ExternalPsk(IDENTITY_384, KEY_384, "sha384")

#: gnutls-cli's TLS 1.3 PSK modes: ECDHE-PSK offers psk_dhe_ke, PSK psk_ke, both offer both.
GNUTLS_PSK_DHE_KE = f"{GNUTLS_TLS13}:-KX-ALL:+ECDHE-PSK"
GNUTLS_PSK_KE = f"{GNUTLS_TLS13}:-KX-ALL:+PSK"
GNUTLS_BOTH_MODES = f"{GNUTLS_TLS13}:-KX-ALL:+ECDHE-PSK:+PSK"
#: Groups the server does not have: no key exchange in common.
GNUTLS_FFDHE_ONLY = ":-GROUP-ALL:+GROUP-FFDHE2048"
#: What tlslite-ng (with kyber-py) ends up with, through the stateless HRR or not: its share.
TLSLITE_GROUP = NamedGroup.X25519MLKEM768


# --- driving the peers ---------------------------------------------------------------------------


def openssl_psk(
    server: RunningServer, *options: str, identity: bytes = IDENTITY, key: bytes = KEY
) -> PeerRun:
    """``openssl s_client -psk_identity ID -psk HEX`` (with -msg: each ClientHello shows)."""
    return openssl_get(server, "-psk_identity", identity.decode(), "-psk", key.hex(), *options)


def gnutls_psk(
    server: RunningServer,
    priority: str,
    *options: str,
    key: bytes = KEY,
    verify: bool = False,
) -> PeerRun:
    """``gnutls-cli -d 4 --pskusername ID --pskkey HEX`` with ``priority``."""
    credentials = (f"--pskusername={IDENTITY.decode()}", f"--pskkey={key.hex()}")
    return gnutls_get(server, *credentials, *options, priority=priority, verify=verify)


def tlslite_psk(server: RunningServer, *options: str) -> PeerRun:
    """tlslite-ng's ``tls.py client`` with the SHA-384 PSK, limited to TLS_AES_256_GCM_SHA384."""
    args = [require_peer("tls.py"), "client", "--psk", KEY_384.hex()]
    args += ["--psk-ident", IDENTITY_384.decode(), "--psk-sha384", "--cipherlist", "aes256gcm"]
    return run_peer([*args, *options, f"localhost:{server.port}"])


# --- what the server says ------------------------------------------------------------------------


def reports_of(server: RunningServer, count: int) -> list[ConnectionReport]:
    reports = server.wait_reports(count)
    assert len(reports) == count, reports
    return reports


def assert_psk_handshake(
    report: ConnectionReport,
    group: NamedGroup | None,
    *,
    stateless: bool,
    suite: CipherSuite = AES128,
    identity: bytes = IDENTITY,
    resumed: bool = False,
) -> None:
    """A handshake the external PSK ``identity`` authenticated (directly, or through the ticket
    it resumed): no certificate signature; ``group`` None for psk_ke; through the stateless HRR
    (its cookie verified), or with no HRR at all."""
    assert report.error is None, report
    handshake = report.handshake
    assert handshake is not None, report
    assert report.validation == validation(stateless), report
    assert report.hello_retry is stateless and handshake.hello_retry is stateless, report
    assert report.cookie_verified is stateless and handshake.cookie_verified is stateless, report
    assert handshake.psk_identity == identity, report
    assert handshake.signature_scheme is None, report  # the PSK authenticated us: no certificate
    assert handshake.resumed is resumed, report
    assert handshake.group == group, report
    assert handshake.cipher_suite == suite, report
    assert handshake.server_name == "localhost", report


def assert_certificate_handshake(report: ConnectionReport, group: NamedGroup) -> None:
    """A full handshake: the PSK offered was not taken, our certificate authenticated us."""
    assert report.error is None, report
    handshake = report.handshake
    assert handshake is not None, report
    assert handshake.psk_identity is None, report
    assert handshake.signature_scheme is not None, report
    assert not handshake.resumed, report
    assert handshake.group == group, report


def assert_failed(report: ConnectionReport, error: str, *, hello_retry: bool) -> None:
    """No handshake; ``error``, which names the alert; the cookie verified iff an HRR went out."""
    assert report.handshake is None, report
    assert report.error == error, report
    assert report.hello_retry is hello_retry, report
    assert report.cookie_verified is hello_retry, report


BINDER_ERROR = "decrypt_error: the binder of PSK identity 0 does not verify"
NO_GROUP_ERROR = "handshake_failure: no key exchange group in common, and no PSK accepted"


# --- openssl s_client ----------------------------------------------------------------------------


@STATELESS
@pytest.mark.parametrize(
    ("allow_no_dhe_kex", "psk_ke"),
    [(False, False), (True, False), (True, True)],
    ids=["psk_dhe_ke", "both-modes", "both-modes-psk_ke-server"],
)
def test_openssl_external_psk(
    tls_server: ServerFactory, stateless: bool, allow_no_dhe_kex: bool, psk_ke: bool
) -> None:
    """s_client authenticates with the PSK: no certificate comes, and the server names the PSK.
    With ``-allow_no_dhe_kex`` it offers psk_ke beside psk_dhe_ke; even a server that accepts
    psk_ke chooses psk_dhe_ke then (forward secrecy): the report has a group, and s_client got
    a key share."""
    server = tls_server(validation=validation(stateless), external_psks=(PSK,), psk_ke=psk_ke)
    options = ("-allow_no_dhe_kex", "-trace") if allow_no_dhe_kex else ()
    run = openssl_psk(server, *options)
    group = OPENSSL_GROUP[stateless]
    # "Reused": s_client's word for any PSK handshake; the temp key: a key exchange took place
    assert_openssl_ok(run, AES128, group, hellos=2 if stateless else 1, reused=True)
    assert "no peer certificate available" in run.output, run.log
    assert "Peer signature type:" not in run.output, run.log  # no CertificateVerify
    if allow_no_dhe_kex:  # -trace shows both modes in the ClientHello
        assert "psk_dhe_ke (1)" in run.output and "psk_ke (0)" in run.output, run.log
    (report,) = reports_of(server, 1)
    assert_psk_handshake(report, group, stateless=stateless)


@STATELESS
def test_openssl_wrong_key(tls_server: ServerFactory, stateless: bool) -> None:
    """The right identity with another key: the binder does not verify (§4.2.11.2), the server
    sends decrypt_error (alert 51), after ClientHello2 through the stateless HRR."""
    server = tls_server(validation=validation(stateless), external_psks=(PSK,))
    run = openssl_psk(server, key=bytes(reversed(KEY)))
    assert run.returncode != 0, run.log
    assert "SSL alert number 51" in run.output, run.log
    assert PAGE_TEXT not in run.output, run.log
    (report,) = reports_of(server, 1)
    assert_failed(report, BINDER_ERROR, hello_retry=stateless)


def test_openssl_unknown_identity(tls_server: ServerFactory) -> None:
    """An identity we do not have is skipped, as §4.2.11 asks, not refused: a certificate
    handshake, which s_client (not verifying) accepts."""
    server = tls_server(external_psks=(PSK,))
    run = openssl_psk(server, identity=b"nobody")
    assert_openssl_ok(run, AES128, OPENSSL_GROUP[True], hellos=2)  # "New": not a PSK session
    assert "Peer signature type:" in run.output, run.log
    (report,) = reports_of(server, 1)
    assert_certificate_handshake(report, OPENSSL_GROUP[True])


# --- gnutls-cli ----------------------------------------------------------------------------------


def assert_gnutls_psk_ok(run: PeerRun, group: NamedGroup | None, *, stateless: bool) -> None:
    """gnutls-cli's word: PSK-authenticated, an (EC)DHE share computed (psk_dhe_ke) or none
    (psk_ke), an HRR or not, and the page."""
    assert run.returncode == 0, run.log
    assert "- Handshake was completed" in run.output, run.log
    assert f"- PSK authentication. Connected as '{IDENTITY.decode()}'" in run.output, run.log
    assert "- Certificate type: X.509" not in run.output, run.log  # no certificate came
    if group is None:
        assert " shared key" not in run.output, run.log
    else:
        assert f"client generated {GNUTLS_GROUPS[group]} shared key" in run.output, run.log
    assert (GNUTLS_HRR in run.output) is stateless, run.log
    assert PAGE_TEXT in run.output, run.log


GNUTLS_MODES = {
    # id: (priority, server's psk_ke, psk_ke chosen)
    "psk_dhe_ke": (GNUTLS_PSK_DHE_KE, False, False),
    "psk_ke": (GNUTLS_PSK_KE, True, True),
    "both-modes": (GNUTLS_BOTH_MODES, True, False),
}


@STATELESS
@pytest.mark.parametrize("mode", GNUTLS_MODES)
def test_gnutls_external_psk(tls_server: ServerFactory, stateless: bool, mode: str) -> None:
    """psk_dhe_ke (``+ECDHE-PSK``), psk_ke alone (``+PSK``; the server needs psk_ke=True) and
    both (psk_dhe_ke chosen).  Through the stateless HRR, the HRR names P-384 (GnuTLS shares
    P-256 and x25519, the default tier), even for a psk_ke-only client: the binders are checked
    on ClientHello2 only; the psk_ke ServerHello then has no key_share, and the report no group."""
    priority, psk_ke, no_key_exchange = GNUTLS_MODES[mode]
    server = tls_server(validation=validation(stateless), external_psks=(PSK,), psk_ke=psk_ke)
    run = gnutls_psk(server, priority)
    group = None if no_key_exchange else GNUTLS_GROUP[stateless]
    assert_gnutls_psk_ok(run, group, stateless=stateless)
    if no_key_exchange:  # the demo page says what it had
        assert "no key exchange (psk_ke)" in run.output, run.log
    (report,) = reports_of(server, 1)
    assert_psk_handshake(report, group, stateless=stateless)


@STATELESS
def test_gnutls_psk_ke_only_against_a_server_without_psk_ke(
    tls_server: ServerFactory, stateless: bool
) -> None:
    """A psk_ke-only client, a server without psk_ke: the PSK is ignored (we may not choose a
    mode the client did not offer, and will not choose psk_ke), and since the ClientHello also
    has key shares, groups and signature algorithms, a certificate handshake follows, which
    gnutls-cli, trusting our certificate, completes: it is not PSK-authenticated."""
    server = tls_server(validation=validation(stateless), external_psks=(PSK,))
    run = gnutls_psk(server, GNUTLS_PSK_KE, verify=True)
    group = GNUTLS_GROUP[stateless]
    assert_gnutls_ok(run, AES128, group, retry=stateless)
    assert "- Status: The certificate is trusted." in run.output, run.log
    assert "PSK authentication" not in run.output, run.log
    (report,) = reports_of(server, 1)
    assert_certificate_handshake(report, group)


@STATELESS
def test_gnutls_psk_ke_only_with_no_group_in_common(
    tls_server: ServerFactory, stateless: bool
) -> None:
    """The same client with FFDHE groups only, which we do not have: neither a certificate
    handshake nor psk_ke can go on, so ClientHello1 gets handshake_failure (alert 40), before
    any HRR (validation hrr or not)."""
    server = tls_server(validation=validation(stateless), external_psks=(PSK,))
    run = gnutls_psk(server, GNUTLS_PSK_KE + GNUTLS_FFDHE_ONLY)
    assert run.returncode == 1, run.log
    assert "*** Received alert [40]: Handshake failed" in run.output, run.log
    (report,) = reports_of(server, 1)
    assert_failed(report, NO_GROUP_ERROR, hello_retry=False)


def test_gnutls_psk_ke_with_no_group_in_common(tls_server: ServerFactory) -> None:
    """With psk_ke, the FFDHE-only client needs no group: without an HRR, a psk_ke handshake."""
    server = tls_server(validation="none", external_psks=(PSK,), psk_ke=True)
    run = gnutls_psk(server, GNUTLS_PSK_KE + GNUTLS_FFDHE_ONLY)
    assert_gnutls_psk_ok(run, None, stateless=False)
    (report,) = reports_of(server, 1)
    assert_psk_handshake(report, None, stateless=False)


def test_gnutls_psk_ke_with_no_group_in_common_refuses_the_stateless_hrr(
    tls_server: ServerFactory,
) -> None:
    """Through the stateless HRR the same client cannot get in: with no group to name, the HRR
    carries the cookie only (§4.1.4 allows it), and GnuTLS refuses a cookie-only HRR with
    illegal_parameter (test_cli_peers.test_gnutls_refuses_a_cookie_only_hrr: it builds
    ClientHello2's key_share from the HRR's group alone)."""
    server = tls_server(validation="hrr", external_psks=(PSK,), psk_ke=True)
    run = gnutls_psk(server, GNUTLS_PSK_KE + GNUTLS_FFDHE_ONLY)
    assert GNUTLS_HRR in run.output, run.log
    assert run.returncode == 1, run.log
    assert "*** Fatal error: An illegal parameter has been received." in run.output, run.log
    (report,) = reports_of(server, 1)
    assert report.handshake is None and report.hello_retry and not report.cookie_verified, report
    assert report.error == "client sent illegal_parameter", report


def test_gnutls_wrong_key(tls_server: ServerFactory) -> None:
    """The binder does not verify: decrypt_error, after ClientHello2 of the stateless HRR."""
    server = tls_server(external_psks=(PSK,))
    run = gnutls_psk(server, GNUTLS_PSK_DHE_KE, key=bytes(reversed(KEY)))
    assert run.returncode == 1, run.log
    assert "*** Received alert [51]: Decrypt error" in run.output, run.log
    (report,) = reports_of(server, 1)
    assert_failed(report, BINDER_ERROR, hello_retry=True)


def test_gnutls_binds_a_sha384_psk_with_sha256(tls_server: ServerFactory) -> None:
    """Why GnuTLS 3.7.9 is no SHA-384 peer: limited to TLS_AES_256_GCM_SHA384 it still offers its
    external PSK, with a binder computed with SHA-256 (32 bytes: GnuTLS before
    gnutls_psk_allocate_client_credentials2 binds every external PSK with SHA-256), which cannot
    verify as our SHA-384 PSK's: decrypt_error.  When a GnuTLS that can bind with SHA-384 (and a
    gnutls-cli option for it) arrives, this test fails: make it a SHA-384 PSK test."""
    psk = ExternalPsk(IDENTITY, KEY_384, "sha384")
    server = tls_server(external_psks=(psk,))
    run = gnutls_psk(server, GNUTLS_PSK_DHE_KE + ":-CIPHER-ALL:+AES-256-GCM", key=KEY_384)
    assert run.returncode == 1, run.log
    assert "*** Received alert [51]: Decrypt error" in run.output, run.log
    (report,) = reports_of(server, 1)
    assert_failed(report, BINDER_ERROR, hello_retry=True)


# --- tlslite-ng: a SHA-384 external PSK ----------------------------------------------------------


def assert_tlslite_psk_ok(run: PeerRun, handshakes: int) -> None:
    assert run.returncode == 0, run.log
    assert run.output.count("Handshake success") == handshakes, run.log
    assert run.output.count("Ciphersuite: TLS_AES_256_GCM_SHA384\n") == handshakes, run.log
    group_line = f"Group used for key exchange: {TLSLITE_GROUP.name.lower()}\n"
    assert run.output.count(group_line) == handshakes, run.log
    assert "Key exchange signature:" not in run.output, run.log  # no CertificateVerify


@STATELESS
def test_tlslite_sha384_external_psk(tls_server: ServerFactory, stateless: bool) -> None:
    """A SHA-384 PSK: the client limited to TLS_AES_256_GCM_SHA384 binds it with SHA-384 and is
    admitted by it; the server holds a SHA-256 PSK too, which a SHA-384 suite cannot use."""
    server = tls_server(validation=validation(stateless), external_psks=(PSK, PSK_384))
    run = tlslite_psk(server)
    assert_tlslite_psk_ok(run, 1)
    assert "Session Resumed: False" in run.output, run.log
    (report,) = reports_of(server, 1)
    assert_psk_handshake(
        report, TLSLITE_GROUP, stateless=stateless, suite=AES256, identity=IDENTITY_384
    )


# --- resumption after an external-PSK handshake --------------------------------------------------


def assert_psk_then_resumed(
    server: RunningServer,
    group: NamedGroup | None,
    *,
    stateless: bool,
    suite: CipherSuite = AES128,
    identity: bytes = IDENTITY,
) -> None:
    """Two connections: the external PSK authenticated the first; the second resumed one of our
    tickets and still names the external PSK, from the ticket."""
    first, second = reports_of(server, 2)
    for report, resumed in ((first, False), (second, True)):
        assert_psk_handshake(
            report, group, stateless=stateless, suite=suite, identity=identity, resumed=resumed
        )


@STATELESS
@pytest.mark.parametrize("offer_external", [True, False], ids=["with-psk", "ticket-only"])
def test_openssl_resumes_an_external_psk_session(
    tls_server: ServerFactory, tmp_path: Path, stateless: bool, offer_external: bool
) -> None:
    """``-sess_out`` after an external-PSK handshake, then ``-sess_in``: with the same ``-psk``
    options (s_client offers our ticket first, the external PSK second: we take the ticket), or
    without them (the ticket alone: the server can only know the identity from the ticket)."""
    server = tls_server(validation=validation(stateless), external_psks=(PSK,))
    session = tmp_path / "session.pem"
    group, hellos = OPENSSL_GROUP[stateless], 2 if stateless else 1
    first = openssl_psk(server, "-sess_out", str(session))
    assert_openssl_ok(first, AES128, group, hellos, reused=True)
    assert "Post-Handshake New Session Ticket arrived" in first.output, first.log
    if offer_external:
        second = openssl_psk(server, "-sess_in", str(session))
    else:
        second = openssl_get(server, "-sess_in", str(session))
    assert_openssl_ok(second, AES128, group, hellos, reused=True)
    assert "Peer signature type:" not in second.output, second.log
    assert_psk_then_resumed(server, group, stateless=stateless)


@STATELESS
@pytest.mark.parametrize("mode", ["psk_dhe_ke", "psk_ke"])
def test_gnutls_resumes_an_external_psk_session(
    tls_server: ServerFactory, stateless: bool, mode: str
) -> None:
    """``gnutls-cli --resume`` with the PSK options: the second connection offers our ticket and
    the external PSK; we take the ticket, in the same mode (psk_ke: the server allows it).

    ``--waitresumption``: without it GnuTLS waits for a ticket only its estimated round trip plus
    60 ms after the handshake (gnutls_session_get_data2), then resumes with no ticket, i.e. with
    the external PSK alone, a fresh PSK handshake (seen once on a loaded machine)."""
    priority, psk_ke, no_key_exchange = GNUTLS_MODES[mode]
    server = tls_server(validation=validation(stateless), external_psks=(PSK,), psk_ke=psk_ke)
    run = gnutls_psk(server, priority, "--resume", "--waitresumption")
    group = None if no_key_exchange else GNUTLS_GROUP[stateless]
    assert_gnutls_psk_ok(run, group, stateless=stateless)
    assert "- Resume Handshake was completed" in run.output, run.log
    assert GNUTLS_RESUMED in run.output, run.log
    assert run.output.count(GNUTLS_HRR) == (2 if stateless else 0), run.log
    assert_psk_then_resumed(server, group, stateless=stateless)


@STATELESS
def test_tlslite_resumes_a_sha384_external_psk_session(
    tls_server: ServerFactory, stateless: bool
) -> None:
    """``tls.py client --resumption``: a SHA-384 external-PSK handshake, then a second one
    resuming our ticket (TLS_AES_256_GCM_SHA384's, a SHA-384 PSK as well)."""
    server = tls_server(validation=validation(stateless), external_psks=(PSK_384,))
    run = tlslite_psk(server, "--resumption")
    assert_tlslite_psk_ok(run, 2)
    assert "Session Resumed: False" in run.output, run.log
    assert "Session Resumed: True" in run.output, run.log
    assert_psk_then_resumed(
        server, TLSLITE_GROUP, stateless=stateless, suite=AES256, identity=IDENTITY_384
    )


# --- the command line: stateless13 serve --psk-file --psk-ke -------------------------------------


def gnutls_cli_psk(server: CliServer, priority: str) -> PeerRun:
    """gnutls-cli with the PSK against a ``stateless13 serve`` process (gnutls_get wants a
    RunningServer)."""
    args = [require_peer("gnutls-cli"), f"--port={server.port}", "--sni-hostname=localhost"]
    args += [f"--priority={priority}", "-d", "4"]
    args += [f"--pskusername={IDENTITY.decode()}", f"--pskkey={KEY.hex()}", server.host]
    return run_peer(args, b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n", keep_stdin_open=True)


def test_cli_psk_file(serve: Serve, tmp_path: Path) -> None:
    """``serve --psk-file F --psk-ke``: s_client's external PSK makes a psk_dhe_ke handshake,
    gnutls-cli's psk_ke-only one a psk_ke handshake (``group=-``); the log names the PSK."""
    psk_file = tmp_path / "psks.txt"
    psk_file.write_text(
        f"# identity key [hash]\n{IDENTITY.decode()} {KEY.hex()}\n\n"
        f"{IDENTITY_384.decode()} {KEY_384.hex()} sha384\n"
    )
    psk_file.chmod(0o600)
    server = serve(["--validation", "hrr", "--psk-file", str(psk_file), "--psk-ke"])
    run = s_client(server, "-psk_identity", IDENTITY.decode(), "-psk", KEY.hex())
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Reused, TLSv1.3, Cipher is TLS_AES_128_GCM_SHA256" in run.stdout, run.stdout
    assert PAGE_TEXT in run.stdout, run.stdout
    (log,) = server.log_lines(1)
    assert (log["hrr"], log["cookie"], log["resumed"]) == ("yes", "verified", "no"), log[0]
    assert log["psk"] == IDENTITY.decode() and log["group"] == "secp256r1", log[0]
    gnutls = gnutls_cli_psk(server, GNUTLS_PSK_KE)
    assert_gnutls_psk_ok(gnutls, None, stateless=True)
    log = server.log_lines(2)[1]
    assert log["psk"] == IDENTITY.decode() and log["group"] == "-", log[0]
    assert not [line for line in server.stderr if "error=" in line], server.output()
    server.stop()
