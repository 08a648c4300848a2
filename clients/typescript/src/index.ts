/** kcprpc for Node: the public API. */
export const VERSION = "0.1.0";
export { MuxCore, MuxClosedError, MuxStreamClosedError, StreamState, DEFAULT_MUX_CONFIG, RPC_MUX_CONFIG, muxConfig, MUX_COUNTER_NAMES } from "./mux/core.js";
export type { MuxConfig, MuxCounter, MuxEvent, SessionState } from "./mux/core.js";
export { MuxSession, MuxStream } from "./mux/session.js";
export type { ByteTransport, MuxSessionOptions } from "./mux/session.js";
export { encodeFrame as encodeMuxFrame, SmuxFrameDecoder, MuxProtocolError, MuxUsageError, CMD_SYN, CMD_FIN, CMD_PSH, CMD_NOP, CMD_UPD } from "./mux/frame.js";
export type { SmuxFrame } from "./mux/frame.js";
export { Status, RpcError, UsageError, statusFromWire } from "./rpc/status.js";
export type { RpcChannel, CallOptions, NotifyOptions, EventInfo, Metadata, ServerStreamCall, BidiCall } from "./rpc/channel.js";
export { FrameType, encodeFrame, decodeDatagram, FrameDecoder, packBody, unpackBody, FLAG_END, EVENT_REPLAYED } from "./rpc/frames.js";
export type { Frame } from "./rpc/frames.js";
export { MuxConnection, MemoryTransport, memoryTransportPair } from "./rpc/connection.js";
export type { RpcConnection, RpcByteStream, DatagramTransport, CloseInfo } from "./rpc/connection.js";
export { Heartbeat, reconnectDelay } from "./rpc/heartbeat.js";
export type { HeartbeatConfig, ReconnectPolicy } from "./rpc/heartbeat.js";
export { Client, resumeProof } from "./rpc/client.js";
export type { ClientOptions, ClientCounters, RawEvent, Position } from "./rpc/client.js";
