/**
 * The browser bundle (dist/browser/kcprpc.js, `npm run build:browser`): one ESM file with no
 * import at all (so no node:* module and no dgram), no Node global, its sourcemap, the browser API
 * exported; the resume proof without node:crypto gives the bytes node:crypto gives; the compiled
 * stubs a page loads beside the bundle import nothing either.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHmac, randomBytes } from "node:crypto";
import { existsSync, readFileSync, readdirSync } from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { PACKAGE } from "./support/package.js";

const BUNDLE = path.join(PACKAGE, "dist", "browser", "kcprpc.js");

/** The bundle's text without comments and string contents is where code references live. */
function bundle(): string {
  assert.ok(existsSync(BUNDLE), `${BUNDLE} exists: npm run build:browser (npm test and tests/clients build it)`);
  return readFileSync(BUNDLE, "utf8");
}

test("the bundle imports nothing: no node:* module, no dgram, no require", () => {
  const src = bundle();
  assert.doesNotMatch(src, /^\s*import[\s{*]/m, "no static import statement");
  assert.doesNotMatch(src, /\bimport\s*\(/, "no dynamic import()");
  assert.doesNotMatch(src, /\brequire\s*\(/, "no require()");
  assert.doesNotMatch(src, /["'`]node:/, "no node:* specifier");
  assert.doesNotMatch(src, /["'`]dgram["'`]/, "no dgram module");
  assert.doesNotMatch(src, /\bcreateSocket\b/, "no UDP socket code (src/kcp/link.ts)");
  assert.doesNotMatch(src, /\bBuffer\.(from|alloc|concat|isBuffer)\b/, "no Node Buffer");
  assert.doesNotMatch(src, /\bprocess\.(env|stdout|stderr|hrtime|nextTick)\b/, "no Node process");
  // the whole KCP and secure-mode stacks stay out of the browser entry
  assert.doesNotMatch(src, /class KcpSession\b|class UdpLink\b|class SecureUdpLink\b/);
});

test("the bundle has its sourcemap, mapping back to src/", () => {
  const src = bundle();
  assert.match(src, /\/\/# sourceMappingURL=kcprpc\.js\.map\s*$/);
  const map = JSON.parse(readFileSync(`${BUNDLE}.map`, "utf8")) as { version: number; sources: string[] };
  assert.equal(map.version, 3);
  assert.ok(map.sources.some((s) => s.endsWith("src/web/websocket.ts")), "src/web/websocket.ts is a source");
  assert.ok(map.sources.some((s) => s.endsWith("src/rpc/client.ts")), "src/rpc/client.ts is a source");
  assert.ok(!map.sources.some((s) => /src\/(kcp\/(link|session|engine)|secure\/)/.test(s)), `no KCP or secure-mode source: ${map.sources.join(", ")}`);
});

test("the bundle exports the browser API", async () => {
  const m = (await import(pathToFileURL(BUNDLE).href)) as Record<string, unknown>;
  for (const name of [
    "connectWeb", "discover", "webConnector", "WebSocketTransport", "WebTransportTransport", "Client", "MuxConnection", "RpcError", "Status", "UsageError",
    "S", "clientState", "StateView", "resumeProof", "LiveClient", "GameClient", "GreeterClient", "HealthClient", "encodeOpen", "decodeAnswer",
  ]) {
    assert.ok(m[name] !== undefined, `the bundle exports ${name}`);
  }
  const Status = m.Status as Record<string, number>;
  assert.equal(Status.UNAUTHENTICATED, 16);
  // a class from the bundle works: an RpcError carries its status
  const RpcError = m.RpcError as new (code: number, message: string) => Error & { code: number; statusMessage: string };
  const e = new RpcError(16, "no");
  assert.equal(e.code, 16);
  assert.equal(e.statusMessage, "no");
});

test("resumeProof (@noble/hashes) gives node:crypto's HMAC-SHA256 bytes", async () => {
  const m = (await import(pathToFileURL(BUNDLE).href)) as { resumeProof: (token: Uint8Array, sid: string, binding: Uint8Array) => Uint8Array };
  const sids = ["", "s1", "session-é-東京-🙂", "x".repeat(300)];
  for (let i = 0; i < 40; i++) {
    // tokens shorter and longer than SHA-256's 64-byte block (a long HMAC key is hashed first)
    const token = randomBytes([0, 1, 32, 63, 64, 65, 200][i % 7] as number);
    const sid = sids[i % sids.length] as string;
    const binding = randomBytes(i % 2 ? 16 : 32);
    const want = createHmac("sha256", token).update("kcprpc-resume-v1").update(Buffer.from(sid, "utf8")).update(binding).digest();
    const got = m.resumeProof(new Uint8Array(token), sid, new Uint8Array(binding));
    assert.ok(got instanceof Uint8Array);
    assert.equal(Buffer.from(got).toString("hex"), want.toString("hex"), `token ${token.length} bytes, sid ${JSON.stringify(sid.slice(0, 20))}`);
  }
});

test("compiled stubs import nothing at run time: a page loads them beside the bundle", () => {
  const dir = path.join(PACKAGE, "dist", "src", "generated");
  const files = readdirSync(dir).filter((f) => f.endsWith(".js"));
  assert.ok(files.length >= 6, `compiled stubs in ${dir}`);
  for (const f of files) {
    const js = readFileSync(path.join(dir, f), "utf8");
    assert.doesNotMatch(js, /^\s*import[\s{*]/m, `${f} has no import`);
    assert.doesNotMatch(js, /\bimport\s*\(|\brequire\s*\(/, `${f} loads no module`);
  }
});
