/**
 * The state view on its own: the schema builder, typed values (Maps, shared unchanged entities),
 * callbacks (order, unsubscribe, one that throws), hostile messages the msgpack decoder can
 * produce (dropped and counted, never thrown), bounds, and attach()'s acks and commit timing
 * with a fake client.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { packBody, unpackBody } from "../src/rpc/frames.js";
import { UsageError } from "../src/rpc/status.js";
import { groupOf } from "../src/state/groups.js";
import { S, schemaId } from "../src/state/schema.js";
import { attach, StateView, type StateAck, type StateClient } from "../src/state/view.js";
import type { RawEvent } from "../src/rpc/client.js";

const P = S.model({ name: S.str(), x: S.quantized(0.01), tags: S.map("str", S.int()) });
const W = S.model({ phase: S.str(), players: S.map("int", P), log: S.list(S.str()), cfg: S.model({ mode: S.str() }) });
const SID = schemaId(W);

/** What the RPC layer hands the view: the message through msgpack (maps become objects). */
const wire = (m: unknown): unknown => unpackBody(packBody(m));
/** A msgpack map with int keys, as a JS object (the encoder writes a Map as an empty map; a decoded map's keys are strings either way). */
const intMap = (entries: Array<[number, unknown]>): Record<string, unknown> => Object.fromEntries(entries);

function snapshot(seq: number, extra?: unknown): unknown {
  const m: unknown[] = [0, seq, SID, ["lobby", intMap([[1, ["ann", 150, {}]], [2, ["bob", 250, { a: 1 }]]]), ["hi"], ["dm"]]];
  if (extra !== undefined) m.push(extra);
  return wire(m);
}

test("schema builder: misuse is a UsageError naming the problem", () => {
  assert.throws(() => S.map("float" as "str", S.int()), UsageError);
  assert.throws(() => S.list(S.map("str", S.int()) as never), /collection of collections/);
  assert.throws(() => S.quantized(0), /Quantized step/);
  assert.throws(() => S.model({ "0": S.int() }), /field order/);
  assert.throws(() => new StateView(S.int() as never), /root model/);
  const v = new StateView(W, "w");
  assert.throws(() => v.listen("nope", () => undefined), /no field "nope"/);
  assert.throws(() => v.onAdd("phase", () => undefined), /not a map or list/);
  assert.throws(() => v.onAdd("players.name" as "players", () => undefined), /no field/);
  assert.throws(() => new StateView(W, "w", { maxBaselines: 0 }), /maxBaselines/);
});

test("group of a key: floor modulo for ints, CRC-32 of the UTF-8 for strs (the doc's examples)", () => {
  assert.equal(groupOf(-1, 16), 15);
  assert.equal(groupOf(37, 16), 5);
  assert.equal(groupOf("ann", 7), 5);
});

test("typed state: plain objects, Maps with typed keys, quantized numbers; deltas share unchanged entities", () => {
  const v = new StateView(W, "w");
  assert.equal(v.receive(snapshot(1, 7)), 1);
  const s1 = v.state!;
  assert.equal(s1.phase, "lobby");
  assert.equal(s1.players.get(1)!.x, 1.5);
  assert.deepEqual(s1.players.get(2)!.tags, new Map([["a", 1]]));
  assert.equal(v.extra, 7);
  // player 2 moves, player 3 joins, player 1 leaves, a log line
  assert.equal(v.receive(wire([1, 2, 1, { 1: [[1], intMap([[2, { 1: 300 }]]), intMap([[3, ["cy", 0, {}]]])], 2: [2, {}, ["gg"]] }])), 2);
  const s2 = v.state!;
  assert.deepEqual([...s2.players.keys()], [2, 3]);
  assert.equal(s2.players.get(2)!.x, 3);
  assert.deepEqual(s2.log, ["hi", "gg"]);
  assert.equal(v.extra, null);
  assert.equal(s2.cfg, s1.cfg, "an unchanged model is the same object");
  // a delta against the older base repeating what is held: unchanged entities are the same objects
  assert.equal(v.receive(wire([1, 3, 1, { 1: [[1], intMap([[2, { 1: 300 }]]), intMap([[3, ["cy", 0, {}]]])], 2: [2, {}, ["gg"]], 0: "play" }])), 3);
  assert.equal(v.state!.players.get(2), s2.players.get(2));
  assert.equal(v.state!.players.get(3), s2.players.get(3));
  assert.equal(v.state!.phase, "play");
  assert.equal(s2.phase, "lobby", "the old state is untouched");
});

test("callbacks: listen, onAdd / onChange / onRemove with the entity, onState; unsubscribe; a throwing one does not stop the others", () => {
  const errors: unknown[] = [];
  const v = new StateView(W, "w", { onCallbackError: (e) => errors.push(e) });
  const seen: string[] = [];
  v.listen("phase", (now, prev) => seen.push(`phase ${String(prev)} -> ${now}`));
  v.listen("cfg.mode", (now) => seen.push(`mode ${String(now)}`));
  v.onAdd("players", (k, p) => seen.push(`add ${k} ${p.name}`));
  v.onChange("players", (k, p) => seen.push(`change ${k} ${p.x}`));
  const off = v.onRemove("players", (k, p) => seen.push(`remove ${k} ${p.name}`));
  v.onAdd("log", (i, line) => seen.push(`log ${i} ${line}`));
  v.onState(() => {
    throw new Error("boom");
  });
  v.onState((s) => seen.push(`state ${s.phase}`));
  v.receive(snapshot(1));
  assert.deepEqual(seen, ["phase undefined -> lobby", "add 1 ann", "add 2 bob", "log 0 hi", "mode dm", "state lobby"]);
  seen.length = 0;
  v.receive(wire([1, 2, 1, { 0: "play", 1: [[1], intMap([[2, { 1: 300 }]]), {}] }]));
  assert.deepEqual(seen, ["phase lobby -> play", "remove 1 ann", "change 2 3", "state play"]);
  off();
  seen.length = 0;
  v.receive(wire([1, 3, 2, { 1: [[2], {}, {}] }]));
  assert.deepEqual(seen, ["state play"]);
  assert.equal(errors.length, 3);
});

test("hostile messages are dropped and counted, never thrown; nothing changes", () => {
  const v = new StateView(W, "w", { maxEntities: 50, maxNodes: 500 });
  v.receive(snapshot(1));
  const before = v.state;
  const bad: Array<[unknown, keyof typeof v.stats]> = [
    [null, "malformed"],
    [wire({ a: 1 }), "malformed"],
    [wire([1, 2, 1]), "malformed"],
    [wire([1, 2, 1, {}, 0, 0]), "malformed"],
    [wire([true, 2, 1, {}]), "malformed"],
    [wire([1, 2.5, 1, {}]), "malformed"],
    [wire([1, 0, 1, {}]), "malformed"],
    [wire([9, 2, 1, {}]), "malformed"],
    [wire([1, 1, 1, {}]), "stale"],
    [wire([1, 2, 77, {}]), "no_base"],
    [wire([0, 2, SID ^ 1, []]), "schema_mismatch"],
    [wire([0, 2, SID, ["x", {}, [], ["dm"], 5]]), "malformed"],
    [wire([1, 2, 1, { 9: 1 }]), "malformed"],
    [wire([1, 2, 1, { "-1": 1 }]), "malformed"],
    [wire([1, 2, 1, { 1: [[5], {}, {}] }]), "malformed"],
    [wire([1, 2, 1, { 1: [[], {}, { "01": ["a", 1, {}] }] }]), "malformed"], // not the decimal form of an int
    [wire([1, 2, 1, { 1: [[], {}, { x: ["a", 1, {}] }] }]), "malformed"], // a str key in an int map
    [wire([1, 2, 1, { 1: [[], {}, intMap([[1, ["a", 1, {}]]])] }]), "malformed"], // already present
    [wire([1, 2, 1, { 1: [[], { 1: { 2: [[], { constructor: 1 }, {}] } }, {}] }]), "malformed"], // a key not present, named like a prototype property
    [wire([1, 2, 1, { 2: [1e9, {}, []] }]), "malformed"],
    [wire([1, 2, 1, { 2: [3, {}, ["a"]] }]), "malformed"],
    [wire([1, 2, 1, { 2: [0, { 0: "z" }, []] }]), "malformed"],
    [wire([1, 2, 1, { 1: [[], {}, Object.fromEntries(Array.from({ length: 60 }, (_, i) => [String(i + 10), ["p", 0, {}]]))] }]), "malformed"], // over maxEntities
    [wire([1, 2, 1, { 2: [400, {}, Array.from({ length: 399 }, () => "l")] }]), "malformed"],
    [wire([0, 2, SID, ["x", intMap(Array.from({ length: 40 }, (_, i) => [i, ["p", 0, Object.fromEntries(Array.from({ length: 20 }, (__, j) => [`t${j}`, j]))]])), [], ["dm"]]]), "malformed"], // over maxNodes
    [wire([1, 2, 1, { 0: 5 }]), "invalid"],
    [wire([1, 2, 1, { 1: [[], { 1: { 1: "far" } }, {}] }]), "invalid"],
    [wire([1, 2, 1, { 3: { 0: null } }]), "invalid"],
    [wire([2, 2, SID, 1, 1, [[0, 0, {}]], []]), "malformed"],
    [wire([2, 2, SID, 4, 1, [[4, 0, {}]], []]), "malformed"],
    [wire([2, 2, SID, 4, 1, [], []]), "malformed"],
    [wire([2, 2, SID ^ 1, 4, 1, [[0, 0, {}]], []]), "schema_mismatch"],
  ];
  for (const [i, [m, counter]] of bad.entries()) {
    const n = v.stats[counter];
    assert.doesNotThrow(() => assert.equal(v.receive(m), null, `message ${i}`));
    assert.equal(v.stats[counter], n + 1, `message ${i}: ${counter}`);
  }
  assert.equal(v.state, before);
  assert.equal(v.stats.applied, 1);
  // a str key named like an Object.prototype property is an ordinary key
  assert.equal(v.receive(wire([1, 2, 1, { 1: [[], { 1: { 2: [[], {}, { constructor: 1, toString: 2 }] } }, {}] }])), 2);
  assert.deepEqual(v.state!.players.get(1)!.tags, new Map([["constructor", 1], ["toString", 2]]));
});

test("bounded: at most max(2, maxBaselines) states kept; the last delta's base is kept", () => {
  const v = new StateView(W, "w", { maxBaselines: 4 });
  v.receive(snapshot(1));
  for (let s = 2; s < 40; s++) {
    assert.equal(v.receive(wire([1, s, 1, { 0: `p${s}` }])), s); // always against 1: 1 stays
    assert.ok(v.held <= 4);
  }
  assert.equal(v.receive(wire([1, 40, 1, { 0: "x" }])), 40);
  assert.equal(v.receive(wire([1, 41, 39, { 0: "y" }])), 41);
  assert.equal(v.receive(wire([1, 42, 1, {}])), null, "states older than the newest base are forgotten");
  assert.equal(v.stats.no_base, 1);
});

test("PARTS: staged parts are applied together, acks name the groups, a state exists once every group has a tree", () => {
  const v = new StateView(W, "w");
  const n = 2;
  // group 0: phase, log, cfg and the players of even keys; group 1: the players of odd keys
  const g0 = wire([2, 5, SID, n, 2, [[0, 0, { 0: "lobby", 1: intMap([[2, ["bob", 0, {}]]]), 2: [], 3: ["dm"] }]], [], 11]);
  const g1 = wire([2, 5, SID, n, 2, [[1, 0, { 1: intMap([[1, ["ann", 0, {}]]]) }]], [], 11]);
  assert.equal(v.receive(g0, false), 5);
  assert.deepEqual(v.ackedGroups, [0]);
  assert.equal(v.complete, false);
  assert.equal(v.receive(g1, false), 5);
  assert.equal(v.complete, true);
  assert.equal(v.state, null);
  assert.deepEqual([...v.commit()], [[5, [0, 1]]]);
  assert.deepEqual([...v.state!.players.keys()].sort(), [1, 2]);
  assert.equal(v.extra, 11);
  assert.deepEqual(v.seqs, [5, 5]);
  // group 1 changes at 6, group 0 idle; a key of group 0 added through group 1 is refused
  assert.equal(v.receive(wire([2, 6, SID, n, 1, [[1, 5, { 1: [[], intMap([[1, { 1: 100 }]]), {}] }]], [0]])), 6);
  assert.deepEqual(v.ackedGroups, [1]);
  assert.equal(v.state!.players.get(1)!.x, 1);
  assert.deepEqual(v.seqs, [6, 6]);
  assert.equal(v.receive(wire([2, 7, SID, n, 1, [[1, 6, { 1: [[], {}, intMap([[4, ["d", 0, {}]]])] }]], []])), null);
  assert.equal(v.stats.malformed, 1);
  assert.equal(v.receive(wire([2, 7, SID, n, 1, [[1, 6, { 0: "x" }]], []])), null, "a field of group 0 in group 1");
  assert.equal(v.stats.malformed, 2);
  // back to whole messages: the groups are forgotten
  assert.equal(v.receive(snapshot(8)), 8);
  assert.deepEqual(v.seqs, [8]);
});

class FakeClient implements StateClient {
  handlers: Array<(ev: RawEvent) => void> = [];
  acks: StateAck[] = [];
  failNext = false;
  onRawEvent(h: (ev: RawEvent) => void): () => void {
    this.handlers.push(h);
    return () => {
      this.handlers = this.handlers.filter((x) => x !== h);
    };
  }
  notify(method: string, payload: unknown): void {
    assert.equal(method, "kcprpc.State/Ack");
    if (this.failNext) {
      this.failNext = false;
      throw new Error("no link");
    }
    this.acks.push(payload as StateAck);
  }
  push(name: string, payload: unknown): void {
    for (const h of this.handlers) h({ name, payload, key: null, position: null, replayed: false, unreliable: true, latestKey: null });
  }
}

const turn = (): Promise<void> => new Promise((r) => setImmediate(r));

test("attach: whole messages acked at once; a tick's parts applied together once all are in, else after 10 ms; detach", async () => {
  const c = new FakeClient();
  const v = new StateView(W, "w");
  const off = attach(c, v);
  c.push("other", snapshot(1));
  c.push("w", snapshot(1));
  assert.deepEqual(c.acks, [{ name: "w", seq: 1 }]);
  c.failNext = true;
  c.push("w", wire([1, 2, 1, { 0: "a" }])); // an ack that cannot go is not an error
  assert.equal(v.seq, 2);
  // parts: all in -> applied on the next turn
  const part = (seq: number, g: number, body: unknown, nparts: number): unknown => wire([2, seq, SID, 2, nparts, [[g, 0, body]], []]);
  c.push("w", part(3, 0, { 0: "p", 1: {}, 2: [], 3: ["dm"] }, 2));
  c.push("w", part(3, 1, { 1: {} }, 2));
  assert.equal(v.hasStaged, true);
  await turn();
  assert.equal(v.hasStaged, false);
  assert.deepEqual(c.acks.slice(1), [{ name: "w", seq: 3, groups: [0, 1] }]);
  // one part of two: applied when the timer fires
  c.push("w", wire([2, 4, SID, 2, 2, [[1, 3, { 1: [[], {}, intMap([[1, ["ann", 0, {}]]])] }]], []]));
  await turn();
  assert.equal(v.hasStaged, true);
  const t0 = Date.now();
  while (v.hasStaged && Date.now() - t0 < 2000) await new Promise((r) => setTimeout(r, 2));
  assert.equal(v.hasStaged, false);
  assert.deepEqual(c.acks.slice(2), [{ name: "w", seq: 4, groups: [1] }]);
  assert.equal(v.state!.players.get(1)!.name, "ann");
  off();
  c.push("w", wire([2, 5, SID, 2, 1, [[1, 4, {}]], []]));
  assert.equal(v.hasStaged, false);
  assert.equal(c.handlers.length, 0);
});

test("a leaf value nested deeper than the stack is applied, compared and replaced without overflowing", () => {
  const D = S.model({ blob: S.any(), n: S.int() });
  const v = new StateView(D, "d");
  const deep = (n: number, tail: number): Uint8Array => {
    const b = new Uint8Array(n + 1).fill(0x91); // [[[...]]]
    b[n] = tail; // a positive fixint at the bottom
    return b;
  };
  const delta = (seq: number, base: number, blob: Uint8Array): unknown => {
    // [1, seq, base, {0: blob}]
    const head = Uint8Array.from([0x94, 0x01, seq, base, 0x81, 0x00]);
    const out = new Uint8Array(head.length + blob.length);
    out.set(head);
    out.set(blob, head.length);
    return unpackBody(out);
  };
  assert.equal(v.receive(wire([0, 1, schemaId(D), [null, 0]])), 1);
  const fired: unknown[] = [];
  v.listen("blob", (now) => fired.push(now));
  for (const [seq, tail] of [[2, 1], [3, 1], [4, 2]] as const) {
    const m = delta(seq, seq - 1, deep(100_000, tail));
    assert.notEqual(m, undefined);
    assert.equal(v.receive(m), seq, `message ${seq}`);
  }
  assert.equal(fired.length, 3);
  assert.equal(v.stats.malformed, 0);
});


test("a callback that throws without onCallbackError is reported (console.error); an async callback's rejection goes to onCallbackError", async () => {
  const logged: unknown[][] = [];
  const orig = console.error;
  console.error = (...a: unknown[]) => void logged.push(a);
  try {
    const v = new StateView(W, "w");
    const seen: string[] = [];
    v.onState(() => {
      throw new Error("a bad state callback");
    });
    v.onState((s) => seen.push(s.phase));
    v.receive(snapshot(1));
    assert.deepEqual(seen, ["lobby"], "the others run");
  } finally {
    console.error = orig;
  }
  assert.equal(logged.length, 1);
  assert.match(String(logged[0]?.[0]), /a state callback of w threw/);
  assert.match(String(logged[0]?.[1]), /a bad state callback/);
  const errors: unknown[] = [];
  const v = new StateView(W, "w", { onCallbackError: (e) => errors.push(e) });
  v.listen("phase", async () => {
    throw new Error("a bad async callback");
  });
  v.receive(snapshot(1));
  await new Promise((r) => setImmediate(r));
  assert.equal(errors.length, 1);
  assert.match(String(errors[0]), /a bad async callback/);
});
