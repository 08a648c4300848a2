/**
 * Driving a {@link BbrLite} from a KCP engine without changing the engine: the TypeScript
 * counterpart of the Python `kcp/session_cc.py`. A session with `congestion: "bbr"` keeps one
 * {@link SessionCc} beside its engine:
 *
 * - {@link SessionCc.afterInput} (after each receive batch) counts the segments newly acknowledged
 *   and hands them, the smoothed RTT and the segments still in flight to the controller;
 * - {@link SessionCc.flush} and {@link SessionCc.update} run the engine's own under the
 *   controller: before, the engine's window (`cwnd` with `nocwnd` 0) is set so that no more new
 *   segments leave than the controller's window and its pacing budget allow (ikcp counts its window
 *   from `sndUna`, segments acknowledged out of order included, so those are added back);
 *   after, what left is charged to the pacer and retransmissions are reported;
 * - {@link SessionCc.nextSend} names when a session whose data waits only for the pacer should wake.
 *
 * Calls and events stay out of its way and off its cost: until the controller has measured a
 * bandwidth with data waiting, and while at most {@link BULK_FLIGHT} segments are queued or in
 * flight, the session is *quiet*: its flushes are the engine's own, with the configured `nc`.
 */
import { BbrLite } from "./congestion.js";
import type { Kcp } from "./engine.js";

/** Segments in flight above which the bulk RTO floor applies (the sparse recovery's flight). */
export const BULK_FLIGHT = 8;

/** One session's congestion controller and the engine bookkeeping it needs. */
export class SessionCc {
  /** The controller (its `bw`, `minRtt`, `cwnd`, `state`, `pacingRate`). */
  readonly cc: BbrLite;
  private nxt: number;
  private readonly minrto: number; // the configured floor (nodelay's 30 ms)
  private readonly nocwnd: number; // the configured nc, for quiet flushes
  private everMeasured: boolean; // once true, never quiet again
  private inQuiet = true; // the engine has its configured window and RTO
  private sent = 0; // new segments sent, cumulative
  private delivered = 0; // of those, acknowledged
  private sacked = 0; // acknowledged out of order, still inside ikcp's window
  private outBytes: number;
  private retrans: number;

  constructor(eng: Kcp, cc?: BbrLite) {
    this.cc = cc ?? new BbrLite(eng.mss);
    this.nxt = eng.sndNxt;
    this.minrto = eng.rxMinrto;
    this.nocwnd = eng.nocwnd;
    this.everMeasured = this.cc.measured;
    const c = eng.counters;
    this.outBytes = c !== null ? c.outBytes : 0;
    this.retrans = c !== null ? c.retransSegs : 0;
  }

  /** Whether the controller has measured a bulk flow (from then on it is never quiet). */
  get measuring(): boolean {
    return this.everMeasured;
  }

  /**
   * Calls and events: the controller is not measuring and at most {@link BULK_FLIGHT} segments
   * are queued or in flight (its window, at least `initialCwnd`, and its pacer, off, hold none back).
   */
  quiet(eng: Kcp): boolean {
    return !this.everMeasured && eng.nsndBuf + eng.nsacked + eng.nsndQue <= BULK_FLIGHT;
  }

  /** After a receive batch: what the acks delivered, to the controller. */
  afterInput(eng: Kcp, now: number): void {
    const nxt = eng.sndNxt;
    this.sent += (nxt - this.nxt) >>> 0;
    this.nxt = nxt;
    const unacked = eng.nsndBuf;
    const delivered = this.sent - unacked;
    const acked = delivered - this.delivered;
    this.delivered = delivered;
    this.sacked = eng.nsacked;
    if (this.quiet(eng)) return;
    const cc = this.cc;
    cc.onAck(now, acked * eng.mss, eng.rxSrtt, unacked, !eng.nsndQue);
    this.everMeasured = cc.measured;
  }

  /** Whether the coming flush is quiet; if so, the engine gets its own window and RTO back for it. */
  private quietFlush(eng: Kcp): boolean {
    if (!this.quiet(eng)) return false;
    if (!this.inQuiet) {
      this.inQuiet = true;
      eng.nocwnd = this.nocwnd;
      if (eng.rxMinrto !== this.minrto) eng.rxMinrto = this.minrto;
    }
    return true;
  }

  private beforeFlush(eng: Kcp, now: number): void {
    const cc = this.cc;
    if (this.inQuiet) {
      // what quiet flushes sent is not charged
      this.inQuiet = false;
      const c = eng.counters;
      if (c !== null) {
        this.outBytes = c.outBytes;
        this.retrans = c.retransSegs;
      }
    }
    eng.nocwnd = 0;
    if (cc.mss !== eng.mss) cc.mss = eng.mss; // setMtu() changed the segment size
    const srtt = eng.rxSrtt;
    const used = (eng.sndNxt - eng.sndUna) >>> 0;
    if (srtt && used > BULK_FLIGHT && this.everMeasured) {
      // The pacer keeps the RTT steady, so ikcp's RTO comes within a few ms of it, and a probe or
      // a queue building up would fire retransmissions of segments that were only queued: fast
      // resend repairs random loss in a bulk flight; its RTO is for tail losses and waits 2 × srtt.
      // A flight the controller never paced (a response or a snapshot of a few dozen segments,
      // app-limited) keeps ikcp's RTO: its tail is often what is lost, and nothing fast-resends it.
      const floor = Math.max(2 * srtt, this.minrto);
      eng.rxMinrto = floor;
      if (eng.rxRto < floor) eng.rxRto = floor;
    } else if (eng.rxMinrto !== this.minrto) {
      eng.rxMinrto = this.minrto; // small flights: the configured RTO and loss recovery
    }
    let allow = cc.cwnd + this.sacked;
    if (cc.pacingRate > 0) {
      const q = cc.quota(now);
      const paced = used + (q > 0 ? Math.trunc(q / eng.mss) + 1 : 0);
      if (paced < allow) allow = paced;
    }
    eng.cwnd = allow > 1 ? allow : 1;
  }

  private afterFlush(eng: Kcp, now: number): void {
    const c = eng.counters;
    if (c === null) return;
    if (c.outBytes !== this.outBytes) {
      this.cc.onSend(now, c.outBytes - this.outBytes);
      this.outBytes = c.outBytes;
    }
    if (c.retransSegs !== this.retrans) {
      this.cc.onLoss(now, c.retransSegs - this.retrans);
      this.retrans = c.retransSegs;
    }
  }

  /** `eng.update(now)` under the controller; with data waiting, a flush too (the pacer's wake-up falls between intervals). */
  update(eng: Kcp, now: number): void {
    if (this.quietFlush(eng)) {
      eng.update(now);
      return;
    }
    this.beforeFlush(eng, now);
    eng.update(now);
    if (eng.nsndQue) eng.flush(now);
    this.afterFlush(eng, now);
  }

  /** `eng.flush(now)` under the controller (the engine's own when quiet). */
  flush(eng: Kcp, now: number): void {
    if (this.quietFlush(eng)) {
      eng.flush(now);
      return;
    }
    this.beforeFlush(eng, now);
    eng.flush(now);
    this.afterFlush(eng, now);
  }

  /** When to wake for the pacer (-1: no need: nothing waits, or the window is full). */
  nextSend(eng: Kcp, now: number): number {
    const cc = this.cc;
    if (!eng.nsndQue || cc.pacingRate <= 0) return -1;
    if ((eng.sndNxt - eng.sndUna) >>> 0 >= cc.cwnd + this.sacked) return -1; // window-limited: acks wake it
    return cc.nextSendTime(now);
  }
}
