"""Coverage-guided fuzzing (atheris/libFuzzer) of ``stateless_accept`` and ``ServerConnection``.

    python -m fuzz [libFuzzer flags] [CORPUS_DIR ...]
    python -m fuzz -runs=1000000 tests/fuzz_corpus       # a long run
    python -m fuzz --make-corpus tests/fuzz_corpus       # (re)build the seed corpus

The first input byte picks the target: 0xF0 and above → the DTLS 1.3 datagram parsers
(``split_datagram``, ``DtlsRecordLayer.open_datagram``, handshake fragments into a
``HandshakeReassembler``, ``parse_ack``) and the stateless ``DtlsListener`` (the one that
faces every spoofed datagram; its answer may never be larger than the datagram); otherwise
even → ``stateless_accept`` (ClientHello1 and, with the fixed cookie key and clock below,
ClientHello2 with a valid cookie), odd → an ordinary ``ServerConnection``.  The only exceptions
allowed out of the library are ``AlertError`` subclasses (as typed results or raised by
``next_event``); anything else is a crash.
"""

from __future__ import annotations

import sys
from pathlib import Path

from stateless13 import (
    Accepted,
    AlertError,
    CookieKeyRing,
    Credential,
    ServerConfig,
    ServerConnection,
    stateless_accept,
)
from stateless13.dtls_flight import HandshakeReassembler, parse_ack, parse_fragments
from stateless13.dtls_listener import DtlsListener, DtlsReply
from stateless13.dtls_record import DtlsRecordLayer, split_datagram
from stateless13.messages import CipherSuite
from stateless13.primitives import DTLS_SUITES

FUZZ_KEY = bytes(range(32))  # fixed so that the corpus's ClientHello2 cookies stay valid
NOW = 1_800_000_000.0
PEER = ("203.0.113.7", 4433)
CONFIG = ServerConfig(
    credentials=(Credential.self_signed("localhost"),),
    cookie_keys=CookieKeyRing.from_bytes(FUZZ_KEY),
)
CAPTURED = Path(__file__).resolve().parent.parent / "tests" / "data" / "client_hellos"
CAPTURED_DTLS = CAPTURED.parent / "dtls"


def drain(connection: ServerConnection) -> None:
    try:
        for _ in range(64):  # bounded: each event consumes input
            if connection.next_event() is None:
                break
        connection.receive_data(b"")
        connection.next_event()
    except AlertError:
        pass
    connection.data_to_send()


#: The DTLS listener, one for the run: its table of partial ClientHellos is what a flood fills.
DTLS_LISTENER = DtlsListener(CONFIG)


def dtls_input(selector: int, payload: bytes) -> None:
    """The DTLS 1.3 datagram parsers; only AlertError may come out, and memory stays bounded."""
    target = (selector - 0xF0) % 5
    try:
        if target == 4:
            result = DTLS_LISTENER.receive(payload, PEER, NOW)
            if isinstance(result, DtlsReply) and len(result.datagram) > len(payload):
                raise RuntimeError("the DTLS listener answered with more than it received")
        elif target == 0:
            split_datagram(payload, cid_length=(selector >> 2) & 3)
        elif target == 1:
            layer = DtlsRecordLayer()
            suite = DTLS_SUITES[CipherSuite.TLS_AES_128_GCM_SHA256 + ((selector >> 2) % 3)]
            for epoch in (1, 2, 3):
                layer.install_read(epoch, suite, bytes(suite.hash_len))
            layer.open_datagram(payload)
        elif target == 2:
            reassembler = HandshakeReassembler(max_message_length=2048, max_buffered=4096)
            for fragment in parse_fragments(payload):
                reassembler.feed(fragment)
                reassembler.take_peer_retransmission()
                if fragment.fragment_offset & 1:
                    reassembler.pop_messages()
                if reassembler.buffered > 4096:
                    raise RuntimeError(f"reassembler holds {reassembler.buffered} bytes")
        else:
            parse_ack(payload)
    except AlertError:
        pass


def one_input(data: bytes) -> None:
    if not data:
        return
    selector, payload = data[0], bytes(data[1:])
    if selector >= 0xF0:
        dtls_input(selector, payload)
    elif selector % 2 == 0:
        after_retry = bool(selector & 2)
        result = stateless_accept(CONFIG, payload, peer=PEER, now=NOW, after_retry=after_retry)
        if isinstance(result, Accepted):
            drain(result.connection)
    else:
        connection = ServerConnection(CONFIG, peer=PEER)
        connection.receive_data(payload)
        drain(connection)


def make_corpus(directory: Path) -> None:
    """Seeds: real ClientHello1s (CAPTURED) and real ClientHello2s with valid cookies."""
    import contextlib
    import ssl

    from stateless13 import HelloRetry

    directory.mkdir(parents=True, exist_ok=True)
    seeds: dict[str, bytes] = {}
    for path in sorted(CAPTURED.glob("*.bin")):
        seeds[f"ch1-{path.stem}"] = b"\x00" + path.read_bytes()
        seeds[f"conn-{path.stem}"] = b"\x01" + path.read_bytes()
    for path in sorted(CAPTURED_DTLS.glob("*.bin")):  # wolfSSL's, to each DTLS target
        for target in range(5):
            seeds[f"dtls{target}-{path.stem}"] = bytes((0xF0 + target,)) + path.read_bytes()
    for compat in (True, False):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        if not compat:
            context.options &= ~ssl.OP_ENABLE_MIDDLEBOX_COMPAT
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        client = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
        with contextlib.suppress(ssl.SSLWantReadError):
            client.do_handshake()
        retry = stateless_accept(CONFIG, outgoing.read(), peer=PEER, now=NOW)
        assert isinstance(retry, HelloRetry)
        incoming.write(retry.data_to_send)
        with contextlib.suppress(ssl.SSLWantReadError):
            client.do_handshake()
        seeds[f"ch2-python-ssl-{'compat' if compat else 'nocompat'}"] = b"\x02" + outgoing.read()
    for name, seed in seeds.items():
        (directory / name).write_bytes(seed)
    print(f"{len(seeds)} seeds in {directory}")


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--make-corpus":
        make_corpus(Path(sys.argv[2]))
        return
    import atheris

    atheris.instrument_all()
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
