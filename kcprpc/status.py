"""RPC status codes, the same numbers and meanings as gRPC's.

The numeric values are part of the wire format (they travel in trailers), so they never change.
"""

from __future__ import annotations

from enum import IntEnum


class Status(IntEnum):
    """The outcome of a call. ``OK`` is success; every other code is a failure."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16

    def __str__(self) -> str:
        """The name (``INVALID_ARGUMENT``), as people read it; ``int(status)`` is the number."""
        return self.name

    def __format__(self, spec: str) -> str:
        """``f"{status}"`` is the name; a numeric format (``f"{status:d}"``) formats the number."""
        if spec and spec[-1] in "bcdoxXneEfFgG%":
            return format(int(self), spec)
        return format(self.name, spec)

    @classmethod
    def from_wire(cls, code: object) -> Status:
        """Map a code received from a peer to a :class:`Status`; unknown values become ``UNKNOWN``."""
        try:
            return cls(code)  # type: ignore[arg-type]
        except ValueError:
            return cls.UNKNOWN
