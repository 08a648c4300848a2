"""Type stub of the compiled build's C module kcprpc._msgsize (kcprpc/_msgsize.c): the walk of
kcprpc.msgpack_size."""

def size(data: bytes | bytearray | memoryview, limit: int, /) -> int: ...
def advance(
    data: bytes | bytearray | memoryview,
    base: int,
    end: int,
    size: int,
    limit: int,
    need: int,
    pos: int,
    total: int,
    /,
) -> tuple[int, int, int, int]: ...
