"""Go crypto/tls (Go 1.19) over real sockets against our asyncio server.

``goclient/main.go`` is built once per session with the stdlib only (GOPATH, GOCACHE in a tmp dir,
no module proxy), then run per case. Go sends one key share (the first of ``-curves``) and, in
TLS 1.3, offers AES-GCM first: the server's group and suite lists steer what is negotiated.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from stateless13 import CipherSuite, NamedGroup
from tests.servers import (
    PAGE_TEXT,
    RunningServer,
    ServerFactory,
    build_go_program,
)

GO_SOURCE = Path(__file__).with_name("goclient") / "main.go"


@pytest.fixture(scope="session")
def goclient(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_go_program(GO_SOURCE, tmp_path_factory.mktemp("goclient"), timeout=120)


def run_goclient(
    goclient: Path, server: RunningServer, *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(goclient), "-ca", str(server.cert_path), *args, f"{server.host}:{server.port}"],
        capture_output=True,
        text=True,
        timeout=30,
    )


def assert_go_success(
    result: subprocess.CompletedProcess[str],
    server: RunningServer,
    group: NamedGroup,
    suite: CipherSuite = CipherSuite.TLS_AES_128_GCM_SHA256,
    *,
    stateless: bool = True,
) -> None:
    detail = f"rc={result.returncode}\n{result.stdout}{result.stderr}"
    assert result.returncode == 0, detail
    assert result.stdout.startswith(f"version 0x0304 cipher 0x{suite:04x}\n"), detail
    assert PAGE_TEXT in result.stdout, detail
    report = server.only_report()
    assert report.error is None, report
    assert report.handshake is not None, report
    assert report.handshake.group == group, report
    assert report.handshake.cipher_suite == suite, report
    if stateless:
        assert report.hello_retry and report.cookie_verified, report
        assert report.handshake.hello_retry and report.handshake.cookie_verified, report


def test_go_default(goclient: Path, tls_server: ServerFactory) -> None:
    # X25519MLKEM768 preferred, but Go 1.19 supports x25519 at best, and shares it: the stateless
    # HRR names its tier-mate P-256 (README, "Key exchange groups").
    server = tls_server()
    assert_go_success(run_goclient(goclient, server), server, NamedGroup.secp256r1)


def test_go_group_switch_to_p384(goclient: Path, tls_server: ServerFactory) -> None:
    server = tls_server(groups=(NamedGroup.secp384r1,))
    result = run_goclient(goclient, server, "-curves", "x25519,p256,p384")
    assert_go_success(result, server, NamedGroup.secp384r1)


def test_go_share_of_a_lesser_group_still_gets_the_preferred_one(
    goclient: Path, tls_server: ServerFactory
) -> None:
    # Go's share is P-256; the server prefers x25519, which Go also supports: the HRR asks for it.
    server = tls_server(groups=(NamedGroup.x25519, NamedGroup.secp256r1))
    result = run_goclient(goclient, server, "-curves", "p256,x25519")
    assert_go_success(result, server, NamedGroup.x25519)


@pytest.mark.parametrize("suite", list(CipherSuite), ids=lambda s: s.name)
def test_go_each_cipher_suite(
    goclient: Path, tls_server: ServerFactory, suite: CipherSuite
) -> None:
    server = tls_server(cipher_suites=(suite,))
    result = run_goclient(goclient, server, "-suite", f"0x{suite:04x}")
    assert_go_success(result, server, NamedGroup.secp256r1, suite)


@pytest.mark.parametrize(
    ("curves", "hrr"), [("x25519", False), ("x25519,p384", True)], ids=["share-fits", "hrr"]
)
def test_go_ordinary_handshake(
    goclient: Path, tls_server: ServerFactory, curves: str, hrr: bool
) -> None:
    # validation="none": an HRR only when the share does not fit, and then no cookie round trip.
    groups = (NamedGroup.secp384r1,) if hrr else (NamedGroup.x25519,)
    server = tls_server(validation="none", groups=groups)
    result = run_goclient(goclient, server, "-curves", curves)
    assert_go_success(result, server, groups[0], stateless=False)
    report = server.only_report()
    assert report.hello_retry == hrr, report
    assert report.handshake is not None and report.handshake.hello_retry == hrr, report
    assert not report.cookie_verified, report
