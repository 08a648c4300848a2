"""Requests checked against the JSON Schema of the method's interface document before they are
sent (``kcprpc call``; ``--no-validate`` sends them unchecked)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kcprpc.cli.runner import CliError
from kcprpc.status import Status


def request_validator(doc: dict[str, Any], schema: dict[str, Any], what: str) -> Callable[[Any], None]:
    """A function that raises :class:`CliError` (INVALID_ARGUMENT) when a value does not match ``schema``."""
    import jsonschema  # type: ignore[import-untyped]

    full = {**schema, "$defs": doc.get("$defs", {})}
    validator = jsonschema.Draft202012Validator(full)

    def check(value: Any) -> None:
        errors = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
        if errors:
            lines = []
            for err in errors[:10]:
                where = "/".join(str(p) for p in err.absolute_path) or "(request)"
                lines.append(f"{where}: {err.message}")
            raise CliError(
                Status.INVALID_ARGUMENT, f"request does not match {what}:\n  " + "\n  ".join(lines)
            )

    return check


def accept_any(value: Any) -> None:
    """The validator of ``--no-validate``."""
