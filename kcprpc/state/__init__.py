"""Delta state sync of pydantic models, with per-client interest filters (docs/state.md).

Server::

    sync = StateSync(RoomState, name="game.state")
    states = StateService([sync])            # serve it: receives the clients' acks
    sync.add_client(session, interest=lambda s: Interest(keys={"players": near(s, me)}))
    sync.send(state)                          # each tick: a snapshot or a delta per client

Client::

    view = client_state(client, RoomState, "game.state")
    view.on_add("players", lambda key, player: ...)
    view.state                                # the typed state (a RoomState)

Wire format: docs/wire-format/state.md.
"""

from kcprpc.state.delta import BadDelta, Budget, apply, diff, full
from kcprpc.state.interest import ALL, Interest
from kcprpc.state.room import SyncSender
from kcprpc.state.schema import Quantized, Schema
from kcprpc.state.service import StateAck, StateService
from kcprpc.state.sync import DELTA, SNAPSHOT, STATE_COUNTERS, StateSync
from kcprpc.state.view import VIEW_COUNTERS, StateView, attach, client_state

__all__ = [
    "ALL",
    "DELTA",
    "SNAPSHOT",
    "STATE_COUNTERS",
    "VIEW_COUNTERS",
    "BadDelta",
    "Budget",
    "Interest",
    "Quantized",
    "Schema",
    "StateAck",
    "StateService",
    "StateSync",
    "StateView",
    "SyncSender",
    "apply",
    "attach",
    "client_state",
    "diff",
    "full",
]
