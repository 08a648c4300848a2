"""Type stub of the compiled build's C module kcp._mmsg (kcp/_mmsg.c): sendmmsg/recvmmsg for
kcp.batch."""

from collections.abc import Callable
from typing import Any

MAX_BATCH: int

def send(
    fd: int,
    items: list[tuple[bytes, Any]],
    start: int,
    stop: int,
    batch: int,
    slot: int,
    runs: bool,
    cache: dict[Any, tuple[bytes, int]],
    encode: Callable[[Any], tuple[bytes, int]],
    /,
) -> tuple[int, int, int, int]: ...
def recv(
    fd: int,
    batch: int,
    slot: int,
    cache: dict[bytes, Any],
    decode: Callable[[bytes], Any],
    out: list[tuple[bytes, Any]],
    /,
) -> tuple[int, int, int]: ...
