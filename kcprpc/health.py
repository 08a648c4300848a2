"""The built-in health service every server carries: ``kcprpc.Health/Check`` and
``kcprpc.Health/Stats`` (topic subscription is :mod:`kcprpc.push_service`)."""

from __future__ import annotations

from pydantic import BaseModel

from kcprpc.service import Service


class HealthCheckRequest(BaseModel):
    """``service`` empty means the whole server."""

    service: str = ""


class HealthCheckResponse(BaseModel):
    """``SERVING``, ``NOT_SERVING`` or ``SERVICE_UNKNOWN``."""

    status: str


class StatsResponse(BaseModel):
    """Counters of the connection the call came on and of the server."""

    transport: dict[str, int]
    server: dict[str, int]
    session: dict[str, float | int | str | None]


class HealthService(Service, name="kcprpc.Health"):
    """Health and stats."""

    async def Check(self, req: HealthCheckRequest) -> HealthCheckResponse:
        """Report whether the server (or one service) is serving."""
        from kcprpc.context import current_context

        server = current_context().server
        if req.service and not any(m.service == req.service for m in server.methods.values()):
            return HealthCheckResponse(status="SERVICE_UNKNOWN")
        return HealthCheckResponse(status="NOT_SERVING" if server.closing else "SERVING")

    async def Stats(self) -> StatsResponse:
        """Transport counters (KCP, mux) of this connection and the server's RPC counters."""
        from kcprpc.context import current_context

        ctx = current_context()
        sess = ctx.session
        try:
            transport = {k: int(v) for k, v in sess.conn.stats().items() if isinstance(v, (int, float))}
        except Exception:
            transport = {}
        server_stats = dict(ctx.server.stats)
        server_stats.update(ctx.server.listener_stats())  # web listeners (Server.add_listener)
        server_stats["sessions"] = len(ctx.server.sessions)
        return StatsResponse(
            transport=transport,
            server=server_stats,
            session={
                "id": sess.id,
                "rtt_ms": sess.rtt_ms,
                "active_calls": sess.active_calls,
                "rooms": len(sess.rooms),
                "topics": len(sess.topics),
            },
        )
