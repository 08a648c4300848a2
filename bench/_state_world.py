"""The world the state-sync benchmarks simulate: a room with N entities that wander on a 1000 x
1000 map, part of them moving each tick, now and then one hit (hp) and one replaced (removed and
a new one added). Seeded: the same seed gives the same ticks.

Not a benchmark: running it does nothing.
"""

from __future__ import annotations

import random
from typing import Annotated

from pydantic import BaseModel, Field

from kcprpc.state import Quantized

SIZE = 1000.0


class Entity(BaseModel):
    kind: str = "npc"
    team: int = 0
    x: float = 0.0
    y: float = 0.0
    angle: float = 0.0
    hp: int = 100


class RoomState(BaseModel):
    tick: int = 0
    phase: str = "play"
    entities: dict[int, Entity] = Field(default_factory=dict)


class QEntity(BaseModel):
    """Entity with its position and angle quantized (to 0.01 and 0.1)."""

    kind: str = "npc"
    team: int = 0
    x: Annotated[float, Quantized(0.01)] = 0.0
    y: Annotated[float, Quantized(0.01)] = 0.0
    angle: Annotated[float, Quantized(0.1)] = 0.0
    hp: int = 100


class QRoomState(BaseModel):
    tick: int = 0
    phase: str = "play"
    entities: dict[int, QEntity] = Field(default_factory=dict)


class World:
    """``step()`` advances the room by one tick."""

    def __init__(
        self, entities: int = 200, moving: float = 0.5, seed: int = 1, quantized: bool = False
    ) -> None:
        self.rng = random.Random(seed)
        r = self.rng
        self.moving = moving
        self.next_id = entities
        self.entity: type[Entity] | type[QEntity] = QEntity if quantized else Entity
        room = QRoomState if quantized else RoomState
        self.state = room(
            entities={
                i: self.entity(team=i % 2, x=round(r.uniform(0, SIZE), 2), y=round(r.uniform(0, SIZE), 2))
                for i in range(entities)
            }
        )

    def step(self) -> RoomState | QRoomState:
        r = self.rng
        s = self.state
        s.tick += 1
        for e in s.entities.values():
            if r.random() < self.moving:
                e.x = round(min(SIZE, max(0.0, e.x + r.uniform(-3, 3))), 2)
                e.y = round(min(SIZE, max(0.0, e.y + r.uniform(-3, 3))), 2)
                e.angle = round(r.uniform(0, 360), 1)
        if r.random() < 0.2:
            e = s.entities[r.choice(list(s.entities))]
            e.hp = max(0, e.hp - r.randint(1, 20))
        if r.random() < 0.05:
            del s.entities[r.choice(list(s.entities))]
            s.entities[self.next_id] = self.entity(x=r.uniform(0, SIZE), y=r.uniform(0, SIZE))  # type: ignore[assignment]
            self.next_id += 1
        return s
