"""Per-module micro-benchmark of the modules a compiled build compiles (kcp/buildinfo.py,
kcprpc/buildinfo.py) that the other benches do not isolate: microseconds per operation.

    python bench/cores.py            # ~10 s
    python bench/builds.py --metric 'codec=codec roundtrip +([\\d.]+)' -- bench/cores.py

Operations: ``codec roundtrip`` (kcprpc.codec: encode a 64-byte unary frame, feed it to a
FrameDecoder); ``mux frame roundtrip`` (kcprpc.mux.frame: encode a 64-byte PSH frame, decode it);
``replay check+update`` (kcp.secure.replay, in-order packet numbers); ``packet peek_cid``
(kcp.secure.packet, what a secure listener does per datagram). Rounds alternate the operations; the
median of the rounds is reported.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import kcp
from kcp.secure.packet import peek_cid
from kcp.secure.replay import ReplayWindow
from kcprpc.codec import FrameDecoder, encode_frame
from kcprpc.mux.frame import SmuxFrameDecoder
from kcprpc.mux.frame import encode_frame as mux_encode


def codec_op(n: int) -> None:
    dec = FrameDecoder()
    body = {"m": "Greeter.hello", "b": b"x" * 64}
    for i in range(n):
        dec.feed(encode_frame(1, i, body))


def mux_op(n: int) -> None:
    dec = SmuxFrameDecoder(1)
    payload = b"y" * 64
    for i in range(n):
        dec.feed(mux_encode(1, 2, 3 + (i & 0xFFFF) * 2, payload))
        dec.next_frame()


def replay_op(n: int) -> None:
    w = ReplayWindow()
    for pn in range(n):
        if w.check(pn) == 0:
            w.update(pn)


def peek_op(n: int) -> None:
    dgram = bytes((0xC8,)) + bytes(range(40))  # a transport packet (T_TRANSPORT)
    for _ in range(n):
        peek_cid(dgram)


OPS: dict[str, tuple[Callable[[int], None], int]] = {
    "codec roundtrip": (codec_op, 40_000),
    "mux frame roundtrip": (mux_op, 40_000),
    "replay check+update": (replay_op, 200_000),
    "packet peek_cid": (peek_op, 400_000),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    times: dict[str, list[float]] = {name: [] for name in OPS}
    for _ in range(args.rounds):
        for name, (op, n) in OPS.items():
            t0 = time.perf_counter()
            op(n)
            times[name].append((time.perf_counter() - t0) / n * 1e6)
    print(f"kcp.compiled={kcp.compiled}; median of {args.rounds} rounds, µs per operation")
    for name, vals in times.items():
        print(f"  {name:22} {statistics.median(vals):8.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
