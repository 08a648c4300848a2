"""The compiled build's hand-written C modules (setup.py's NATIVE), for the tests that call them
directly: each is None in a pure build (those tests skip), and required in the compiled CI run
(KCPRPC_EXPECT_COMPILED=1, on Linux), where such tests must not be skipped."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any


def native_module(name: str) -> Any:
    """The C module ``name`` (e.g. ``"kcp._mmsg"``), or None when this build has none."""
    try:
        module: Any = importlib.import_module(name)
    except ImportError:
        module = None
    if os.environ.get("KCPRPC_EXPECT_COMPILED") == "1" and sys.platform.startswith("linux"):
        assert module is not None, (
            f"the compiled build has no {name} (setup.py's 'kcprpc setup:' lines say why)"
        )
    return module
