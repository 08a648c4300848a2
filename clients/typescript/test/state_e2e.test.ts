/**
 * The state client end to end: a real Python server (tests/clients/state_server.py: a world that
 * changes every tick at 50 Hz, synced as snapshots and deltas, and in 8 groups as PARTS) over the
 * real transport (secure mode, UDP on 127.0.0.1), on a clean link and through
 * `python -m kcp.relay` at 10 % loss each way. The client's state at a seq must be the server's
 * state at that seq, and its acks must reach the server (its deltas come against them).
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { connect } from "../src/rpc/net.js";
import type { Client } from "../src/rpc/client.js";
import { S } from "../src/state/schema.js";
import { clientState, type StateView } from "../src/state/view.js";
import { startPythonServer, waitFor, type PyServer } from "./support/rpc_python.js";
import { startPython, type PythonServer } from "./helpers/python.js";
import { canon } from "./support/state_canon.js";

const KEY = "state e2e";
const Unit = S.model({ name: S.str(), x: S.quantized(0.01), y: S.quantized(0.01), hp: S.int() });
const World = S.model({ tick: S.int(), phase: S.str(), units: S.map("int", Unit), log: S.list(S.str()) });

let server: PyServer;
let relay: PythonServer | null = null;
let relayPort = 0;
const clients: Client[] = [];

before(async () => {
  server = await startPythonServer("tests/clients/state_server.py", ["--key", KEY]);
});
after(async () => {
  for (const c of clients) await c.close().catch(() => undefined);
  await relay?.stop();
  await server.kill();
});

async function client(port: number): Promise<Client> {
  const c = await connect("127.0.0.1", port, { wire: { mode: "secure", passphrase: KEY }, connectTimeoutMs: 10000, defaultTimeoutMs: 10000 });
  clients.push(c);
  return c;
}

/** Join `sync`, follow it until `ticks` states were applied with every group current, compare with the server's state then. */
async function follow(c: Client, sync: string, ticks: number, timeoutMs: number): Promise<StateView<typeof World>> {
  const view = clientState(c, World, sync);
  const seen: Array<{ seq: number; state: unknown; extra: unknown }> = [];
  view.onState((s) => {
    if (view.minSeq === view.seq) seen.push({ seq: view.seq, state: canon(World, s), extra: view.extra });
  });
  const from = await c.unary<{ sync: string }, number>("st.World/join", { sync });
  await waitFor(() => seen.length >= ticks, `${ticks} states of ${sync}`, timeoutMs);
  assert.ok(seen[0]!.seq > from, "the first state is the one after the join");
  // the latest complete state: the server's world at that tick, as sent
  const last = seen[seen.length - 1]!;
  const truth = await c.unary<{ sync: string; seq: number }, unknown>("st.World/state_at", { sync, seq: last.seq });
  assert.deepEqual(last.state, truth, `${sync}: the state at seq ${last.seq}`);
  assert.equal(last.extra, (last.state as { tick: number }).tick, "the extra sent with the state");
  for (const s of seen.slice(-5)) {
    assert.deepEqual(s.state, await c.unary("st.World/state_at", { sync, seq: s.seq }), `${sync}: the state at seq ${s.seq}`);
  }
  return view;
}

test("whole messages on a clean link: snapshot, then deltas against the acknowledged state", async () => {
  const c = await client(server.port);
  const view = await follow(c, "whole", 40, 15000);
  const stats = await c.unary<null, Record<string, Record<string, number>>>("st.World/stats", null);
  assert.ok(stats["whole"]!["acks"]! >= 30, "the acks reached the server");
  assert.ok(stats["whole"]!["deltas"]! >= 30);
  assert.equal(view.stats.malformed + view.stats.invalid + view.stats.schema_mismatch, 0);
  assert.ok(view.stats.snapshots >= 1 && view.stats.applied >= 40);
  assert.ok(view.held <= 32);
});

test("groups: PARTS messages, several per tick, acks naming groups", async () => {
  const c = await client(server.port);
  const view = await follow(c, "parts", 40, 15000);
  assert.equal(view.seqs.length, 8);
  assert.ok(view.stats.parts > view.stats.applied, "a tick came in several parts");
  assert.ok(view.stats.groups_applied > 40);
  assert.equal(view.stats.malformed + view.stats.invalid + view.stats.schema_mismatch, 0);
  const stats = await c.unary<null, Record<string, Record<string, number>>>("st.World/stats", null);
  assert.ok(stats["parts"]!["acks"]! > 40 && stats["parts"]!["deltas"]! > 40);
});

test("through python -m kcp.relay at 10 % loss each way: both syncs converge", async () => {
  relay = await startPython(["-m", "kcp.relay", "--listen", "127.0.0.1:0", "--target", `127.0.0.1:${server.port}`, "--loss", "10", "--seed", "3"]);
  const m = /^relay 127\.0\.0\.1:(\d+) ->/.exec(relay.firstLine);
  assert.ok(m, relay.firstLine);
  relayPort = Number(m[1]);
  const c = await client(relayPort);
  const whole = await follow(c, "whole", 30, 25000);
  const parts = await follow(c, "parts", 30, 25000);
  assert.equal(whole.stats.malformed + parts.stats.malformed, 0);
  // losses show: some states were skipped (later ones superseded them) or came late
  const lost = (v: StateView<typeof World>): number => (v.seq - v.stats.applied);
  assert.ok(lost(whole) > 0 || whole.stats.stale > 0 || whole.stats.no_base > 0, "the relay dropped some state datagrams");
  assert.ok(lost(parts) >= 0);
});
