"""How the compiled build compiles a class that interpreted code subclasses.

- ``@mypyc_attr(allow_interpreted_subclasses=True)``: interpreted code subclasses it (a native
  class is final for mypyc otherwise: its compiled methods accept instances of exactly that
  class). ``mypy_extensions``' decorator when it is installed (mypyc reads it at compile time),
  else one that returns the class unchanged: the pure build does not need mypy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

__all__ = ["mypyc_attr"]

if TYPE_CHECKING:
    from mypy_extensions import mypyc_attr
else:
    try:
        from mypy_extensions import mypyc_attr
    except ImportError:  # no mypy here: the pure build, where the attributes mean nothing

        def mypyc_attr(*attrs: str, **kwattrs: object) -> Callable[[Any], Any]:
            """Return a decorator that returns its class unchanged."""
            return lambda cls: cls
