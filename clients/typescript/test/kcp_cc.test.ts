import { test } from "node:test";
import assert from "node:assert/strict";
import { BbrLite, type CcState } from "../src/kcp/congestion.js";
import { crc32 } from "../src/crc32.js";
import { Kcp, newEngineCounters } from "../src/kcp/engine.js";
import { SessionCc } from "../src/kcp/sessionCc.js";
import { runPython } from "./helpers/python.js";

interface Op {
  op: string;
  e?: number;
  now?: number;
  idx?: number;
  n?: number;
  b?: number;
  mtu?: number;
  recovery?: { flight: number; adaptive: boolean; copies: number; max_copies: number; gap: number };
  bbr?: { min_rtt_window?: number; probe_rtt_ms?: number };
}

interface Trace {
  ops: Op[];
  results: unknown[];
}

/** What a trace's `send` op writes: `n` bytes counting up from `b` (kcp_cc_trace.py's pattern()). */
function pattern(n: number, b: number): Uint8Array {
  const d = new Uint8Array(n);
  for (let i = 0; i < n; i++) d[i] = (b + i) & 0xff;
  return d;
}

function ccState(cc: BbrLite): unknown[] {
  return [cc.state, cc.bw, cc.minRtt, cc.minRttStamp, cc.rounds, cc.tokens, cc.lostSegs, cc.lossComp,
    cc.pacingGain, cc.cwndGain, cc.cwnd, cc.pacingRate, cc.measured];
}

/**
 * Replay the Python controller's trace (tests/clients/kcp_cc_trace.py) on two TS engines and a TS
 * SessionCc: every datagram (length and CRC-32), wake-up time and state snapshot must match.
 */
function replay(trace: Trace): { states: Set<CcState>; cc: BbrLite; sent: number } {
  const outs: Uint8Array[][] = [[], []];
  const engines = [new Kcp(0x01020304, (d) => outs[0]!.push(d)), new Kcp(0x01020304, (d) => outs[1]!.push(d))];
  const seen = [0, 0];
  const collect = (e: number): string[] => {
    const got = outs[e]!.slice(seen[e]).map((d) => `${d.length}:${crc32(d).toString(16).padStart(8, "0")}`);
    seen[e] = outs[e]!.length;
    return got;
  };
  let sc: SessionCc | null = null;
  const states = new Set<CcState>();
  trace.ops.forEach((op, i) => {
    const want = trace.results[i];
    const e0 = engines[0]!;
    let got: unknown = null;
    switch (op.op) {
      case "config": {
        for (const eng of engines) {
          eng.nodelay(1, 10, 2, 1);
          eng.wndsize(128, 128);
          eng.setMtu(1400);
          eng.stream = 1;
          const rec = op.recovery!;
          eng.recoveryFlight = rec.flight;
          eng.recoveryAdaptive = rec.adaptive;
          eng.recoveryCopies = rec.copies;
          eng.recoveryMaxCopies = rec.max_copies;
          eng.recoveryGap = rec.gap;
        }
        e0.counters = newEngineCounters();
        const bbr = op.bbr ?? {};
        sc = new SessionCc(e0, new BbrLite(e0.mss, { minRttWindow: bbr.min_rtt_window, probeRttMs: bbr.probe_rtt_ms }));
        break;
      }
      case "setmtu":
        got = e0.setMtu(op.mtu!);
        break;
      case "send":
        got = e0.send(pattern(op.n!, op.b!));
        break;
      case "input":
        got = engines[op.e!]!.input(outs[1 - op.e!]![op.idx!]!, op.now);
        break;
      case "recv": {
        let n = 0;
        for (let m = engines[1]!.recv(); m !== null; m = engines[1]!.recv()) n += m.length;
        got = n;
        break;
      }
      case "flush":
        engines[op.e!]!.flush(op.now!);
        got = collect(op.e!);
        break;
      case "update":
        engines[op.e!]!.update(op.now!);
        got = collect(op.e!);
        break;
      case "after_input":
        sc!.afterInput(e0, op.now!);
        break;
      case "cc_flush":
        sc!.flush(e0, op.now!);
        got = collect(0);
        break;
      case "cc_update":
        sc!.update(e0, op.now!);
        got = collect(0);
        break;
      case "wake": {
        let wake = e0.check(op.now!);
        if (e0.nsndQue) {
          const t = sc!.nextSend(e0, op.now!);
          if (t >= 0 && t < wake) wake = t;
        }
        got = wake;
        break;
      }
      case "cc_state":
        states.add(sc!.cc.state);
        got = [
          ccState(sc!.cc),
          [e0.cwnd, e0.nocwnd, e0.rxMinrto, e0.rxRto, e0.rxSrtt, e0.sndUna, e0.sndNxt],
          sc!.quiet(e0),
        ];
        break;
      default:
        throw new Error(`unknown op ${op.op}`);
    }
    assert.deepEqual(got, want, `op ${i} (${JSON.stringify(op).slice(0, 200)}) differs from the Python controller`);
  });
  return { states, cc: sc!.cc, sent: engines[0]!.counters!.outBytes };
}

const CONFIGS: [string, CcState[]][] = [
  ["bulk", ["startup", "drain", "probe_bw"]],
  ["lossy", ["startup", "drain", "probe_bw"]],
  ["bursts", ["startup", "drain", "probe_bw"]],
  ["mtu", ["startup", "drain", "probe_bw"]],
  ["trickle", ["startup", "drain", "probe_bw"]],
  ["probe_rtt", ["startup", "drain", "probe_bw", "probe_rtt"]],
];

for (const [config, phases] of CONFIGS) {
  test(`congestion: pacing, window and phases identical to the Python controller (${config}, 2 seeds)`, async () => {
    for (const seed of [1, 2]) {
      const trace = JSON.parse(await runPython(["tests/clients/kcp_cc_trace.py", String(seed), config], 120000)) as Trace;
      assert.ok(trace.ops.length > 10000);
      const { states, cc, sent } = replay(trace);
      for (const p of phases) assert.ok(states.has(p), `the trace reached ${p} (${[...states].join(", ")})`);
      assert.ok(cc.bw > 0 && cc.minRtt > 0 && cc.pacingRate > 0, "a bandwidth and an RTT were measured, and it paced");
      assert.ok(sent > 1_000_000, `bulk data went out (${sent} bytes)`);
      if (config === "lossy") assert.ok(cc.lossComp > 1.05 && cc.lostSegs > 50, "the loss compensation is on");
    }
  });
}

test("congestion: calls stay out of the controller's way (a quiet session flushes as ikcp does)", () => {
  // two senders, one under SessionCc and one plain, each with its own receiver, fed the same small
  // messages: the same datagrams, and the controlled one never leaves its quiet state
  const pair = (): { tx: Kcp; rx: Kcp; out: Uint8Array[] } => {
    const out: Uint8Array[] = [];
    const pending: Uint8Array[] = [];
    const tx = new Kcp(9, (d) => {
      out.push(d);
      pending.push(d);
    });
    const rx = new Kcp(9, (d) => tx.input(d, now));
    for (const k of [tx, rx]) k.nodelay(1, 10, 2, 1);
    rx.update(now); // (ikcp flushes nothing before its first update)
    tx.counters = newEngineCounters();
    const orig = tx.flush.bind(tx);
    tx.flush = (t: number): void => {
      orig(t);
      for (const d of pending.splice(0)) rx.input(d, t);
      rx.flush(t);
    };
    return { tx, rx, out };
  };
  let now = 1000;
  const a = pair();
  const b = pair();
  const sc = new SessionCc(a.tx);
  for (let t = 0; t < 300; t++) {
    now += 7;
    if (t % 3 === 0) {
      for (const p of [a, b]) p.tx.send(pattern(100 + 4 * t, t));
    }
    sc.update(a.tx, now);
    b.tx.update(now);
    sc.afterInput(a.tx, now);
    assert.ok(sc.quiet(a.tx), `step ${t}: quiet`);
  }
  assert.deepEqual(a.out.map((d) => Array.from(d)), b.out.map((d) => Array.from(d)));
  assert.ok(a.out.length > 80 && a.tx.nsndBuf === 0);
  assert.equal(sc.cc.state, "startup");
  assert.equal(a.tx.nocwnd, 1, "a quiet session keeps the configured nc");
});

test("congestion: bad controller constants are refused", () => {
  assert.throws(() => new BbrLite(0), /mss/);
  assert.throws(() => new BbrLite(1000, { minCwnd: 8, initialCwnd: 4 }), /minCwnd/);
});
