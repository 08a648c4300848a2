"""kcprpc: typed RPC for games and live apps over KCP."""

from __future__ import annotations

__all__: list[str] = []
