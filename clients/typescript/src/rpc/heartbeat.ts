/** Heartbeat state and reconnect backoff, ports of kcprpc/heartbeat.py (time injected, in ms). */

/** Heartbeat policy: PING every `intervalMs`, peer dead after `timeoutMs` of silence. */
export interface HeartbeatConfig {
  /** Base ping interval (default 1000). */
  intervalMs: number;
  /** Silence after which the peer is dead (default 5000). */
  timeoutMs: number;
  /** The interval a quiet, answering connection stretches to (default min(timeout/2, 4*interval)). */
  maxIntervalMs?: number;
}

/** What {@link Heartbeat.poll} asks for. */
export type HeartbeatAction = "none" | "ping" | "dead";

/** Heartbeat state of one connection (kcprpc.heartbeat.Heartbeat). */
export class Heartbeat {
  /** Base interval. */
  readonly intervalMs: number;
  /** Dead after this much silence. */
  readonly timeoutMs: number;
  /** Longest stretched interval. */
  maxIntervalMs: number;
  /** The interval now. */
  currentMs: number;
  /** Last time anything arrived. */
  lastReceive: number;
  private lastPing: number;
  private lastPingSent: number;
  private nonce = 0;
  private sent = new Map<number, number>();
  private activity = 0;
  /** PINGs not needed (traffic went both ways). */
  skipped = 0;
  /** Smoothed RTT (gain 1/8), ms. */
  srttMs: number | null = null;
  /** Last RTT sample, ms. */
  lastRttMs: number | null = null;

  /** @param cfg policy @param now ms */
  constructor(cfg: HeartbeatConfig, now: number) {
    if (!(cfg.intervalMs > 0) || !(cfg.timeoutMs > cfg.intervalMs)) throw new RangeError("heartbeat needs 0 < intervalMs < timeoutMs");
    this.intervalMs = cfg.intervalMs;
    this.timeoutMs = cfg.timeoutMs;
    this.maxIntervalMs = cfg.maxIntervalMs ?? Math.max(cfg.intervalMs, Math.min(cfg.timeoutMs / 2, 4 * cfg.intervalMs));
    this.currentMs = this.intervalMs;
    this.lastReceive = now;
    this.lastPing = now;
    this.lastPingSent = now;
  }
  /** Never stretch beyond `ms` (2.5 times the server's announced interval). */
  limitInterval(ms: number): void {
    this.maxIntervalMs = Math.max(this.intervalMs, Math.min(this.maxIntervalMs, ms));
    this.currentMs = Math.min(this.currentMs, this.maxIntervalMs);
  }
  /** A PONG arrived: the RTT sample in ms, or null for an unknown nonce. */
  onPong(nonce: number, now: number): number | null {
    this.lastReceive = now;
    const sent = this.sent.get(nonce);
    if (sent === undefined) return null;
    this.sent.delete(nonce);
    for (const n of [...this.sent.keys()]) if (n < nonce) this.sent.delete(n);
    const rtt = now - sent;
    this.lastRttMs = rtt;
    this.srttMs = this.srttMs === null ? rtt : this.srttMs + (rtt - this.srttMs) / 8;
    return rtt;
  }
  /** The action now, and the nonce to send with a PING. `activity` grows with our non-PING sends. */
  poll(now: number, activity = 0): [HeartbeatAction, number] {
    if (now - this.lastReceive >= this.timeoutMs) return ["dead", 0];
    if (now - this.lastPing < this.waitMs()) return ["none", 0];
    const sentSomething = activity !== this.activity;
    this.activity = activity;
    this.lastPing = now;
    if (sentSomething && now - this.lastReceive < this.intervalMs && now - this.lastPingSent < 4 * this.maxIntervalMs) {
      this.skipped++;
      return ["none", 0];
    }
    const answered = this.nonce !== 0 && !this.sent.has(this.nonce);
    this.currentMs = answered ? Math.min(2 * this.currentMs, this.maxIntervalMs) : this.intervalMs;
    this.lastPingSent = now;
    this.nonce = (this.nonce + 1) >>> 0 || 1;
    this.sent.set(this.nonce, now);
    if (this.sent.size > 64) this.sent.delete(Math.min(...this.sent.keys()));
    return ["ping", this.nonce];
  }
  /** The interval before the next PING: the base interval while the last one is unanswered (one lost PING on a quiet, lossy link must not be enough to declare the peer dead). */
  private waitMs(): number {
    return this.nonce !== 0 && this.sent.has(this.nonce) ? this.intervalMs : this.currentMs;
  }

  /** Milliseconds until {@link poll} may act. */
  nextWakeup(now: number): number {
    return Math.max(1, Math.min(this.lastPing + this.waitMs(), this.lastReceive + this.timeoutMs) - now);
  }
}

/** Exponential backoff with jitter (kcprpc.heartbeat.ReconnectPolicy); `maxAttempts` null: forever. */
export interface ReconnectPolicy {
  /** First delay, ms (default 100). */
  initialMs?: number;
  /** Largest delay, ms (default 5000). */
  maximumMs?: number;
  /** Growth per attempt (default 2). */
  multiplier?: number;
  /** Relative jitter (default 0.2). */
  jitter?: number;
  /** Attempts before giving up (default: forever). */
  maxAttempts?: number | null;
  /** Re-join rooms and re-subscribe topics (HELLO.restore) after reconnecting (default true). */
  restore?: boolean;
}

/** Milliseconds to wait before attempt `attempt` (0-based); `random` gives 0..1. */
export function reconnectDelay(p: ReconnectPolicy, attempt: number, random: () => number = Math.random): number {
  const base = Math.min(p.maximumMs ?? 5000, (p.initialMs ?? 100) * (p.multiplier ?? 2) ** attempt);
  const j = p.jitter ?? 0.2;
  return Math.max(0, base * (1 + j * (2 * random() - 1)));
}
