"""The services whose documents are checked in under ``idl/`` (built-ins and examples).

``kcprpc idl export --all`` writes them; a test regenerates them and fails on any difference.
Event and topic declarations given here are merged with the class's own ``__rpc_events__`` /
``__rpc_topics__`` (the examples predate those attributes).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from kcprpc.errors import UsageError


@dataclass(frozen=True)
class Target:
    """One service class to export, by ``module:attribute``, with extra event/topic declarations."""

    cls: str
    events: tuple[str, ...] = ()
    topics: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def load(self) -> tuple[type, list[Any], dict[str, list[Any]]]:
        """Import the class and the declared event types."""
        return (
            import_attr(self.cls),
            [import_attr(e) for e in self.events],
            {t: [import_attr(e) for e in evs] for t, evs in self.topics.items()},
        )


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


_LIVE = "examples.live.service:"

TARGETS: dict[str, Target] = {
    "kcprpc.Health": Target("kcprpc.health:HealthService"),
    "kcprpc.Push": Target("kcprpc.health:PushService", events=("kcprpc.push:ResumeFailed",)),
    "kcprpc.Reflection": Target("kcprpc.reflection:ReflectionService"),
    "quickstart.Greeter": Target("examples.quickstart.service:Greeter"),
    "game.v1.Game": Target(
        "examples.game.service:GameService", events=("examples.game.service:WorldSnapshot",)
    ),
    "live.v1.Live": Target(
        _LIVE + "LiveService",
        topics={"channel:{channel}": (_LIVE + "Chat", _LIVE + "Gift", _LIVE + "Score")},
    ),
}
"""Document name -> what to export. The file is ``idl/<name>.json``."""


def export_known(cls: type) -> dict[str, Any]:
    """Export ``cls``, adding the registry's declarations when ``cls`` is one of :data:`TARGETS`."""
    from kcprpc.idl.export import export_service
    from kcprpc.service import service_spec

    target = TARGETS.get(service_spec(cls).name)
    if target is not None and target.cls == f"{cls.__module__}:{cls.__qualname__}":
        _, events, topics = target.load()
        return export_service(cls, events=events, topics=topics)
    return export_service(cls)


def render_all() -> dict[str, str]:
    """File name (``<service>.json``) -> canonical text, for every target, plus ``schema.json``."""
    from kcprpc.idl.schema import dumps, format_schema

    out = {"schema.json": dumps(format_schema())}
    for name, target in sorted(TARGETS.items()):
        cls, events, topics = target.load()
        from kcprpc.idl.export import export_service

        out[f"{name}.json"] = dumps(export_service(cls, events=events, topics=topics))
    return out
