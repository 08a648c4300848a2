"""What the client commands know of a server's services: interface documents by service name,
from the server's reflection service and/or ``--idl`` files, and method specs built from them (the
CLI never imports the service's code)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kcprpc.cli.runner import CliError
from kcprpc.client import Client
from kcprpc.errors import RpcError
from kcprpc.service import MethodSpec, raw_method
from kcprpc.status import Status


class Catalog:
    """Interface documents by service name, from reflection and/or ``--idl`` files."""

    def __init__(self, client: Client | None, files: Sequence[str], timeout: float | None) -> None:
        from kcprpc.idl.schema import load_document

        self.client = client
        self.timeout = timeout
        self.docs: dict[str, dict[str, Any]] = {}
        for f in files:
            d = load_document(f)
            self.docs[d["name"]] = d
        self._listed: list[str] | None = None

    def _reflection(self) -> Any:
        from kcprpc.reflection import ReflectionService

        assert self.client is not None
        return self.client.stub(ReflectionService, timeout=self.timeout)

    async def services(self) -> list[str]:
        if self._listed is None:
            names = set(self.docs)
            if self.client is not None:
                try:
                    r = await self._reflection().ListServices()
                    names.update(s.name for s in r.services)
                except RpcError as e:
                    if e.status is not Status.UNIMPLEMENTED or not self.docs:
                        raise _no_reflection(e) from None
            self._listed = sorted(names)
        return self._listed

    async def document(self, service: str) -> dict[str, Any]:
        doc = self.docs.get(service)
        if doc is None:
            if self.client is None:
                raise CliError(Status.NOT_FOUND, f"no document for {service!r}")
            from kcprpc.idl.schema import loads_document

            try:
                r = await self._reflection().GetDocument({"service": service})
            except RpcError as e:
                raise _no_reflection(e) from None
            doc = loads_document(r.document, f"{service} (from the server)")
            self.docs[service] = doc
        return doc

    async def resolve(self, target: str) -> tuple[dict[str, Any], str | None]:
        """``Service``, ``Service.member`` or ``Service/member`` -> (document, member or None)."""
        if "/" in target:
            svc, _, member = target.partition("/")
            return await self.document(svc), member or None
        names = await self.services()
        if target in names:
            return await self.document(target), None
        for svc in sorted(names, key=len, reverse=True):  # the longest service name that prefixes it
            if target.startswith(svc + "."):
                return await self.document(svc), target[len(svc) + 1 :]
        raise CliError(Status.NOT_FOUND, f"no service matches {target!r} (services: {', '.join(names)})")


def _no_reflection(e: RpcError) -> CliError:
    if e.status is Status.UNIMPLEMENTED:
        return CliError(
            Status.UNIMPLEMENTED, "the server has reflection off; pass its document with --idl FILE"
        )
    return CliError(e.status, e.message, e.details)


def dynamic_spec(doc: dict[str, Any], method: str) -> MethodSpec:
    """A :class:`MethodSpec` for a method known only from its document (payloads stay plain JSON values)."""
    m = doc["methods"].get(method)
    if m is None:
        raise CliError(
            Status.NOT_FOUND,
            f"{doc['name']} has no method {method!r} (methods: {', '.join(sorted(doc['methods']))})",
        )
    spec = raw_method(m["wire_name"], m["kind"], m["delivery"])
    spec.has_request = m["request"] != {"type": "null"}
    return spec
