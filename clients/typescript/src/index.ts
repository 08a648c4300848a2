/** kcprpc for Node: the public API. */
export const VERSION = "0.1.0";
export { CompatPath } from "./kcp/path.js";
export type { DatagramLink, Path, PathOwner, CompatPathCounters } from "./kcp/path.js";
export { KcpError, KcpUsageError, ConnectionClosedError, DeadLinkError } from "./kcp/errors.js";
export * from "./secure/index.js";
