"""In-tree PEP 517 backend: setuptools' own, asking for mypy (mypyc) for wheel builds only.

An editable install (the README's ``pip install -e .``) and ``KCPRPC_PURE_BUILD=1`` build pure
Python, so they do not need mypy; ``pip install .`` does (setup.py compiles the protocol cores).
"""

from __future__ import annotations

import os

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F403  (the whole PEP 517 interface)

MYPYC = "mypy>=1.10"


def get_requires_for_build_wheel(config_settings=None):  # type: ignore[no-untyped-def]
    requires = list(_setuptools.get_requires_for_build_wheel(config_settings))
    if os.environ.get("KCPRPC_PURE_BUILD", "") in ("", "0"):
        requires.append(MYPYC)
    return requires
