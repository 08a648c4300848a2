/**
 * More of the secure wire against real Python processes on 127.0.0.1: a server under load that
 * asks for a RETRY cookie first, a compat listener (HandshakeWireMismatch from its wire hint), a
 * server restarted on the same port with the same key (its stateless reset ends our session at
 * once with the reason), and a whole session through `python -m kcp.relay` at 10 % loss in each
 * direction. Every process is killed at the end, also on failure.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { HandshakeWireMismatch, dial, generateKeypair, securePathOf, systemRng, type KcpSession } from "../src/index.js";
import { startPython, hex, type PythonServer } from "./helpers/python.js";
import { within } from "./helpers/session.js";

/** Run `body` with the processes started by `starts`, killing them all at the end. */
async function withProcesses(starts: (() => Promise<PythonServer>)[], body: (ps: PythonServer[]) => Promise<void>): Promise<void> {
  const ps: PythonServer[] = [];
  try {
    for (const s of starts) ps.push(await s());
    await body(ps);
  } finally {
    await Promise.all(ps.map((p) => p.stop()));
  }
}

/** Write `msg` and resolve with the echo (bounded). */
async function echo(session: KcpSession, msg: Buffer, ms: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  const done = new Promise<void>((resolve) => {
    session.onData((d) => {
      chunks.push(Buffer.from(d));
      n += d.length;
      if (n >= msg.length) resolve();
    });
  });
  session.write(msg);
  await within(done, ms, `echo of ${msg.length} bytes`);
  return Buffer.concat(chunks);
}

const server = (...args: string[]) => () => startPython(["tests/clients/secure_echo_server.py", ...args]);

test("a server under load asks for a cookie: the client answers the RETRY and connects", async () => {
  await withProcesses([server("--passphrase", "p", "--always-retry")], async ([srv]) => {
    const session = await within(dial("127.0.0.1", Number(srv!.firstLine), { wire: { mode: "secure", passphrase: "p" } }), 5000, "dial");
    try {
      assert.equal(securePathOf(session)?.handshakeCounters?.retriesReceived, 1);
      const msg = randomBytes(2000);
      assert.ok((await echo(session, msg, 5000)).equals(msg));
    } finally {
      session.abort();
    }
  });
});

test("a compat (kcp-go wire) listener answers with a wire hint: HandshakeWireMismatch", async () => {
  await withProcesses([() => startPython(["tests/clients/kcp_echo_server.py", "null", "x", "0", "0"])], async ([srv]) => {
    const port = Number(srv!.firstLine);
    await assert.rejects(within(dial("127.0.0.1", port, { wire: { mode: "secure", passphrase: "p" } }), 5000, "dial"), (e: unknown) => {
      assert.ok(e instanceof HandshakeWireMismatch, String(e));
      assert.match(e.message, new RegExp(`wrong wire mode: the server at 127\\.0\\.0\\.1:${port} speaks kcp-go's wire \\(compat\\), not the secure wire`));
      return true;
    });
  });
});

test("a server restarted on the same port with the same key resets our connection: the session ends at once", async () => {
  const [priv, pub] = generateKeypair(systemRng);
  const first = await server("--static-key", hex(priv))();
  const port = first.firstLine;
  let second: PythonServer | null = null;
  let session: KcpSession | null = null;
  try {
    session = await within(dial("127.0.0.1", Number(port), { wire: { mode: "secure", serverPublicKey: pub } }), 5000, "dial");
    const msg = randomBytes(100);
    assert.ok((await echo(session, msg, 5000)).equals(msg));
    await first.stop();
    second = await server("--static-key", hex(priv), "--port", port)();
    const ended = new Promise<void>((resolve) => session!.onClose(() => resolve()));
    session.write(Buffer.from("anyone there?"));
    await within(ended, 5000, "the reset ending the session");
    assert.equal(session.closeReason, "closed by peer: stateless reset: the server no longer knows this connection (restarted or closed)");
    assert.equal(session.closeCode, 11);
    // a new dial to the restarted server works
    const again = await within(dial("127.0.0.1", Number(port), { wire: { mode: "secure", serverPublicKey: pub } }), 5000, "dial again");
    try {
      assert.ok((await echo(again, msg, 5000)).equals(msg));
    } finally {
      again.abort();
    }
  } finally {
    session?.abort();
    await first.stop();
    await second?.stop();
  }
});

test("through python -m kcp.relay at 10 % loss each way: handshake and a 200 kB echo", async () => {
  await withProcesses([server("--passphrase", "lossy", "--fec", "10", "3")], async ([srv]) => {
    const target = `127.0.0.1:${srv!.firstLine}`;
    const relay = await startPython(["-m", "kcp.relay", "--listen", "127.0.0.1:0", "--target", target, "--loss", "10", "--seed", "7"]);
    try {
      const m = /^relay 127\.0\.0\.1:(\d+) ->/.exec(relay.firstLine);
      assert.ok(m, relay.firstLine);
      const session = await within(
        dial("127.0.0.1", Number(m[1]), { wire: { mode: "secure", passphrase: "lossy", fec: [10, 3] }, session: { idleTimeoutMs: 20000 } }),
        10000,
        "dial through the relay",
      );
      try {
        const msg = randomBytes(200_000);
        assert.ok((await echo(session, msg, 20000)).equals(msg));
        assert.equal(securePathOf(session)?.conn.counters.decryptErrors, 0);
      } finally {
        session.abort();
      }
    } finally {
      await relay.stop();
    }
  });
});
