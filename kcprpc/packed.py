"""A value already encoded as msgpack, for a reply built from bytes the server holds encoded
(:class:`Packed`). Kept out of the compiled modules: they only test a value's type against it."""

from __future__ import annotations

__all__ = ["Packed"]


class Packed(bytes):
    """One msgpack value, already encoded: a unary handler may return it for its declared
    response type, and the REPLY carries it as it is (it is neither dumped nor encoded again).
    The handler vouches that it decodes into that type; the client validates it as any reply.
    ``kcprpc.Push/History`` answers this way from the messages' encoded frames."""

    __slots__ = ()
