"""What a ``kcprpc.Push/History`` page costs the server to encode, per megabyte answered: the
page built as the model (each message a ``HistoryMessage``, dumped by pydantic, packed again) or
from the messages' own EVENT frames, as the server does (``kcprpc.push_service.history_entry``).
The two alternate in each round; CPU time of this process, medians over the rounds.

    python bench/history_page.py [--rounds 5] [--entities 40]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from pydantic import TypeAdapter

from kcprpc.broker import MemoryBroker, Position
from kcprpc.codec import pack
from kcprpc.push_service import HistoryMessage, HistoryPage, history_entry


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--entities", type=int, default=40, help="entities in each message's state")
    args = ap.parse_args()
    state = {
        "entities": [
            {"id": i, "x": i * 1.5, "y": i * 2.5, "hp": 100, "name": f"e{i}"} for i in range(args.entities)
        ]
    }
    size = len(pack(state))
    n = max(1, (1 << 20) // size)  # a megabyte of messages
    broker = MemoryBroker()
    msgs = [broker.publish_nowait("room:arena", "game.State", state) for _ in range(n)]
    page = TypeAdapter(HistoryPage)

    def model() -> bytes:
        out = [HistoryMessage(name=m.event, payload=m.payload, position=m.position) for m in msgs]
        return pack(page.dump_python(HistoryPage(messages=out, position=Position(1, n))))

    def frames() -> bytes:
        return b"".join(history_entry(m) for m in msgs)

    got: dict[str, list[float]] = {"model": [], "frames": []}
    runs: list[tuple[str, Callable[[], bytes]]] = [("model", model), ("frames", frames)]
    for r in range(args.rounds):
        for name, f in runs if r % 2 == 0 else runs[::-1]:
            t = time.process_time()
            f()
            got[name].append((time.process_time() - t) * 1e3)
    m, f = statistics.median(got["model"]), statistics.median(got["frames"])
    print(f"{n} messages of {size} B ({n * size / 1e6:.2f} MB), {args.rounds} rounds alternated")
    print(f"model  {m:7.1f} ms CPU per page")
    print(f"frames {f:7.1f} ms CPU per page: {f / m:.3f}x the model's")


if __name__ == "__main__":
    main()
