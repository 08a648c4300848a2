/**
 * The package as a user gets it: `npm pack` of a clean copy (its "prepack" script builds dist/),
 * the tarball installed into a fresh npm project, stubs generated with the installed
 * `kcprpc-gen-ts`, a strict TypeScript program importing `kcprpc` compiled with the project's own
 * tsc and run against a real Python server (calls, a server stream, metadata, a push); the
 * browser bundle is in it and `kcprpc/browser` resolves to it.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { REPO, startPythonServer, type PyServer } from "./support/rpc_python.js";
import { installInto, packClean, run } from "./support/package.js";

const KEY = "ts package install passphrase";

const MAIN = `
import { connect, RpcError, Status, type EventInfo } from "kcprpc";
import { generateService } from "kcprpc/gen";
import { GreeterClient } from "./gen/quickstart.Greeter.js";

const port = Number(process.argv[2]);
const client = await connect("127.0.0.1", port, { wire: { mode: "secure", passphrase: process.argv[3] as string }, metadata: { token: "t" } });
const greeter = new GreeterClient(client);
const hello = await greeter.hello({ name: "ann" }, { timeoutMs: 5000 });
const counted: number[] = [];
for await (const c of greeter.count({ to: 3 })) counted.push(c.n);
const echo = await client.unary<string, { got: string; md: Record<string, unknown> }>("ts.App/echo", "x", { metadata: { k: "v" } });
let invalid = "";
try {
  await greeter.hello({ name: "" });
} catch (e) {
  if (e instanceof RpcError && e.code === Status.INVALID_ARGUMENT) invalid = "INVALID_ARGUMENT";
}
const pushed = new Promise<[unknown, EventInfo]>((resolve, reject) => {
  const t = setTimeout(() => reject(new Error("no push within 5 s")), 5000);
  client.on<{ text: string }>("ts.Note", (p, info) => {
    clearTimeout(t);
    resolve([p, info]);
  });
});
await client.unary("ts.App/push", { room: "r", topic: "t" });
const [note, info] = await pushed;
await client.close();
console.log(JSON.stringify({ hello: hello.message, counted, echo, invalid, note, key: info.key, gen: typeof generateService }));
`;

test("npm pack → install the tarball in a fresh project → kcprpc-gen-ts + strict tsc + calls and a push against a Python server", { timeout: 240000 }, async () => {
  const tmp = mkdtempSync(path.join(tmpdir(), "kcprpc-pkg-"));
  let server: PyServer | null = null;
  try {
    const tgz = await packClean(tmp);
    const listing = await run("tar", ["-tzf", tgz], tmp);
    for (const f of [
      "package/dist/src/index.js", "package/dist/src/index.d.ts", "package/dist/src/idl/gen.d.ts", "package/bin/kcprpc-gen-ts.js", "package/README.md",
      "package/dist/browser/kcprpc.js", "package/dist/browser/kcprpc.js.map", "package/dist/src/browser.d.ts",
    ]) {
      assert.ok(listing.split("\n").includes(f), `the tarball holds ${f}`);
    }
    assert.ok(!listing.includes("package/dist/test/"), "tests are not packed");
    const app = path.join(tmp, "app");
    mkdirSync(app);
    await installInto(app, tgz);
    // "kcprpc/browser" is the bundle
    const browser = await run(process.execPath, ["--input-type=module", "-e", 'console.log(import.meta.resolve("kcprpc/browser")); const m = await import("kcprpc/browser"); console.log(typeof m.connectWeb, typeof m.WebTransportTransport)'], app);
    assert.match(browser, /node_modules\/kcprpc\/dist\/browser\/kcprpc\.js\nfunction function\n$/);
    // the bin of the installed package
    await run("npx", ["--no-install", "kcprpc-gen-ts", "--out", "gen", path.join(REPO, "idl", "quickstart.Greeter.json")], app);
    assert.ok(existsSync(path.join(app, "gen", "quickstart.Greeter.ts")), "kcprpc-gen-ts wrote the stub module");
    writeFileSync(path.join(app, "main.ts"), MAIN);
    // a wrong call does not compile against the installed types
    writeFileSync(path.join(app, "wrong.ts"), `import { GreeterClient } from "./gen/quickstart.Greeter.js";\nexport async function f(g: GreeterClient): Promise<void> { await g.hello({ name: 1 }); }\n`);
    await assert.rejects(run("npx", ["--no-install", "tsc", "-p", "."], app), /wrong\.ts.*TS2322/s);
    rmSync(path.join(app, "wrong.ts"));
    await run("npx", ["--no-install", "tsc", "-p", "."], app);
    server = await startPythonServer("tests/clients/ts_app.py", ["--key", KEY]);
    const out = await run(process.execPath, [path.join(app, "out", "main.js"), String(server.port), KEY], app, 60000);
    const got = JSON.parse(out.trim().split("\n").pop() as string) as Record<string, unknown>;
    assert.deepEqual(got, {
      hello: "Hello, ann!",
      counted: [1, 2, 3],
      echo: { got: "x", md: { k: "v" } },
      invalid: "INVALID_ARGUMENT",
      note: { text: "to you" },
      key: null,
      gen: "function",
    });
  } finally {
    await server?.kill();
    rmSync(tmp, { recursive: true, force: true });
  }
});
