"""The shared parts of ``bench/abuse.py``: the target server and the attack interface.

Not a benchmark: running it does nothing. ``bench/abuse.py`` starts a fresh target server
(``python -m bench._abuse_server``) for every attack, runs the attack and a legitimate client side
by side on 127.0.0.1, and prints the server's RSS, CPU, counters and the legitimate client's p99.

An attack is an :class:`Attack`: ``run(target, seconds)`` attacks ``target`` for about
``seconds`` (bounded: every loop in it stops at the deadline) and returns its own counters
(datagrams sent, calls made, ...). Attack modules are ``bench/_abuse_*.py``; each exports
``ATTACKS: list[Attack]``.

The target serves :class:`AbuseService` (``abuse.Target``) beside the built-in services, with the
default :class:`kcprpc.ServerConfig` (the defaults are what is judged):

- ``echo(EchoMsg) -> EchoMsg``: the legitimate client's call;
- ``join(RoomRequest)``: joins a room, refusing names that start with ``private`` with
  PERMISSION_DENIED (the service's own join logic);
- ``blob(BlobRequest) -> AsyncIterator[Blob]``: a server stream of ``count`` messages of ``size`` bytes;
- a background publisher: every 10 ms an :class:`News` event of 512 bytes on topic ``abuse.news``
  and on room ``abuse.lobby``, and on ``private.room`` / topic ``secret.news`` (which a client must
  not receive: joining ``private.room`` is refused, and a server interceptor refuses subscriptions
  to topics that start with ``secret``).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pydantic import BaseModel, Field  # noqa: E402

import kcprpc  # noqa: E402

KEY = "abuse bench passphrase"
"""The passphrase every client (legitimate or not) holds: the threat model's 'every player has the key'."""

COMPAT_CRYPT = "aes"
"""The kcp-go cipher of the compat-mode target."""

PUBLIC_ROOM = "abuse.lobby"
PRIVATE_ROOM = "private.room"
PUBLIC_TOPIC = "abuse.news"
SECRET_TOPIC = "secret.news"
PRESENCE_TOPIC = "presence.chat"  # with --presence: keeps presence and has Joined / Left
PRESENCE = kcprpc.PresenceConfig(keys=["topic:presence.*"], events=[f"topic:{PRESENCE_TOPIC}"])


@dataclass(frozen=True)
class Target:
    """Where the target server listens and how to reach it (every client holds ``key``)."""

    host: str
    port: int
    mode: str  # "secure" or "compat"
    key: str = KEY
    crypt: str | None = None  # compat mode: the kcp-go cipher name
    fec: tuple[int, int] | None = None
    pid: int = 0  # the server process (for attacks that watch it)

    def transport(self) -> kcprpc.Transport:
        """The :class:`kcprpc.Transport` a client of this target dials with."""
        return target_transport(self.mode, self.key, self.crypt, self.fec)

    def attacker_transport(self) -> kcprpc.Transport:
        """The same, dialling from :data:`ATTACKER_HOST` (an address of the attacker's own, which
        the server's limits per address then apply to)."""
        return dataclasses.replace(self.transport(), io=kcprpc.IOOptions(local_address=(ATTACKER_HOST, 0)))


def target_transport(
    mode: str, key: str, crypt: str | None, fec: tuple[int, int] | None, datagram_rate: float | None = None
) -> kcprpc.Transport:
    """The target's transport (server and clients): secure with ``key`` as the passphrase, or
    compat with the kcp-go cipher ``crypt``; FEC ``fec`` (None: off); ``datagram_rate``: secure
    mode's ``SecureConfig.datagram_rate`` (None: the default)."""
    if mode == "compat":
        return kcprpc.Transport(kcprpc.CompatWire(crypt=crypt, key=key, fec=fec or (0, 0)))
    from kcp.secure import SecureConfig

    # the legitimate client and most attacks run on 127.0.0.1; an attack that floods handshakes
    # sends from ATTACKER_HOST, which the server's handshake budget then limits
    config = SecureConfig(exempt=("127.0.0.1/32", "::1/128"))
    if datagram_rate is not None:
        config = dataclasses.replace(config, datagram_rate=datagram_rate)
    return kcprpc.Transport(kcprpc.SecureWire(key=key, fec=fec or (0, 0), config=config))


ATTACKER_HOST = "127.0.0.2"
"""A second loopback address (Linux routes all of 127/8 to lo) for attacks that must not share
127.0.0.1 with the legitimate client: the server limits handshakes per address."""

AttackRun = Callable[[Target, float], Awaitable[dict[str, int]]]


@dataclass(frozen=True)
class Attack:
    """One attack of the threat table (docs/security.md)."""

    name: str  # short, unique, used on the command line: "restore-flood"
    item: int  # the item of the hostile-clients issue it exercises
    mode: str  # the target's wire mode: "secure" or "compat"
    run: AttackRun
    description: str
    fec: tuple[int, int] | None = None  # the target's FEC setting
    server_args: tuple[str, ...] = field(default=())  # extra arguments of bench._abuse_server
    settle: float = 0.0  # at least this long to wait for the release (sessions kept for a resume)


STATE_NAME = "abuse.state"  # the target's state sync with --state (bench/_abuse_state.py)


class StateUnit(BaseModel):
    x: float = 0.0
    y: float = 0.0
    hp: int = 100


class StateWorld(BaseModel):
    tick: int = 0
    units: dict[int, StateUnit] = Field(default_factory=dict)


class EchoMsg(BaseModel):
    data: bytes = b""


class RoomRequest(BaseModel):
    room: str = Field(min_length=1, max_length=128)


class BlobRequest(BaseModel):
    count: int = Field(ge=1, le=1_000_000)
    size: int = Field(ge=0, le=65536)


class Blob(BaseModel):
    data: bytes


@kcprpc.event("abuse.News")
class News(BaseModel):
    text: str


class AbuseService(kcprpc.Service, name="abuse.Target", events=[News]):
    """The target's service (see the module docstring)."""

    async def echo(self, req: EchoMsg) -> EchoMsg:
        return req

    async def join(self, req: RoomRequest) -> None:
        if req.room.startswith("private"):
            raise kcprpc.RpcError(kcprpc.Status.PERMISSION_DENIED, "not your room")
        kcprpc.current_context().session.join(req.room)

    async def blob(self, req: BlobRequest) -> Any:
        chunk = os.urandom(req.size)
        for _ in range(req.count):
            yield Blob(data=chunk)


async def refuse_secret_topics(ctx: Any, call_next: Callable[[], Awaitable[Any]]) -> Any:
    """Server interceptor: no subscriptions to topics that start with ``secret``."""
    if ctx.method == "kcprpc.Push/Subscribe":
        req = ctx.request if hasattr(ctx, "request") else None
        topic = getattr(req, "topic", None)
        if isinstance(topic, str) and topic.startswith("secret"):
            raise kcprpc.RpcError(kcprpc.Status.PERMISSION_DENIED, "secret topic")
    return await call_next()
