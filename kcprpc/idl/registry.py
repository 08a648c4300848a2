"""The services whose documents are checked in under ``idl/`` (built-ins and examples).

``kcprpc idl export --all`` writes them; a test regenerates them and fails on any difference.
Each class declares its own events and topics (``class S(kcprpc.Service, events=..., topics=...)``).
"""

from __future__ import annotations

import importlib
from typing import Any

from kcprpc.errors import UsageError


def import_attr(spec: str) -> Any:
    """Import ``module:attribute`` (dotted attribute paths allowed)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"{spec!r}: expected module:Attribute")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise UsageError(f"cannot import {module_name!r}: {e}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UsageError(f"{module_name} has no attribute {attr!r}") from None
    return obj


TARGETS: dict[str, str] = {
    "kcprpc.Health": "kcprpc.health:HealthService",
    "kcprpc.Push": "kcprpc.health:PushService",
    "kcprpc.Reflection": "kcprpc.reflection:ReflectionService",
    "quickstart.Greeter": "examples.quickstart.service:Greeter",
    "game.v1.Game": "examples.game.service:GameService",
    "live.v1.Live": "examples.live.service:LiveService",
}
"""Document name -> the service class (``module:Class``). The file is ``idl/<name>.json``."""


def render_all() -> dict[str, str]:
    """File name (``<service>.json``) -> canonical text, for every target, plus ``schema.json``."""
    from kcprpc.idl.export import export_service
    from kcprpc.idl.schema import dumps, format_schema

    out = {"schema.json": dumps(format_schema())}
    for name, target in sorted(TARGETS.items()):
        out[f"{name}.json"] = dumps(export_service(import_attr(target)))
    return out
