"""The services whose documents are checked in under ``idl/`` (built-ins and examples).

``kcprpc idl export --all`` writes them; a test regenerates them and fails on any difference.
Each class declares its own events and topics (``class S(kcprpc.Service, events=..., topics=...)``).
The examples live in the checkout, not in the installed package: ``--all`` finds them in the current
directory or in the checkout kcprpc was installed from (``pip install -e``), and otherwise exports
the built-in services only, and says so.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

from kcprpc.errors import UsageError


def import_module(name: str) -> Any:
    """Import a user's module for a command; any failure is a one-line :class:`UsageError` that
    says how to see the traceback (a bug in that module is not the command's)."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise UsageError(
            f"cannot import {name!r}: {e} (run kcprpc where the module's package is, or add it to PYTHONPATH)"
        ) from None
    except Exception as e:
        raise UsageError(
            f"importing {name!r} failed: {type(e).__name__}: {e} "
            f"(`python -c 'import {name}'` shows the traceback)"
        ) from None


def import_attr(spec: str) -> Any:
    """Import ``module:attribute`` (dotted attribute paths allowed)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"{spec!r}: expected module:Attribute (e.g. examples.quickstart.service:Greeter)")
    obj: Any = import_module(module_name)
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UsageError(f"{module_name} has no attribute {attr!r}") from None
    return obj


TARGETS: dict[str, str] = {
    "kcprpc.Health": "kcprpc.health:HealthService",
    "kcprpc.Push": "kcprpc.push_service:PushService",
    "kcprpc.Reflection": "kcprpc.reflection:ReflectionService",
    "kcprpc.Rooms": "kcprpc.room_service:RoomService",
    "quickstart.Greeter": "examples.quickstart.service:Greeter",
    "game.v1.Game": "examples.game.service:GameService",
    "live.v1.Live": "examples.live.service:LiveService",
}
"""Document name -> the service class (``module:Class``). The file is ``idl/<name>.json``."""


def examples_importable() -> bool:
    """Whether the example services can be imported: from the current directory (a checkout) or
    from the checkout this kcprpc package lives in (an editable install run from elsewhere)."""
    try:
        importlib.import_module("examples.quickstart.service")
        return True
    except ImportError:
        pass
    checkout = Path(__file__).resolve().parents[2]
    if not (checkout / "examples" / "quickstart" / "service.py").is_file():
        return False
    sys.path.insert(0, str(checkout))
    for name in [m for m in sys.modules if m == "examples" or m.startswith("examples.")]:
        del sys.modules[name]  # a failed lookup may have left another `examples` behind
    try:
        importlib.import_module("examples.quickstart.service")
        return True
    except ImportError:
        return False


def render_all() -> dict[str, str]:
    """File name (``<service>.json``) -> canonical text, for every target, plus ``schema.json``.
    The examples' documents only when :func:`examples_importable` (the built-ins' always)."""
    from kcprpc.idl.export import export_service
    from kcprpc.idl.schema import dumps, format_schema

    out = {"schema.json": dumps(format_schema())}
    examples = examples_importable()
    for name, target in sorted(TARGETS.items()):
        if target.startswith("examples.") and not examples:
            continue
        out[f"{name}.json"] = dumps(export_service(import_attr(target)))
    return out
