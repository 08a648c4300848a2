"""What the kcprpc.state pair tests share (test_state_sync_pair.py, test_state_parts_pair.py):
the state model and a bounded wait."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel, Field


class Unit(BaseModel):
    x: float = 0.0
    y: float = 0.0
    hp: int = 100


class Arena(BaseModel):
    tick: int = 0
    units: dict[int, Unit] = Field(default_factory=dict)


async def until(cond: Any, timeout: float = 10.0) -> None:
    """Wait until ``cond()`` holds, at most ``timeout`` seconds."""

    async def wait() -> None:
        while not cond():
            await asyncio.sleep(0.002)

    await asyncio.wait_for(wait(), timeout)
