"""kcp.weakrefs: the classes other code holds weak references to stay weakly referenceable in the
compiled build too (mypyc's native classes have no ``__weakref__`` slot)."""

from __future__ import annotations

from kcp.session import KCPSession
from kcp.weakrefs import weakly_referenced


def test_the_decorator_returns_the_class_itself() -> None:
    class Plain:
        pass

    assert weakly_referenced(Plain) is Plain


def test_sessions_can_be_weakly_referenced() -> None:
    # kcp.snmp keeps live sessions in a WeakSet; a native (compiled) KCPSession would have no
    # weak-reference slot, and adding one to that set would raise TypeError
    assert KCPSession.__weakrefoffset__ > 0
