"""A UDP relay between one client and one server that loses, reorders and duplicates datagrams
as the test asks: the lossy path of the DTLS tests, in a thread of its own.

The client sends to ``relay.address``; the relay forwards to the server from one socket of its
own and sends the answers back to the last client address it heard from.  Each datagram, either
way, is dropped with probability ``drop``, else held back and sent after the next one (or after
50 ms of quiet) with probability ``reorder``, and sent twice with probability ``duplicate``: from
a seeded random generator, so a failing run can be replayed.  ``counts`` says what happened.
``impair`` chooses the datagrams that may suffer (by default all): the DTLS tests spare the
application's, which the peer program sends once and never again.
"""

from __future__ import annotations

import random
import selectors
import socket
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class UdpRelay:
    server: tuple[str, int]
    drop: float = 0.0
    reorder: float = 0.0
    duplicate: float = 0.0
    seed: int = 0
    impair: Callable[[bytes], bool] = lambda datagram: True
    #: ("up" | "down", "received" | "dropped" | "reordered" | "duplicated") -> datagrams.
    counts: Counter[tuple[str, str]] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)
        self._front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._front.bind(("127.0.0.1", 0))
        self._back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._back.connect(self.server)
        self._client: tuple[str, int] | None = None
        self._held: dict[str, bytes | None] = {"up": None, "down": None}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="udp-relay", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._front.getsockname()
        return str(host), int(port)

    def __enter__(self) -> UdpRelay:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._front.close()
        self._back.close()

    def _run(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._front, selectors.EVENT_READ, "up")
            selector.register(self._back, selectors.EVENT_READ, "down")
            while not self._stop.is_set():
                ready = selector.select(timeout=0.05)
                if not ready:  # nothing came to overtake a held datagram: it goes out now
                    for way, held in self._held.items():
                        if held is not None:
                            self._held[way] = None
                            self._send(way, held)
                for key, _ in ready:
                    sock: socket.socket = key.fileobj  # type: ignore[assignment]
                    try:
                        datagram, source = sock.recvfrom(65535)
                    except OSError:  # e.g. the server's port is closed: ICMP came back
                        continue
                    if key.data == "up":
                        self._client = source
                    self._pass(key.data, datagram)

    def _pass(self, way: str, datagram: bytes) -> None:
        self.counts[way, "received"] += 1
        if not self.impair(datagram):
            self._send(way, datagram)
            return
        if self._random.random() < self.drop:
            self.counts[way, "dropped"] += 1
            return
        held, self._held[way] = self._held[way], None
        if held is None and self._random.random() < self.reorder:
            self.counts[way, "reordered"] += 1
            self._held[way] = datagram  # goes out after the next one this way
            return
        copies = 2 if self._random.random() < self.duplicate else 1
        if copies == 2:
            self.counts[way, "duplicated"] += 1
        for _ in range(copies):
            self._send(way, datagram)
        if held is not None:
            self._send(way, held)

    def _send(self, way: str, datagram: bytes) -> None:
        try:
            if way == "up":
                self._back.send(datagram)
            elif self._client is not None:
                self._front.sendto(datagram, self._client)
        except OSError:
            pass  # a closed port on the other side: a lost datagram, as on a network
