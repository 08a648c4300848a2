"""kcp-go's known answers, as recorded by the real kcp-go v5.6.72 (see vectors/README.md).

The JSON is checked into the repository so the interop tests always run, in CI too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

VECTORS_PATH = Path(__file__).resolve().parent / "vectors" / "kcp-go.json"
DATA: dict[str, Any] = json.loads(VECTORS_PATH.read_text())
