/**
 * Generated stubs against a real Python kcprpc server (tests/clients/idl_kinds.py: the every-kind
 * Depot service and the quickstart greeter) over the real stack, secure mode, on 127.0.0.1: every
 * call kind through the typed client, a reliable notify, a typed push, and a server-side
 * validation failure as a typed RpcError. The stubs are the committed ones (src/generated,
 * test/generated), which idl-gen.test.ts keeps equal to a fresh generation.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { connect } from "../src/rpc/net.js";
import type { Client } from "../src/rpc/client.js";
import { RpcError, Status } from "../src/rpc/status.js";
import type { EventInfo } from "../src/rpc/channel.js";
import { GreeterClient } from "../src/generated/quickstart.Greeter.js";
import { DepotClient, type Part, type Restocked } from "./generated/kinds.v1.Depot.js";
import { startPythonServer, waitFor, type PyServer } from "./support/rpc_python.js";

const KEY = "idl e2e passphrase";
let server: PyServer;
let client: Client;

before(async () => {
  server = await startPythonServer("tests/clients/idl_kinds.py", ["--key", KEY]);
  client = await connect("127.0.0.1", server.port, { wire: { mode: "secure", passphrase: KEY }, connectTimeoutMs: 5000 });
});

after(async () => {
  await client?.close().catch(() => undefined);
  await server?.kill();
});

test("unary and server-streaming stubs of the quickstart greeter", async () => {
  const greeter = new GreeterClient(client);
  assert.deepEqual(await greeter.hello({ name: "ann" }, { timeoutMs: 5000 }), { message: "Hello, ann!" });
  const got: number[] = [];
  for await (const c of greeter.count({ to: 3 })) got.push(c.n);
  assert.deepEqual(got, [1, 2, 3]);
});

test("every call kind of the Depot stub reaches the Python service and comes back typed", async () => {
  const depot = new DepotClient(client);
  const part: Part = { label: "ab", kind: "nut", blob: new Uint8Array([0, 255]), size: 1.5, tags: { a: 1 }, at: [3, -4] };
  const back = await depot.get(part);
  assert.equal(back.label, "AB");
  assert.equal(back.kind, "nut");
  assert.deepEqual(back.blob, new Uint8Array([0, 255]));
  assert.deepEqual(back.at, [3, -4]);
  assert.deepEqual(back.tags, { a: 1 });

  const many: string[] = [];
  for await (const p of depot.many(3)) many.push(p.label);
  assert.deepEqual(many, ["p0", "p1", "p2"]);

  async function* parts(): AsyncIterable<Part> {
    yield { label: "x", size: 1 };
    yield { label: "y", size: 2.5 };
  }
  assert.equal(await depot.weigh(parts()), 3.5);

  const relabel = depot.relabel();
  await relabel.send({ label: "abc" });
  await relabel.send({ label: "de" });
  relabel.end();
  const reversed: string[] = [];
  for await (const s of relabel) reversed.push(s);
  assert.deepEqual(reversed, ["cba", "ed"]);

  assert.deepEqual(await depot.count(), { n: 1 });
  assert.deepEqual(await depot.whois({ title: "t" }), { title: "t" });

  depot.drop_it({ label: "gone" }); // declared reliable: sent on the control stream
  // The notify has no reply: ask until the server has run it (each ask is a round trip; bounded).
  let dropped: string[] = [];
  for (let i = 0; i < 100 && !dropped.includes("gone"); i++) dropped = await depot.dropped_labels();
  assert.deepEqual(dropped, ["gone"]);
});

test("a typed push: on() hands the payload and where it came from", async () => {
  const depot = new DepotClient(client);
  const got: [Restocked, EventInfo][] = [];
  const off = depot.on("shop.restocked", (r, info) => got.push([r, info]));
  await depot.restock(2);
  await waitFor(() => got.length === 1, "the shop.restocked push", 5000);
  off();
  const [r, info] = got[0]!;
  assert.deepEqual(r.parts.map((p) => [p.label, p.at]), [["r0", [0, 0]], ["r1", [1, -1]]]);
  assert.equal(info.name, "shop.restocked");
  assert.equal(info.key, null);
  let later = 0;
  const offLater = depot.on("shop.restocked", () => later++);
  await depot.restock(1);
  await waitFor(() => later === 1, "the second push", 5000);
  offLater();
  assert.equal(got.length, 1, "the removed handler saw nothing more");
});

test("a value the server's schema refuses is an RpcError INVALID_ARGUMENT with pydantic's details", async () => {
  const depot = new DepotClient(client);
  await assert.rejects(depot.get({ label: "" }), (e: unknown) => {
    assert.ok(e instanceof RpcError);
    assert.equal(e.code, Status.INVALID_ARGUMENT);
    assert.match(JSON.stringify(e.details), /label/);
    return true;
  });
});
