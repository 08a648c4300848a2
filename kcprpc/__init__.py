"""kcprpc: typed RPC for games and live apps over KCP."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _package_version

from kcprpc.broker import (
    Broker,
    BrokerHistory,
    BrokerMessage,
    BrokerUnavailable,
    HistoryPolicy,
    MemoryBroker,
    Position,
)
from kcprpc.broker_url import broker_from_url
from kcprpc.builtins import default_services
from kcprpc.client import Client, ClientConfig, EventInfo, RawEvent, StreamCall, UnaryCall, connect
from kcprpc.config import CompatWire, IOOptions, MuxConfig, SecureWire, SessionConfig, Transport
from kcprpc.errors import KcpRpcError, ProtocolError, RpcError, UsageError
from kcprpc.heartbeat import HeartbeatConfig, ReconnectPolicy
from kcprpc.interceptors import ClientCallDetails, ClientInterceptor, ServerInterceptor
from kcprpc.logconfig import configure_logging
from kcprpc.metrics import MetricsServer, start_metrics
from kcprpc.presence import Joined, Left, MemberInfo, MemberList, PresenceConfig
from kcprpc.push_events import Recovered, ResumeFailed
from kcprpc.push_service import HistoryMessage, HistoryPage, SubscribeReply
from kcprpc.resume import SessionExpired
from kcprpc.send_lanes import DEFAULT_LANES, Lane, LaneConfig
from kcprpc.server import Server, ServerConfig, ServerContext, ServerSession, current_context
from kcprpc.service import Delivery, MethodKind, MethodSpec, Service, event, raw_method, rpc, service_spec
from kcprpc.status import Status
from kcprpc.workers import RestartPolicy, WorkerInfo, current_worker, serve_workers

Server.default_builtins = default_services  # the server itself imports no built-in service

try:
    __version__: str = _package_version("kcprpc")
    """The installed distribution's version (pyproject.toml's ``version``)."""
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "DEFAULT_LANES",
    "Broker",
    "BrokerHistory",
    "BrokerMessage",
    "BrokerUnavailable",
    "Client",
    "ClientCallDetails",
    "ClientConfig",
    "ClientInterceptor",
    "CompatWire",
    "Delivery",
    "EventInfo",
    "HeartbeatConfig",
    "HistoryMessage",
    "HistoryPage",
    "HistoryPolicy",
    "IOOptions",
    "Joined",
    "KcpRpcError",
    "Lane",
    "LaneConfig",
    "Left",
    "MemberInfo",
    "MemberList",
    "MemoryBroker",
    "MethodKind",
    "MethodSpec",
    "MetricsServer",
    "MuxConfig",
    "Position",
    "PresenceConfig",
    "ProtocolError",
    "RawEvent",
    "ReconnectPolicy",
    "Recovered",
    "RestartPolicy",
    "ResumeFailed",
    "RpcError",
    "SecureWire",
    "Server",
    "ServerConfig",
    "ServerContext",
    "ServerInterceptor",
    "ServerSession",
    "Service",
    "SessionConfig",
    "SessionExpired",
    "Status",
    "StreamCall",
    "SubscribeReply",
    "Transport",
    "UnaryCall",
    "UsageError",
    "WorkerInfo",
    "broker_from_url",
    "configure_logging",
    "connect",
    "current_context",
    "current_worker",
    "event",
    "raw_method",
    "rpc",
    "serve_workers",
    "service_spec",
    "start_metrics",
]
