"""What numbered direct events cost: ``session.send`` of a small reliable event to one session,
numbered (the client takes numbered events: kept until acknowledged, acknowledged by the client)
against not numbered (an older client), in one process over an in-memory connection pair,
alternated. The figure is the CPU time per event of the whole path, server and client
(``time.process_time``): send, frame, deliver, decode, handle, and for the numbered one the
ring, the client's acknowledgements and the server's handling of them.

    python bench/direct_send.py [--events 20000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from pydantic import BaseModel

import kcprpc
from kcprpc.buildinfo import build_name
from kcprpc.testing import pair


@kcprpc.event("bench.Note")
class Note(BaseModel):
    n: int
    text: str


class Nothing(kcprpc.Service, name="bench.Nothing"):
    async def ping(self) -> int:
        return 0


async def one_round(numbered: bool, events: int) -> float:
    """CPU seconds per event, ``events`` sent in bursts of 100 (each burst waited for)."""
    async with pair([Nothing()]) as p:
        (sess,) = p.server.sessions
        sess.numbered = numbered
        got = 0
        done = asyncio.Event()

        def on_note(_: Note) -> None:
            nonlocal got
            got += 1
            if got % 100 == 0:
                done.set()

        p.client.on(Note, on_note)
        note = Note(n=0, text="hello, player")
        start = time.process_time()
        for _ in range(events // 100):
            done.clear()
            for _ in range(100):
                sess.send(note)
            await done.wait()
        used = time.process_time() - start
        if numbered:
            assert sess.direct is not None
        return used / events


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=20_000, help="events per round (default 20000)")
    ap.add_argument("--rounds", type=int, default=5, help="rounds of each, alternated (default 5)")
    args = ap.parse_args()
    print(
        f"# session.send of a small reliable event, in memory, {build_name()} build, {args.events} events/round"
    )
    plain: list[float] = []
    numbered: list[float] = []
    for r in range(args.rounds):
        order = (False, True) if r % 2 == 0 else (True, False)
        for numb in order:
            (numbered if numb else plain).append(await one_round(numb, args.events))
    p, n = statistics.median(plain), statistics.median(numbered)
    print(f"not numbered  {p * 1e6:7.2f} us/event (median of {args.rounds})")
    print(f"numbered      {n * 1e6:7.2f} us/event (median of {args.rounds})")
    print(f"numbered / not numbered: x{n / p:.3f}")


if __name__ == "__main__":
    asyncio.run(main())
