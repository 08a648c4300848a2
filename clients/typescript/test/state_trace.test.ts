/**
 * Differential test of the state view against our Python implementation: tests/clients/state_trace.py
 * runs kcprpc.state's server (StateSync: whole messages, groups of 4 and 16 in PARTS, and groups="auto"
 * switching from whole messages to PARTS and to more groups as the state grows) through
 * a seeded sequence of random state changes, losses, duplicates, reordering, lost and late acks
 * and hostile messages, with a Python StateView per client; this view replays the exact EVENT
 * frames and must return the same acks and reach the same state, seqs, extra, counters and
 * callbacks at every tick.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { decodeDatagram, FrameType } from "../src/rpc/frames.js";
import { S, describe, schemaId, type Infer } from "../src/state/schema.js";
import { StateView } from "../src/state/view.js";
import { runPython, unhex } from "./helpers/python.js";
import { canon, keyrepr } from "./support/state_canon.js";

const Item = S.model({ kind: S.str(), n: S.int() });
const Unit = S.model({
  name: S.str(),
  x: S.quantized(0.01),
  hp: S.int(),
  tags: S.map("str", S.int()),
  alive: S.bool(),
  note: S.optional(S.str()),
});
const World = S.model({
  phase: S.str(),
  settings: S.model({ mode: S.str(), limit: S.int() }),
  units: S.map("int", Unit),
  names: S.map("str", Unit),
  log: S.list(S.str()),
  items: S.list(Item),
  grid: S.map("str", S.any<number[]>((v) => Array.isArray(v))),
  scores: S.map("str", S.quantized(0.5)),
  ratio: S.float(),
});
type World = Infer<typeof World>;

const FIELD_PATHS = ["phase", "settings", "settings.mode", "settings.limit", "units", "names", "log", "items", "grid", "scores", "ratio"];
const COLLECTIONS = ["units", "names", "log", "items", "grid", "scores"];

type Step =
  | { op: "recv"; c: number; frame: string; commit: boolean; ret: number | null; groups: number[] | null }
  | { op: "commit"; c: number; acks: Array<[number, number[]]> }
  | { op: "check"; c: number; state: unknown; seq: number; seqs: number[]; min_seq: number; extra: unknown; held: number; stats: Record<string, number>; events: string[] };
interface Run {
  groups: number | "auto";
  schema_id: number;
  describe: string;
  steps: Step[];
}

function payloadOf(frameHex: string): unknown {
  const f = decodeDatagram(unhex(frameHex));
  assert.ok(f && f.type === FrameType.EVENT, "an EVENT frame");
  const body = f.body as unknown[];
  assert.equal(body[0], "trace");
  return body[1];
}

const data = JSON.parse(await runPython(["tests/clients/state_trace.py", "--seed", process.env["KCPRPC_STATE_SEED"] ?? "19"])) as { runs: Run[] };

test("the schema's description and id are the Python schema's", () => {
  for (const run of data.runs) {
    assert.equal(describe(World), run.describe);
    assert.equal(schemaId(World), run.schema_id);
  }
  // the doc's example (docs/wire-format/state.md)
  const P = S.model({ x: S.float(), tags: S.map("str", S.int()) });
  const Sx = S.model({ phase: S.str(), players: S.map("int", P), log: S.list(S.str()) });
  assert.equal(describe(Sx), "{phase:v,players:map<int,{x:v,tags:map<str,v>}>,log:list<v>}");
  assert.equal(schemaId(Sx), 2124062347);
});

for (const [ri, run] of data.runs.entries()) {
  test(`run ${ri} (groups ${run.groups}): the same acks, states, seqs, extras, counters and callbacks as the Python view`, () => {
    const views = [new StateView(World, "trace", { maxBaselines: 8 }), new StateView(World, "trace", { maxBaselines: 8 })];
    const events: string[][] = [[], []];
    views.forEach((v, i) => {
      for (const p of FIELD_PATHS) v.listen(p, () => events[i]!.push(`field ${p}`));
      for (const p of COLLECTIONS) {
        v.onAdd(p, (k) => events[i]!.push(`add ${p} ${keyrepr(k)}`));
        v.onChange(p, (k) => events[i]!.push(`change ${p} ${keyrepr(k)}`));
        v.onRemove(p, (k) => events[i]!.push(`remove ${p} ${keyrepr(k)}`));
      }
      v.onState(() => events[i]!.push("state"));
    });
    let checks = 0;
    let applied = 0;
    for (const [si, step] of run.steps.entries()) {
      const v = views[step.c]!;
      const where = `run ${ri} step ${si} (client ${step.c})`;
      if (step.op === "recv") {
        const ret = v.receive(payloadOf(step.frame), step.commit);
        assert.equal(ret, step.ret, `${where}: the seq to ack`);
        assert.deepEqual(v.ackedGroups, step.groups, `${where}: the groups to ack`);
      } else if (step.op === "commit") {
        assert.deepEqual([...v.commit().entries()].sort((a, b) => a[0] - b[0]), step.acks, `${where}: commit's acks`);
      } else {
        checks++;
        assert.deepEqual(v.state === null ? null : canon(World, v.state), step.state, `${where}: the state`);
        assert.equal(v.seq, step.seq, `${where}: seq`);
        assert.deepEqual(v.seqs, step.seqs, `${where}: seqs`);
        assert.equal(v.minSeq, step.min_seq, `${where}: min seq`);
        assert.deepEqual(v.extra, step.extra, `${where}: extra`);
        assert.equal(v.held, step.held, `${where}: states held`);
        assert.deepEqual({ ...v.stats }, step.stats, `${where}: counters`);
        assert.deepEqual(events[step.c]!.sort(), step.events, `${where}: callbacks`);
        events[step.c] = [];
        applied = v.stats.applied;
      }
    }
    assert.ok(checks > 400 && applied > 100, "the trace exercised the view");
    const w: World | null = views[0]!.state;
    assert.ok(w !== null && w.units instanceof Map);
  });
}
