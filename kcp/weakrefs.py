"""``@weakly_referenced``: marks a class whose instances other code holds weak references to
(:mod:`kcp.snmp`'s set of live sessions).

It returns the class unchanged. It matters in the compiled build only: mypyc compiles a class
that carries a decorator it does not know as an ordinary Python class (its methods compiled),
which keeps ``__weakref__``; the native class it would otherwise build has no such slot."""

from __future__ import annotations

from typing import TypeVar

__all__ = ["weakly_referenced"]

T = TypeVar("T")


def weakly_referenced(cls: T) -> T:
    """Return ``cls`` as it is (see the module docstring)."""
    return cls
