/**
 * The client's partial-frame limits (docs/rpc.md, "Receive limits", as kcprpc.receive): the bytes
 * of frames received in part, all streams of a connection together, are bounded by
 * `maxPartialFrameBytes`; a frame that gets no new byte for `partialFrameTimeoutMs` is dropped.
 */
import { UsageError } from "./status.js";
import { FRAME_HEADER_SIZE } from "./frames.js";

/** Room `maxPartialFrameBytes` leaves by default beside one frame of `maxMessageSize` (kcprpc.receive.PARTIAL_FRAME_SLACK). */
export const PARTIAL_FRAME_SLACK = 256 * 1024;

/** The effective `maxPartialFrameBytes` (UsageError for one that could not hold one whole frame). */
export function partialFrameLimit(maxMessageSize: number, maxPartialFrameBytes: number | undefined, timeoutMs: number | null | undefined): number {
  const limit = maxPartialFrameBytes ?? maxMessageSize + FRAME_HEADER_SIZE + PARTIAL_FRAME_SLACK;
  if (!Number.isInteger(limit) || limit < maxMessageSize + FRAME_HEADER_SIZE) {
    throw new UsageError("maxPartialFrameBytes must be at least maxMessageSize + 9 (one whole frame)");
  }
  if (timeoutMs !== undefined && timeoutMs !== null && !(timeoutMs > 0 && Number.isFinite(timeoutMs))) {
    throw new UsageError("partialFrameTimeoutMs must be a positive number (or null: never)");
  }
  return limit;
}

/**
 * The bytes of partial frames the stream readers of one connection hold together. A reader that
 * has a frame's header reserves the whole frame before it reads more of it: granted at once while
 * it fits and nobody waits, otherwise in FIFO order as others give theirs back (the reader stops
 * reading its stream meanwhile, so the mux window pushes back on the peer). The control stream
 * never waits ({@link force}).
 */
export class FrameBudget {
  /** Bytes reserved now. */
  used = 0;
  /** The most reserved at once. */
  peak = 0;
  private waiters: Array<{ n: number; grant: () => void }> = [];

  /** @param limit the budget (maxPartialFrameBytes) */
  constructor(readonly limit: number) {}

  private take(n: number): void {
    this.used += n;
    if (this.used > this.peak) this.peak = this.used;
  }

  /** Reserve `n` bytes if that needs no wait. */
  tryReserve(n: number): boolean {
    if (this.waiters.length || this.used + n > this.limit) return false;
    this.take(n);
    return true;
  }

  /** Reserve `n` now, past the limit if need be (the control stream's frame). */
  force(n: number): void {
    this.take(n);
  }

  /** Wait (FIFO) until `n` bytes fit, and reserve them. */
  reserve(n: number): Promise<void> {
    if (this.tryReserve(n)) return Promise.resolve();
    return new Promise((r) => this.waiters.push({ n, grant: r }));
  }

  /** Give back `n` reserved bytes (and grant waiting reservations that now fit). */
  release(n: number): void {
    this.used -= n;
    while (this.waiters.length) {
      const w = this.waiters[0] as { n: number; grant: () => void };
      if (this.used + w.n > this.limit) return;
      this.waiters.shift();
      this.take(w.n);
      w.grant();
    }
  }

  /** The connection ended: let every waiting reader go (they find their stream closed). */
  abandon(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const x of w) x.grant();
  }

  /** Readers waiting for a reservation. */
  get waiting(): number {
    return this.waiters.length;
  }
}
