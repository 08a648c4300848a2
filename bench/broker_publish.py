"""MemoryBroker's cost per publish (CPU time, microseconds), the message kept in the history or
not, with one subscriber that encodes the frame as the server's fan-out does. Run it in two
checkouts to compare them (``PYTHONPATH=<checkout> python <checkout>/bench/broker_publish.py``).

With ``--redis URL``: RedisBroker's publish instead, one awaited at a time (wall time per publish)
and the script's own time in Redis (``INFO commandstats``, evalsha's usec_per_call), on one key
(kept or not) and on a new key each publish (``new keys``: a room per match, with
``max_idle_keys=1000`` where the broker has it, so that past 1,000 each publish forgets one).

    python bench/broker_publish.py [--rounds 5] [--n 50000] [--redis redis://127.0.0.1:6379/15]
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import statistics
import time
from typing import Any

from kcprpc import MemoryBroker


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--n", type=int, default=50_000, help="publishes per round and case")
    ap.add_argument("--redis", help="measure RedisBroker on this database (flushed first!)")
    args = ap.parse_args()
    if args.redis:
        asyncio.run(redis_main(args.redis, args.rounds, args.n))
        return
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


async def redis_main(url: str, rounds: int, n: int) -> None:
    import redis.asyncio as aioredis

    from kcprpc.redis_broker import RedisBroker

    payload = {"text": "hello world", "user": "u123", "n": 5}
    r = aioredis.Redis.from_url(url)
    cases = ("kept", "not kept", "new keys")
    wall: dict[str, list[float]] = {c: [] for c in cases}
    lua: dict[str, list[float]] = {c: [] for c in cases}
    has_idle = "max_idle_keys" in inspect.signature(RedisBroker).parameters
    for i in range(rounds):
        for c in cases if i % 2 == 0 else cases[::-1]:
            await r.flushdb()
            kw: dict[str, Any] = {"history": 0 if c == "not kept" else 1024}
            if c == "new keys":
                kw["history"] = 4
                kw["max_history_bytes"] = 64 * 1024
                if has_idle:
                    kw["max_idle_keys"] = 1000
            b = RedisBroker(url, prefix="bench", **kw)
            await b.start()
            for j in range(2000):  # warm up: past the bounds of "new keys"
                await b.publish(f"room:w{j}" if c == "new keys" else "topic:a", "chat", payload)
            await r.config_resetstat()
            t = time.perf_counter()
            for j in range(n):
                await b.publish(f"room:m{j}" if c == "new keys" else "topic:a", "chat", payload)
            wall[c].append((time.perf_counter() - t) / n * 1e6)
            st = (await r.info("commandstats"))["cmdstat_evalsha"]
            lua[c].append(float(st["usec_per_call"]))
            await b.close()
    await r.flushdb()
    await r.aclose()
    for c in cases:
        print(
            f"{c:9s} {statistics.median(wall[c]):7.1f} us per publish, "
            f"{statistics.median(lua[c]):5.1f} us in Redis (median of {rounds})"
        )


if __name__ == "__main__":
    main()
