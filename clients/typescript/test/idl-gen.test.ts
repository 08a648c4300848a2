/**
 * The stub generator (src/idl, bin/kcprpc-gen-ts.js): deterministic output that matches the
 * committed src/generated/, stubs that compile with tsc under strict settings, a wrong call that
 * does not compile, and stubs that hand each call kind to the transport with its wire name.
 * The every-kind document is exported by our Python implementation from a real service class
 * (tests/clients/idl_kinds.py), so the generator reads what `kcprpc idl export` writes.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { checkDocument, generateService, IdlDocumentError, main, parseDocument, type IdlDocument } from "../src/idl/gen.js";
import type { BidiCall, CallOptions, EventInfo, NotifyOptions, RpcChannel, ServerStreamCall } from "../src/index.js";
import { GameClient, GameService } from "../src/generated/game.v1.Game.js";
import { GreeterClient } from "../src/generated/quickstart.Greeter.js";
import { LiveClient, LiveService } from "../src/generated/live.v1.Live.js";

const PKG = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const REPO = process.env["KCPRPC_REPO"] ?? resolve(PKG, "../..");
const PYTHON = process.env["KCPRPC_PYTHON"] ?? join(REPO, ".venv", "bin", "python");
const IDL = join(REPO, "idl");
const TSC = join(PKG, "node_modules", "typescript", "bin", "tsc");
const BIN = join(PKG, "bin", "kcprpc-gen-ts.js");
const STEP_TIMEOUT_MS = 60_000;
/** Where the committed stubs in src/generated import the runtime from. */
const RUNTIME = "../rpc/channel.js";

function idlDocuments(): IdlDocument[] {
  return readdirSync(IDL)
    .filter((n) => n.endsWith(".json") && n !== "schema.json")
    .sort()
    .map((n) => parseDocument(readFileSync(join(IDL, n), "utf8"), n));
}

/** The every-kind document, as `kcprpc idl export` writes it from tests/clients/idl_kinds.py. */
function kindsDocument(): IdlDocument {
  const r = spawnSync(PYTHON, ["-m", "kcprpc", "idl", "export", "tests.clients.idl_kinds:Depot"], {
    cwd: REPO,
    encoding: "utf8",
    timeout: STEP_TIMEOUT_MS,
  });
  assert.equal(r.status, 0, `kcprpc idl export failed: ${r.stderr}`);
  return parseDocument(r.stdout, "idl_kinds:Depot");
}

/** A document with the awkward names: members and types that clash, keys to quote, comment ends. */
const ODD: IdlDocument = {
  format: "kcprpc-idl",
  format_version: 1,
  name: "odd.v1.Odd",
  package: "odd.v1",
  service: "Odd",
  protocol_version: 1,
  description: "Ends a comment */ here",
  methods: {
    constructor: {
      wire_name: "odd.v1.Odd/constructor", kind: "unary" as const, delivery: "reliable" as const, id: 7, description: "a */ b",
      request: { $ref: "#/$defs/Promise" }, response: { type: "array", items: { $ref: "#/$defs/Promise" } },
    },
    on: { wire_name: "odd.v1.Odd/on", kind: "notify", delivery: "unreliable", request: { type: "null" }, response: { type: "null" } },
    "2fast": {
      wire_name: "odd.v1.Odd/2fast", kind: "server_stream", delivery: "reliable",
      request: { type: "null" }, response: { anyOf: [{ type: "string" }, { type: "integer" }] },
    },
  },
  events: { 'we"ird': { delivery: "unreliable", schema: { type: "string", format: "binary" } } },
  topics: { lobby: { events: ['we"ird'] }, "a`b:{x}": { events: ['we"ird'] } },
  $defs: {
    Promise: {
      type: "object", title: "Promise", required: ["title"],
      properties: { title: { type: "string", title: "Title" }, "odd-key": { type: "integer" } },
    },
  },
};

/** A temporary TypeScript project where `import ... from "kcprpc"` resolves to this package. */
function project(emit = false): string {
  const dir = mkdtempSync(join(tmpdir(), "kcprpc-gen-ts-test-"));
  mkdirSync(join(dir, "node_modules"));
  symlinkSync(PKG, join(dir, "node_modules", "kcprpc"), "dir");
  writeFileSync(
    join(dir, "package.json"),
    JSON.stringify({ name: "stub-user", private: true, type: "module" }),
  );
  writeFileSync(
    join(dir, "tsconfig.json"),
    JSON.stringify({
      compilerOptions: {
        target: "ES2022",
        module: "NodeNext",
        moduleResolution: "NodeNext",
        lib: ["ES2022"],
        typeRoots: [join(PKG, "node_modules", "@types")],
        types: ["node"],
        strict: true,
        noEmit: !emit,
        outDir: "out",
        rootDir: ".",
        noUnusedLocals: true,
        noUnusedParameters: true,
        noUncheckedIndexedAccess: true,
        exactOptionalPropertyTypes: true,
        verbatimModuleSyntax: true,
        skipLibCheck: true,
      },
      include: ["*.ts", "gen/*.ts"],
    }),
  );
  return dir;
}

/** Runs tsc on a project; returns its exit status and the diagnostics (one per line). */
function tsc(dir: string): { status: number | null; out: string } {
  const r = spawnSync(process.execPath, [TSC, "-p", dir, "--pretty", "false"], {
    cwd: dir,
    encoding: "utf8",
    timeout: STEP_TIMEOUT_MS,
  });
  return { status: r.status, out: r.stdout + r.stderr };
}

/** Runs bin/kcprpc-gen-ts.js. */
function gen(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: "utf8", timeout: STEP_TIMEOUT_MS });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

test("src/generated is what the generator writes for idl/*.json, and generation is deterministic", async () => {
  const docs = idlDocuments();
  assert.ok(docs.length >= 6);
  const committed = readdirSync(join(PKG, "src", "generated")).filter((n) => n.endsWith(".ts")).sort();
  assert.deepEqual(committed, docs.map((d) => `${d.name}.ts`).sort(), "src/generated holds one module per document");
  for (const d of docs) {
    const a = await generateService(d, { runtimeImport: RUNTIME });
    const b = await generateService(structuredClone(d), { runtimeImport: RUNTIME });
    assert.equal(a, b, `${d.name}: two generations differ`);
    const file = readFileSync(join(PKG, "src", "generated", `${d.name}.ts`), "utf8");
    assert.equal(
      a,
      file,
      `src/generated/${d.name}.ts is stale: run node bin/kcprpc-gen-ts.js --runtime ../rpc/channel.js --out src/generated ../../idl`,
    );
  }
  // test/generated: the stub of the every-kind service that idl_e2e.test.ts runs against Python.
  const depot = await generateService(kindsDocument(), { runtimeImport: "../../src/index.js" });
  assert.equal(
    depot,
    readFileSync(join(PKG, "test", "generated", "kinds.v1.Depot.ts"), "utf8"),
    "test/generated/kinds.v1.Depot.ts is stale: run kcprpc idl gen-ts --from-app tests.clients.idl_kinds:Depot --runtime ../../src/index.js --out clients/typescript/test/generated",
  );
  const out: string[] = [];
  const status = await main(["--check", "--runtime", RUNTIME, "--out", join(PKG, "src", "generated"), IDL], (s) => out.push(s), (s) => out.push(s));
  assert.equal(status, 0, out.join("\n"));
});

test("stubs of quickstart, game, live and every kind compile with tsc; a wrong call is a compile error naming it", () => {
  const dir = project();
  try {
    writeFileSync(join(dir, "kinds.v1.Depot.json"), JSON.stringify(kindsDocument()));
    writeFileSync(join(dir, "odd.v1.Odd.json"), JSON.stringify(checkDocument(ODD, "ODD")));
    const docs = ["quickstart.Greeter.json", "game.v1.Game.json", "live.v1.Live.json"].map((n) => join(IDL, n));
    const g = gen(["--out", join(dir, "gen"), ...docs, join(dir, "kinds.v1.Depot.json"), join(dir, "odd.v1.Odd.json")]);
    assert.equal(g.status, 0, g.stderr);
    assert.match(g.stdout, /wrote 5 module\(s\)/);

    const good = `
import type { RpcChannel } from "kcprpc";
import { GreeterClient } from "./gen/quickstart.Greeter.js";
import { GameClient, GameService, type ChatLine } from "./gen/game.v1.Game.js";
import { LiveClient, type LiveTopic } from "./gen/live.v1.Live.js";
import { DepotClient, type Part } from "./gen/kinds.v1.Depot.js";
import { generateService, type IdlDocument } from "kcprpc/gen";
import { OddClient, OddService, type OddTopic, type Promise2 } from "./gen/odd.v1.Odd.js";

export async function odd(ch: RpcChannel): Promise<number> {
  const o = new OddClient(ch);
  const ps: Promise2[] = await o.constructor_({ title: "t", "odd-key": 1 });
  o.on_();
  let n = 0;
  for await (const v of o.m_2fast()) n += typeof v === "string" ? v.length : v;
  o.on('we"ird', (b) => { const u: Uint8Array = b; void u; });
  const topics: OddTopic[] = ["lobby", "a\`b:x"];
  const id: 7 = OddService.methods.constructor.id;
  return ps.length + n + topics.length + id;
}

export const regenerate = (d: IdlDocument): Promise<string> => generateService(d, { runtimeImport: "kcprpc" });

export async function use(ch: RpcChannel): Promise<string> {
  const greeter = new GreeterClient(ch);
  const hi = await greeter.hello({ name: "ann" }, { timeoutMs: 500, metadata: { k: "v" } });
  let n = 0;
  const counting = greeter.count({ to: 3 }, { signal: new AbortController().signal });
  for await (const c of counting) n += c.n;
  await counting.trailers();
  const game = new GameClient(ch);
  const j = await game.join({ room: "r1", name: "ann" });
  const m = await game.move({ dx: 1, dy: -1 });
  game.position({ seq: 1, x: j.x + m.x, y: j.y });
  await game.leave();
  const off = game.on("game.chat", (line: ChatLine, info) => { void (line.text + String(info.position)); });
  off();
  const kind: "unary" = GameService.methods.join.kind;
  const topic: LiveTopic = "channel:demo";
  const live = new LiveClient(ch);
  const ack = await live.chat({ channel: "demo", user: "u", text: "hi" });
  live.on("live.gift", (g) => { void g.amount; });
  const depot = new DepotClient(ch);
  const p: Part = await depot.get({ label: "a", blob: new Uint8Array([1]), at: [1, 2], kind: "nut" });
  async function* parts(): AsyncIterable<Part> { yield p; }
  const w: number = await depot.weigh(parts());
  const w2: number = await depot.weigh([p, p]);
  const relabel = depot.relabel();
  await relabel.send(p);
  relabel.end();
  for await (const s of relabel) void s.toUpperCase();
  for await (const q of depot.many(2)) void q.label;
  depot.drop_it({ label: "x" });
  depot.drop_it({ label: "x" }, { reliable: false, metadata: { a: 1 } });
  const c = await depot.count();
  const who = await depot.whois({ title: "t" });
  depot.on("shop.sold", (s) => { void s.buyer.title; });
  return hi.message + n + kind + topic + JSON.stringify(ack) + w + w2 + (c["n"] ?? 0) + who.title;
}
`;
    writeFileSync(join(dir, "good.ts"), good);
    const ok = tsc(dir);
    assert.equal(ok.status, 0, `the correct calls must compile:\n${ok.out}`);

    // Each line below is one mistake; tsc must flag every one of them, and nothing else.
    const mistakes: [string, RegExp][] = [
      [`void game.join({ room: 1, name: "ann" });`, /Type 'number' is not assignable to type 'string'/],
      [`void game.join({ room: "r1" });`, /Property 'name' is missing/],
      [`void game.move({ dx: "1", dy: 0 });`, /Type 'string' is not assignable to type 'number'/],
      [`void game.join({ room: "r1", name: "ann", level: 3 });`, /'level' does not exist in type 'JoinRequest'/],
      [`void game.leave({ room: "r1" });`, /'room' does not exist in type 'CallOptions'/],
      [`game.on("game.chat", (line) => { const s: number = line.text; void s; });`, /Type 'string' is not assignable to type 'number'/],
      [`game.on("game.chatter", () => {});`, /not assignable to parameter of type '"game.chat"'/],
      [`void depot.weigh([{ label: 5 }]);`, /Type 'number' is not assignable to type 'string'/],
      [`void depot.relabel().send({ label: 1 });`, /Type 'number' is not assignable to type 'string'/],
      [`void (async () => { for await (const s of depot.relabel()) { const n: number = s; void n; } })();`, /Type 'string' is not assignable to type 'number'/],
      [`void (async () => { for await (const c of depot.many(1)) void c.weight; })();`, /Property 'weight' does not exist on type 'Part'/],
      [`void depot.get({ label: "a", kind: "screw" });`, /Type '"screw"' is not assignable to type '"bolt" \| "nut"/],
      [`void depot.get({ label: "a", blob: "bytes" });`, /Type 'string' is not assignable to type 'Uint8Array/],
      [`void (async () => { const r: string = await game.move({ dx: 0, dy: 0 }); void r; })();`, /Type 'MoveReply' is not assignable to type 'string'/],
    ];
    const header = [
      `import type { RpcChannel } from "kcprpc";`,
      `import { GameClient } from "./gen/game.v1.Game.js";`,
      `import { DepotClient } from "./gen/kinds.v1.Depot.js";`,
      `declare const t: RpcChannel;`,
      `const game = new GameClient(t);`,
      `const depot = new DepotClient(t);`,
    ];
    writeFileSync(join(dir, "bad.ts"), [...header, ...mistakes.map(([line]) => line)].join("\n") + "\n");
    const bad = tsc(dir);
    assert.notEqual(bad.status, 0, "a wrong call must not compile");
    // One diagnostic per "file(line,col): error TSnnnn: ..." line, with its indented continuation lines.
    const errors = bad.out.split(/\n(?=\S)/).filter((d) => /error TS\d+/.test(d));
    for (const e of errors) assert.match(e, /^bad\.ts\(/, `an error outside bad.ts: ${e}`);
    for (const [i, [line, message]] of mistakes.entries()) {
      const lineNo = header.length + i + 1;
      const here = errors.filter((e) => e.startsWith(`bad.ts(${lineNo},`));
      assert.ok(here.length > 0, `no error for line ${lineNo} (${line}):\n${bad.out}`);
      assert.ok(here.some((e) => message.test(e)), `line ${lineNo} (${line}): expected ${message}, got:\n${here.join("\n")}`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

type Recorded = { kind: string; method: string; payload: unknown; options: unknown };

/** A stream call over fixed responses. */
function streamOf<Res>(items: () => Res[]): ServerStreamCall<Res> {
  return {
    async *[Symbol.asyncIterator]() {
      yield* items();
    },
    headers: async () => ({}),
    trailers: async () => ({}),
    cancel: () => undefined,
  };
}

/** An RpcChannel that records calls and answers from a script. */
class FakeChannel implements RpcChannel {
  readonly calls: Recorded[] = [];
  readonly handlers = new Map<string, Set<(payload: unknown, info: EventInfo) => void>>();
  constructor(private readonly reply: (method: string, payload: unknown) => unknown) {}
  async unary<Req, Res>(method: string, request: Req, options?: CallOptions): Promise<Res> {
    this.calls.push({ kind: "unary", method, payload: request, options });
    return this.reply(method, request) as Res;
  }
  serverStream<Req, Res>(method: string, request: Req, options?: CallOptions): ServerStreamCall<Res> {
    this.calls.push({ kind: "serverStream", method, payload: request, options });
    return streamOf(() => this.reply(method, request) as Res[]);
  }
  async clientStream<Req, Res>(method: string, requests: Iterable<Req> | AsyncIterable<Req>, options?: CallOptions): Promise<Res> {
    const all: Req[] = [];
    for await (const r of requests) all.push(r);
    this.calls.push({ kind: "clientStream", method, payload: all, options });
    return this.reply(method, all) as Res;
  }
  bidi<Req, Res>(method: string, options?: CallOptions): BidiCall<Req, Res> {
    const sent: Req[] = [];
    let ended = false;
    this.calls.push({ kind: "bidi", method, payload: sent, options });
    return {
      ...streamOf(() => {
        assert.ok(ended, "the fake answers a bidi call once its requests ended");
        return sent.map((m) => this.reply(method, m) as Res);
      }),
      send: async (m: Req) => {
        sent.push(m);
      },
      end: () => {
        ended = true;
      },
    };
  }
  notify(method: string, payload: unknown, options?: NotifyOptions): void {
    this.calls.push({ kind: "notify", method, payload, options });
  }
  on<T>(name: string, handler: (payload: T, info: EventInfo) => void): () => void {
    const set = this.handlers.get(name) ?? new Set();
    const h = (p: unknown, info: EventInfo): void => handler(p as T, info);
    set.add(h);
    this.handlers.set(name, set);
    return () => set.delete(h);
  }
  push(name: string, data: unknown): void {
    const info: EventInfo = { name, key: "topic:channel:demo", position: [7, 1], replayed: false, unreliable: false, latestKey: null };
    for (const h of this.handlers.get(name) ?? []) h(data, info);
  }
}

test("a generated client hands each call to the channel with its wire name and options", async () => {
  const ch = new FakeChannel((method, payload) => {
    if (method === "game.v1.Game/join") return { player_id: 1, room: "r1", tick_hz: 20, x: 0, y: 0, state: "" };
    if (method === "quickstart.Greeter/count") return [{ n: 0 }, { n: 1 }];
    if (method === "game.v1.Game/leave") return null;
    return payload;
  });
  const game = new GameClient(ch);
  const signal = new AbortController().signal;
  const reply = await game.join({ room: "r1", name: "ann" }, { timeoutMs: 250, metadata: { a: "b" }, signal });
  assert.equal(reply.player_id, 1);
  assert.equal(await game.leave(), null);
  game.position({ seq: 3, x: 1, y: 2 });
  const counts: number[] = [];
  for await (const c of new GreeterClient(ch).count({ to: 2 })) counts.push(c.n);
  assert.deepEqual(counts, [0, 1]);
  assert.deepEqual(
    ch.calls.map((c) => [c.kind, c.method, c.payload, c.options]),
    [
      ["unary", "game.v1.Game/join", { room: "r1", name: "ann" }, { timeoutMs: 250, metadata: { a: "b" }, signal }],
      ["unary", "game.v1.Game/leave", null, undefined],
      ["notify", "game.v1.Game/position", { seq: 3, x: 1, y: 2 }, undefined], // unreliable: the channel's default
      ["serverStream", "quickstart.Greeter/count", { to: 2 }, undefined],
    ],
  );
  assert.equal(GameService.methods.position.delivery, "unreliable");
  assert.equal(GameClient.service.name, "game.v1.Game");

  const live = new LiveClient(ch);
  const got: [string, [number, number] | null][] = [];
  const off = live.on("live.chat", (chat, info) => got.push([chat.text, info.position]));
  ch.push("live.chat", { channel: "demo", user: "u", text: "hi" });
  ch.push("live.gift", { channel: "demo", user: "u", gift: "rose", amount: 1 });
  off();
  ch.push("live.chat", { channel: "demo", user: "u", text: "after" });
  assert.deepEqual(got, [["hi", [7, 1]]]);
  assert.deepEqual(LiveService.topics["channel:{channel}"].events, ["live.chat", "live.gift", "live.score"]);
});

test("client-streaming, bidi and reliable-notify stubs of an exported service reach the channel", async () => {
  const dir = project(true);
  try {
    // The module compiled on its own: its only import is of types, so the emitted JS needs nothing.
    mkdirSync(join(dir, "gen"));
    writeFileSync(join(dir, "gen", "depot.ts"), await generateService(kindsDocument()));
    const built = tsc(dir);
    assert.equal(built.status, 0, built.out);
    const emitted = readFileSync(join(dir, "out", "gen", "depot.js"), "utf8");
    assert.doesNotMatch(emitted, /from "kcprpc"/);
    const mod = (await import(join(dir, "out", "gen", "depot.js"))) as {
      DepotClient: new (ch: RpcChannel) => {
        weigh(r: Iterable<{ label: string; size?: number }> | AsyncIterable<{ label: string; size?: number }>): Promise<number>;
        relabel(): BidiCall<{ label: string }, string>;
        drop_it(p: { label: string }, options?: NotifyOptions): void;
      };
    };
    const ch = new FakeChannel((method, payload) => {
      if (method === "kinds.v1.Depot/weigh") return (payload as { size: number }[]).reduce((a, p) => a + p.size, 0);
      if (method === "kinds.v1.Depot/relabel") return [...(payload as { label: string }).label].reverse().join("");
      return null;
    });
    const depot = new mod.DepotClient(ch);
    async function* parts(): AsyncIterable<{ label: string; size: number }> {
      yield { label: "a", size: 1 };
      yield { label: "b", size: 2.5 };
    }
    assert.equal(await depot.weigh(parts()), 3.5);
    const call = depot.relabel();
    await call.send({ label: "ab" });
    await call.send({ label: "cd" });
    call.end();
    const back: string[] = [];
    for await (const s of call) back.push(s);
    assert.deepEqual(back, ["ba", "dc"]);
    depot.drop_it({ label: "x" });
    depot.drop_it({ label: "y" }, { reliable: false });
    assert.deepEqual(
      ch.calls.map((c) => [c.kind, c.method, c.options]),
      [
        ["clientStream", "kinds.v1.Depot/weigh", undefined],
        ["bidi", "kinds.v1.Depot/relabel", undefined],
        ["notify", "kinds.v1.Depot/drop-it", { reliable: true }], // declared reliable: the stub's default
        ["notify", "kinds.v1.Depot/drop-it", { reliable: false }],
      ],
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a bad document is refused with its file and place named; --check reports stale modules", async () => {
  const game = JSON.parse(readFileSync(join(IDL, "game.v1.Game.json"), "utf8")) as Record<string, unknown>;
  const methods = game["methods"] as Record<string, Record<string, unknown>>;
  const broken = { ...game, methods: { ...methods, join: { ...methods["join"], kind: "duplex" } } };
  assert.throws(() => checkDocument(broken, "g.json"), (e: unknown) => e instanceof IdlDocumentError && /g\.json: methods\.join\.kind: expected one of/.test(e.message));
  assert.throws(() => parseDocument("{", "x.json"), (e: unknown) => e instanceof IdlDocumentError && /x\.json: not JSON/.test(e.message));
  assert.throws(() => checkDocument({ ...game, format: "openapi" }, "o.json"), /o\.json: format: expected "kcprpc-idl"/);

  const dir = mkdtempSync(join(tmpdir(), "kcprpc-gen-ts-cli-"));
  try {
    writeFileSync(join(dir, "bad.json"), JSON.stringify(broken));
    const r = gen(["--out", join(dir, "out"), join(dir, "bad.json")]);
    assert.equal(r.status, 2);
    assert.match(r.stderr, /kcprpc-gen-ts: .*bad\.json: methods\.join\.kind/);
    assert.equal(gen([join(IDL, "game.v1.Game.json")]).status, 2, "--out is required");
    assert.match(gen(["--out", dir, join(dir, "missing.json")]).stderr, /missing\.json: no such file/);

    const out = join(dir, "out");
    assert.equal(gen(["--out", out, join(IDL, "game.v1.Game.json")]).status, 0);
    assert.equal(gen(["--check", "--out", out, join(IDL, "game.v1.Game.json")]).status, 0);
    writeFileSync(join(out, "game.v1.Game.ts"), "// edited\n");
    const stale = gen(["--check", "--out", out, join(IDL, "game.v1.Game.json")]);
    assert.equal(stale.status, 1);
    assert.match(stale.stderr, /out of date.*game\.v1\.Game\.ts/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
