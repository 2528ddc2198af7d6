"""What the tlsfuzzer conformance suite found, pinned without sockets.

tests/conformance/tlsfuzzer runs the suite itself against ``stateless13 serve`` (./run-tests does,
after pytest); each test here names the script and case it stands for, so a regression fails in
the fast suite too.  The client is OpenSSL (Python's ``ssl`` over memory BIOs) where it can send
what the case needs; where it cannot (KeyUpdate with update_requested, 0-RTT, record_size_limit),
the test protects the client's records itself with the secrets from the server's key log.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import time
from pathlib import Path

import pytest

from stateless13 import (
    Accepted,
    AlertError,
    ApplicationData,
    Credential,
    HandshakeComplete,
    HelloRetry,
    NeedMoreData,
    ServerConfig,
    ServerConnection,
    SignatureScheme,
    stateless_accept,
)
from stateless13.key_schedule import finished_verify_data, next_traffic_secret
from stateless13.messages import (
    ClientHello,
    ExtensionType,
    Finished,
    HandshakeType,
    KeyUpdate,
    pull_encrypted_extensions,
    push_finished,
    push_key_update,
)
from stateless13.primitives import SUITES
from stateless13.record import ContentType, RecordProtection
from tests.helpers import PEER, PythonSSLClient, handshake_bytes, stateless_handshake
from tests.memory.test_bad_input import (
    AFTER_SERVER_FLIGHT,
    CCS,
    CLIENT_HANDSHAKE,
    CLIENT_TRAFFIC,
    CONFIG,
    CONNECTED,
    P256_CONFIG,
    SUITE,
    A,
    accept,
    alert_record,
    assert_rejected,
    drain,
    encode,
    live,
    parse,
    with_ext,
)

HANDSHAKE = ContentType.handshake
APPLICATION_DATA = ContentType.application_data
SERVER_HANDSHAKE = "SERVER_HANDSHAKE_TRAFFIC_SECRET"
SERVER_TRAFFIC = "SERVER_TRAFFIC_SECRET_0"


class Keys:
    """One direction's record protection as the peer sees it, sequence numbers kept."""

    def __init__(self, secret: bytes) -> None:
        self.secret = secret
        self.protection = RecordProtection(SUITES[SUITE], secret)

    def update(self) -> None:
        """§4.6.3: the next generation of this direction's traffic secret."""
        self.secret = next_traffic_secret(SUITES[SUITE], self.secret)
        self.protection = RecordProtection(SUITES[SUITE], self.secret)

    def seal(self, content_type: ContentType, data: bytes) -> bytes:
        return self.protection.seal(content_type, data)

    def open_all(self, records: bytes) -> list[tuple[ContentType, bytes]]:
        """Every record in ``records``: protected ones opened, plaintext ones as they are."""
        out = []
        offset = 0
        while offset < len(records):
            header = records[offset : offset + 5]
            end = offset + 5 + int.from_bytes(header[3:5], "big")
            payload = records[offset + 5 : end]
            if header[0] == APPLICATION_DATA:
                out.append(self.protection.open(header, payload))
            else:
                out.append((ContentType(header[0]), payload))
            offset = end
        return out


def record_headers(records: bytes) -> list[tuple[int, int]]:
    """(content type, payload length) of each record in ``records``."""
    headers = []
    offset = 0
    while offset < len(records):
        size = int.from_bytes(records[offset + 3 : offset + 5], "big")
        headers.append((records[offset], size))
        offset += 5 + size
    return headers


def keyed(config: ServerConfig) -> tuple[ServerConfig, dict[str, bytes]]:
    """``config`` with one suite and a key log the test reads the secrets from."""
    secrets: dict[str, bytes] = {}

    def keylog(line: str) -> None:
        label, _, secret = line.split()
        secrets[label] = bytes.fromhex(secret)

    return dataclasses.replace(config, cipher_suites=(SUITE,), keylog=keylog), secrets


def client_finished(secrets: dict[str, bytes], client_hello: bytes, flight: bytes) -> bytes:
    """The client's Finished record for a 1-RTT handshake whose ClientHello was ``client_hello``:
    for ClientHellos the real client did not send exactly (a 0-RTT offer, a record limit)."""
    messages = b"".join(  # ServerHello (plaintext), then EncryptedExtensions ... Finished
        data
        for content_type, data in Keys(secrets[SERVER_HANDSHAKE]).open_all(flight)
        if content_type == HANDSHAKE
    )
    transcript = hashlib.sha256(client_hello + messages).digest()
    verify_data = finished_verify_data(SUITES[SUITE], secrets[CLIENT_HANDSHAKE], transcript)
    return Keys(secrets[CLIENT_HANDSHAKE]).seal(HANDSHAKE, push_finished(Finished(verify_data)))


def fake_early_data(*sizes: int) -> bytes:
    """Records as refused 0-RTT looks to a server without the early keys: undecryptable."""
    return b"".join(b"\x17\x03\x03" + n.to_bytes(2, "big") + os.urandom(n) for n in sizes)


def offering_early_data(hello: ClientHello) -> ClientHello:
    return with_ext(hello, ExtensionType.early_data, b"")


# ---------------------------------------------------------------------------------------------
# 1. KeyUpdate (test-tls13-keyupdate.py)


def test_key_update_with_update_requested_is_answered_and_both_keys_move_on() -> None:
    """ "post-handshake KeyUpdate msg with update_request": §4.6.3."""
    lv = live(CONNECTED)
    lv.server.data_to_send()
    client, server = Keys(lv.secrets[CLIENT_TRAFFIC]), Keys(lv.secrets[SERVER_TRAFFIC])
    lv.server.receive_data(client.seal(HANDSHAKE, push_key_update(KeyUpdate(True))))
    assert drain(lv.server) == []
    answer = server.open_all(lv.server.data_to_send())
    assert answer == [(HANDSHAKE, push_key_update(KeyUpdate(False)))]
    client.update()
    server.update()
    lv.server.receive_data(client.seal(APPLICATION_DATA, b"ping"))
    assert drain(lv.server) == [ApplicationData(b"ping")]
    lv.server.send(b"pong")
    assert server.open_all(lv.server.data_to_send()) == [(APPLICATION_DATA, b"pong")]


def test_several_key_updates_in_a_row_are_each_answered() -> None:
    """ "multiple KeyUpdate messages": each request gets its own answer under the next key."""
    lv = live(CONNECTED)
    lv.server.data_to_send()
    client, server = Keys(lv.secrets[CLIENT_TRAFFIC]), Keys(lv.secrets[SERVER_TRAFFIC])
    flight = b""
    for _ in range(3):
        flight += client.seal(HANDSHAKE, push_key_update(KeyUpdate(True)))
        client.update()
    lv.server.receive_data(flight + client.seal(APPLICATION_DATA, b"after"))
    assert drain(lv.server) == [ApplicationData(b"after")]
    sent = lv.server.data_to_send()
    answers = []
    offset = 0
    for _, size in record_headers(sent):  # each answer is under the key the previous one retired
        answers += server.open_all(sent[offset : offset + 5 + size])
        server.update()
        offset += 5 + size
    assert answers == [(HANDSHAKE, push_key_update(KeyUpdate(False)))] * 3


# ---------------------------------------------------------------------------------------------
# 2. Nothing between the fragments of a handshake message (§5.1)


@pytest.mark.parametrize(
    ("content_type", "data"),
    [(APPLICATION_DATA, b"between"), (ContentType.alert, b"\x01\x5a")],
    ids=["application-data", "alert"],
)
def test_no_record_may_come_between_the_fragments_of_a_handshake_message(
    content_type: ContentType, data: bytes
) -> None:
    """test-tls13-keyupdate.py "N/M fragmented keyupdate msg, appdata between"."""
    lv = live(CONNECTED)
    client = Keys(lv.secrets[CLIENT_TRAFFIC])
    key_update = push_key_update(KeyUpdate(False))
    lv.server.receive_data(
        client.seal(HANDSHAKE, key_update[:2])
        + client.seal(content_type, data)
        + client.seal(HANDSHAKE, key_update[2:])
    )
    with pytest.raises(AlertError) as raised:
        drain(lv.server)
    assert raised.value.description == A.unexpected_message
    assert "fragmented handshake message" in raised.value.reason


def test_no_change_cipher_spec_between_the_fragments_of_the_clients_finished() -> None:
    lv = live(AFTER_SERVER_FLIGHT)
    client = Keys(lv.secrets[CLIENT_HANDSHAKE])
    finished = push_finished(Finished(bytes(32)))
    lv.server.receive_data(
        client.seal(HANDSHAKE, finished[:10]) + CCS + client.seal(HANDSHAKE, finished[10:])
    )
    with pytest.raises(AlertError) as raised:
        drain(lv.server)
    assert raised.value.description == A.unexpected_message


def test_a_key_update_in_fragments_is_accepted() -> None:
    """The control: the same fragments with nothing between them."""
    lv = live(CONNECTED)
    client = Keys(lv.secrets[CLIENT_TRAFFIC])
    key_update = push_key_update(KeyUpdate(False))
    lv.server.receive_data(
        client.seal(HANDSHAKE, key_update[:2]) + client.seal(HANDSHAKE, key_update[2:])
    )
    assert drain(lv.server) == []
    client.update()
    lv.server.receive_data(client.seal(APPLICATION_DATA, b"x"))
    assert drain(lv.server) == [ApplicationData(b"x")]


# ---------------------------------------------------------------------------------------------
# 3. A Finished of the wrong length is decode_error: tests/memory/test_bad_input.py, WRONG_FINISHED.
# 4. legacy_version 0x0300 or lower is protocol_version: test_bad_input.py, HELLO_CASES.


def test_a_finished_of_16380_bytes_is_decode_error() -> None:
    """test-tls13-record-layer-limits.py "max size payload (2**14) of Finished msg"."""
    lv = live(AFTER_SERVER_FLIGHT)
    finished = push_finished(Finished(bytes(2**14 - 4)))
    lv.server.receive_data(Keys(lv.secrets[CLIENT_HANDSHAKE]).seal(HANDSHAKE, finished))
    with pytest.raises(AlertError) as raised:
        drain(lv.server)
    assert raised.value.description == A.decode_error


# ---------------------------------------------------------------------------------------------
# 5. A certificate with an RSASSA-PSS key (test-tls13-rsapss-signatures.py)


@pytest.fixture(scope="module")
def rsassa_pss_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An id-RSASSA-PSS key and certificate, made by the openssl command (cryptography can use
    such keys but not generate them)."""
    folder = tmp_path_factory.mktemp("rsapss")
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        ["openssl", "genpkey", "-algorithm", "RSA-PSS", "-pkeyopt", "rsa_keygen_bits:2048",
         "-out", str(key)],
        check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(
        ["openssl", "req", "-x509", "-new", "-key", str(key), "-out", str(cert), "-days", "2",
         "-subj", "/CN=localhost"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def test_an_rsassa_pss_certificate_signs_with_rsa_pss_pss_schemes(
    rsassa_pss_files: tuple[Path, Path],
) -> None:
    """OpenSSL refuses an rsa_pss_rsae signature from such a key ("wrong signature type")."""
    cert, key = rsassa_pss_files
    config = ServerConfig.from_pem_files(cert, key)
    assert config.credentials[0].signature_schemes == (
        SignatureScheme.rsa_pss_pss_sha256,
        SignatureScheme.rsa_pss_pss_sha384,
        SignatureScheme.rsa_pss_pss_sha512,
    )
    accepted = stateless_handshake(config, PythonSSLClient())
    (event,) = accepted.connection.events()
    assert isinstance(event, HandshakeComplete)
    assert event.signature_scheme == SignatureScheme.rsa_pss_pss_sha256


def test_a_key_that_is_not_the_certificates_is_refused(
    rsassa_pss_files: tuple[Path, Path],
) -> None:
    cert, _ = rsassa_pss_files
    other = Credential.self_signed(key_type="rsa")
    with pytest.raises(ValueError, match="does not belong"):
        Credential.from_pem(cert.read_bytes(), other_key_pem(other))


def other_key_pem(credential: Credential) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return credential.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


# ---------------------------------------------------------------------------------------------
# 6. Refused 0-RTT is skipped (test-tls13-0rtt-garbage.py; RFC 8446 §4.2.10)


def test_refused_early_data_is_skipped_until_a_record_opens() -> None:
    """ "handshake with invalid 0-RTT": records that do not open under the client's handshake
    key are dropped, the first that opens (its Finished) is handled, at sequence number 0."""
    config, secrets = keyed(CONFIG)
    server = ServerConnection(config, peer=PEER)
    hello = encode(offering_early_data(parse(PythonSSLClient().step())))
    server.receive_data(hello)
    assert drain(server) == []
    flight = server.data_to_send()
    server.receive_data(fake_early_data(16384 + 17, 100) + CCS + fake_early_data(1))
    assert drain(server) == []
    server.receive_data(client_finished(secrets, handshake_bytes(hello), flight))
    (event,) = drain(server)
    assert isinstance(event, HandshakeComplete)


def test_early_data_skipping_ends_at_the_first_record_that_opens() -> None:
    """ "undecryptable record later in handshake together with early_data"."""
    config, secrets = keyed(CONFIG)
    server = ServerConnection(config, peer=PEER)
    hello = encode(offering_early_data(parse(PythonSSLClient().step())))
    server.receive_data(hello)
    drain(server)
    finished = client_finished(secrets, handshake_bytes(hello), server.data_to_send())
    server.receive_data(finished + fake_early_data(64))
    assert isinstance(server.next_event(), HandshakeComplete)
    with pytest.raises(AlertError) as raised:
        drain(server)
    assert raised.value.description == A.bad_record_mac


def test_early_data_over_the_limit_is_bad_record_mac() -> None:
    config, _ = keyed(dataclasses.replace(CONFIG, max_early_data_skipped=1000))
    server = ServerConnection(config, peer=PEER)
    server.receive_data(encode(offering_early_data(parse(PythonSSLClient().step()))))
    drain(server)
    server.receive_data(fake_early_data(500, 490))  # 1000 bytes with their headers
    assert drain(server) == []
    server.receive_data(fake_early_data(1))
    with pytest.raises(AlertError) as raised:
        drain(server)
    assert raised.value.description == A.bad_record_mac
    assert "1000 bytes of early data" in raised.value.reason


def test_without_an_early_data_offer_nothing_is_skipped() -> None:
    server = ServerConnection(CONFIG, peer=PEER)
    server.receive_data(PythonSSLClient().step())
    drain(server)
    server.receive_data(fake_early_data(100))
    with pytest.raises(AlertError) as raised:
        drain(server)
    assert raised.value.description == A.bad_record_mac


def test_refused_early_data_before_clienthello2_is_skipped_after_a_stateful_retry() -> None:
    """ "handshake with invalid 0-RTT and HRR": application_data records until ClientHello2."""
    client = PythonSSLClient()
    server = ServerConnection(P256_CONFIG, peer=PEER)
    server.receive_data(encode(offering_early_data(parse(client.step()))))
    assert drain(server) == []
    ch2 = client.step(server.data_to_send())
    server.receive_data(fake_early_data(16384, 17) + ch2)
    assert drain(server) == []
    flight = server.data_to_send()
    assert flight[0] == HANDSHAKE and flight[5] == 2  # the ServerHello
    server.receive_data(fake_early_data(17))  # ClientHello2 ended the skipping
    with pytest.raises(AlertError) as raised:
        drain(server)
    assert raised.value.description == A.bad_record_mac


def test_stateless_front_drops_early_data_after_clienthello1_with_the_hrr() -> None:
    client = PythonSSLClient()
    ch1 = encode(offering_early_data(parse(client.step())))
    early = fake_early_data(16384 + 17, 40)
    assert isinstance(accept(ch1 + early[:-10]), NeedMoreData)  # whole records, then the HRR
    first = accept(ch1 + early)
    assert isinstance(first, HelloRetry)
    ch2 = client.step(first.data_to_send)
    assert isinstance(accept(fake_early_data(17) + ch2, after_retry=True), Accepted)


def test_stateless_front_refuses_early_data_over_the_limit() -> None:
    config = dataclasses.replace(CONFIG, max_early_data_skipped=1000)
    ch1 = encode(offering_early_data(parse(PythonSSLClient().step())))
    assert isinstance(accept(ch1 + fake_early_data(995), config), HelloRetry)
    assert_rejected(accept(ch1 + fake_early_data(996), config), A.unexpected_message)
    assert_rejected(accept(fake_early_data(996), config, after_retry=True), A.unexpected_message)


def test_stateless_front_skips_no_early_data_the_client_did_not_offer() -> None:
    assert_rejected(accept(PythonSSLClient().step() + fake_early_data(17)), A.unexpected_message)
    assert_rejected(accept(fake_early_data(17) + PythonSSLClient().step()), A.unexpected_message)


# ---------------------------------------------------------------------------------------------
# 7. The stateless front: a CCS in the same read as ClientHello1
#    (test-tls13-multiple-ccs-messages.py "sanity with one CCS message", stateless mode)


@pytest.mark.parametrize("ccs_split", [False, True], ids=["whole", "ccs-in-two-reads"])
def test_a_ccs_after_clienthello1_does_not_depend_on_how_tcp_splits_it(ccs_split: bool) -> None:
    """OpenSSL then completes the handshake (its own CCS comes again before ClientHello2)."""
    client = PythonSSLClient()
    ch1 = client.step()
    now = time.time()
    if ccs_split:
        assert isinstance(stateless_accept(CONFIG, ch1 + CCS[:3], peer=PEER, now=now), NeedMoreData)
    first = stateless_accept(CONFIG, ch1 + CCS, peer=PEER, now=now)
    assert isinstance(first, HelloRetry)
    ch2 = client.step(first.data_to_send)
    second = stateless_accept(CONFIG, ch2, peer=PEER, now=now, after_retry=True)
    assert isinstance(second, Accepted), second
    second.connection.receive_data(client.step(second.data_to_send))
    assert client.handshake_done
    (event,) = second.connection.events()
    assert isinstance(event, HandshakeComplete) and event.cookie_verified


def test_two_ccs_after_clienthello1_are_refused() -> None:
    assert_rejected(accept(PythonSSLClient().step() + CCS + CCS), A.unexpected_message)


def test_a_ccs_of_another_value_after_clienthello1_is_refused() -> None:
    ccs_2 = CCS[:-1] + b"\x02"
    assert_rejected(accept(PythonSSLClient().step() + ccs_2), A.unexpected_message)


def test_an_alert_after_clienthello1_is_refused() -> None:
    assert_rejected(
        accept(PythonSSLClient().step() + alert_record(A.close_notify)), A.unexpected_message
    )


# ---------------------------------------------------------------------------------------------
# record_size_limit (RFC 8449; test-record-size-limit.py's TLS 1.3 cases)


def test_record_size_limit_is_answered_and_obeyed() -> None:
    config, secrets = keyed(CONFIG)
    server = ServerConnection(config, peer=PEER)
    hello = encode(
        with_ext(parse(PythonSSLClient().step()), ExtensionType.record_size_limit, b"\x00\x40")
    )
    server.receive_data(hello)
    assert drain(server) == []
    flight = server.data_to_send()
    opened = Keys(secrets[SERVER_HANDSHAKE]).open_all(flight)
    stream = b"".join(data for kind, data in opened[1:] if kind == HANDSHAKE)  # after ServerHello
    assert stream[0] == HandshakeType.encrypted_extensions
    encrypted_extensions = stream[: 4 + int.from_bytes(stream[1:4], "big")]
    extensions = dict(pull_encrypted_extensions(encrypted_extensions[4:]).extensions)
    assert extensions[ExtensionType.record_size_limit] == (2**14 + 1).to_bytes(2, "big")
    # Every protected record carries at most 63 bytes of content + 1 of content type.
    protected = [size for kind, size in record_headers(flight) if kind == APPLICATION_DATA]
    assert len(protected) > 5 and max(protected) == 64 + 16
    server.receive_data(client_finished(secrets, handshake_bytes(hello), flight))
    assert isinstance(server.next_event(), HandshakeComplete)
    application_keys = Keys(secrets[SERVER_TRAFFIC])
    tickets = server.data_to_send()  # the NewSessionTickets obey the limit too
    assert all(size <= 64 + 16 for _, size in record_headers(tickets)), record_headers(tickets)
    stream = b"".join(data for _, data in application_keys.open_all(tickets))
    assert stream[0] == HandshakeType.new_session_ticket and len(record_headers(tickets)) > 1
    server.send(bytes(200))
    sent = server.data_to_send()
    assert record_headers(sent) == [(APPLICATION_DATA, 63 + 1 + 16)] * 3 + [
        (APPLICATION_DATA, 11 + 1 + 16)
    ]
    assert b"".join(d for _, d in application_keys.open_all(sent)) == bytes(200)


def test_without_record_size_limit_records_are_full_size() -> None:
    accepted = stateless_handshake(CONFIG, client := PythonSSLClient())
    accepted.connection.events()
    accepted.connection.data_to_send()  # the NewSessionTickets
    accepted.connection.send(bytes(20000))
    sizes = [size for _, size in record_headers(accepted.connection.data_to_send())]
    assert sizes == [2**14 + 17, 20000 - 2**14 + 17]
    assert client.handshake_done
