/** Helpers the session tests share: a bounded wait and a collector of a session's stream bytes. */
import type { KcpSession } from "../../src/kcp/session.js";

/** `p`, or a rejection naming `what` after `ms`. */
export function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: ReturnType<typeof setTimeout>;
  const timeout = new Promise<never>((_, reject) => {
    t = setTimeout(() => reject(new Error(`${what}: no result within ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(t));
}

/** Collects a session's stream bytes; `until(n)` resolves once n bytes arrived in all. */
export class Collector {
  /** The bytes received since the last {@link take}, one copy per delivery. */
  chunks: Uint8Array[] = [];
  /** Their summed length. */
  length = 0;
  private waiter: { n: number; resolve: () => void } | null = null;
  /** Start collecting `session`'s stream bytes (takes its `onData` listener). */
  constructor(session: KcpSession) {
    session.onData((d) => {
      this.chunks.push(d.slice());
      this.length += d.length;
      if (this.waiter && this.length >= this.waiter.n) {
        this.waiter.resolve();
        this.waiter = null;
      }
    });
  }
  /** Resolves once `n` bytes arrived in all (unbounded: wrap in {@link within}). */
  until(n: number): Promise<void> {
    if (this.length >= n) return Promise.resolve();
    return new Promise((resolve) => {
      this.waiter = { n, resolve };
    });
  }
  /** All bytes collected so far, and start over. */
  take(): Buffer {
    const all = Buffer.concat(this.chunks);
    this.chunks = [];
    this.length = 0;
    return all;
  }
}
