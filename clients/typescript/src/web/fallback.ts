/**
 * {@link WebTransportBackoff}: when {@link connectWeb}'s `"auto"` mode stops trying WebTransport
 * first. A network that blocks UDP (many corporate ones) makes every WebTransport dial wait for
 * its timeout before WebSocket is tried; once a dial saw WebTransport fail to connect while
 * WebSocket connected, later dials go straight to WebSocket for a while, then try WebTransport
 * again. Sans-I/O: the clock is injected, so the policy is tested without waiting.
 */
import { UsageError } from "../rpc/status.js";

/** How long `"auto"` dials WebSocket only after WebTransport failed where WebSocket worked. */
export interface WebTransportBackoffPolicy {
  /** The first period, ms (default 300 000: five minutes). */
  initialMs?: number;
  /** The period doubles at each further such fallback, up to this, ms (default 3 600 000: an hour). */
  maximumMs?: number;
}

/**
 * The back-off state of one client's dials. {@link fellBack} after WebTransport failed to connect
 * (unreachable or timed out: never a refusal, which is final on any transport) and WebSocket then
 * connected: {@link skip} is true for the period, which doubles at each consecutive fallback.
 * {@link connected} (WebTransport worked) and {@link reset} (its endpoint changed) end it.
 */
export class WebTransportBackoff {
  private readonly initialMs: number;
  private readonly maximumMs: number;
  private periodMs = 0;
  private untilMs: number | null = null;

  constructor(policy: WebTransportBackoffPolicy = {}, private readonly now: () => number = Date.now) {
    const check = (name: string, v: number | undefined, dflt: number): number => {
      if (v === undefined) return dflt;
      if (typeof v !== "number" || !Number.isFinite(v) || v < 0) throw new UsageError(`webTransportBackoff.${name} must be a number >= 0 (ms), not ${String(v)}`);
      return v;
    };
    this.initialMs = check("initialMs", policy.initialMs, 300_000);
    this.maximumMs = check("maximumMs", policy.maximumMs, 3_600_000);
    if (this.maximumMs < this.initialMs) throw new UsageError(`webTransportBackoff.maximumMs (${this.maximumMs}) is below initialMs (${this.initialMs})`);
  }

  /** True while dials should skip WebTransport (go straight to WebSocket). */
  skip(): boolean {
    return this.untilMs !== null && this.now() < this.untilMs;
  }

  /** When WebTransport is tried again (the injected clock's ms), or null when it is not skipped. */
  get skippedUntil(): number | null {
    return this.skip() ? this.untilMs : null;
  }

  /** WebTransport failed to connect and WebSocket connected: skip WebTransport for the next period. */
  fellBack(): void {
    this.periodMs = this.periodMs === 0 ? this.initialMs : Math.min(this.maximumMs, this.periodMs * 2);
    this.untilMs = this.now() + this.periodMs;
  }

  /** WebTransport connected: back to trying it first, and the next period is the first again. */
  connected(): void {
    this.reset();
  }

  /** Forget the back-off (the WebTransport endpoint changed: a new port or certificate is worth a try). */
  reset(): void {
    this.periodMs = 0;
    this.untilMs = null;
  }
}
