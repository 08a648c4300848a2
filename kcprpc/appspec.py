"""``module:attribute``: how ``kcprpc serve`` and :func:`kcprpc.serve_workers` name an app."""

from __future__ import annotations

from typing import Any

from kcprpc.errors import UsageError
from kcprpc.idl.registry import import_module

__all__ = ["load_app"]


def load_app(spec: str) -> Any:
    """Import ``module:attribute`` (attribute defaults to ``app``)."""
    module_name, _, attr = spec.partition(":")
    if not module_name:
        raise UsageError(f"{spec!r}: expected module:app, e.g. examples.quickstart.service:app")
    module = import_module(module_name)
    try:
        return getattr(module, attr or "app")
    except AttributeError:
        raise UsageError(f"{module_name} has no attribute {attr or 'app'!r}") from None
