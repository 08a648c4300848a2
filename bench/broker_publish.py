"""MemoryBroker's cost per publish (CPU time, microseconds), the message kept in the history or
not, with one subscriber that encodes the frame as the server's fan-out does. Run it in two
checkouts to compare them (``PYTHONPATH=<checkout> python <checkout>/bench/broker_publish.py``).

    python bench/broker_publish.py [--rounds 5] [--n 50000]
"""

from __future__ import annotations

import argparse
import statistics
import time

from kcprpc import MemoryBroker


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--n", type=int, default=50_000, help="publishes per round and case")
    args = ap.parse_args()
    payload = {"text": "hello world", "user": "u123", "n": 5}
    got: dict[str, list[float]] = {"kept": [], "not kept": []}
    for r in range(args.rounds):
        for name in ("kept", "not kept") if r % 2 == 0 else ("not kept", "kept"):
            b = MemoryBroker(history=1024 if name == "kept" else 0)
            b.subscribe("topic:a", lambda m: m.frame())
            t = time.process_time()
            for _ in range(args.n):
                b.publish_nowait("topic:a", "chat", payload)
            got[name].append((time.process_time() - t) / args.n * 1e6)
    for name, v in got.items():
        print(f"{name:9s} {statistics.median(v):6.2f} us per publish (median of {args.rounds})")


if __name__ == "__main__":
    main()
