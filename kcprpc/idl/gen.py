"""Python code generation from an interface document (see :func:`generate_python`)."""

from __future__ import annotations

from typing import Any

from kcprpc.errors import UsageError


def generate_python(doc: dict[str, Any]) -> str:
    """Pydantic models and a typed stub class for the document's service."""
    raise UsageError("gen-python is not implemented yet")
