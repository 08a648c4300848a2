/**
 * A sender-side, BBR-like congestion controller for KCP bulk flows (sans-I/O): the TypeScript
 * counterpart of the Python `kcp/congestion.py`, step for step (tests/clients/kcp_cc_trace.py
 * checks it against the Python controller, datagram for datagram).
 *
 * ikcp with `nc=1` (the default nodelay) has no congestion window: a sender keeps its whole send
 * window in flight, and on a rate-limited link the excess waits in the bottleneck's queue.
 * {@link BbrLite} models the path instead:
 *
 * - the **bottleneck bandwidth** is the highest delivery rate (bytes acknowledged over about one
 *   RTT) seen in the last `bwRounds` round trips;
 * - the **minimum RTT** is the lowest RTT seen in the last `minRttWindow` ms; when it has not been
 *   seen again for that long, the controller drains the queue for `probeRttMs` (PROBE_RTT);
 * - it paces at `pacingGain × bandwidth` and keeps at most `cwndGain × BDP` bytes in flight, in
 *   BBR's phases: STARTUP, DRAIN, PROBE_BW (gains 1.25, 0.75, then 1 for six round trips).
 *
 * Random loss is not a congestion signal (losses are only counted, {@link BbrLite.lostSegs}); a
 * queue is: an RTT above `queueFactor × min RTT` outside the 1.25 probe paces at 0.75 until it is
 * back, and ends STARTUP. docs/tuning.md, "Congestion control", has the design.
 *
 * Time is integer milliseconds supplied by the caller; nothing here reads a clock.
 */

/** 2 / ln 2: STARTUP doubles the delivery rate each round. */
const STARTUP_GAIN = 2.885;
/** STARTUP's window gain: the window, not the pacer, bounds STARTUP's queue. */
const STARTUP_CWND_GAIN = 1.5;
/** The loss compensation paces at most at 1 / (1 − MAX_LOSS) × the delivery rate. */
const MAX_LOSS = 0.5;
/** Below this min RTT (ms) nothing is paced: a ms clock resolves neither the RTT nor a queue. */
export const MIN_PACED_RTT = 3;
const PROBE_BW_GAINS = [1.25, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0];

/** The controller's phase. */
export type CcState = "startup" | "drain" | "probe_bw" | "probe_rtt";

/** The model's constants (defaults as the Python `BBRLite`'s). */
export interface BbrOptions {
  /** Window before any measurement, and STARTUP's least (segments). Default 32. */
  initialCwnd?: number;
  /** The least window (segments). Default 4. */
  minCwnd?: number;
  /** The most (segments). Default 65536. */
  maxCwnd?: number;
  /** Round trips the bandwidth filter remembers. Default 10. */
  bwRounds?: number;
  /** ms after which an unrenewed min RTT is measured again (PROBE_RTT). Default 10000. */
  minRttWindow?: number;
  /** How long PROBE_RTT drains (ms). Default 200. */
  probeRttMs?: number;
  /** An RTT above this × min RTT is a queue. Default 1.25. */
  queueFactor?: number;
  /** The pacer's largest burst (ms of the pacing rate). Default 20. */
  burstMs?: number;
}

/** Bottleneck bandwidth and RTT estimates → a congestion window and a pacing rate. */
export class BbrLite {
  /** Segment payload size in bytes (the unit of {@link cwnd}). */
  mss: number;
  readonly initialCwnd: number;
  readonly minCwnd: number;
  readonly maxCwnd: number;
  readonly bwRounds: number;
  readonly minRttWindow: number;
  readonly probeRttMs: number;
  readonly queueFactor: number;
  readonly burstMs: number;
  state: CcState = "startup";
  pacingGain = STARTUP_GAIN;
  cwndGain = STARTUP_CWND_GAIN;
  /** Bottleneck bandwidth estimate, bytes per ms. */
  bw = 0;
  /** ms; 0 until the first sample. */
  minRtt = 0;
  minRttStamp = 0;
  rounds = 0;
  /** Pacing budget in bytes (below zero: a segment borrowed). */
  tokens = 0;
  /** Segments retransmitted (counted, not acted on). */
  lostSegs = 0;
  /** The pacing rate's loss compensation (1 / (1 − the recent retransmitted share)). */
  lossComp = 1;

  private lastRefill: number | null = null;
  private measuredRate = false;
  private delivered = 0;
  private hist: [number, number][] = []; // (time, delivered) for the rate samples
  private histHead = 0;
  private bwSamples: number[] = []; // the max delivery rate of each recent round
  private roundMax = 0;
  private roundLowGain = false;
  private rtt = 0;
  private roundStart = 0;
  private roundSent = 0;
  private roundRetrans = 0;
  private lossHist: [number, number][] = [];
  private fullBw = 0;
  private fullBwCount = 0;
  private phase = 0;
  private phaseStart = 0;
  private probeRttDone = 0;
  private rttWindowMin = 0;
  private queueDrain = false;

  constructor(mss: number, options: BbrOptions = {}) {
    if (!(mss >= 1)) throw new RangeError("mss must be >= 1");
    this.mss = mss;
    this.initialCwnd = options.initialCwnd ?? 32;
    this.minCwnd = options.minCwnd ?? 4;
    this.maxCwnd = options.maxCwnd ?? 1 << 16;
    if (!(1 <= this.minCwnd && this.minCwnd <= this.initialCwnd && this.initialCwnd <= this.maxCwnd)) {
      throw new RangeError("need 1 <= minCwnd <= initialCwnd <= maxCwnd");
    }
    this.bwRounds = options.bwRounds ?? 10;
    this.minRttWindow = options.minRttWindow ?? 10_000;
    this.probeRttMs = options.probeRttMs ?? 200;
    this.queueFactor = options.queueFactor ?? 1.25;
    this.burstMs = options.burstMs ?? 20;
  }

  // -------------------------------------------------------------- outputs

  /** Bandwidth × min RTT in bytes (0 before both are known). */
  get bdp(): number {
    return this.bw * this.minRtt;
  }

  /** How many segments may be unacknowledged now. */
  get cwnd(): number {
    if (this.state === "probe_rtt") return this.minCwnd;
    if (!this.bw || !this.minRtt) return this.initialCwnd;
    // BDP × gain, plus half a pacing burst of room (acks come back in batches)
    const target = this.cwndGain * this.bdp + this.bw * (this.burstMs >> 1);
    const n = Math.trunc(target / this.mss) + 1;
    // STARTUP never offers less than the initial window (calls stay there, with ikcp's bursts)
    const low = this.state === "startup" ? this.initialCwnd : this.minCwnd;
    if (n < low) return low;
    return n < this.maxCwnd ? n : this.maxCwnd;
  }

  /** Whether a delivery rate was measured while the sender had data waiting (until then: unpaced, STARTUP). */
  get measured(): boolean {
    return this.measuredRate;
  }

  /** Bytes per second; 0: not paced (nothing measured yet, or a min RTT below {@link MIN_PACED_RTT}). */
  get pacingRate(): number {
    return this.rate() * 1000;
  }

  private rate(): number {
    if (!this.measuredRate || this.minRtt < MIN_PACED_RTT) return 0;
    return this.pacingGain * this.bw * this.lossComp;
  }

  /** Bytes the pacer lets out now (the token bucket, refilled up to `now`). */
  quota(now: number): number {
    this.refill(now);
    return this.tokens;
  }

  /** When the pacer next has a positive budget (`now` if it has one already). */
  nextSendTime(now: number): number {
    this.refill(now);
    if (this.tokens > 0) return now;
    const rate = this.rate();
    if (rate <= 0) return now;
    return now + Math.trunc(-this.tokens / rate) + 1;
  }

  private refill(now: number): void {
    const last = this.lastRefill;
    this.lastRefill = now;
    const rate = this.rate();
    if (rate <= 0) {
      this.tokens = this.initialCwnd * this.mss;
      return;
    }
    if (last === null || now <= last) return;
    const cap = Math.max(rate * this.burstMs, 2 * this.mss);
    const t = this.tokens + rate * (now - last);
    this.tokens = t < cap ? t : cap;
  }

  // -------------------------------------------------------------- inputs

  /** `nbytes` of segment payload left (new data and retransmissions). */
  onSend(now: number, nbytes: number): void {
    this.refill(now);
    const t = this.tokens - nbytes;
    const floor = -this.rate() * this.burstMs;
    this.tokens = t > floor || floor === 0 ? t : floor; // a retransmission storm is not owed
    this.roundSent += nbytes;
  }

  /** `nsegs` segments were retransmitted (timeout or fast resend): counted, not acted on. */
  onLoss(_now: number, nsegs: number): void {
    this.lostSegs += nsegs;
    this.roundRetrans += nsegs * this.mss;
  }

  /**
   * After acks: `ackedBytes` newly acknowledged, `rtt` the current RTT estimate in ms (0: none
   * yet), `inflight` the segments still unacknowledged; `appLimited` when the sender had nothing
   * more to send (its samples may raise the estimate, never lower it).
   */
  onAck(now: number, ackedBytes: number, rtt: number, inflight: number, appLimited = false): void {
    if (rtt > 0) {
      this.rtt = rtt;
      this.updateMinRtt(now, rtt);
    }
    if (ackedBytes > 0) {
      this.delivered += ackedBytes;
      this.sampleRate(now, appLimited);
    }
    this.advanceRound(now, appLimited);
    this.updateState(now, rtt, inflight);
  }

  private updateMinRtt(now: number, rtt: number): void {
    if (this.state === "probe_rtt" && (!this.rttWindowMin || rtt < this.rttWindowMin)) this.rttWindowMin = rtt;
    if (!this.minRtt || rtt <= this.minRtt) {
      this.minRtt = rtt;
      this.minRttStamp = now;
    }
  }

  private sampleRate(now: number, appLimited: boolean): void {
    const hist = this.hist;
    hist.push([now, this.delivered]);
    const window = this.minRtt > 20 ? this.minRtt : 20;
    while (hist.length - this.histHead > 2 && hist[this.histHead + 1]![0] <= now - window) this.histHead++;
    if (this.histHead >= 64 && this.histHead * 2 >= hist.length) {
      this.hist = hist.slice(this.histHead);
      this.histHead = 0;
    }
    const [t0, d0] = this.hist[this.histHead]!;
    if (now - t0 < Math.floor(window / 2) || now <= t0) return;
    const rate = (this.delivered - d0) / (now - t0);
    if (appLimited) {
      if (rate < this.bw) return;
    } else {
      this.measuredRate = true;
    }
    if (rate > this.roundMax) this.roundMax = rate;
    if (rate > this.bw) this.bw = rate;
  }

  /** A round trip as it is now (queue included, as BBR's delivery-counted rounds are). */
  private roundLength(): number {
    const rtt = this.rtt > this.minRtt ? this.rtt : this.minRtt;
    return rtt > 10 ? rtt : 10;
  }

  private advanceRound(now: number, appLimited: boolean): void {
    if (this.pacingGain < 1) this.roundLowGain = true;
    const length = this.roundLength();
    if (now - this.roundStart < length) return;
    this.roundStart = now;
    this.rounds++;
    const samples = this.bwSamples;
    // A round short of data cannot lower the estimate, nor can one paced below it (DRAIN, the
    // 0.75 phase) unless a queue stood all along: then the link was busy, at its real rate.
    const m = this.roundMax;
    const queued = this.minRtt !== 0 && this.rtt > this.minRtt * this.queueFactor;
    if (m > 0 && (m >= this.bw || (!appLimited && (queued || !this.roundLowGain)))) {
      samples.push(m);
      while (samples.length > this.bwRounds) samples.shift();
      this.bw = Math.max(...samples);
    }
    this.roundLowGain = this.pacingGain < 1;
    this.roundMax = 0;
    const lh = this.lossHist;
    lh.push([this.roundSent, this.roundRetrans]);
    this.roundSent = this.roundRetrans = 0;
    while (lh.length > this.bwRounds) lh.shift();
    let sent = 0;
    for (const x of lh) sent += x[0];
    if (sent >= 16 * this.mss) {
      let retrans = 0;
      for (const x of lh) retrans += x[1];
      const lost = retrans / sent;
      this.lossComp = 1 / (1 - (lost < MAX_LOSS ? lost : MAX_LOSS));
    }
    if (this.state === "startup" && !appLimited && this.bw) {
      if (this.bw >= this.fullBw * 1.25) {
        this.fullBw = this.bw;
        this.fullBwCount = 0;
      } else {
        this.fullBwCount++;
      }
    }
  }

  private updateState(now: number, rtt: number, inflight: number): void {
    const st = this.state;
    const bdpSegs = this.bdp / this.mss;
    if (st === "startup") {
      // the bandwidth stopped growing, or a queue of a quarter BDP built up already
      if (this.measuredRate && (this.fullBwCount >= 3 || (rtt && this.minRtt && rtt >= this.queueFactor * this.minRtt))) {
        this.enter("drain", now);
      }
    } else if (st === "drain") {
      if (inflight <= bdpSegs || (rtt && rtt <= this.minRtt * this.queueFactor)) this.enter("probe_bw", now);
    } else if (st === "probe_bw") {
      if (rtt && this.minRtt) {
        if (rtt > this.minRtt * this.queueFactor) this.queueDrain = true;
        else if (rtt <= this.minRtt * (1 + (this.queueFactor - 1) / 2)) this.queueDrain = false;
      }
      const elapsed = now - this.phaseStart;
      if (elapsed >= this.roundLength() || (this.phase === 0 && this.queueDrain && elapsed >= this.minRtt)) {
        this.phase = (this.phase + 1) % PROBE_BW_GAINS.length;
        this.phaseStart = now;
      }
      let gain = PROBE_BW_GAINS[this.phase]!;
      if (this.queueDrain && gain <= 1) gain = 0.75;
      this.pacingGain = gain;
    } else {
      if (now >= this.probeRttDone) {
        if (this.rttWindowMin) this.minRtt = this.rttWindowMin;
        this.minRttStamp = now;
        this.enter("probe_bw", now);
      }
      return;
    }
    if (this.minRtt && now - this.minRttStamp > this.minRttWindow) this.enter("probe_rtt", now);
  }

  private enter(state: CcState, now: number): void {
    this.state = state;
    if (state === "drain") {
      this.pacingGain = 1 / STARTUP_GAIN;
      this.cwndGain = STARTUP_CWND_GAIN;
    } else if (state === "probe_bw") {
      this.pacingGain = 1;
      this.cwndGain = 2;
      this.phase = 2; // start cruising; the 1.25 probe comes round in 6 RTTs
      this.phaseStart = now;
      this.queueDrain = false;
    } else if (state === "probe_rtt") {
      this.pacingGain = 1;
      const length = this.minRtt > 10 ? this.minRtt : 10;
      this.probeRttDone = now + Math.max(this.probeRttMs, length);
      this.rttWindowMin = 0;
    }
  }
}
