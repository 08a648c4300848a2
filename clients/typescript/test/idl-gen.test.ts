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
import type { CallOptions, CallTransport, NotifyOptions, PushEvent, StreamRequests } from "../src/index.js";
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
        types: [],
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
    const a = await generateService(d, { runtimeImport: "../idl/runtime.js" });
    const b = await generateService(structuredClone(d), { runtimeImport: "../idl/runtime.js" });
    assert.equal(a, b, `${d.name}: two generations differ`);
    const file = readFileSync(join(PKG, "src", "generated", `${d.name}.ts`), "utf8");
    assert.equal(
      a,
      file,
      `src/generated/${d.name}.ts is stale: run node bin/kcprpc-gen-ts.js --runtime ../idl/runtime.js --out src/generated ../../idl`,
    );
  }
  const out: string[] = [];
  const status = await main(["--check", "--runtime", "../idl/runtime.js", "--out", join(PKG, "src", "generated"), IDL], (s) => out.push(s), (s) => out.push(s));
  assert.equal(status, 0, out.join("\n"));
});

test("stubs of quickstart, game, live and every kind compile with tsc; a wrong call is a compile error naming it", () => {
  const dir = project();
  try {
    writeFileSync(join(dir, "kinds.v1.Depot.json"), JSON.stringify(kindsDocument()));
    const docs = ["quickstart.Greeter.json", "game.v1.Game.json", "live.v1.Live.json"].map((n) => join(IDL, n));
    const g = gen(["--out", join(dir, "gen"), ...docs, join(dir, "kinds.v1.Depot.json")]);
    assert.equal(g.status, 0, g.stderr);
    assert.match(g.stdout, /wrote 4 module\(s\)/);

    const good = `
import type { CallTransport } from "kcprpc";
import { GreeterClient } from "./gen/quickstart.Greeter.js";
import { GameClient, GameService, type ChatLine } from "./gen/game.v1.Game.js";
import { LiveClient, type LiveTopic } from "./gen/live.v1.Live.js";
import { DepotClient, type Part } from "./gen/kinds.v1.Depot.js";

export async function use(t: CallTransport): Promise<string> {
  const greeter = new GreeterClient(t);
  const hi = await greeter.hello({ name: "ann" }, { timeoutMs: 500, metadata: { k: "v" } });
  let n = 0;
  for await (const c of greeter.count({ to: 3 })) n += c.n;
  const game = new GameClient(t);
  const j = await game.join({ room: "r1", name: "ann" });
  const m = await game.move({ dx: 1, dy: -1 });
  await game.position({ seq: 1, x: j.x + m.x, y: j.y });
  await game.leave();
  const off = game.on("game.chat", (line: ChatLine, ev) => { void (line.text + String(ev.seq)); });
  off();
  const kind: "unary" = GameService.methods.join.kind;
  const topic: LiveTopic = "channel:demo";
  const live = new LiveClient(t);
  const ack = await live.chat({ channel: "demo", user: "u", text: "hi" });
  live.on("live.gift", (g) => { void g; });
  const depot = new DepotClient(t);
  const p: Part = await depot.get({ label: "a", blob: new Uint8Array([1]), at: [1, 2], kind: "nut" });
  async function* parts(): AsyncIterable<Part> { yield p; }
  const w: number = await depot.weigh(parts());
  for await (const s of depot.relabel([p, p])) void s.toUpperCase();
  for await (const q of depot.many(2)) void q.label;
  await depot.drop_it({ label: "x" });
  const c = await depot.count();
  const who = await depot.whois({ title: "t" });
  depot.on("shop.sold", (s) => { void s.buyer.title; });
  return hi.message + n + kind + topic + JSON.stringify(ack) + w + (c["n"] ?? 0) + who.title;
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
      [`void depot.get({ label: "a", kind: "screw" });`, /Type '"screw"' is not assignable to type '"bolt" \| "nut"/],
      [`void depot.get({ label: "a", blob: "bytes" });`, /Type 'string' is not assignable to type 'Uint8Array/],
      [`void (async () => { const r: string = await game.move({ dx: 0, dy: 0 }); void r; })();`, /Type 'MoveReply' is not assignable to type 'string'/],
    ];
    const header = [
      `import type { CallTransport } from "kcprpc";`,
      `import { GameClient } from "./gen/game.v1.Game.js";`,
      `import { DepotClient } from "./gen/kinds.v1.Depot.js";`,
      `declare const t: CallTransport;`,
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

/** A CallTransport that records calls and answers from a script. */
class FakeTransport implements CallTransport {
  readonly calls: { kind: string; method: string; payload: unknown; options: unknown }[] = [];
  readonly handlers = new Map<string, Set<(e: PushEvent<unknown>) => void>>();
  constructor(private readonly reply: (method: string, payload: unknown) => unknown) {}
  async unary(method: string, request: unknown, options?: CallOptions): Promise<unknown> {
    this.calls.push({ kind: "unary", method, payload: request, options });
    return this.reply(method, request);
  }
  async *serverStream(method: string, request: unknown, options?: CallOptions): AsyncIterable<unknown> {
    this.calls.push({ kind: "serverStream", method, payload: request, options });
    for (const r of this.reply(method, request) as unknown[]) yield r;
  }
  async clientStream(method: string, requests: StreamRequests<unknown>, options?: CallOptions): Promise<unknown> {
    const all: unknown[] = [];
    for await (const r of requests) all.push(r);
    this.calls.push({ kind: "clientStream", method, payload: all, options });
    return this.reply(method, all);
  }
  async *bidi(method: string, requests: StreamRequests<unknown>, options?: CallOptions): AsyncIterable<unknown> {
    this.calls.push({ kind: "bidi", method, payload: null, options });
    for await (const r of requests) yield this.reply(method, r);
  }
  async notify(method: string, request: unknown, options?: NotifyOptions): Promise<void> {
    this.calls.push({ kind: "notify", method, payload: request, options });
  }
  onEvent(name: string, handler: (e: PushEvent<unknown>) => void): () => void {
    const set = this.handlers.get(name) ?? new Set();
    set.add(handler);
    this.handlers.set(name, set);
    return () => set.delete(handler);
  }
  push(name: string, data: unknown): void {
    for (const h of this.handlers.get(name) ?? []) h({ name, data, key: "topic:channel:demo", seq: 1, epoch: 7, replayed: false });
  }
}

test("a generated client hands each call kind to the transport with its wire name", async () => {
  const t = new FakeTransport((method, payload) => {
    if (method === "game.v1.Game/join") return { player_id: 1, room: "r1", tick_hz: 20, x: 0, y: 0, state: "" };
    if (method === "quickstart.Greeter/count") return [{ n: 0 }, { n: 1 }];
    if (method === "game.v1.Game/leave") return null;
    return payload;
  });
  const game = new GameClient(t);
  const signal = new AbortController().signal;
  const reply = await game.join({ room: "r1", name: "ann" }, { timeoutMs: 250, metadata: { a: "b" }, signal });
  assert.equal(reply.player_id, 1);
  assert.equal(await game.leave(), undefined);
  await game.position({ seq: 3, x: 1, y: 2 });
  const counts: number[] = [];
  for await (const c of new GreeterClient(t).count({ to: 2 })) counts.push(c.n);
  assert.deepEqual(counts, [0, 1]);
  assert.deepEqual(
    t.calls.map((c) => [c.kind, c.method, c.payload]),
    [
      ["unary", "game.v1.Game/join", { room: "r1", name: "ann" }],
      ["unary", "game.v1.Game/leave", null],
      ["notify", "game.v1.Game/position", { seq: 3, x: 1, y: 2 }],
      ["serverStream", "quickstart.Greeter/count", { to: 2 }],
    ],
  );
  assert.deepEqual(t.calls[0]!.options, { timeoutMs: 250, metadata: { a: "b" }, signal });
  assert.equal(GameService.methods.position.delivery, "unreliable");
  assert.equal(GameClient.service.name, "game.v1.Game");

  const live = new LiveClient(t);
  const got: [string, number | null][] = [];
  const off = live.on("live.chat", (chat, ev) => got.push([chat.text, ev.seq]));
  t.push("live.chat", { user: "u", text: "hi" });
  t.push("live.gift", { user: "u", gift: "rose", amount: 1 });
  off();
  t.push("live.chat", { user: "u", text: "after" });
  assert.deepEqual(got, [["hi", 1]]);
  assert.deepEqual(LiveService.topics["channel:{channel}"].events, ["live.chat", "live.gift", "live.score"]);
});

test("client-streaming and bidi stubs stream their requests through the transport", async () => {
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
      DepotClient: new (t: CallTransport) => {
        weigh(r: StreamRequests<{ label: string; size?: number }>): Promise<number>;
        relabel(r: StreamRequests<{ label: string }>): AsyncIterable<string>;
        drop_it(p: { label: string }): Promise<void>;
      };
    };
    const t = new FakeTransport((method, payload) => {
      if (method === "kinds.v1.Depot/weigh") return (payload as { size: number }[]).reduce((a, p) => a + p.size, 0);
      if (method === "kinds.v1.Depot/relabel") return [...(payload as { label: string }).label].reverse().join("");
      return null;
    });
    const depot = new mod.DepotClient(t);
    async function* parts(): AsyncIterable<{ label: string; size: number }> {
      yield { label: "a", size: 1 };
      yield { label: "b", size: 2.5 };
    }
    assert.equal(await depot.weigh(parts()), 3.5);
    const back: string[] = [];
    for await (const s of depot.relabel([{ label: "ab" }, { label: "cd" }])) back.push(s);
    assert.deepEqual(back, ["ba", "dc"]);
    await depot.drop_it({ label: "x" });
    assert.deepEqual(
      t.calls.map((c) => [c.kind, c.method]),
      [
        ["clientStream", "kinds.v1.Depot/weigh"],
        ["bidi", "kinds.v1.Depot/relabel"],
        ["notify", "kinds.v1.Depot/drop-it"],
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
