/**
 * Differential test of the smux core: seeded scripts of opens, sends, pumps (with partial
 * data_to_send budgets), reads, closes, aborts and keepalive timers, made and run by our Python
 * MuxCore (tests/clients/mux_trace.py), replayed through the TypeScript MuxCore: every output
 * (bytes sent, bytes read, events, errors, final counters and stream states) must be identical.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { MuxCore, type StreamRecord } from "../src/mux/core.js";
import { pythonJson } from "./support/rpc_python.js";

interface Op {
  side: number;
  op: "open" | "send" | "pump" | "read" | "close" | "abort" | "timer";
  sid?: number;
  n?: number;
  seed?: number;
  max?: number;
  now?: number;
  out?: [number, string];
  got?: [number, string];
  events: Array<[string, number]>;
  peer_events?: Array<[string, number]>;
  error?: string;
}
interface Trace {
  config: Record<string, number>;
  ops: Op[];
  final: Array<{ counters: Record<string, number>; states: Record<string, number>; closed: boolean }>;
}

function digest(b: Uint8Array): [number, string] {
  return [b.length, createHash("sha256").update(b).digest("hex").slice(0, 16)];
}
function payload(seed: number, n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (seed + i * 31) % 251;
  return b;
}

function replay(trace: Trace): void {
  let now = 0;
  const cores = [new MuxCore(trace.config, true, now), new MuxCore(trace.config, false, now)];
  const streams: Array<Map<number, StreamRecord>> = [new Map(), new Map()];
  const events = (side: number): Array<[string, number]> =>
    cores[side]!.events().map((ev) => {
      const id = "streamId" in ev ? ev.streamId : 0;
      if (ev.type === "opened") streams[side]!.set(id, cores[side]!.getStream(id) as StreamRecord);
      return [ev.type, id];
    });
  trace.ops.forEach((op, i) => {
    const core = cores[op.side]!;
    const where = `op ${i} ${JSON.stringify(op).slice(0, 160)}`;
    let error: string | undefined;
    const st = op.sid === undefined ? undefined : streams[op.side]!.get(op.sid);
    try {
      switch (op.op) {
        case "open": {
          const s = core.openStream();
          streams[op.side]!.set(s.streamId, s);
          assert.equal(s.streamId, op.sid, where);
          break;
        }
        case "send":
          core.send(st as StreamRecord, payload(op.seed as number, op.n as number));
          break;
        case "pump": {
          const out = core.dataToSend(op.max);
          assert.deepEqual(digest(out), op.out, where);
          cores[1 - op.side]!.receiveData(out, now);
          assert.deepEqual(events(1 - op.side), op.peer_events, where);
          break;
        }
        case "read":
          assert.deepEqual(digest(core.read(st as StreamRecord, op.n)), op.got, where);
          break;
        case "close":
          core.closeStream(st as StreamRecord);
          break;
        case "abort":
          core.abortStream(st as StreamRecord);
          break;
        case "timer":
          now = op.now as number;
          core.handleTimer(now);
          break;
      }
    } catch (e) {
      if (e instanceof assert.AssertionError) throw e;
      error = (e as Error).name;
    }
    assert.equal(error, op.error, where);
    assert.deepEqual(events(op.side), op.events, where);
  });
  for (let i = 0; i < 2; i++) {
    const f = trace.final[i]!;
    assert.deepEqual(cores[i]!.counters, f.counters);
    assert.equal(cores[i]!.closed, f.closed);
    const states: Record<string, number> = {};
    for (const [sid, st] of [...streams[i]!.entries()].sort((a, b) => a[0] - b[0])) states[String(sid)] = st.state;
    assert.deepEqual(states, f.states);
  }
}

for (const version of [1, 2]) {
  for (const seed of [1, 2, 3, 4, 5, 6]) {
    test(`smux v${version}, seed ${seed}: the TypeScript core does what the Python core does`, () => {
      const trace = pythonJson<Trace>("tests/clients/mux_trace.py", [String(seed), String(version), "600"]);
      assert.ok(trace.ops.filter((o) => o.op === "pump" && (o.out?.[0] ?? 0) > 0).length > 20);
      replay(trace);
    });
  }
}
