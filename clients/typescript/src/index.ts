/** kcprpc for Node: the public API. */
export const VERSION = "0.1.0";

// Generated stubs (helper IDL) call this API; the generator itself is the "kcprpc/gen" entry
// (and the kcprpc-gen-ts command), kept out of this one so a client does not load it.
export type {
  CallOptions,
  CallTransport,
  NotifyOptions,
  PushEvent,
  StreamRequests,
  Unsubscribe,
} from "./idl/runtime.js";
