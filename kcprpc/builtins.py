"""The built-in services every server carries unless told otherwise: health and stats
(``kcprpc.Health``), topic subscription (``kcprpc.Push``) and reflection (``kcprpc.Reflection``).

:class:`kcprpc.Server` does not import them: ``kcprpc/__init__`` sets
``Server.default_builtins = default_services``, and ``Server(..., builtins=[...])`` replaces them.
"""

from __future__ import annotations

from kcprpc.health import HealthService
from kcprpc.push_service import PushService
from kcprpc.reflection import ReflectionService

__all__ = ["default_services"]


def default_services(reflection: bool = True) -> list[object]:
    """New instances of the built-in services (one set per server), reflection unless ``reflection``
    is False."""
    services: list[object] = [HealthService(), PushService()]
    if reflection:
        services.append(ReflectionService())
    return services
