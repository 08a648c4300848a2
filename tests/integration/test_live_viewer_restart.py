"""examples/live/viewer.py: a viewer process killed mid-stream (SIGKILL) and started again with
its log resumes with ``subscribe(topic, since=saved)``: every message is seen exactly once, in
order, including those published while it was down."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import kcprpc
from examples.live.service import KEY, Chat, LiveService, make_server

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 20.0


async def start_viewer(port: int, log: Path) -> tuple[asyncio.subprocess.Process, dict[str, Any]]:
    """Run the viewer; returns it once it has subscribed, with what it printed then."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "examples.live.viewer", f"127.0.0.1:{port}", "--log", str(log),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), TIMEOUT)
    return proc, json.loads(line)


def chats(log: Path) -> list[dict[str, Any]]:
    lines = log.read_bytes().split(b"\n")[:-1]  # whole lines only
    return [e for e in map(json.loads, lines) if e["kind"] == "chat"]


async def wait_for_chats(log: Path, n: int) -> None:
    for _ in range(int(TIMEOUT / 0.01)):
        if len(chats(log)) >= n:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the viewer logged {len(chats(log))} chats, not {n}")


async def test_a_killed_viewer_resumes_with_nothing_missed(tmp_path: Path) -> None:
    server = make_server("127.0.0.1", 0)
    _, port = await server.start()
    log = tmp_path / "viewer.jsonl"
    procs: list[asyncio.subprocess.Process] = []
    try:
        viewer, first = await start_viewer(port, log)
        procs.append(viewer)
        assert first["since"] is None and first["recovered"] is None
        async with kcprpc.connect("127.0.0.1", port, key=KEY) as pub:
            live = pub.stub(LiveService, metadata={"token": "publisher-secret"}, timeout=5.0)
            killed, restarted = asyncio.Event(), asyncio.Event()

            async def stream() -> int:  # the publisher goes on throughout; returns how many it sent
                n = 0

                async def chat() -> None:
                    nonlocal n
                    await live.chat(Chat(channel="main", user="host", text=str(n)))
                    n += 1

                while not killed.is_set():  # the viewer is killed in the middle of this
                    await chat()
                    await asyncio.sleep(0.002)
                for _ in range(20):  # while no viewer runs
                    await chat()
                await restarted.wait()
                for _ in range(20):  # live again
                    await chat()
                return n

            publisher = asyncio.ensure_future(stream())
            await wait_for_chats(log, 10)
            viewer.kill()  # mid-stream, without a chance to save anything more
            await viewer.wait()
            killed.set()
            viewer, again = await start_viewer(port, log)
            procs.append(viewer)
            restarted.set()
            assert again["since"] is not None and again["recovered"] is True and again["missed"] == 0
            assert again["replayed"] >= 20
            total = await asyncio.wait_for(publisher, TIMEOUT)
            await wait_for_chats(log, total)
        seen = chats(log)
        assert [e["text"] for e in seen] == [str(i) for i in range(total)]  # each once, in order
        assert [e["offset"] for e in seen] == list(range(1, total + 1))
        assert any(e["replayed"] for e in seen) and not seen[-1]["replayed"]
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
        await server.shutdown(grace=0)
