"""Wrapping RTP counters (sequence numbers, timestamps) extended to Python ints."""

from __future__ import annotations


class Unwrapper:
    """Extends a wrapping counter (RTP sequence number, RTP timestamp) to a Python int.

    The first value maps to itself. Each later value is placed at the distance from the
    highest value seen so far that is shortest modulo 2**bits, so both forward wraps and
    reordered values from just before a wrap come out right. Values earlier than the
    first one come out negative. Only the highest value moves the reference, so a
    reordered old value never drags it back. A jump of half the range or more is
    ambiguous and is read as going backwards.
    """

    def __init__(self, bits: int) -> None:
        if bits < 2:
            raise ValueError("an unwrapper needs at least 2 bits")
        self._modulus = 1 << bits
        self._half = self._modulus >> 1
        self._highest: int | None = None

    def unwrap(self, value: int) -> int:
        if not 0 <= value < self._modulus:
            raise ValueError(f"{value} does not fit in {self._modulus.bit_length() - 1} bits")
        if self._highest is None:
            self._highest = value
            return value
        delta = (value - self._highest) % self._modulus
        if delta >= self._half:
            delta -= self._modulus
        extended = self._highest + delta
        if delta > 0:
            self._highest = extended
        return extended
