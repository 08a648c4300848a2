"""``python -m kcprpc``: the ``kcprpc`` command (see :mod:`kcprpc.cli`)."""

from __future__ import annotations

import sys

from kcprpc.cli import main

sys.exit(main())
