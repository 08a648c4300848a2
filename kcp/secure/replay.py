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
    """Remembers which of the last ``size`` packet numbers below the highest one were seen.

    RFC 6479's bitmap: a ring of blocks, one block more than the window needs, so that moving the
    top clears whole blocks (the ones the new top passes) and nothing shifts. A packet costs one or
    two list reads and writes, whatever the window's size. The blocks are 8 bits wide: every value
    a block takes is one of the interpreter's preallocated small ints, so marking a packet neither
    allocates an int nor reads one from memory of its own (32-bit blocks did both, per packet)."""

    __slots__ = ("_blocks", "_ring", "size", "top")

    def __init__(self, size: int = 2048) -> None:
        if size < 64:
            raise ValueError("replay window must be at least 64")
        self.size = size
        self.top = -1  # highest packet number accepted so far
        self._ring = (size + 7) // 8 + 1  # blocks: a window's worth plus the one being filled
        self._blocks: list[int] = [0] * self._ring  # bit (pn & 7) of block (pn >> 3) % ring: seen

    def check(self, pn: int) -> int:
        """``OK``, ``DUPLICATE`` or ``TOO_OLD``; does not change the window."""
        top = self.top
        if pn > top:
            return OK
        if top - pn >= self.size:
            return TOO_OLD
        return DUPLICATE if (self._blocks[(pn >> 3) % self._ring] >> (pn & 7)) & 1 else OK

    def update(self, pn: int) -> None:
        """Mark ``pn`` as received (call only after it authenticated and passed :meth:`check`)."""
        blocks = self._blocks
        ring = self._ring
        top = self.top
        if pn > top:
            old = top >> 3  # -1 before the first packet
            new = pn >> 3
            if new > old:
                # the blocks the top moves into held packet numbers a ring older: clear them
                for b in range(old + 1, min(new, old + ring) + 1):
                    blocks[b % ring] = 0
            self.top = pn
        i = (pn >> 3) % ring
        blocks[i] = blocks[i] | (1 << (pn & 7))
