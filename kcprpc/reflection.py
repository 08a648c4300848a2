"""Server reflection: a client asks a running server for its services and their interface documents.

Wire names: ``kcprpc.Reflection/ListServices`` and ``kcprpc.Reflection/GetDocument``. A server
carries it by default (``Server(..., reflection=False)`` turns it off); the ``kcprpc`` command
line (``list``, ``describe``, ``call``) uses it, so it needs no import of the service's code.

Documents are built once per server, on the first request, and returned as canonical JSON text
(byte-identical to ``kcprpc idl export`` of the same code).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from kcprpc.errors import RpcError, shown
from kcprpc.service import Service, service_spec
from kcprpc.status import Status


class ServiceInfo(BaseModel):
    """A served service: its full name and its methods' names."""

    name: str
    methods: list[str]


class ListServicesResponse(BaseModel):
    """Every service the server carries, sorted by name."""

    services: list[ServiceInfo]
    protocol_version: int


class GetDocumentRequest(BaseModel):
    """Full name of a service (``game.v1.Game``)."""

    service: str


class GetDocumentResponse(BaseModel):
    """The service's interface document as canonical JSON text."""

    document: str


class ReflectionService(Service, name="kcprpc.Reflection"):
    """Lists the server's services and returns their interface documents."""

    def __init__(self) -> None:
        self._docs: dict[int, dict[str, str]] = {}
        self._errors: dict[str, str] = {}

    @staticmethod
    def _server() -> Any:
        from kcprpc.context import current_context

        return current_context().server

    def _documents(self, server: Any) -> dict[str, str]:
        docs = self._docs.get(id(server))
        if docs is None:
            from kcprpc.idl.export import export_service
            from kcprpc.idl.schema import dumps

            docs = {}
            for svc in server.services:
                cls = type(svc)
                try:
                    docs[service_spec(cls).name] = dumps(export_service(cls))
                except Exception as e:  # a class the exporter cannot describe: say so per service
                    docs[service_spec(cls).name] = ""
                    self._errors[service_spec(cls).name] = f"{type(e).__name__}: {e}"
            self._docs = {id(server): docs}
        return docs

    async def ListServices(self) -> ListServicesResponse:
        """The services this server carries (built-ins included)."""
        from kcprpc.codec import PROTOCOL_VERSION

        server = self._server()
        by_service: dict[str, list[str]] = {}
        for wire in server.methods:
            svc, _, method = wire.partition("/")
            by_service.setdefault(svc, []).append(method)
        for svc in server.services:  # a service without methods still exists
            by_service.setdefault(service_spec(type(svc)).name, [])
        return ListServicesResponse(
            services=[ServiceInfo(name=k, methods=sorted(v)) for k, v in sorted(by_service.items())],
            protocol_version=PROTOCOL_VERSION,
        )

    async def GetDocument(self, req: GetDocumentRequest) -> GetDocumentResponse:
        """The interface document of one service (``NOT_FOUND`` if the server has no such service)."""
        server = self._server()
        docs = self._documents(server)
        text = docs.get(req.service)
        if text is None:
            raise RpcError(Status.NOT_FOUND, f"no service {shown(req.service)} on this server")
        if not text:
            raise RpcError(Status.INTERNAL, f"cannot describe {req.service}: {self._errors.get(req.service)}")
        return GetDocumentResponse(document=text)
