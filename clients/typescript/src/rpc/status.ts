/** RPC status codes (gRPC's numbers, kcprpc/status.py) and {@link RpcError}. */

/** The outcome of a call; OK is success, every other code a failure. */
export enum Status {
  OK = 0,
  CANCELLED = 1,
  UNKNOWN = 2,
  INVALID_ARGUMENT = 3,
  DEADLINE_EXCEEDED = 4,
  NOT_FOUND = 5,
  ALREADY_EXISTS = 6,
  PERMISSION_DENIED = 7,
  RESOURCE_EXHAUSTED = 8,
  FAILED_PRECONDITION = 9,
  ABORTED = 10,
  OUT_OF_RANGE = 11,
  UNIMPLEMENTED = 12,
  INTERNAL = 13,
  UNAVAILABLE = 14,
  DATA_LOSS = 15,
  UNAUTHENTICATED = 16,
}

/** Map a code received from a peer to a {@link Status}; unknown values become UNKNOWN. */
export function statusFromWire(code: unknown): Status {
  return typeof code === "number" && Number.isInteger(code) && code >= 0 && code <= 16 ? (code as Status) : Status.UNKNOWN;
}

/** A call failed with `code`; `details` is any msgpack value (e.g. pydantic's error list). */
export class RpcError extends Error {
  /** The status. */
  readonly code: Status;
  /** The server's (or our) message. */
  readonly details: unknown;
  /** Trailing metadata of the failed call. */
  readonly trailingMetadata: Record<string, unknown>;
  /** The status message alone. */
  readonly statusMessage: string;
  /** @param code status @param message text @param details any @param trailingMetadata map */
  constructor(code: Status, message = "", details: unknown = null, trailingMetadata: Record<string, unknown> = {}) {
    super(message ? `${Status[code]}: ${message}` : Status[code]);
    this.name = "RpcError";
    this.code = code;
    this.statusMessage = message;
    this.details = details;
    this.trailingMetadata = trailingMetadata;
  }
}

/** The local caller used the API wrongly (bad argument, wrong state). */
export class UsageError extends Error {
  /** @param message what was wrong */
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}
