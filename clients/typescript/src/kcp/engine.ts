/**
 * A sans-I/O KCP ARQ engine, segment for segment compatible with skywind3000's C `ikcp` (and so
 * with our Python `kcp/engine.py`). Written from docs/wire-format/kcp.md; the Python engine settled
 * the details the doc leaves open.
 *
 * The engine does no I/O and never reads a clock: the caller passes `now` (milliseconds, any
 * non-negative integer; only its low 32 bits go on the wire) to {@link Kcp.update},
 * {@link Kcp.flush}, {@link Kcp.input} and {@link Kcp.check}. Datagrams leave through
 * {@link Kcp.output} (one call per datagram). Garbage input never throws: {@link Kcp.input}
 * returns ikcp's codes (-1 short packet or wrong conv, -2 a length longer than the data, -3 an
 * unknown command) and counts the packet in `counters.kcpInErrors`.
 *
 * Only ikcp's own retransmission policy is implemented (the Python engine's optional sparse-flight
 * copies are off by default there and not ported); the datagrams are byte-identical to the Python
 * engine's with those defaults (test/kcp_engine.test.ts runs both on the same seeded scripts).
 */
import { concat } from "../bytes.js";
import { Deque } from "./deque.js";
import { KcpUsageError } from "./errors.js";

/** Minimum RTO in nodelay mode. */
export const IKCP_RTO_NDL = 30;
/** Minimum RTO otherwise. */
export const IKCP_RTO_MIN = 100;
/** Initial RTO. */
export const IKCP_RTO_DEF = 200;
/** Largest RTO. */
export const IKCP_RTO_MAX = 60000;
/** Command: data. */
export const IKCP_CMD_PUSH = 81;
/** Command: acknowledgement. */
export const IKCP_CMD_ACK = 82;
/** Command: window probe (ask). */
export const IKCP_CMD_WASK = 83;
/** Command: window size (tell). */
export const IKCP_CMD_WINS = 84;
/** Command, not ikcp's: a repeated ACK (secure mode, agreed in the handshake; {@link Kcp.ackRepeat}). */
export const IKCP_CMD_REACK = 85;
/** How many more times the ACK of a segment that came above a hole is sent ({@link Kcp.ackRepeat}). */
export const ACK_REPEATS = 2;
/** Probe flag: send a WASK at the next flush. */
export const IKCP_ASK_SEND = 1;
/** Probe flag: send a WINS at the next flush. */
export const IKCP_ASK_TELL = 2;
/** Default send window (segments). */
export const IKCP_WND_SND = 32;
/** Default (and minimum) receive window (segments). */
export const IKCP_WND_RCV = 128;
/** Default MTU. */
export const IKCP_MTU_DEF = 1400;
/** Default flush interval (ms). */
export const IKCP_INTERVAL = 100;
/** Segment header size. */
export const IKCP_OVERHEAD = 24;
/** Transmissions of one segment after which the link is dead. */
export const IKCP_DEADLINK = 20;
/** Initial slow-start threshold. */
export const IKCP_THRESH_INIT = 2;
/** Smallest slow-start threshold. */
export const IKCP_THRESH_MIN = 2;
/** First window-probe wait (ms). */
export const IKCP_PROBE_INIT = 7000;
/** Longest window-probe wait (ms). */
export const IKCP_PROBE_LIMIT = 120000;
/** Default fast-resend transmission limit. */
export const IKCP_FASTACK_LIMIT = 5;

const HALF = 0x80000000;
const BIG = 1 << 26;

// Sparse-flight loss recovery (not in ikcp; the Python engine's, docs/tuning.md "Loss recovery").
/** Recovery rounds between two picks of the copies per round. */
const ADAPT_SAMPLES = 32;
/** ... or as soon as this many rounds were lost whole (escalate fast). */
const ADAPT_FAILED = 4;
/** A sparse flight's rounds back off to at most this many RTOs apart. */
const SPARSE_RTO_CAP = 4;
/** The chance that all copies of a round are lost, aimed for. */
const ROUND_FAILURE_TARGET = 0.02;
/** Segments acknowledged between two picks of the lead copies. */
const LEAD_SAMPLES = 32;
/** ... of which the estimate keeps about this many (halved beyond it). */
const LEAD_WINDOW = 256;
/** The chance that a segment's first round goes unanswered, aimed for. */
const LEAD_TARGET = 0.004;
/** Recovery copies from which losses count as bursts: no lead copies then. */
const BURSTY_COPIES = 4;
/**
 * The longest a held ack may wait (ms), and what a sender adds to its RTO while its peer holds
 * ({@link Kcp.setPeerHold}; docs/wire-format/kcp.md, "Held acks").
 */
export const ACK_HOLD_MAX = 250;
/** ms per step of a held ACK's frg byte (frg − 1 steps waited). */
export const ACK_HOLD_UNIT = 4;

/**
 * The copies per recovery round that make losing a whole round unlikely: `rounds` rounds were
 * sent with `copies` copies each and `failed` of them were all lost. The loss of a copy given the
 * previous one was lost is estimated as `q = (failed / rounds) ** (1 / copies)`, and
 * `q ** n <= 2 %` solved for `n`, within `1..maxCopies` (the Python engine's
 * `recovery_copies_for`).
 */
export function recoveryCopiesFor(rounds: number, failed: number, copies: number, maxCopies: number): number {
  const f = (failed + 0.1) / (rounds + 1);
  const q = f ** (1.0 / Math.max(1, copies));
  if (q >= 0.999) return maxCopies;
  const n = q > 0 ? Math.ceil(Math.log(ROUND_FAILURE_TARGET) / Math.log(q)) : 1;
  return Math.max(1, Math.min(maxCopies, n));
}

/**
 * The spaced copies to send right behind each new small flight (`leadCopies: "auto"`): `failed`
 * of the last `samples` segments acknowledged were answered only after their first transmission.
 * Goes up one step per pick to the least `k` with `p ** (k + 1) <= 0.4 %`, and down only after
 * `LEAD_WINDOW / 2` samples (the Python engine's `lead_copies_for`).
 */
export function leadCopiesFor(samples: number, failed: number, current: number, maxLead: number): number {
  const need = (f: number, target: number): number => {
    const p = 1.0 - Math.sqrt(1.0 - Math.min(1.0, f));
    let k = 0;
    while (k < maxLead && p ** (k + 1) > target) k++;
    return k;
  };
  const f = (failed + 0.05) / (samples + 1);
  const settled = samples >= LEAD_WINDOW / 2;
  if (need(f, LEAD_TARGET) > current && (current === 0 || settled)) return current + 1;
  if (!settled) return current;
  const down = need(f, 0.75 * LEAD_TARGET);
  return down < current ? down : current;
}

/** Counters an engine adds to (all optional to read; names follow the Python `kcp.stats.Counters`). */
export interface EngineCounters {
  /** Segments accepted by input(). */
  inSegs: number;
  /** Payload bytes newly received. */
  inBytes: number;
  /** Duplicate or out-of-window data segments received. */
  repeatSegs: number;
  /** Packets input() refused (short, wrong conv, bad length, bad command). */
  kcpInErrors: number;
  /** Segments sent (acks, probes and data). */
  outSegs: number;
  /** Payload bytes sent (first sends and resends). */
  outBytes: number;
  /** Segments resent after their RTO expired. */
  lostSegs: number;
  /** Segments resent by fast resend. */
  fastRetransSegs: number;
  /** lostSegs + fastRetransSegs. */
  retransSegs: number;
  /** Spaced copies sent by the sparse-flight loss recovery (a round's later copies, lead copies). */
  copySegs: number;
  /** ACKs repeated as REACKs (repeated acks). */
  reacksSent: number;
  /** REACKs that acknowledged a segment its ACK had not: a spurious resend saved. */
  reacksUseful: number;
  /** Window updates sent again: no data came after the one that reopened the window ({@link Kcp.winsRepeat}). */
  winsRepeated: number;
}

/** A fresh set of zero counters. */
export function newEngineCounters(): EngineCounters {
  return {
    inSegs: 0,
    inBytes: 0,
    repeatSegs: 0,
    kcpInErrors: 0,
    outSegs: 0,
    outBytes: 0,
    lostSegs: 0,
    fastRetransSegs: 0,
    retransSegs: 0,
    copySegs: 0,
    reacksSent: 0,
    reacksUseful: 0,
    winsRepeated: 0,
  };
}

function s32(x: number): number {
  return x | 0;
}

function u32(x: number): number {
  return x >>> 0;
}

function cdiv(a: number, b: number): number {
  return Math.trunc(a / b);
}

/** ikcp_update_ack's smoothing in C's 32-bit ints (only reached with absurd, forged samples). */
function rttSampleC32(srtt: number, rttval: number, rtt: number): [number, number] {
  if (srtt === 0) return [rtt, rtt >>> 1];
  let delta = s32(rtt - srtt);
  if (delta < 0) delta = -delta;
  rttval = s32(cdiv(s32(3 * rttval) + delta, 4));
  srtt = s32(cdiv(s32(7 * srtt + rtt), 8));
  return [srtt >= 1 ? srtt : 1, rttval];
}

/** rto = srtt + max(interval, 4·rttval), bounded to [minrto, 60000], in C's unsigned math. */
function rtoC32(srtt: number, rttval: number, interval: number, minrto: number): number {
  let lo = u32(4 * rttval);
  if (lo < interval) lo = interval;
  let rto = u32(srtt + lo);
  minrto = u32(minrto);
  if (rto < minrto) rto = minrto;
  return rto < IKCP_RTO_MAX ? rto : IKCP_RTO_MAX;
}

/** The conversation id of a raw KCP packet, or -1 if it is shorter than 4 bytes. */
export function getConv(packet: Uint8Array): number {
  if (packet.length < 4) return -1;
  return u32(packet[0]! | (packet[1]! << 8) | (packet[2]! << 16) | (packet[3]! << 24));
}

class Seg {
  ts: number;
  resendts: number;
  rto: number;
  fastack = 0;
  xmit = 1;
  acked = false;
  /** The first transmission's time (an ack that echoes it answered that one). */
  readonly ts0: number;
  constructor(
    readonly sn: number,
    readonly frg: number,
    readonly data: Uint8Array,
    ts: number,
    rto: number,
    resendts: number,
    /** Sparse recovery: spaced copies still to send in this round. */
    public copies = 0,
  ) {
    this.ts = ts;
    this.ts0 = ts;
    this.rto = rto;
    this.resendts = resendts;
  }
}

type Item = [frg: number, data: Uint8Array];

/** Output callback: one call per datagram (the callee may keep the array). */
export type KcpOutput = (datagram: Uint8Array) => void;

/** One KCP control block (ikcp's `ikcpcb`), without I/O. Field names are ikcp's, in camelCase. */
export class Kcp {
  /** Conversation id (u32); both ends must use the same. */
  readonly conv: number;
  /** Where datagrams go; without one they pile up for {@link takeOutput}. */
  output: KcpOutput | null;
  /** Counters to add to, if set. */
  counters: EngineCounters | null = null;
  /** Oldest unacknowledged sn. */
  sndUna = 0;
  /** Next sn to send. */
  sndNxt = 0;
  /** Next sn expected. */
  rcvNxt = 0;
  /** When the next window probe goes (ms, u32). */
  tsProbe = 0;
  /** Current window-probe wait (ms). */
  probeWait = 0;
  /**
   * The wait before the first window probe (WASK) while the peer's window is 0, and the floor of
   * the waits after it, which grow by half each time up to {@link probeLimit}: ikcp's constants
   * (7 s, 120 s) unless a session asks for quicker probes.
   */
  probeInit = IKCP_PROBE_INIT;
  /** The longest wait between window probes (ms). */
  probeLimit = IKCP_PROBE_LIMIT;
  /**
   * The receiver's side: the window update (WINS) sent when reading reopens a full window is one
   * datagram, sent once by ikcp; when it is lost the sender learns the window only from its own
   * probe (ikcp and kcp-go: 7 s later). With `winsRepeat` > 0 it goes again after an RTO, then twice
   * that ..., at most `winsRepeat` more times, until a data segment comes or the window is full
   * again. Off (0) by default: ikcp's. (The Python engine's `wins_repeat`.)
   */
  winsRepeat = 0;
  private winsLeft = 0;
  private winsDue = 0;
  private winsGap = 0;
  private winsMarkNxt = 0;
  private winsMarkBuf = 0;
  /** Send window (segments). */
  sndWnd = IKCP_WND_SND;
  /** Receive window (segments). */
  rcvWnd = IKCP_WND_RCV;
  /** The peer's advertised window. */
  rmtWnd = IKCP_WND_RCV;
  /** Congestion window. */
  cwnd = 0;
  /** Congestion-avoidance byte counter. */
  incr = 0;
  /** Pending probe flags ({@link IKCP_ASK_SEND} | {@link IKCP_ASK_TELL}). */
  probe = 0;
  /** Maximum datagram size. */
  mtu = IKCP_MTU_DEF;
  /** Maximum payload per segment (mtu − 24). */
  mss = IKCP_MTU_DEF - IKCP_OVERHEAD;
  /** 1: stream mode; 0: message mode. */
  stream = 0;
  /** 0, or -1 once a segment reached dead_link transmissions. */
  state = 0;
  /** Smoothed RTT. */
  rxSrtt = 0;
  /** RTT variation. */
  rxRttval = 0;
  /** Current RTO. */
  rxRto = IKCP_RTO_DEF;
  /** Minimum RTO. */
  rxMinrto = IKCP_RTO_MIN;
  /** The engine's current time (u32). */
  current = 0;
  /** Flush interval (ms). */
  interval = IKCP_INTERVAL;
  /** Next scheduled flush (u32). */
  tsFlush = IKCP_INTERVAL;
  /** nodelay mode (0, 1, 2). */
  nodelayMode = 0;
  /** 1 once update() or flush(now) ran. */
  updated = 0;
  /** Slow-start threshold. */
  ssthresh = IKCP_THRESH_INIT;
  /** Fast-resend skip count (0: off). */
  fastresend = 0;
  /** Fast-resend transmission limit. */
  fastlimit = IKCP_FASTACK_LIMIT;
  /** 1: no congestion window. */
  nocwnd = 0;
  /** Total retransmissions. */
  xmit = 0;
  /** Transmissions of one segment that mean a dead link. */
  deadLink = IKCP_DEADLINK;

  // Sparse-flight loss recovery (not in ikcp; off with recoveryFlight 0). See flush().
  /** The recovery applies while at most this many segments are unacked (0: ikcp's retransmission). */
  recoveryFlight = 0;
  /** Transmissions per recovery round (1: a plain retransmission). */
  recoveryCopies = 1;
  /** Spaced copies sent after a new segment's first transmission. */
  recoveryLead = 0;
  /** ms between the copies of a round. */
  recoveryGap = 10;
  /** Segments that needed >= 1, 2, 3, 4 recovery rounds (since the last pick). */
  recoveryRounds = [0, 0, 0, 0];
  /** Pick recoveryCopies from the loss seen ({@link recoveryCopiesFor}). */
  recoveryAdaptive = false;
  /** ... at most this many (the bandwidth budget of a round). */
  recoveryMaxCopies = 6;
  /** > 0: pick recoveryLead in 0..this from the loss seen ({@link leadCopiesFor}). */
  recoveryAutoLead = 0;
  /** leadCopies "auto"'s estimate: [acked, first lost, first lost under a lead, rescued, hold]. */
  recoverySamples = [0, 0, 0, 0, 0];

  // Held acks (secure mode, agreed in the handshake; not in ikcp). docs/wire-format/kcp.md.
  /** The peer agreed to held acks: its ACKs' frg says when it holds, and this end's say the same. */
  holdAware = false;
  /** ms added to every RTO while the peer holds its acks ({@link setPeerHold}). */
  rtoExtra = 0;
  /** The frg byte of this end's ACKs: 0, or 1 while this end holds acks. */
  ackFrg = 0;
  /** PUSH segments that came out of order or again (a loss shows as these). */
  disorder = 0;
  private ackFirstFrg = 0;
  // Repeated acks (secure mode, agreed in the handshake; not in ikcp). docs/wire-format/kcp.md.
  /** Both ends agreed to repeated acks: send and take REACK segments. */
  ackRepeat = false;
  /**
   * The `sn, ts` pairs of the ACKs to repeat, a list per ACK-sending flush: [ACK_REPEATS] gathers
   * those of the segments input stores above a hole, and each flush repeats [0, ACK_REPEATS) and
   * moves every list one place down.
   */
  private reacks: number[][] = Array.from({ length: ACK_REPEATS + 1 }, () => []);
  /** Pairs in those lists (0: a flush has no REACK to look for). */
  private reackPending = 0;

  private sndQueue = new Deque<Item>();
  private sndBuf: Seg[] = [];
  private rcvBuf = new Map<number, Item>();
  private rcvQueue = new Deque<Item>();
  private nacked = 0;
  private acklist: number[] = [];
  private nextResend = 0;
  private fastPending = false;
  private outbox: Uint8Array[] = [];

  /** `conv` must be a u32. */
  constructor(conv: number, output: KcpOutput | null = null) {
    if (!Number.isInteger(conv) || conv < 0 || conv > 0xffffffff) {
      throw new KcpUsageError(`conv must be a 32-bit unsigned integer, got ${conv}`);
    }
    this.conv = conv;
    this.output = output;
  }

  // ---------------------------------------------------------------- configuration

  /** ikcp_nodelay: negative arguments leave a setting unchanged. */
  nodelay(nodelay: number, interval: number, resend: number, nc: number): void {
    if (nodelay >= 0) {
      this.nodelayMode = nodelay;
      this.rxMinrto = nodelay ? IKCP_RTO_NDL : IKCP_RTO_MIN;
    }
    if (interval >= 0) this.interval = Math.min(Math.max(interval, 10), 5000);
    if (resend >= 0) {
      this.fastresend = resend;
      this.fastPending = true;
    }
    if (nc >= 0) this.nocwnd = nc;
  }

  /** ikcp_interval: the flush interval, clamped to 10..5000 ms. */
  setInterval(interval: number): void {
    this.interval = Math.min(Math.max(interval, 10), 5000);
  }

  /** ikcp_wndsize: non-positive values are ignored; the receive window is at least 128. */
  wndsize(sndwnd: number, rcvwnd: number): void {
    if (sndwnd > 0) this.sndWnd = sndwnd;
    if (rcvwnd > 0) this.rcvWnd = Math.max(rcvwnd, IKCP_WND_RCV);
  }

  /** ikcp_setmtu: -1 if `mtu` < 50, else 0 (mss becomes mtu − 24). */
  setMtu(mtu: number): number {
    if (mtu < 50) return -1;
    this.mtu = mtu;
    this.mss = mtu - IKCP_OVERHEAD;
    return 0;
  }

  /** Forget everything queued or in flight and pending acks (the session ended). */
  dropUnsent(): void {
    this.sndQueue.clear();
    this.sndBuf = [];
    this.nacked = 0;
    this.acklist = [];
    this.reacks = Array.from({ length: ACK_REPEATS + 1 }, () => []);
    this.reackPending = 0;
    this.outbox = [];
  }

  /** Segments queued or in flight and not yet acknowledged (ikcp_waitsnd). */
  waitsnd(): number {
    return this.sndBuf.length - this.nacked + this.sndQueue.length;
  }

  /** Acks waiting for the next flush. */
  acksPending(): number {
    return this.acklist.length >> 1;
  }

  /** In-order segments waiting for {@link recv}. */
  get nrcvQue(): number {
    return this.rcvQueue.length;
  }

  /** Out-of-order segments held for reassembly. */
  get nrcvBuf(): number {
    return this.rcvBuf.size;
  }

  /** Unacknowledged segments in flight. */
  get nsndBuf(): number {
    return this.sndBuf.length - this.nacked;
  }

  /** Segments in flight the peer already acknowledged out of order (still in ikcp's window). */
  get nsacked(): number {
    return this.nacked;
  }

  /** Segments waiting for the send window. */
  get nsndQue(): number {
    return this.sndQueue.length;
  }

  /** Return and clear the datagrams produced while no output callback was set. */
  takeOutput(): Uint8Array[] {
    const out = this.outbox;
    this.outbox = [];
    return out;
  }

  // ---------------------------------------------------------------- user side

  /**
   * Queue `data`; returns the bytes queued (≥ 0) or -2 if it needs ≥ 128 fragments. In message mode
   * an empty `data` is one empty message; in stream mode data first tops up the last queued segment.
   */
  send(data: Uint8Array): number {
    let n = data.length;
    const mss = this.mss;
    const queue = this.sndQueue;
    let sent = 0;
    if (this.stream) {
      const last = queue.length ? queue.at(queue.length - 1) : undefined;
      if (last !== undefined && last[1].length < mss) {
        const old = last[1];
        const extend = Math.min(n, mss - old.length);
        const merged = new Uint8Array(old.length + extend);
        merged.set(old, 0);
        merged.set(data.subarray(0, extend), old.length);
        queue.set(queue.length - 1, [0, merged]);
        sent = extend;
        data = data.subarray(extend);
        n -= extend;
      }
      if (n <= 0) return sent;
    }
    const count = n <= mss ? 1 : Math.ceil(n / mss);
    if (count >= IKCP_WND_RCV) {
      if (this.stream && sent > 0) return sent;
      return -2;
    }
    if (count === 1) {
      queue.push([0, data.slice()]);
      return sent + n;
    }
    for (let i = 0; i < count; i++) {
      queue.push([this.stream ? 0 : count - i - 1, data.slice(i * mss, (i + 1) * mss)]);
    }
    return sent + n;
  }

  /** Size of the next complete message (message mode) or of all queued bytes (stream mode); -1 if none. */
  peeksize(): number {
    const q = this.rcvQueue;
    const first = q.at(0);
    if (first === undefined) return -1;
    if (this.stream) {
      let total = 0;
      for (const [, d] of q) total += d.length;
      return total;
    }
    if (first[0] === 0) return first[1].length;
    if (q.length < first[0] + 1) return -1;
    let length = 0;
    for (const [frg, d] of q) {
      length += d.length;
      if (frg === 0) break;
    }
    return length;
  }

  /** The next message (message mode) or everything deliverable (stream mode); null when nothing is ready. */
  recv(): Uint8Array | null {
    const q = this.rcvQueue;
    const first = q.at(0);
    if (first === undefined) return null;
    const rcvWnd = this.rcvWnd;
    const recover = q.length >= rcvWnd;
    let result: Uint8Array;
    if (this.stream) {
      const parts: Uint8Array[] = [];
      while (q.length) {
        for (let k = q.length; k > 0; k--) parts.push((q.shift() as Item)[1]);
        this.moveRcvBuf();
      }
      result = concat(parts);
    } else {
      if (first[0] === 0) {
        q.shift();
        result = first[1];
      } else {
        if (q.length < first[0] + 1) return null;
        const parts: Uint8Array[] = [];
        while (q.length) {
          const [frg, d] = q.shift() as Item;
          parts.push(d);
          if (frg === 0) break;
        }
        result = concat(parts);
      }
      if (this.rcvBuf.has(this.rcvNxt)) this.moveRcvBuf();
    }
    if (recover && q.length < rcvWnd) {
      this.probe |= IKCP_ASK_TELL;
      if (this.winsRepeat) {
        this.winsLeft = this.winsRepeat;
        this.winsGap = 0;
      }
    }
    return result;
  }

  private moveRcvBuf(): void {
    const rcvBuf = this.rcvBuf;
    const q = this.rcvQueue;
    let nxt = this.rcvNxt;
    while (rcvBuf.size && q.length < this.rcvWnd) {
      const item = rcvBuf.get(nxt);
      if (item === undefined) break;
      rcvBuf.delete(nxt);
      q.push(item);
      nxt = u32(nxt + 1);
    }
    this.rcvNxt = nxt;
  }

  // ---------------------------------------------------------------- network side

  private dropFront(k: number): void {
    const buf = this.sndBuf;
    if (k) {
      if (this.nacked) {
        for (let i = 0; i < k; i++) if (buf[i]!.acked) this.nacked--;
      }
      buf.splice(0, k);
    }
    if (this.nacked && buf.length && buf[0]!.acked) {
      let i = 1;
      while (i < buf.length && buf[i]!.acked) i++;
      this.nacked -= i;
      buf.splice(0, i);
    }
    this.sndUna = buf.length ? buf[0]!.sn : this.sndNxt;
  }

  /**
   * Feed one datagram from the network (ikcp_input). Returns 0 or a negative ikcp code. `now`, if
   * given, becomes the engine's current time. `regular = false` marks a packet rebuilt by FEC: its
   * window is not trusted and its acks give no RTT sample (kcp-go's rule, as the Python engine).
   */
  input(pkt: Uint8Array, now?: number, regular = true): number {
    if (now !== undefined) this.current = u32(now);
    const size = pkt.length;
    if (size < 24) return this.inError(-1);
    const dv = new DataView(pkt.buffer, pkt.byteOffset, pkt.byteLength);
    const prevUna = this.sndUna;
    let flag = false;
    let maxack = 0;
    let latestTs = 0;
    let off = 0;
    let nsegs = 0;
    let inBytes = 0;
    let repeat = 0;
    const current = this.current;
    const acklist = this.acklist;
    const rcvBuf = this.rcvBuf;
    const rcvQueue = this.rcvQueue;
    const rcvWnd = this.rcvWnd;
    let srtt = this.rxSrtt;
    let rttval = this.rxRttval;
    let sampled = false;
    let rc = 0;
    let lastWnd = -1;
    const holdAware = this.holdAware;
    let peerHold = -1; // the last ACK's frg, or 0 after a PUSH (held acks); -1: neither seen
    let disorder = 0;
    while (size - off >= 24) {
      const conv = dv.getUint32(off, true);
      const cmd = pkt[off + 4]!;
      const frg = pkt[off + 5]!;
      const wnd = dv.getUint16(off + 6, true);
      const ts = dv.getUint32(off + 8, true);
      const sn = dv.getUint32(off + 12, true);
      const una = dv.getUint32(off + 16, true);
      const ln = dv.getUint32(off + 20, true);
      if (conv !== this.conv) {
        rc = -1;
        break;
      }
      off += 24;
      if (size - off < ln) {
        rc = -2;
        break;
      }
      if ((cmd < 81 || cmd > 84) && (cmd !== IKCP_CMD_REACK || !this.ackRepeat)) {
        rc = -3;
        break;
      }
      nsegs++;
      if (regular) {
        lastWnd = wnd;
        if ((cmd === IKCP_CMD_ACK || cmd === IKCP_CMD_REACK) && this.recoveryAutoLead) this.sampleFirstAck(sn, ts);
      }
      const buf = this.sndBuf;
      let d = u32(una - this.sndUna);
      if (d > 0 && d < HALF && buf.length) this.dropFront(d < buf.length ? d : buf.length);
      if (cmd === IKCP_CMD_ACK) {
        let rtt = u32(current - ts);
        if (holdAware) {
          // held acks: frg − 1 steps of the wait are not the path's
          peerHold = frg;
          if (frg > 1 && rtt < HALF) {
            const waited = (frg - 1) * ACK_HOLD_UNIT;
            rtt = rtt > waited ? rtt - waited : 0;
          }
        }
        if (rtt < HALF && regular) {
          sampled = true;
          if (srtt === 0 && rtt < BIG) {
            srtt = rtt;
            rttval = rtt >>> 1;
          } else if (rtt < BIG && srtt < BIG && rttval >= 0 && rttval < BIG) {
            rttval = Math.floor((3 * rttval + (rtt > srtt ? rtt - srtt : srtt - rtt)) / 4);
            srtt = Math.floor((7 * srtt + rtt) / 8);
            if (srtt < 1) srtt = 1;
          } else {
            [srtt, rttval] = rttSampleC32(srtt, rttval, rtt);
          }
        }
        d = u32(sn - this.sndUna);
        const b = this.sndBuf;
        if (d < b.length) {
          const seg = b[d]!;
          if (!seg.acked) {
            seg.acked = true;
            this.nacked++;
            if (d === 0) this.dropFront(0);
          }
        }
        if (!flag) {
          flag = true;
          maxack = sn;
          latestTs = ts;
        } else {
          const ds = u32(sn - maxack);
          const dt = u32(ts - latestTs);
          if (ds > 0 && ds < HALF && dt > 0 && dt < HALF) {
            maxack = sn;
            latestTs = ts;
          }
        }
      } else if (cmd === IKCP_CMD_PUSH) {
        if (holdAware) peerHold = 0; // a peer that sends data holds no acks
        const rcvNxt = this.rcvNxt;
        d = u32(sn - rcvNxt);
        if (d < rcvWnd) {
          acklist.push(sn, ts);
          if (d === 0 && rcvBuf.size === 0 && rcvQueue.length < rcvWnd) {
            rcvQueue.push([frg, pkt.slice(off, off + ln)]);
            this.rcvNxt = u32(rcvNxt + 1);
            inBytes += ln;
          } else if (rcvBuf.has(sn)) {
            if (d) disorder++;
            repeat++;
          } else {
            if (d) disorder++;
            rcvBuf.set(sn, [frg, pkt.slice(off, off + ln)]);
            inBytes += ln;
            if (d === 0) this.moveRcvBuf();
            else if (this.ackRepeat) {
              this.reacks[ACK_REPEATS]!.push(sn, ts); // above a hole: its ACK is repeated
              this.reackPending++;
            }
          }
        } else if (u32(d - rcvWnd) >= HALF) {
          acklist.push(sn, ts);
          repeat++;
          disorder++;
        } else {
          repeat++;
        }
      } else if (cmd === IKCP_CMD_WASK) {
        this.probe |= IKCP_ASK_TELL;
      } else if (cmd === IKCP_CMD_REACK) {
        this.reacked(sn); // an ACK again, without an RTT sample or a fast-ack count
      }
      off += ln;
    }
    if (lastWnd >= 0) this.rmtWnd = lastWnd;
    if (disorder) this.disorder += disorder;
    if (peerHold >= 0 && (peerHold > 0) !== (this.rtoExtra > 0)) this.setPeerHold(peerHold > 0);
    if (sampled) {
      this.rxSrtt = srtt;
      this.rxRttval = rttval;
      this.rxRto = rtoC32(srtt, rttval, this.interval, this.rxMinrto);
    }
    const c = this.counters;
    if (c !== null) {
      c.inSegs += nsegs;
      c.inBytes += inBytes;
      if (regular) c.repeatSegs += repeat;
      if (rc) c.kcpInErrors++;
    }
    if (rc) return rc;
    if (flag) this.parseFastack(maxack, latestTs);
    const moved = u32(this.sndUna - prevUna);
    if (moved > 0 && moved < HALF && this.cwnd < this.rmtWnd) {
      const mss = this.mss;
      if (this.cwnd < this.ssthresh) {
        this.cwnd++;
        this.incr += mss;
      } else {
        if (this.incr < mss) this.incr = mss;
        this.incr += Math.floor((mss * mss) / this.incr) + Math.floor(mss / 16);
        if ((this.cwnd + 1) * mss <= this.incr) this.cwnd = Math.floor((this.incr + mss - 1) / (mss > 0 ? mss : 1));
      }
      if (this.cwnd > this.rmtWnd) {
        this.cwnd = this.rmtWnd;
        this.incr = this.rmtWnd * mss;
      }
    }
    return 0;
  }

  private inError(rc: number): number {
    if (this.counters !== null) this.counters.kcpInErrors++;
    return rc;
  }

  /** Segment `sn` if it is in flight and not yet acknowledged. */
  private inFlight(sn: number): Seg | null {
    const buf = this.sndBuf;
    const d = u32(sn - this.sndUna);
    if (d >= buf.length) return null;
    const seg = buf[d]!;
    return seg.acked ? null : seg;
  }

  /**
   * A REACK for `sn`: the segment is acknowledged, as by its ACK, whose packet may have been lost
   * (then this saves a fast resend of a segment that arrived: `reacksUseful`).
   */
  private reacked(sn: number): void {
    const seg = this.inFlight(sn);
    if (seg === null) return;
    seg.acked = true;
    this.nacked++;
    if (sn === this.sndUna) this.dropFront(0);
    if (this.counters !== null) this.counters.reacksUseful++;
  }

  private parseFastack(sn: number, ts: number): void {
    const buf = this.sndBuf;
    const d = u32(sn - this.sndUna);
    if (d >= buf.length) return;
    const resent = this.fastresend;
    const fastlimit = this.fastlimit;
    let pending = false;
    for (let i = 0; i < d; i++) {
      const seg = buf[i]!;
      if (!seg.acked && u32(ts - seg.ts) < HALF) {
        seg.fastack++;
        if (resent > 0 && resent <= seg.fastack && (seg.xmit <= fastlimit || fastlimit <= 0)) pending = true;
      }
    }
    if (pending) this.fastPending = true;
  }

  // ---------------------------------------------------------------- timers

  /** ikcp_update: call every `interval` ms (or when {@link check} says); flushes when due. */
  update(now: number): void {
    const current = (this.current = u32(now));
    if (!this.updated) {
      this.updated = 1;
      this.tsFlush = current;
    }
    let slap = s32(current - this.tsFlush);
    if (slap >= 10000 || slap < -10000) {
      this.tsFlush = current;
      slap = 0;
    }
    if (slap >= 0) {
      let tsFlush = u32(this.tsFlush + this.interval);
      if (s32(current - tsFlush) >= 0) tsFlush = u32(current + this.interval);
      this.tsFlush = tsFlush;
      this.flush();
    }
  }

  /**
   * Repeat the window update that reopened a full window ({@link winsRepeat}), or stop: once data
   * came after it (the sender heard) or the window is full again (nothing to tell).
   */
  private repeatWins(current: number): void {
    const markNxt = this.rcvNxt;
    const markBuf = this.rcvBuf.size;
    if ((this.winsGap && (markNxt !== this.winsMarkNxt || markBuf !== this.winsMarkBuf)) || this.rcvQueue.length >= this.rcvWnd) {
      this.winsLeft = 0;
      return;
    }
    let gap: number;
    if (this.probe & IKCP_ASK_TELL) {
      gap = this.rxRto > this.interval ? this.rxRto : this.interval; // the update goes in this flush
    } else if (s32(current - this.winsDue) >= 0) {
      this.probe |= IKCP_ASK_TELL;
      this.winsLeft--;
      gap = 2 * this.winsGap;
      if (this.counters !== null) this.counters.winsRepeated++;
    } else {
      return;
    }
    this.winsGap = gap;
    this.winsDue = u32(current + gap);
    this.winsMarkNxt = markNxt;
    this.winsMarkBuf = markBuf;
  }

  /** A window update may still be repeated ({@link winsRepeat}): the session keeps flushing. */
  winsPending(): boolean {
    return this.winsLeft > 0;
  }

  /** ikcp_check: when {@link update} should next be called, in the caller's clock (`now` if due). */
  check(now: number): number {
    if (!this.updated) return now;
    const current = u32(now);
    const d = s32(current - this.tsFlush);
    if (d >= 10000 || d < -10000) return now;
    if (d >= 0) return now;
    const tmFlush = -d;
    let minimal: number;
    const buf = this.sndBuf;
    if (buf.length && s32(this.nextResend - current) < tmFlush) {
      let tmPacket = 0x7fffffff;
      for (const seg of buf) {
        if (seg.acked) continue;
        const diff = s32(seg.resendts - current);
        if (diff <= 0) return now;
        if (diff < tmPacket) tmPacket = diff;
      }
      minimal = tmPacket < tmFlush ? tmPacket : tmFlush;
    } else {
      minimal = tmFlush;
    }
    if (minimal >= this.interval) minimal = this.interval;
    return now + minimal;
  }

  /**
   * `leadCopies: "auto"`: the first acknowledgement of segment `sn` (before the packet's `una`
   * removes it) tells whether its first transmission was answered.
   */
  private sampleFirstAck(sn: number, ts: number): void {
    const seg = this.inFlight(sn);
    if (seg === null) return;
    const samples = this.recoverySamples;
    samples[0]!++;
    const lead = this.recoveryLead;
    const lost = ts !== seg.ts0;
    if (lost) {
      samples[1]!++;
      if (lead) {
        samples[2]!++;
        if (seg.xmit === 1) samples[3]!++; // no recovery round yet: a lead copy got through
      }
    }
    if (samples[4]) samples[4]--;
    if (samples[0]! % LEAD_SAMPLES && !(lost && !lead)) return; // picks: every 32, or a first loss
    if (lead && samples[2]! >= 4 && 2 * samples[3]! < samples[2]!) {
      // the lead copies were lost with their originals more often than not: bursts; the recovery
      // rounds' copies, an RTO apart, do the work then, and no lead copies for a while
      this.recoveryLead = 0;
      samples[2] = samples[3] = 0;
      samples[4] = LEAD_WINDOW;
    } else if (samples[4] || this.recoveryCopies >= BURSTY_COPIES) {
      this.recoveryLead = 0; // bursts (seen either way)
    } else {
      this.recoveryLead = leadCopiesFor(samples[0]!, samples[1]!, lead, this.recoveryAutoLead);
    }
    if (samples[0]! >= LEAD_WINDOW) {
      for (let i = 0; i < 4; i++) samples[i] = Math.floor(samples[i]! / 2);
    }
  }

  /**
   * The peer started (`holding`) or stopped holding its lone acks (an ACK's frg, read by
   * {@link input} when {@link holdAware}): every RTO gets {@link ACK_HOLD_MAX} more, or loses it,
   * and the segments in flight move their retransmission times by as much, so a held ack never
   * looks lost and a loss found by an ack that came at once is resent at once.
   */
  setPeerHold(holding: boolean): void {
    const extra = holding ? ACK_HOLD_MAX : 0;
    const delta = extra - this.rtoExtra;
    if (!delta) return;
    this.rtoExtra = extra;
    for (const seg of this.sndBuf) if (!seg.acked) seg.resendts = u32(seg.resendts + delta);
    this.nextResend = u32(this.nextResend + delta);
  }

  /**
   * The first pending ack waited `held` ms (held acks): the next flush writes that into its frg
   * ({@link ACK_HOLD_UNIT} ms steps, plus 1), so the sender's RTT sample leaves it out.
   */
  holdFirstAck(held: number): void {
    this.ackFirstFrg = 1 + Math.min(Math.floor(Math.max(held, 0) / ACK_HOLD_UNIT), 254);
  }

  /** Re-pick recoveryCopies from the recovery rounds seen since the last pick, then forget half. */
  private adapt(): void {
    const rounds = this.recoveryRounds;
    this.recoveryCopies = recoveryCopiesFor(rounds[0]!, rounds[1]!, this.recoveryCopies, this.recoveryMaxCopies);
    for (let i = 0; i < 4; i++) rounds[i] = Math.floor(rounds[i]! / 2);
  }

  // ---------------------------------------------------------------- flush

  /**
   * ikcp_flush: send pending acks, probes and the data the windows allow. Does nothing before the
   * first {@link update} unless `now` is given (which then also becomes the current time).
   */
  flush(now?: number): void {
    if (now !== undefined) {
      this.current = u32(now);
      if (!this.updated) {
        this.updated = 1;
        this.tsFlush = this.current;
      }
    } else if (!this.updated) {
      return;
    }
    const current = this.current;
    const acklist = this.acklist;
    const buf = this.sndBuf;
    if (
      !acklist.length &&
      !this.probe &&
      this.rmtWnd &&
      this.cwnd >= 1 &&
      !this.fastPending &&
      (!buf.length || s32(current - this.nextResend) < 0)
    ) {
      this.tsProbe = 0;
      this.probeWait = 0;
      if (!this.sndQueue.length) return;
      let cw = Math.min(this.sndWnd, this.rmtWnd);
      if (!this.nocwnd) cw = Math.min(this.cwnd, cw);
      if (s32(this.sndNxt - this.sndUna - cw) >= 0) return;
    }
    const out: KcpOutput = this.output ?? ((d) => this.outbox.push(d));
    const mtu = this.mtu;
    const conv = this.conv;
    const nq = this.rcvQueue.length;
    const wnd = (nq < this.rcvWnd ? this.rcvWnd - nq : 0) & 0xffff;
    const una = this.rcvNxt;
    let parts: Uint8Array[] = [];
    let ptr = 0;
    let nout = 0;
    let ackSn = 0;
    let ackTs = 0;
    const emit = (): void => {
      out(concat(parts, ptr));
      parts = [];
      ptr = 0;
    };
    const header = (cmd: number, frg: number, ts: number, sn: number, len: number): Uint8Array => {
      const h = new Uint8Array(24);
      const v = new DataView(h.buffer);
      v.setUint32(0, conv, true);
      h[4] = cmd;
      h[5] = frg;
      v.setUint16(6, wnd, true);
      v.setUint32(8, ts, true);
      v.setUint32(12, sn, true);
      v.setUint32(16, una, true);
      v.setUint32(20, len, true);
      return h;
    };

    if (acklist.length) {
      const n = acklist.length;
      nout += n >> 1;
      let frg = this.ackFirstFrg || this.ackFrg; // a held first ack: its wait, for the sender's RTT sample
      this.ackFirstFrg = 0;
      for (let i = 0; i < n; i += 2) {
        if (ptr + 24 > mtu) emit();
        parts.push(header(IKCP_CMD_ACK, frg, acklist[i + 1]!, acklist[i]!, 0));
        frg = this.ackFrg;
        ptr += 24;
      }
      ackSn = acklist[n - 2]!;
      ackTs = acklist[n - 1]!;
      this.acklist = [];
      if (this.reackPending) {
        // (only with ackRepeat) REACKs: the ACKs of segments that came above a hole in the last
        // ACK_REPEATS ACK-sending flushes, unless rcv_nxt has passed them (una acknowledges those)
        const lists = this.reacks;
        let reps = 0;
        for (let k = 0; k < ACK_REPEATS; k++) {
          const l = lists[k]!;
          for (let i = 0; i < l.length; i += 2) {
            if (u32(l[i]! - una) >= this.rcvWnd) continue;
            if (ptr + 24 > mtu) emit();
            parts.push(header(IKCP_CMD_REACK, 0, l[i + 1]!, l[i]!, 0));
            ptr += 24;
            reps++;
          }
        }
        // each list moves one flush on; the oldest had all its repeats
        this.reackPending -= lists.shift()!.length >> 1;
        lists.push([]);
        nout += reps;
        if (reps && this.counters !== null) this.counters.reacksSent += reps;
      }
    }

    if (this.rmtWnd === 0) {
      if (this.probeWait === 0) {
        this.probeWait = this.probeInit;
        this.tsProbe = u32(current + this.probeWait);
      } else if (s32(current - this.tsProbe) >= 0) {
        if (this.probeWait < this.probeInit) this.probeWait = this.probeInit;
        this.probeWait += Math.floor(this.probeWait / 2);
        if (this.probeWait > this.probeLimit) this.probeWait = this.probeLimit;
        this.tsProbe = u32(current + this.probeWait);
        this.probe |= IKCP_ASK_SEND;
      }
    } else {
      this.tsProbe = 0;
      this.probeWait = 0;
    }

    if (this.winsLeft) this.repeatWins(current);
    const probe = this.probe;
    if (probe) {
      for (const [flag, cmd] of [
        [IKCP_ASK_SEND, IKCP_CMD_WASK],
        [IKCP_ASK_TELL, IKCP_CMD_WINS],
      ] as const) {
        if (probe & flag) {
          if (ptr + 24 > mtu) emit();
          parts.push(header(cmd, 0, ackTs, ackSn, 0));
          ptr += 24;
          nout++;
        }
      }
      this.probe = 0;
    }

    const resent = this.fastresend > 0 ? this.fastresend : 0xffffffff;
    const nodelay = this.nodelayMode;
    const rxRto = this.rxRto + this.rtoExtra; // (extra: while the peer holds its acks)
    const rtomin = nodelay === 0 ? rxRto >>> 3 : 0;
    let change = 0;
    let lost = false;
    let nlost = 0;
    let nfast = 0;
    let ncopies = 0;
    let outBytes = 0;
    const nbufOld = buf.length;
    const pushData = (frg: number, sn: number, data: Uint8Array): void => {
      const ln = data.length;
      if (ptr + 24 + ln > mtu && ptr) emit();
      parts.push(header(IKCP_CMD_PUSH, frg, current, sn, ln));
      ptr += 24;
      if (ln) {
        parts.push(data);
        ptr += ln;
      }
      nout++;
      outBytes += ln;
    };

    if (nbufOld && (this.fastPending || u32(current - this.nextResend) < HALF)) {
      const fastlimit = this.fastlimit;
      let nextDiff = 0x7fffffff;
      let fastPending = false;
      const sparse = buf.length - this.nacked > 0 && buf.length - this.nacked <= this.recoveryFlight;
      for (const seg of buf) {
        if (seg.acked) continue;
        let d = u32(current - seg.resendts);
        if (d < HALF && (sparse || seg.copies)) {
          // sparse flight: spaced copies, capped backoff
          if (seg.copies > 0) {
            seg.copies--; // the next copy of this round (not a loss)
            ncopies++;
          } else {
            // the round's copies all went unanswered: a new round
            seg.xmit++;
            this.xmit++;
            const rounds = this.recoveryRounds;
            const k = seg.xmit - 2;
            if (k < 4) rounds[k]!++;
            if (seg.xmit > 4) seg.rto = Math.min(seg.rto + Math.floor(seg.rto / 2), SPARSE_RTO_CAP * rxRto);
            else seg.rto = rxRto;
            if (this.recoveryAdaptive && (rounds[0]! >= ADAPT_SAMPLES || rounds[1]! >= ADAPT_FAILED)) this.adapt();
            seg.copies = this.recoveryCopies - 1;
            lost = true;
            nlost++;
          }
          seg.resendts = u32(current + (seg.copies > 0 ? this.recoveryGap : seg.rto));
        } else if (d < HALF) {
          seg.xmit++;
          this.xmit++;
          if (nodelay === 0) seg.rto += seg.rto > rxRto ? seg.rto : rxRto;
          else seg.rto += Math.floor((nodelay < 2 ? seg.rto : rxRto) / 2);
          seg.resendts = u32(current + seg.rto);
          lost = true;
          nlost++;
          if (seg.fastack >= resent && (seg.xmit <= fastlimit || fastlimit <= 0)) fastPending = true;
        } else if (seg.fastack >= resent && (seg.xmit <= fastlimit || fastlimit <= 0)) {
          seg.xmit++;
          seg.fastack = 0;
          seg.resendts = u32(current + seg.rto);
          change++;
          nfast++;
        } else {
          d = 0x100000000 - d;
          if (d < nextDiff) nextDiff = d;
          continue;
        }
        seg.ts = current;
        pushData(seg.frg, seg.sn, seg.data);
        if (seg.xmit >= this.deadLink) this.state = -1;
        d = u32(seg.resendts - current);
        if (d >= HALF) d -= 0x100000000;
        if (d < nextDiff) nextDiff = d;
      }
      this.nextResend = u32(current + nextDiff);
      this.fastPending = fastPending;
    }

    let cwnd = this.sndWnd < this.rmtWnd ? this.sndWnd : this.rmtWnd;
    if (!this.nocwnd && this.cwnd < cwnd) cwnd = this.cwnd;
    const queue = this.sndQueue;
    if (queue.length) {
      let sndNxt = this.sndNxt;
      const limit = u32(this.sndUna + cwnd);
      if (u32(sndNxt - limit) >= HALF) {
        let resendts = u32(current + rxRto + rtomin);
        let lead = 0;
        if (this.recoveryLead && buf.length - this.nacked + queue.length <= this.recoveryFlight) {
          lead = this.recoveryLead;
          resendts = u32(current + this.recoveryGap);
        }
        while (queue.length && u32(sndNxt - limit) >= HALF) {
          const [frg, data] = queue.shift() as Item;
          buf.push(new Seg(sndNxt, frg, data, current, rxRto, resendts, lead));
          pushData(frg, sndNxt, data);
          sndNxt = u32(sndNxt + 1);
        }
        this.sndNxt = sndNxt;
        if (this.deadLink <= 1) this.state = -1;
        if (!nbufOld || u32(resendts - this.nextResend) >= HALF) this.nextResend = resendts;
      }
    }

    if (ptr) emit();

    const c = this.counters;
    if (c !== null) {
      c.outSegs += nout;
      c.outBytes += outBytes;
      c.lostSegs += nlost;
      c.fastRetransSegs += nfast;
      c.retransSegs += nlost + nfast;
      c.copySegs += ncopies;
    }
    if (change) {
      const inflight = u32(this.sndNxt - this.sndUna);
      this.ssthresh = Math.max(Math.floor(inflight / 2), IKCP_THRESH_MIN);
      this.cwnd = u32(this.ssthresh + resent);
      this.incr = u32(this.cwnd * this.mss);
    }
    if (lost) {
      this.ssthresh = Math.max(Math.floor(cwnd / 2), IKCP_THRESH_MIN);
      this.cwnd = 1;
      this.incr = this.mss;
    }
    if (this.cwnd < 1) {
      this.cwnd = 1;
      this.incr = this.mss;
    }
  }
}
