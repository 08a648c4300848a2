"""Which build of kcp is running: the mypyc-compiled protocol cores or the pure-Python ones.

``pip install .`` (a wheel) compiles the modules in :data:`MODULES` with mypyc when mypyc and a C
compiler are available (setup.py); an editable install (``pip install -e .``) and
``KCPRPC_PURE_BUILD=1`` stay pure Python. :data:`kcp.compiled` is :func:`is_compiled`'s answer.
"""

from __future__ import annotations

import sys
from importlib.machinery import EXTENSION_SUFFIXES
from importlib.util import find_spec

MODULES: tuple[str, ...] = (
    "kcp.engine",
    "kcp.pipeline",
    "kcp.fec",
    "kcp.rs",
    "kcp.secure.packet",
    "kcp.secure.replay",
    "kcp.session",
    "kcp.session_timing",
    "kcp.session_cc",
    "kcp.secure_path",
    "kcp.endpoint",
    "kcp.batch",
    "kcp.timers",
    "kcp.demux.address",
    "kcp.token_bucket",
    "kcp.datagram_budget",
    "kcp.demux.secure",
    "kcp.secure.connection",
    "kcp.secure.keys",
    "kcp.pmtud",
    "kcp.stats",
    "kcp.secure.stats",
)
"""The kcp modules a compiled build compiles (setup.py reads this tuple)."""


def _origin(name: str) -> str:
    module = sys.modules.get(name)
    if module is not None:
        return getattr(module, "__file__", None) or ""
    spec = find_spec(name)
    return (spec.origin or "") if spec is not None else ""


def compiled_modules(names: tuple[str, ...]) -> list[str]:
    """Return which of ``names`` are (or, not yet imported, would be) loaded from extension modules."""
    return [n for n in names if _origin(n).endswith(tuple(EXTENSION_SUFFIXES))]


def is_compiled(names: tuple[str, ...] = MODULES) -> bool:
    """True when every module of ``names`` is the compiled one."""
    return len(compiled_modules(names)) == len(names)
