"""Push fan-out cost on the server side, in memory: one publisher, N sessions over the in-memory smux pipe.

Each subscriber is a bare mux client (no RPC client): it sends HELLO and a ``Subscribe`` call on its
control stream, then only counts the bytes that arrive, so the time measured is mostly the
server's: the broker fan-out, the FrameWriter flush once per session per tick, the mux framing (and
the send bounds' check after each write). One message is published per loop tick, the worst case
for the per-flush work. Prints deliveries per second per round; compare two trees in one run with
alternating rounds, e.g.::

    for i in 1 2 3; do for t in OLD NEW; do PYTHONPATH=$t python bench/push_mem.py --label $t; done; done
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # appended: a PYTHONPATH given on the command line wins

from pydantic import BaseModel  # noqa: E402

import kcprpc  # noqa: E402
from kcprpc import codec  # noqa: E402
from kcprpc.memory import mux_memory_pair  # noqa: E402


@kcprpc.event("bench.Tick")
class Tick(BaseModel):
    n: int
    pad: bytes


class Tally:
    """Bytes received by all subscribers; ``done`` is set once ``target`` is reached."""

    def __init__(self) -> None:
        self.total = 0
        self.target = 1 << 62
        self.done = asyncio.Event()

    def add(self, n: int) -> None:
        self.total += n
        if self.total >= self.target:
            self.done.set()


TASKS: set[asyncio.Future[None]] = set()


async def subscriber(server: kcprpc.Server, topic: str, tally: Tally, ready: asyncio.Event) -> None:
    c, s = mux_memory_pair()
    TASKS.add(asyncio.ensure_future(server.handle_connection(s)))
    st = await c.open_stream()
    st.write(codec.encode_frame(codec.HELLO, 0, {"v": codec.PROTOCOL_VERSION, "md": {}}))
    st.write(
        codec.encode_frame(
            codec.CALL, 1, ["kcprpc.Push/Subscribe", None, None, codec.FLAG_END, {"topic": topic}]
        )
    )
    got_reply = False
    dec = codec.FrameDecoder()
    while True:
        data = await st.read(1 << 20)
        if not data:
            return
        if not got_reply:
            for ftype, _cid, _body in dec.feed(data):
                if ftype == codec.REPLY:
                    got_reply = True
                    ready.set()
            continue
        tally.add(len(data))


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sessions", type=int, default=1000)
    ap.add_argument("--messages", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--label", default="")
    args = ap.parse_args()
    # the bare subscribers send no PINGs: a long heartbeat timeout keeps the sweep off them
    hb = kcprpc.HeartbeatConfig(interval=1.0, timeout=3600.0)
    server = kcprpc.Server([], reflection=False, config=kcprpc.ServerConfig(heartbeat=hb))
    tally = Tally()
    for _ in range(args.sessions):
        ready = asyncio.Event()
        TASKS.add(asyncio.ensure_future(subscriber(server, "t", tally, ready)))
        await asyncio.wait_for(ready.wait(), 10)
    gc.collect()
    gc.freeze()  # the sessions' objects: the collector's passes then cost the same for every round
    body = codec.pack(["bench.Tick", {"n": 0, "pad": b"p" * 32}, "topic:t", 1, 1])
    frame_len = len(codec.encode_frame_raw(codec.EVENT, 0, body))
    rates = []
    for _ in range(args.rounds):
        want = args.messages * (frame_len - 2) * args.sessions  # sequence numbers grow: a little slack
        tally.done.clear()
        tally.target = tally.total + want
        t0 = time.process_time()  # CPU time: steadier than wall time on a shared machine
        for n in range(args.messages):
            await server.push.publish("t", Tick(n=n, pad=b"p" * 32))
            await asyncio.sleep(0)
        await asyncio.wait_for(tally.done.wait(), 600)
        dt = time.process_time() - t0
        rates.append(args.sessions * args.messages / dt)
    print(
        f"{args.label} deliveries/s median {statistics.median(rates):,.0f} "
        f"(rounds: {', '.join(f'{r:,.0f}' for r in rates)})",
        flush=True,
    )


if __name__ == "__main__":
    import kcp

    kcp.run(main())
