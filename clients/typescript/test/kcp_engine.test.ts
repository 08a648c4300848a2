import { test } from "node:test";
import assert from "node:assert/strict";
import {
  Kcp,
  leadCopiesFor,
  newEngineCounters,
  recoveryCopiesFor,
  type EngineCounters,
} from "../src/kcp/engine.js";
import { hex, runPython, unhex } from "./helpers/python.js";

interface Op {
  op: string;
  e?: number;
  now?: number;
  data?: string;
  idx?: number;
  nodelay?: [number, number, number, number] | null;
  wnd?: [number, number] | null;
  stream?: boolean;
  mtu?: number | null;
  recovery?: Recovery | null;
  held?: boolean;
  reack?: boolean;
  probe?: [number, number] | null;
  wins?: number;
  frg?: number;
  ms?: number;
}

/** The sparse-flight loss recovery's settings of a trace (tests/clients/kcp_engine_trace.py). */
interface Recovery {
  flight: number;
  adaptive: boolean;
  copies: number;
  max_copies: number;
  gap: number;
  lead?: number;
  auto_lead?: number;
}

interface Trace {
  ops: Op[];
  results: unknown[];
}

const STATE = [
  "sndUna", "sndNxt", "rcvNxt", "cwnd", "ssthresh", "rxRto", "rxSrtt", "rxRttval",
  "rmtWnd", "probeWait", "tsProbe", "xmit", "incr", "tsFlush", "state",
] as const;
const PY_STATE = [
  "snd_una", "snd_nxt", "rcv_nxt", "cwnd", "ssthresh", "rx_rto", "rx_srtt", "rx_rttval",
  "rmt_wnd", "probe_wait", "ts_probe", "xmit", "incr", "ts_flush", "state",
];

/** The Python engine's traces of `config` for each of `seeds`, from one interpreter. */
async function traces(config: string, seeds: number[]): Promise<Trace[]> {
  return JSON.parse(await runPython(["tests/clients/kcp_engine_trace.py", seeds.join(","), config], 120000)) as Trace[];
}

/** Replay the Python engine's trace on two TS engines; every result must match, step by step. */
function replay(trace: Trace): EngineCounters[] {
  const outs: Uint8Array[][] = [[], []];
  const engines = [new Kcp(0x0a0b0c0d, (d) => outs[0]!.push(d)), new Kcp(0x0a0b0c0d, (d) => outs[1]!.push(d))];
  const seen = [0, 0];
  const collect = (e: number): string[] => {
    const got = outs[e]!.slice(seen[e]).map(hex);
    seen[e] = outs[e]!.length;
    return got;
  };
  trace.ops.forEach((op, i) => {
    const want = trace.results[i];
    const k = engines[op.e ?? 0]!;
    let got: unknown;
    switch (op.op) {
      case "config":
        for (const eng of engines) {
          if (op.nodelay) eng.nodelay(...op.nodelay);
          if (op.wnd) eng.wndsize(...op.wnd);
          if (op.mtu) eng.setMtu(op.mtu);
          eng.stream = op.stream ? 1 : 0;
          eng.counters = newEngineCounters();
          const rec = op.recovery;
          if (rec) {
            eng.recoveryFlight = rec.flight;
            eng.recoveryAdaptive = rec.adaptive;
            eng.recoveryCopies = rec.copies;
            eng.recoveryMaxCopies = rec.max_copies;
            eng.recoveryGap = rec.gap;
            eng.recoveryLead = rec.lead ?? 0;
            eng.recoveryAutoLead = rec.auto_lead ?? 0;
          }
          eng.holdAware = op.held ?? false;
          eng.ackRepeat = op.reack ?? false;
          if (op.probe) [eng.probeInit, eng.probeLimit] = op.probe;
          eng.winsRepeat = op.wins ?? 0;
        }
        if (op.held) engines[1]!.ackFrg = 1;
        got = null;
        break;
      case "send":
        got = k.send(unhex(op.data!));
        break;
      case "input_raw":
        got = k.input(unhex(op.data!), op.now);
        break;
      case "input":
        got = k.input(outs[1 - op.e!]![op.idx!]!, op.now);
        break;
      case "recv": {
        const msgs: string[] = [];
        for (let m = k.recv(); m !== null; m = k.recv()) msgs.push(hex(m));
        got = msgs;
        break;
      }
      case "update":
        k.update(op.now!);
        got = collect(op.e!);
        break;
      case "flush":
        k.flush(op.now!);
        got = collect(op.e!);
        break;
      case "check":
        got = k.check(op.now!);
        break;
      case "state":
        got = engines.map((eng) => Object.fromEntries(STATE.map((f, j) => [PY_STATE[j], eng[f]])));
        break;
      case "ack_frg":
        k.ackFrg = op.frg!;
        got = null;
        break;
      case "hold_first_ack":
        k.holdFirstAck(op.ms!);
        got = null;
        break;
      case "held":
        got = engines.map((eng) => ({ rto_extra: eng.rtoExtra, ack_frg: eng.ackFrg, disorder: eng.disorder }));
        break;
      case "reack":
        got = engines.map((eng) => ({
          reacks_sent: eng.counters!.reacksSent,
          reacks_useful: eng.counters!.reacksUseful,
          repeat_segs: eng.counters!.repeatSegs,
          retrans_segs: eng.counters!.retransSegs,
        }));
        break;
      case "wins":
        got = engines.map((eng) => ({ wins_repeated: eng.counters!.winsRepeated }));
        break;
      case "recovery":
        got = engines.map((eng) => ({
          recovery_copies: eng.recoveryCopies,
          recovery_lead: eng.recoveryLead,
          recovery_rounds: eng.recoveryRounds,
          recovery_samples: eng.recoverySamples,
        }));
        break;
      default:
        throw new Error(`unknown op ${op.op}`);
    }
    assert.deepEqual(got, want, `op ${i} (${JSON.stringify(op).slice(0, 200)}) differs from the Python engine`);
  });
  // the scenario did exercise the engine: data went both ways and some was lost and resent
  const c0 = engines[0]!.counters!;
  const c1 = engines[1]!.counters!;
  assert.ok(c0.inSegs > 100 && c1.inSegs > 100);
  assert.ok(c0.retransSegs + c1.retransSegs > 0);
  return [c0, c1];
}

for (const config of ["normal", "fast", "smallwnd", "stall", "stall_probe", "stream", "mtu"]) {
  test(`engine: datagrams identical to the Python engine (${config}, 3 seeds)`, async () => {
    for (const trace of await traces(config, [1, 2, 3])) {
      assert.ok(trace.ops.length > 1000);
      replay(trace);
    }
  });
}

// a slow reader's repeated window updates (winsRepeat): its window closes and reopens again and
// again over a lossy link, and a lost update with no data after it for an RTO is sent again
test("engine: repeated window updates identical to the Python engine (stall_wins, 3 seeds)", async () => {
  let repeated = 0;
  for (const trace of await traces("stall_wins", [2, 4, 5])) {
    assert.ok(trace.ops.length > 1000);
    replay(trace);
    const counts = trace.results[trace.results.length - 1] as { wins_repeated: number }[];
    repeated += counts[1]!.wins_repeated;
  }
  assert.ok(repeated > 0, "the traces repeat some window updates");
});

// the sparse-flight loss recovery (docs/tuning.md "Loss recovery"): spaced copies, capped backoff,
// copies picked from the loss, lead copies (fixed and "auto"), under random and burst loss
for (const config of ["recovery", "recovery_burst", "recovery_lead", "recovery_auto", "recovery_auto_burst", "recovery_blackout"]) {
  test(`engine: loss recovery identical to the Python engine (${config}, 3 seeds)`, async () => {
    let copies = 0;
    let rounds = 0;
    for (const trace of await traces(config, [1, 2, 3])) {
      const last = trace.ops[trace.ops.length - 1]!;
      assert.equal(last.op, "recovery");
      for (const c of replay(trace)) copies += c.copySegs;
      const state = trace.results[trace.results.length - 1] as { recovery_rounds: number[] }[];
      rounds += state[0]!.recovery_rounds[0]! + state[1]!.recovery_rounds[0]!;
    }
    assert.ok(copies > 20, `the recovery sent its spaced copies (${copies})`);
    assert.ok(rounds > 0);
  });
}

// held acks (docs/wire-format/kcp.md "Held acks"): engine 1 holds its acks and says how long in
// their frg; engine 0 leaves the wait out of its RTT samples and adds the hold to its RTOs
for (const config of ["held", "held_lossy"]) {
  test(`engine: held acks identical to the Python engine (${config}, 3 seeds)`, async () => {
    let extra = 0;
    for (const trace of await traces(config, [1, 2, 3])) {
      const holds = trace.ops.filter((o) => o.op === "hold_first_ack").length;
      assert.ok(holds > 100, `the trace holds acks (${holds})`);
      replay(trace);
      const held = trace.results[trace.results.length - 1] as { rto_extra: number; disorder: number }[];
      extra += held[0]!.rto_extra;
      assert.ok(held[1]!.disorder > 0);
    }
    assert.ok(extra > 0, "engine 0 ended a trace with its RTO extra on");
  });
}

// repeated acks (docs/wire-format/kcp.md "Repeated acks"): both engines send the ACKs of segments
// above a hole again as REACKs and take them without an RTT sample or a fast-ack count
for (const config of ["reack", "reack_stream"]) {
  test(`engine: repeated acks identical to the Python engine (${config}, 3 seeds)`, async () => {
    for (const trace of await traces(config, [1, 2, 3])) {
      replay(trace);
      const counts = trace.results[trace.results.length - 1] as { reacks_sent: number; reacks_useful: number }[];
      assert.ok(counts[0]!.reacks_sent + counts[1]!.reacks_sent > 50, `REACKs sent (${JSON.stringify(counts)})`);
      assert.ok(counts[0]!.reacks_useful + counts[1]!.reacks_useful > 0, `REACKs spared resends (${JSON.stringify(counts)})`);
    }
  });
}

test("engine: the copies per recovery round and the lead copies picked as the Python engine picks them", async () => {
  const grid = JSON.parse(await runPython(["tests/clients/kcp_engine_trace.py", "picks"])) as {
    copies: number[][];
    lead: number[][];
  };
  assert.ok(grid.copies.length > 100 && grid.lead.length > 100);
  for (const [r, f, c, m, want] of grid.copies) assert.equal(recoveryCopiesFor(r!, f!, c!, m!), want, `copies(${r}, ${f}, ${c}, ${m})`);
  for (const [n, f, c, m, want] of grid.lead) assert.equal(leadCopiesFor(n!, f!, c!, m!), want, `lead(${n}, ${f}, ${c}, ${m})`);
  // the picks vary over the grid (not a constant)
  assert.ok(new Set(grid.copies.map((row) => row[4])).size >= 4);
  assert.ok(new Set(grid.lead.map((row) => row[4])).size >= 3);
});

test("engine: garbage input returns ikcp's codes and never throws", () => {
  const k = new Kcp(7);
  k.counters = newEngineCounters();
  assert.equal(k.input(new Uint8Array(10)), -1);
  const seg = new Uint8Array(24);
  new DataView(seg.buffer).setUint32(0, 8, true);
  assert.equal(k.input(seg), -1); // wrong conv
  new DataView(seg.buffer).setUint32(0, 7, true);
  seg[4] = 81;
  new DataView(seg.buffer).setUint32(20, 5, true);
  assert.equal(k.input(seg), -2); // length beyond the data
  new DataView(seg.buffer).setUint32(20, 0, true);
  seg[4] = 99;
  assert.equal(k.input(seg), -3); // unknown command
  assert.equal(k.counters.kcpInErrors, 4);
});

test("engine: a message of 128 fragments or more is refused with -2", () => {
  const k = new Kcp(1);
  assert.equal(k.send(new Uint8Array(k.mss * 128)), -2);
  assert.equal(k.send(new Uint8Array(k.mss * 127)), k.mss * 127);
  assert.throws(() => new Kcp(-1), /conv/);
});
