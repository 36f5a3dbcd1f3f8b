"""A small, defensive reader of UBJSON (the format of XGBoost's ``.ubj`` models), for checking a model file
before XGBoost's own loader sees it.

Every length and count is checked against the bytes that are left before anything is allocated, nesting is
bounded, and strongly typed numeric arrays (XGBoost writes its per-node arrays that way) become numpy arrays.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["UBJSONError", "parse_ubjson"]

#: Deeper nesting than any model XGBoost writes (about 6 levels).
MAX_DEPTH = 64

_NUMBERS: dict[bytes, tuple[str, int]] = {
    b"i": (">i1", 1),
    b"U": (">u1", 1),
    b"I": (">i2", 2),
    b"l": (">i4", 4),
    b"L": (">i8", 8),
    b"d": (">f4", 4),
    b"D": (">f8", 8),
}
_INTEGER_MARKERS = (b"i", b"U", b"I", b"l", b"L")


class UBJSONError(ValueError):
    """The bytes are not well-formed UBJSON (the message says where and why)."""


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, size: int) -> bytes:
        if size < 0 or self.pos + size > len(self.data):
            raise UBJSONError(f"truncated at byte {self.pos} (needs {size} more bytes)")
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def marker(self) -> bytes:
        marker = self.take(1)
        while marker == b"N":  # no-op padding
            marker = self.take(1)
        return marker

    def peek(self) -> bytes:
        return self.data[self.pos : self.pos + 1]

    def number(self, marker: bytes) -> Any:
        dtype, size = _NUMBERS[marker]
        value = np.frombuffer(self.take(size), dtype=dtype)[0]
        return int(value) if marker in _INTEGER_MARKERS else float(value)

    def length(self) -> int:
        marker = self.marker()
        if marker not in _INTEGER_MARKERS:
            raise UBJSONError(f"a length at byte {self.pos} is not an integer (marker {marker!r})")
        value = int(self.number(marker))
        if value < 0 or value > len(self.data) - self.pos:
            raise UBJSONError(f"a length of {value} at byte {self.pos} is longer than the file")
        return value

    def string(self) -> str:
        try:
            return self.take(self.length()).decode("utf-8")
        except UnicodeDecodeError:
            raise UBJSONError(f"a string before byte {self.pos} is not UTF-8") from None

    def value(self, marker: bytes, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise UBJSONError(f"nested deeper than {MAX_DEPTH} levels")
        if marker in _NUMBERS:
            return self.number(marker)
        if marker == b"S" or marker == b"H":
            return self.string()
        if marker == b"C":
            return self.take(1).decode("latin-1")
        if marker in (b"T", b"F"):
            return marker == b"T"
        if marker == b"Z":
            return None
        if marker == b"[":
            return self.array(depth)
        if marker == b"{":
            return self.mapping(depth)
        raise UBJSONError(f"unknown type marker {marker!r} at byte {self.pos - 1}")

    def container_header(self) -> tuple[bytes | None, int | None]:
        kind = None
        if self.peek() == b"$":
            self.take(1)
            kind = self.take(1)
            if self.peek() != b"#":
                raise UBJSONError(f"a typed container at byte {self.pos} has no count")
        count = None
        if self.peek() == b"#":
            self.take(1)
            count = self.length()
        return kind, count

    def array(self, depth: int) -> Any:
        kind, count = self.container_header()
        if kind is not None and count is not None and kind in _NUMBERS:
            dtype, size = _NUMBERS[kind]
            if count * size > len(self.data) - self.pos:
                raise UBJSONError(f"an array of {count} numbers at byte {self.pos} is longer than the file")
            return np.frombuffer(self.take(count * size), dtype=dtype).astype(np.float64)
        items = []
        if count is not None:
            for _ in range(count):
                items.append(self.value(kind or self.marker(), depth + 1))
            return items
        while True:
            marker = self.marker()
            if marker == b"]":
                return items
            items.append(self.value(marker, depth + 1))

    def mapping(self, depth: int) -> dict[str, Any]:
        kind, count = self.container_header()
        result: dict[str, Any] = {}
        if count is not None:
            for _ in range(count):
                key = self.string()
                result[key] = self.value(kind or self.marker(), depth + 1)
            return result
        while True:
            if self.peek() == b"}":
                self.take(1)
                return result
            key = self.string()
            result[key] = self.value(self.marker(), depth + 1)


def parse_ubjson(data: bytes) -> Any:
    """The value encoded in ``data``; :class:`UBJSONError` when it is not exactly one well-formed value."""
    reader = _Reader(data)
    value = reader.value(reader.marker(), 0)
    if reader.pos != len(data):
        raise UBJSONError(f"{len(data) - reader.pos} bytes follow the model")
    return value
