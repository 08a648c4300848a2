"""``@weakly_referenced`` and ``@subclassed``: mark a class that mypyc must compile as an ordinary
Python class (its methods compiled, its attributes reached the generic way) rather than as a
native one.

- ``@weakly_referenced``: other code holds weak references to its instances (:mod:`kcp.snmp`'s set
  of live sessions); the native class mypyc would otherwise build has no ``__weakref__`` slot.
- ``@subclassed``: interpreted code subclasses it ("interpreted classes cannot inherit from
  compiled" native classes).

Both return the class unchanged. They matter in the compiled build only: mypyc compiles a class
that carries a decorator it does not know as an ordinary Python class."""

from __future__ import annotations

from typing import TypeVar

__all__ = ["subclassed", "weakly_referenced"]

T = TypeVar("T")


def weakly_referenced(cls: T) -> T:
    """Return ``cls`` as it is (see the module docstring)."""
    return cls


def subclassed(cls: T) -> T:
    """Return ``cls`` as it is (see the module docstring)."""
    return cls
