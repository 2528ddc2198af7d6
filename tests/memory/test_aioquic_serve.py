"""The aioquic drop-in without sockets: what ``aioquic_serve`` makes of a ``QuicConfiguration``.

Our TLS settings (``server_config``), the connections' aioquic settings
(``connection_configuration``), the refusals ``serve()`` raises before it opens a socket, and
QUIC version 2 (in aioquic's default ``supported_versions``, so the front now takes it) through
the stateless HRR.  aioquic's own client against ``serve()`` is in
tests/loopback/test_aioquic_serve.py; quic-go and Chromium in tests/peers/test_aioquic_serve.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import ssl
from pathlib import Path
from typing import Any

import pytest
from aioquic import tls
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.crypto import CryptoPair
from aioquic.quic.logger import QuicLogger
from aioquic.quic.packet import QuicFrameType, QuicPacketType, QuicProtocolVersion
from aioquic.quic.packet_builder import QuicPacketBuilder
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from stateless13 import CipherSuite, ClientAuth, Credential, LocalProtocolError, NamedGroup
from stateless13.transports.aioquic_serve import (
    connection_configuration,
    serve,
    server_config,
)
from stateless13.transports.quic_front import Accept, InitialFront, QuicOptions, Reply, ReplyKind
from stateless13.transports.quic_tls import StatelessQuicConnection
from stateless13.transports.quic_tokens import SERVER_CID_LENGTH
from tests.memory.test_quic import (
    CLIENT,
    NOW,
    SERVER,
    hrr_cookie,
    open_initial,
    with_cookie,
)
from tests.pki import Pki

V1, V2 = QuicProtocolVersion.VERSION_1, QuicProtocolVersion.VERSION_2


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.make(tmp_path_factory.mktemp("pki"))


def configuration(**fields: Any) -> QuicConfiguration:
    """A server configuration as aioquic's users write one, with a fresh self-signed key."""
    credential = Credential.self_signed("localhost")
    fields.setdefault("alpn_protocols", ["h3"])
    result = QuicConfiguration(is_client=False, **fields)
    result.certificate = x509.load_der_x509_certificate(credential.certificate_chain[0])
    result.private_key = credential.private_key
    return result


# ---------------------------------------------------------------------------------------------
# Our TLS settings from the QuicConfiguration.


def test_certificate_chain_and_key_become_our_credential(pki: Pki) -> None:
    aioquic_config = QuicConfiguration(is_client=False, alpn_protocols=["h3", "hq-interop"])
    aioquic_config.load_cert_chain(pki.good.chain, pki.good.key)  # leaf + intermediate
    config = server_config(aioquic_config)
    (credential,) = config.credentials
    chain = [aioquic_config.certificate, *aioquic_config.certificate_chain]
    assert len(chain) == 2
    assert credential.certificate_chain == tuple(c.public_bytes(Encoding.DER) for c in chain)
    assert credential.private_key.public_key() == aioquic_config.private_key.public_key()
    assert config.alpn_protocols == (b"h3", b"hq-interop")


def test_cipher_suites_are_ours_in_their_order_and_ours_by_default() -> None:
    assert server_config(configuration()).cipher_suites == (
        CipherSuite.TLS_AES_128_GCM_SHA256,
        CipherSuite.TLS_AES_256_GCM_SHA384,
        CipherSuite.TLS_CHACHA20_POLY1305_SHA256,
    )
    chosen = [tls.CipherSuite.CHACHA20_POLY1305_SHA256, tls.CipherSuite.AES_256_GCM_SHA384]
    assert server_config(configuration(cipher_suites=chosen)).cipher_suites == (
        CipherSuite.TLS_CHACHA20_POLY1305_SHA256,
        CipherSuite.TLS_AES_256_GCM_SHA384,
    )
    scsv = [tls.CipherSuite.EMPTY_RENEGOTIATION_INFO_SCSV]
    with pytest.raises(LocalProtocolError, match="cipher_suites"):
        server_config(configuration(cipher_suites=scsv))


def test_the_secrets_log_file_gets_our_key_log() -> None:
    log = io.StringIO()
    config = server_config(configuration(secrets_log_file=log))
    assert config.keylog is not None
    config.keylog("CLIENT_TRAFFIC_SECRET_0 00 11")
    assert log.getvalue() == "CLIENT_TRAFFIC_SECRET_0 00 11\n"
    assert server_config(configuration()).keylog is None


def test_tls_options_add_server_config_fields_but_not_those_the_configuration_sets(
    pki: Pki,
) -> None:
    client_auth = ClientAuth(trust_anchors=(pki.root.public_bytes(Encoding.DER),))
    config = server_config(
        configuration(), client_auth=client_auth, groups=(NamedGroup.secp384r1,), tickets=0
    )
    assert config.client_auth is client_auth and config.tickets == 0
    assert config.groups == (NamedGroup.secp384r1,)
    with pytest.raises(LocalProtocolError, match="alpn_protocols: set by the QuicConfiguration"):
        server_config(configuration(), alpn_protocols=(b"h3",))
    with pytest.raises(LocalProtocolError, match="keylog"):
        server_config(configuration(secrets_log_file=io.StringIO()), keylog=print)


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        ({"is_client": True}, "is_client=False"),
        ({"alpn_protocols": None}, "QUIC needs ALPN"),
        ({"alpn_protocols": []}, "QUIC needs ALPN"),
        ({"certificate": None}, "no certificate or private key"),
        ({"private_key": None}, "no certificate or private key"),
    ],
)
def test_a_configuration_we_cannot_serve_is_refused_before_any_socket(
    broken: dict[str, Any], message: str
) -> None:
    aioquic_config = dataclasses.replace(configuration(), **broken)
    with pytest.raises(LocalProtocolError, match=message):
        asyncio.run(serve("127.0.0.1", 0, configuration=aioquic_config))


def test_retry_with_a_validation_that_sends_no_retry_is_refused() -> None:
    for validation in ("hrr", "none", "adaptive"):
        with pytest.raises(LocalProtocolError, match="retry=True asks for a Retry"):
            asyncio.run(
                serve(
                    "127.0.0.1",
                    0,
                    configuration=configuration(),
                    retry=True,
                    validation=validation,
                )
            )


# ---------------------------------------------------------------------------------------------
# What the connections run with.


def test_connections_run_with_the_callers_settings_and_our_connection_ids() -> None:
    logger = QuicLogger()
    log = io.StringIO()
    caller = configuration(
        idle_timeout=7.0,
        max_datagram_size=1350,
        max_data=2_000_000,
        max_stream_data=300_000,
        max_datagram_frame_size=65536,
        congestion_control_algorithm="cubic",
        quic_logger=logger,
        secrets_log_file=log,
        supported_versions=[V2, V1],
    )
    ours = connection_configuration(caller)
    assert ours is not caller and caller.connection_id_length == 8  # the caller's is untouched
    assert ours.connection_id_length == SERVER_CID_LENGTH
    assert ours.secrets_log_file is None and caller.secrets_log_file is log  # our TLS writes it
    assert ours.quic_logger is logger
    unchanged = {"connection_id_length", "secrets_log_file"}
    for field in dataclasses.fields(QuicConfiguration):
        if field.name not in unchanged:
            assert getattr(ours, field.name) == getattr(caller, field.name), field.name


# ---------------------------------------------------------------------------------------------
# QUIC version 2 through the stateless HRR.


def test_quic_v2_through_the_stateless_hrr() -> None:
    """aioquic's default supported_versions has v2, which the front then takes: the HRR goes out
    under v2's Initial keys and packet types (RFC 9369), and ClientHello2 (made here: aioquic's
    client aborts on an HRR) builds a v2 connection that answers with its ServerHello."""
    config = server_config(configuration())
    options = QuicOptions(supported_versions=(V2, V1))
    front = InitialFront(config, options)
    client_configuration = QuicConfiguration(
        is_client=True,
        alpn_protocols=["h3"],
        verify_mode=ssl.CERT_NONE,
        server_name="localhost",
        original_version=V2,
        supported_versions=[V2],
    )
    client = QuicConnection(configuration=client_configuration)
    client.connect(SERVER, now=NOW)
    first, _ = client.datagrams_to_send(now=NOW)[0]
    assert first[1:5] == V2.to_bytes(4, "big")
    sent = open_initial(first, first[6 : 6 + first[5]], sent_by_client=True)
    reply = front.receive(first, CLIENT, NOW)
    assert isinstance(reply, Reply) and reply.kind is ReplyKind.HRR, reply
    assert reply.datagram[1:5] == V2.to_bytes(4, "big")
    hrr = open_initial(reply.datagram, sent.destination_cid, sent_by_client=False)

    client_hello = sent.crypto_at(0)
    keys = CryptoPair()
    keys.setup_initial(cid=sent.destination_cid, is_client=True, version=V2)
    builder = QuicPacketBuilder(
        host_cid=sent.source_cid,
        peer_cid=hrr.source_cid,
        version=V2,
        is_client=True,
        max_datagram_size=1200,
        packet_number=1,
    )
    builder.start_packet(QuicPacketType.INITIAL, keys)
    crypto = with_cookie(client_hello, hrr_cookie(hrr.crypto_at(0)))
    buf = builder.start_frame(QuicFrameType.CRYPTO, capacity=16 + len(crypto))
    buf.push_uint_var(len(client_hello))
    buf.push_uint16(len(crypto) | 0x4000)
    buf.push_bytes(crypto)
    (second,), _ = builder.flush()
    accepted = front.receive(second, CLIENT, NOW)
    assert isinstance(accepted, Accept), accepted

    aioquic_config = connection_configuration(configuration(supported_versions=[V2, V1]))
    connection = StatelessQuicConnection(
        configuration=aioquic_config, server_config=config, peer=CLIENT, start=accepted.start
    )
    for datagram in accepted.start.datagrams:
        connection.receive_datagram(datagram, CLIENT, now=NOW)
    flight = [data for data, _ in connection.datagrams_to_send(now=NOW)]
    server_hello = open_initial(flight[0], sent.destination_cid, sent_by_client=False)
    offset, message = server_hello.crypto[0]
    assert offset == len(hrr.crypto_at(0)) and message[0] == 2  # ServerHello after the HRR
    assert flight[0][1:5] == V2.to_bytes(4, "big")


def test_the_example_changes_one_line_of_aioquics_code() -> None:
    """examples/aioquic_http3_server.py imports one thing from stateless13: ``serve``."""
    example = Path(__file__).resolve().parents[2] / "examples" / "aioquic_http3_server.py"
    ours = [line for line in example.read_text().splitlines() if "stateless13" in line]
    imports = [line for line in ours if line.startswith(("from ", "import "))]
    assert imports == [
        "from stateless13.transports.aioquic_serve import serve"
        "  # was: from aioquic.asyncio import serve"
    ]
