"""Bounds-checked reading and length-prefixed writing of TLS's presentation language (RFC 8446 §3).

Every read is checked against the end of the enclosing block, so a length field that lies can
only ever raise :class:`DecodeError`, never read past its block or allocate what it claims.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from contextlib import contextmanager

from .alerts import DecodeError


class Reader:
    """Reads big-endian integers and length-prefixed vectors from bytes."""

    __slots__ = ("_data", "_end", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0
        self._end = len(data)

    def eof(self) -> bool:
        return self._pos == self._end

    @property
    def position(self) -> int:
        """Bytes read so far from the start of the data."""
        return self._pos

    def _take(self, n: int) -> int:
        start = self._pos
        if n > self._end - start:
            raise DecodeError(f"need {n} bytes at offset {start}, have {self._end - start}")
        self._pos = start + n
        return start

    def pull_uint8(self) -> int:
        return self._data[self._take(1)]

    def pull_uint16(self) -> int:
        start = self._take(2)
        return int.from_bytes(self._data[start : start + 2], "big")

    def pull_uint32(self) -> int:
        start = self._take(4)
        return int.from_bytes(self._data[start : start + 4], "big")

    def pull_bytes(self, n: int) -> bytes:
        start = self._take(n)
        return self._data[start : start + n]

    def pull_vector(self, length_size: int, minimum: int = 0, maximum: int | None = None) -> bytes:
        """A ``<minimum..maximum>`` opaque vector with a ``length_size``-byte length prefix."""
        # Inlined (no _take calls): a ClientHello has a dozen of these.
        start = self._pos + length_size
        if start > self._end:
            raise DecodeError(f"need {length_size} length bytes at offset {self._pos}")
        length = int.from_bytes(self._data[self._pos : start], "big")
        if length < minimum or (maximum is not None and length > maximum):
            raise DecodeError(f"vector length {length} outside {minimum}..{maximum}")
        end = start + length
        if end > self._end:
            raise DecodeError(f"vector of {length} bytes at offset {start} overruns its block")
        self._pos = end
        return self._data[start:end]

    @contextmanager
    def pull_block(self, length_size: int, minimum: int = 0) -> Iterator[int]:
        """Limit reads to a length-prefixed block, which must be consumed exactly."""
        length = int.from_bytes(self.pull_bytes(length_size), "big")
        if length < minimum:
            raise DecodeError(f"block length {length} below minimum {minimum}")
        if length > self._end - self._pos:
            raise DecodeError(f"block of {length} bytes overruns its container")
        outer_end = self._end
        self._end = self._pos + length
        yield length
        if self._pos != self._end:
            raise DecodeError("extra bytes at the end of a block")
        self._end = outer_end

    def expect_end(self, what: str) -> None:
        if self._pos != self._end:
            raise DecodeError(f"{self._end - self._pos} trailing bytes after {what}")


class Writer:
    """Appends big-endian integers and length-prefixed blocks to a bytearray."""

    __slots__ = ("data",)

    def __init__(self) -> None:
        self.data = bytearray()

    def push_uint16(self, value: int) -> None:
        self.data += value.to_bytes(2, "big")

    def push_uint32(self, value: int) -> None:
        self.data += value.to_bytes(4, "big")

    def push_bytes(self, value: bytes) -> None:
        self.data += value

    def push_vector(self, length_size: int, value: bytes) -> None:
        self.data += len(value).to_bytes(length_size, "big")
        self.data += value

    @contextmanager
    def push_block(self, length_size: int) -> Iterator[None]:
        """Write a block whose length prefix is back-patched when the block closes."""
        start = len(self.data)
        self.data += bytes(length_size)
        yield
        length = len(self.data) - start - length_size
        self.data[start : start + length_size] = length.to_bytes(length_size, "big")

    def push_uint16_list(self, length_size: int, values: tuple[int, ...]) -> None:
        self.push_vector(length_size, struct.pack(f">{len(values)}H", *values))

    def getvalue(self) -> bytes:
        return bytes(self.data)
