"""Interface documents: export from service classes, the format's schema, breaking-change checks
and Python code generation. See ``docs/idl.md``."""

from __future__ import annotations

from kcprpc.idl.export import export_service, export_text
from kcprpc.idl.schema import (
    Document,
    DocumentError,
    dumps,
    format_schema,
    load_document,
    loads_document,
    validate_document,
)

__all__ = [
    "Document",
    "DocumentError",
    "dumps",
    "export_service",
    "export_text",
    "format_schema",
    "load_document",
    "loads_document",
    "validate_document",
]
