"""The decoded-size walk (``kcprpc.msgpack_size``) in C against the same walk in Python, in one
process, alternated: CPU time per body for a few body shapes, msgpack's own decode of the body
beside them (``unpack``: the garbage collector on; ``paused``: ``kcprpc.codec.unpack``, which
pauses it for bodies over 4 KiB), and a ``MemoryBroker`` publish kept in the history (which
walks its payload).

The C walk (``kcprpc._msgsize``) exists in the compiled build only; in a pure build the script
says so and measures the Python walk alone.

    python bench/decode_walk.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import msgpack

from kcprpc import MemoryBroker, codec, msgpack_size
from kcprpc.buildinfo import build_name

CHAT = {"text": "hello world", "user": "u123", "n": 5}
STATE = {
    "tick": 1234,
    "entities": [{"id": i, "x": i * 1.5, "y": -i * 0.5, "hp": 100, "name": f"unit{i}"} for i in range(40)],
}
BODIES: dict[str, bytes] = {
    "chat message": msgpack.packb(CHAT),
    "game state": msgpack.packb(STATE),
    "40 KB of [1] arrays": b"\xdc\x4e\x20" + b"\x91\x01" * 20_000,
    "40 KB of nested arrays": b"\xdc\x00\x28" + (b"\x91" * 1000 + b"\x90") * 40,
    "60 KB of uint16": b"\xdc\x4e\x20" + b"\xcd\x01\x00" * 20_000,
    "24 KB map, str keys": b"\xde\x10\x00" + b"".join(b"\xa4" + b"%04d" % i + b"\x01" for i in range(4096)),
}
LIMIT = 1 << 30


def per_call(fn: Callable[[], object], budget: float) -> float:
    """CPU microseconds per call of ``fn``, repeated for about ``budget`` seconds."""
    n = 0
    t0 = time.process_time()
    while True:
        for _ in range(50):
            fn()
        n += 50
        spent = time.process_time() - t0
        if spent >= budget:
            return spent / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=0.2, help="CPU seconds per case and round")
    args = ap.parse_args()
    has_c = msgpack_size.use_native(True)
    walks = ("C", "Python") if has_c else ("Python",)
    print(f"kcprpc build: {build_name()}; C walk: {'built' if has_c else 'not built (Python only)'}")
    got: dict[tuple[str, str], list[float]] = {}
    for r in range(args.rounds):
        for walk in walks if r % 2 == 0 else walks[::-1]:
            msgpack_size.use_native(walk == "C")
            for name, body in BODIES.items():
                us = per_call(lambda body=body: msgpack_size.decoded_size(body, LIMIT), args.seconds)  # type: ignore[misc]
                got.setdefault((name, walk), []).append(us)
            broker = MemoryBroker(history=1024)
            broker.subscribe("topic:a", lambda m: m.frame())
            us = per_call(lambda b=broker: b.publish_nowait("topic:a", "chat", CHAT), args.seconds)  # type: ignore[misc]
            got.setdefault(("kept publish (chat)", walk), []).append(us)
        for name, body in BODIES.items():
            us = per_call(lambda body=body: msgpack.unpackb(body, strict_map_key=False), args.seconds)  # type: ignore[misc]
            got.setdefault((name, "unpack"), []).append(us)
            us = per_call(lambda body=body: codec.unpack(body), args.seconds)  # type: ignore[misc]
            got.setdefault((name, "paused"), []).append(us)
    msgpack_size.use_native(True)
    print(f"CPU µs per body, median of {args.rounds} rounds (walks alternated)")
    head = f"{'body':24s} {'bytes':>6s} " + " ".join(f"{w:>9s}" for w in walks)
    print(head + (f" {'C/Python':>9s}" if has_c else "") + f" {'unpack':>9s} {'paused':>9s}")
    for name in [*BODIES, "kept publish (chat)"]:
        med = {w: statistics.median(got[(name, w)]) for w in walks}
        row = f"{name:24s} {len(BODIES.get(name, b'')) or '':>6} " + " ".join(f"{med[w]:9.2f}" for w in walks)
        if has_c:
            row += f" {med['C'] / med['Python']:9.3f}"
        if (name, "unpack") in got:
            row += f" {statistics.median(got[(name, 'unpack')]):9.2f}"
            row += f" {statistics.median(got[(name, 'paused')]):9.2f}"
        print(row)


if __name__ == "__main__":
    main()
