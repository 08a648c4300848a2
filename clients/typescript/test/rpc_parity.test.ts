/**
 * The parts of the Python client's contract the Node client mirrors, against real Python servers
 * (tests/clients/ts_app.py, secure mode, 127.0.0.1): `connect(..., { fallbacks })` (the next
 * address when the first is down, rotation on reconnect), client interceptors (unary and
 * streaming), and a failed handshake surfacing as a typed `RpcError`.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import dgram from "node:dgram";
import { connect } from "../src/rpc/net.js";
import type { ClientCallDetails, ClientInterceptor } from "../src/rpc/client.js";
import { RpcError, Status, UsageError } from "../src/rpc/status.js";
import { HandshakeUnreachable } from "../src/secure/errors.js";
import { PeerUnreachableError } from "../src/kcp/errors.js";
import { startPythonServer, type PyServer } from "./support/rpc_python.js";

const KEY = "ts parity passphrase";
const WIRE = { mode: "secure" as const, passphrase: KEY };

/** A UDP port nothing listens on (bound, then closed). */
async function deadPort(): Promise<number> {
  const s = dgram.createSocket("udp4");
  await new Promise<void>((r) => s.bind(0, "127.0.0.1", () => r()));
  const p = s.address().port;
  await new Promise<void>((r) => s.close(() => r()));
  return p;
}

async function withServers(n: number, body: (servers: PyServer[]) => Promise<void>, args: string[] = ["--key", KEY]): Promise<void> {
  const servers: PyServer[] = [];
  try {
    for (let i = 0; i < n; i++) servers.push(await startPythonServer("tests/clients/ts_app.py", args));
    await body(servers);
  } finally {
    for (const s of servers) await s.kill();
  }
}

test("a refused handshake is an RpcError UNAVAILABLE whose cause is the handshake's typed error", async () => {
  const port = await deadPort();
  await assert.rejects(connect("127.0.0.1", port, { wire: WIRE, connectTimeoutMs: 3000 }), (e: unknown) => {
    assert.ok(e instanceof RpcError && e.code === Status.UNAVAILABLE, String(e));
    assert.ok(e.cause instanceof HandshakeUnreachable, "the cause is HandshakeUnreachable");
    assert.match(e.message, /nothing listens on 127\.0\.0\.1:/);
    return true;
  });
});

test("fallbacks: a first address that is down is skipped; bad fallbacks are a UsageError", async () => {
  await withServers(1, async ([server]) => {
    const dead = await deadPort();
    const c = await connect("127.0.0.1", dead, { wire: WIRE, fallbacks: [["127.0.0.1", server!.port]], connectTimeoutMs: 3000 });
    try {
      const r = await c.unary<string, { got: string }>("ts.App/echo", "via fallback");
      assert.equal(r.got, "via fallback");
    } finally {
      await c.close();
    }
    // every address down: the last one's error
    await assert.rejects(connect("127.0.0.1", dead, { wire: WIRE, fallbacks: [["127.0.0.1", await deadPort()]], connectTimeoutMs: 3000 }), (e: unknown) => e instanceof RpcError && e.code === Status.UNAVAILABLE);
    await assert.rejects(connect("127.0.0.1", dead, { wire: WIRE, fallbacks: [["127.0.0.1"] as unknown as [string, number]] }), UsageError);
  });
});

test("fallbacks: a reconnect after the node died goes on to the next node", async () => {
  await withServers(2, async ([a, b]) => {
    let reconnected = 0;
    const c = await connect("127.0.0.1", a!.port, {
      wire: WIRE,
      fallbacks: [["127.0.0.1", b!.port]],
      heartbeat: { intervalMs: 100, timeoutMs: 800 },
      reconnect: { initialMs: 20, maximumMs: 200, maxAttempts: 20 },
      connectTimeoutMs: 2000,
      onReconnect: () => reconnected++,
    });
    try {
      assert.equal((await c.unary<string, { got: string }>("ts.App/echo", "on a")).got, "on a");
      const sidA = c.sessionId;
      await a!.kill();
      await c.waitConnected(15000).catch(() => undefined);
      const deadline = Date.now() + 15000;
      while (!(c.connected && c.sessionId !== sidA)) {
        assert.ok(Date.now() < deadline, "reconnected to the fallback node within 15 s");
        await new Promise((r) => setTimeout(r, 20));
      }
      assert.equal((await c.unary<string, { got: string }>("ts.App/echo", "on b")).got, "on b");
      assert.ok(reconnected >= 1);
    } finally {
      await c.close();
    }
  });
});

test("interceptors: metadata injection and logging on unary and streaming calls, in order; a refusal never reaches the server", async () => {
  await withServers(1, async ([server]) => {
    const log: string[] = [];
    const logging: ClientInterceptor = async (d, next) => {
      log.push(`> ${d.kind} ${d.method} ${String(d.timeoutMs)}`);
      try {
        const r = await next(d);
        log.push(`< ${d.method}`);
        return r;
      } catch (e) {
        log.push(`! ${d.method} ${e instanceof RpcError ? Status[e.code] : String(e)}`);
        throw e;
      }
    };
    const token: ClientInterceptor = async (d: ClientCallDetails, next) => {
      d.metadata["token"] = "s3cret";
      if (d.method === "ts.App/forbidden") throw new RpcError(Status.PERMISSION_DENIED, "not from this client");
      if (d.method === "ts.App/echo") d.request = { wrapped: d.request };
      return next(d);
    };
    const c = await connect("127.0.0.1", server!.port, { wire: WIRE, interceptors: [logging, token], defaultTimeoutMs: 4000 });
    try {
      const r = await c.unary<string, { got: unknown; md: Record<string, unknown> }>("ts.App/echo", "x", { metadata: { a: 1 } });
      assert.deepEqual(r, { got: { wrapped: "x" }, md: { a: 1, token: "s3cret" } });
      const counted: number[] = [];
      for await (const n of c.serverStream<number, number>("ts.App/count", 3)) counted.push(n);
      assert.deepEqual(counted, [1, 2, 3]);
      assert.equal(await c.clientStream<number, number>("ts.App/total", [1, 2, 3]), 6);
      const bidi = c.bidi<string, string>("ts.App/shout");
      await bidi.send("hi");
      bidi.end();
      const shouted: string[] = [];
      for await (const s of bidi) shouted.push(s);
      assert.deepEqual(shouted, ["HI"]);
      await assert.rejects(c.unary("ts.App/forbidden", null), (e: unknown) => e instanceof RpcError && e.code === Status.PERMISSION_DENIED);
      await assert.rejects(c.unary("ts.App/fail", { code: 5 }), (e: unknown) => e instanceof RpcError && e.code === Status.NOT_FOUND);
      assert.deepEqual(log, [
        "> unary ts.App/echo 4000", "< ts.App/echo",
        "> server ts.App/count 4000", "< ts.App/count",
        "> client ts.App/total 4000", "< ts.App/total",
        "> bidi ts.App/shout 4000", "< ts.App/shout",
        "> unary ts.App/forbidden 4000", "! ts.App/forbidden PERMISSION_DENIED",
        "> unary ts.App/fail 4000", "! ts.App/fail NOT_FOUND",
      ]);
    } finally {
      await c.close();
    }
  });
});

test("close() delivers what is still queued in the mux and the KCP session before it ends (bounded linger)", async () => {
  await withServers(1, async ([server]) => {
    const c = await connect("127.0.0.1", server!.port, { wire: WIRE });
    const big = "y".repeat(48 * 1024);
    const sent: string[] = [];
    const note = (i: number): void => {
      const text = `${i}:${big}`;
      sent.push(text.slice(0, 8));
      c.notify("ts.App/note", text, { reliable: true });
    };
    // 384 KB go out to the KCP session at once (past its high-water mark: the mux stops framing),
    // the next 96 KB wait in the mux's stream queue (all within the server's 512 KiB window)
    for (let i = 0; i < 8; i++) note(i);
    await new Promise<void>((r) => setImmediate(r));
    for (let i = 8; i < 10; i++) note(i);
    const t0 = Date.now();
    await c.close();
    assert.ok(Date.now() - t0 < 6000, "close() is bounded by the linger");
    const reader = await connect("127.0.0.1", server!.port, { wire: WIRE });
    try {
      const deadline = Date.now() + 5000;
      let seen: string[] = [];
      while (seen.length < sent.length && Date.now() < deadline) {
        seen = (await reader.unary<null, string[]>("ts.App/notes_seen", null)).map((s) => s.slice(0, 8));
        if (seen.length < sent.length) await new Promise((r) => setTimeout(r, 20));
      }
      assert.deepEqual(seen, sent);
    } finally {
      await reader.close();
    }
  });
});

for (const mode of ["secure", "compat"] as const) test(`${mode} mode: the server's port becoming unreachable after the handshake ends the connection with a typed error`, async () => {
  const wire = mode === "secure" ? WIRE : { mode: "compat" as const, crypt: "aes" as const, key: KEY };
  const args = mode === "secure" ? undefined : ["--wire", "compat", "--crypt", "aes", "--key", KEY];
  await withServers(1, async ([server]) => {
    const reasons: string[] = [];
    const c = await connect("127.0.0.1", server!.port, {
      wire,
      heartbeat: { intervalMs: 100, timeoutMs: 60000 }, // the heartbeat alone would take a minute
      onDisconnect: (r) => reasons.push(r),
    });
    try {
      assert.equal((await c.unary<string, { got: string }>("ts.App/echo", "up")).got, "up");
      const inFlight = c.unary("ts.App/sleep", 30000);
      const t0 = Date.now();
      await server!.kill();
      await assert.rejects(inFlight, (e: unknown) => {
        assert.ok(e instanceof RpcError && e.code === Status.UNAVAILABLE, String(e));
        assert.ok(e.cause instanceof PeerUnreachableError, `cause: ${String(e.cause)}`);
        assert.match(e.message, /unreachable/);
        return true;
      });
      assert.ok(Date.now() - t0 < 10000, `reported in ${Date.now() - t0} ms`);
      assert.equal(reasons.length, 1);
      assert.match(reasons[0] as string, /127\.0\.0\.1:\d+ is unreachable \(ECONNREFUSED/);
      assert.equal(c.connected, false);
    } finally {
      await c.close();
    }
  }, args);
});

test("a server that never answers (compat, another key) fails connect() UNAVAILABLE after connectTimeoutMs, without a close linger", async () => {
  await withServers(1, async ([server]) => {
    const t0 = Date.now();
    await assert.rejects(
      connect("127.0.0.1", server!.port, { wire: { mode: "compat", crypt: "aes", key: "another key" }, connectTimeoutMs: 800 }),
      (e: unknown) => e instanceof RpcError && e.code === Status.UNAVAILABLE && /no answer from/.test(e.message),
    );
    const took = Date.now() - t0;
    assert.ok(took >= 800 && took < 2500, `rejected after ${took} ms`);
  }, ["--wire", "compat", "--crypt", "aes", "--key", KEY]);
});

test("no wire at all: the anonymous secure wire, as Python's kcprpc.connect without key= (a keyed server refuses it)", async () => {
  await withServers(1, async ([server]) => {
    const c = await connect("127.0.0.1", server!.port, { connectTimeoutMs: 3000 });
    try {
      assert.equal((await c.unary<string, { got: string }>("ts.App/echo", "anon")).got, "anon");
    } finally {
      await c.close();
    }
  }, []);
  await withServers(1, async ([server]) => {
    await assert.rejects(connect("127.0.0.1", server!.port, { connectTimeoutMs: 3000 }), (e: unknown) => {
      assert.ok(e instanceof RpcError && e.code === Status.UNAUTHENTICATED, String(e));
      return true;
    });
  });
  await assert.rejects(connect("127.0.0.1", 1, { wire: { mode: "tcp" } as never }), UsageError);
});
