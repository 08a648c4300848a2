"""Small helpers shared by the example programs."""

from __future__ import annotations

import sys
from collections.abc import Coroutine, Mapping
from typing import Any, NoReturn

from kcprpc.clitools import run_loop


def print_figures(figures: Mapping[str, Any], width: int = 16) -> None:
    """One ``name value`` line per figure (floats with two decimals)."""
    for k, v in figures.items():
        print(f"{k:{width}} {v:.2f}" if isinstance(v, float) else f"{k:{width}} {v}")


def exit_with(main: Coroutine[Any, Any, int]) -> NoReturn:
    """Run an example's main coroutine (on uvloop when installed) and exit with its result."""
    sys.exit(run_loop(main))
