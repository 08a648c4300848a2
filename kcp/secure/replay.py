"""Anti-replay sliding window over 64-bit packet numbers (RFC 6479 / WireGuard style).

:meth:`ReplayWindow.check` is called before authentication (cheap reject), :meth:`ReplayWindow.update`
only after the AEAD accepted the packet, so forged packets cannot move the window.
"""

from __future__ import annotations

from typing import Final

OK: Final = 0
DUPLICATE: Final = 1
TOO_OLD: Final = 2


class ReplayWindow:
    """Remembers which of the last ``size`` packet numbers below the highest one were seen."""

    __slots__ = ("_bits", "_mask", "size", "top")

    def __init__(self, size: int = 2048) -> None:
        if size < 64:
            raise ValueError("replay window must be at least 64")
        self.size = size
        self.top = -1  # highest packet number accepted so far
        self._bits = 0  # bit i set: packet number (top - i) was accepted
        self._mask = (1 << size) - 1

    def check(self, pn: int) -> int:
        """``OK``, ``DUPLICATE`` or ``TOO_OLD``; does not change the window."""
        if pn > self.top:
            return OK
        offset = self.top - pn
        if offset >= self.size:
            return TOO_OLD
        return DUPLICATE if (self._bits >> offset) & 1 else OK

    def update(self, pn: int) -> None:
        """Mark ``pn`` as received (call only after it authenticated and passed :meth:`check`)."""
        if pn > self.top:
            shift = pn - self.top
            self._bits = ((self._bits << shift) | 1) & self._mask if shift < self.size else 1
            self.top = pn
        else:
            self._bits |= 1 << (self.top - pn)
