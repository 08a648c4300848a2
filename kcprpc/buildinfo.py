"""Which build of kcprpc is running: the mypyc-compiled RPC cores or the pure-Python ones.

The kcprpc half of :mod:`kcp.buildinfo`: :data:`MODULES` lists the kcprpc modules a compiled build
compiles (setup.py reads this tuple); :func:`build_name` is what ``kcprpc --version`` prints.
"""

from __future__ import annotations

import kcp
from kcp.buildinfo import is_compiled

MODULES: tuple[str, ...] = (
    "kcprpc.mux.frame",
    "kcprpc.mux.counters",
    "kcprpc.mux.core",
    "kcprpc.codec",
    "kcprpc.msgpack_size",
    "kcprpc.protocol.frames",
    "kcprpc.protocol.client",
    "kcprpc.protocol.server",
    "kcprpc.frame_writer",
    "kcprpc.receive",
    "kcprpc.dispatch",
    "kcprpc.mux.session",
    "kcprpc.push",
    "kcprpc.subscriptions",
    "kcprpc.direct_events",
    "kcprpc.link",
    "kcprpc.net",
    "kcprpc.state.delta",
    "kcprpc.state.groups",
)
"""The kcprpc modules a compiled build compiles."""


def build_name() -> str:
    """``"compiled"`` when kcp's and kcprpc's cores are the compiled ones, ``"pure"`` when none is."""
    kcprpc_compiled = is_compiled(MODULES)
    if kcp.compiled and kcprpc_compiled:
        return "compiled"
    if not kcp.compiled and not kcprpc_compiled:
        return "pure"
    return "partly compiled"
