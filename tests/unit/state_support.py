"""Models and helpers shared by the state-sync tests (kcprpc.state)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from kcprpc import codec
from kcprpc.state import StateSync, StateView


class Pos(BaseModel):
    x: float = 0.0
    y: float = 0.0


class Item(BaseModel):
    name: str = ""
    qty: int = 0


class Player(BaseModel):
    name: str = ""
    team: int = 0
    hp: int = 100
    pos: Pos = Field(default_factory=Pos)
    items: list[Item] = Field(default_factory=list)
    tags: dict[str, int] = Field(default_factory=dict)


class Settings(BaseModel):
    mode: str = "ffa"
    flags: dict[str, str] = Field(default_factory=dict)


class Room(BaseModel):
    phase: str = "lobby"
    round: int = 0
    leader: Pos | None = None
    settings: Settings = Field(default_factory=Settings)
    players: dict[int, Player] = Field(default_factory=dict)
    npcs: list[Player] = Field(default_factory=list)
    scores: list[int] = Field(default_factory=list)


class Unit(BaseModel):
    """A flat entity (every field a plain value): the parts and auto-groups tests' world."""

    kind: str = "npc"
    x: float = 0.0
    y: float = 0.0
    hp: int = 100


class World(BaseModel):
    tick: int = 0
    phase: str = "play"
    units: dict[int, Unit] = Field(default_factory=dict)
    names: dict[str, int] = Field(default_factory=dict)


def wire(sync: StateSync[Any], msg: list[Any]) -> Any:
    """A message through its EVENT frame's bytes and back (what a client decodes)."""
    frame = sync.frame(msg)
    body = codec.unpack(frame[codec.HEADER_SIZE :])
    assert body[0] == sync.name
    return body[1]


def step(sync: StateSync[Any], views: dict[Any, StateView[Any]], state: Any) -> None:
    """One lossless tick: every client's message is applied and acknowledged."""
    for c, msg in sync.tick(state):
        seq = views[c].receive(wire(sync, msg))
        assert seq == sync.seq
        assert sync.ack(c, seq)
