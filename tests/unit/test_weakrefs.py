"""kcp.weakrefs: the classes other code holds weak references to stay weakly referenceable in the
compiled build too (mypyc's native classes have no ``__weakref__`` slot); mypyc_attr without mypy."""

from __future__ import annotations

import subprocess
import sys

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


def test_mypyc_attr_without_mypy_returns_the_class_itself() -> None:
    # a pure install has no mypy_extensions: kcp.weakrefs' fallback decorator changes nothing
    code = (
        "import sys; sys.modules['mypy_extensions'] = None\n"
        "from kcp.weakrefs import mypyc_attr\n"
        "class C: pass\n"
        "assert mypyc_attr(allow_interpreted_subclasses=True)(C) is C\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr

