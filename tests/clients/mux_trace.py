"""A seeded script of smux operations run through two ``kcprpc.mux.core.MuxCore`` endpoints (a
dialling and an accepting one), printed as JSON for the TypeScript port's differential test.

``python tests/clients/mux_trace.py SEED VERSION STEPS`` prints ``{"config", "ops"}``: each op
with what the Python core gave back (the bytes of ``data_to_send`` and of ``read`` as length and
SHA-256, the events, errors by class name), and the counters and stream states at the end. The
TypeScript test replays the ops through its own cores and compares every output.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from typing import Any

from kcprpc.mux.core import (
    ConnectionTerminated,
    DataReceived,
    MuxConfig,
    MuxCore,
    StreamEnded,
    StreamOpened,
    StreamRecord,
    StreamReleased,
    WindowUpdated,
)

_EVENT_NAMES = {
    StreamOpened: "opened",
    DataReceived: "data",
    StreamEnded: "ended",
    WindowUpdated: "window",
    StreamReleased: "released",
    ConnectionTerminated: "terminated",
}


def digest(b: bytes) -> list[Any]:
    return [len(b), hashlib.sha256(b).hexdigest()[:16]]


def payload(seed: int, n: int) -> bytes:
    """Deterministic bytes both sides can make: byte i is (seed + i * 31) mod 251."""
    return bytes((seed + i * 31) % 251 for i in range(n))


def main() -> None:
    seed, version, steps = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(seed)
    frame = rng.choice([100, 1000, 32768])
    bucket = rng.choice([4096, 20000, 4 * 1024 * 1024])
    max_streams = rng.choice([3, 16])
    cfg = MuxConfig(
        version=version,
        keepalive_interval=1.0,
        keepalive_timeout=8.0,
        max_frame_size=frame,
        max_receive_buffer=bucket,
        max_stream_buffer=2048,
        max_streams=max_streams,
        stream_send_buffer=65536,
    )
    cfg_json = {
        "version": version,
        "keepaliveInterval": 1.0,
        "keepaliveTimeout": 8.0,
        "maxFrameSize": frame,
        "maxReceiveBuffer": bucket,
        "maxStreamBuffer": 2048,
        "maxStreams": max_streams,
        "streamSendBuffer": 65536,
    }
    now = 0
    cores = [MuxCore(cfg, client=True, now=now), MuxCore(cfg, client=False, now=now)]
    streams: list[dict[int, StreamRecord]] = [{}, {}]
    ops: list[dict[str, Any]] = []

    def events(side: int) -> list[Any]:
        out = []
        for ev in cores[side].events():
            name = _EVENT_NAMES[type(ev)]
            if isinstance(ev, StreamOpened):
                st = cores[side].get_stream(ev.stream_id)
                assert st is not None
                streams[side][ev.stream_id] = st
            out.append([name, getattr(ev, "stream_id", 0)])
        return out

    for step in range(steps):
        side = rng.randrange(2)
        core = cores[side]
        r = rng.random()
        op: dict[str, Any] = {"side": side}
        try:
            if r < 0.08:
                op["op"] = "open"
                st = core.open_stream()
                streams[side][st.stream_id] = st
                op["sid"] = st.stream_id
            elif r < 0.35 and streams[side]:
                sid = rng.choice(sorted(streams[side]))
                n = rng.choice([1, 10, 500, 3000, 9000])
                op.update(op="send", sid=sid, n=n, seed=rng.randrange(251))
                core.send(streams[side][sid], payload(op["seed"], n))
            elif r < 0.6:
                op.update(op="pump", max=rng.choice([64, 4096, 1 << 20]))
                out = core.data_to_send(op["max"])
                op["out"] = digest(out)
                cores[1 - side].receive_data(out, now)
                op["peer_events"] = events(1 - side)
            elif r < 0.8 and streams[side]:
                sid = rng.choice(sorted(streams[side]))
                n = rng.choice([-1, 1, 100, 5000])
                op.update(op="read", sid=sid, n=n)
                op["got"] = digest(core.read(streams[side][sid], n))
            elif r < 0.87 and streams[side]:
                sid = rng.choice(sorted(streams[side]))
                op.update(op="close", sid=sid)
                core.close_stream(streams[side][sid])
            elif r < 0.9 and streams[side]:
                sid = rng.choice(sorted(streams[side]))
                op.update(op="abort", sid=sid)
                core.abort_stream(streams[side][sid])
            elif r < 0.93:
                # near the end, long silences: keepalive timeouts and the dead session's errors
                now += rng.choice([100, 1000, 2500] if step < steps * 0.85 else [5000, 9000])
                op.update(op="timer", now=now)
                core.handle_timer(now)
            else:
                op.update(op="pump", max=1 << 20)
                out = core.data_to_send(op["max"])
                op["out"] = digest(out)
                cores[1 - side].receive_data(out, now)
                op["peer_events"] = events(1 - side)
        except Exception as e:  # the TS port must raise at the same places
            op["error"] = type(e).__name__
        op["events"] = events(side)
        ops.append(op)
    final = [
        {
            "counters": cores[i].counters.snapshot(),
            "states": {str(sid): int(st.state) for sid, st in sorted(streams[i].items())},
            "closed": cores[i].closed,
        }
        for i in range(2)
    ]
    print(json.dumps({"config": cfg_json, "ops": ops, "final": final}))


if __name__ == "__main__":
    main()
