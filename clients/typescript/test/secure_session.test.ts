/**
 * Secure sessions against a real Python server on 127.0.0.1 (tests/clients/secure_echo_server.py):
 * the TypeScript client completes the Noise handshake (IKpsk2 with a pinned key, PSK and token;
 * NNpsk0 with a passphrase and FEC 10/3), exchanges KCP stream data and OOB datagrams through AEAD
 * packets, follows the server's key updates and makes its own, moves to a new socket mid-stream
 * (migration), sees the server's GOAWAY and its authenticated CLOSE; and every failure is a typed
 * error naming the cause: wrong passphrase, PSK mismatch, refused token, nothing listening,
 * a silent server. Every server process is killed at the end (also on failure).
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import dgram from "node:dgram";
import { randomBytes } from "node:crypto";
import {
  HandshakeKeyMismatch,
  HandshakeNoAnswer,
  HandshakePskMismatch,
  HandshakeRefused,
  HandshakeUnreachable,
  dial,
  generateKeypair,
  rebind,
  securePathOf,
  systemRng,
  type KcpSession,
  type SecureEvent,
  type SecureWireOptions,
} from "../src/index.js";
import { startPython, hex, type PythonServer } from "./helpers/python.js";
import { Collector, within } from "./helpers/session.js";

const [SERVER_PRIV, SERVER_PUB] = generateKeypair(systemRng);
const PSK = randomBytes(32);
const PASSPHRASE = "correct horse battery staple";
let keyed: PythonServer;
let pass: PythonServer;

before(async () => {
  [keyed, pass] = await Promise.all([
    startPython([
      "tests/clients/secure_echo_server.py",
      "--static-key",
      hex(SERVER_PRIV),
      "--psk",
      hex(PSK),
      "--token",
      "letmein",
      "--rekey-after-packets",
      "40",
    ]),
    startPython(["tests/clients/secure_echo_server.py", "--passphrase", PASSPHRASE, "--fec", "10", "3"]),
  ]);
});

after(async () => {
  await Promise.all([keyed?.stop(), pass?.stop()]);
});

const port = (s: PythonServer): number => Number(s.firstLine);
const KEYED: SecureWireOptions = { mode: "secure", serverPublicKey: SERVER_PUB, psk: PSK, token: new TextEncoder().encode("letmein") };

async function echo(session: KcpSession, got: Collector, msg: Buffer, what: string): Promise<void> {
  session.write(msg);
  await within(got.until(msg.length), 10000, what);
  assert.ok(got.take().equals(msg), `${what}: echo differs`);
}

function closed(session: KcpSession): Promise<Error | null> {
  return new Promise((resolve) => session.onClose((err) => resolve(err ?? null)));
}

test("IKpsk2 (pinned key, PSK, token): stream and OOB echo, key updates both ways, migration, CLOSE", async () => {
  const session = await within(
    dial("127.0.0.1", port(keyed), { wire: KEYED, session: { idleTimeoutMs: 20000 } }),
    5000,
    "dial",
  );
  try {
    assert.equal(session.mode, "secure");
    const path = securePathOf(session);
    assert.ok(path);
    const events: SecureEvent[] = [];
    path.onEvent((e) => events.push(e));
    assert.equal(path.conn.params.suite, "aesgcm");
    assert.equal(session.conv, path.conn.conv);
    const got = new Collector(session);
    for (const size of [1, 1000, 1400, 5000, 100_000]) await echo(session, got, randomBytes(size), `${size} bytes`);
    // OOB datagrams
    const oob: Buffer[] = [];
    let wake: (() => void) | null = null;
    session.onDatagram((d) => {
      oob.push(Buffer.from(d));
      wake?.();
    });
    session.sendDatagram(Buffer.from("oob ping"));
    await within(new Promise<void>((r) => (oob.length ? r() : (wake = r))), 5000, "OOB echo");
    assert.equal(oob[0]?.toString(), "oob ping");
    // the server rekeys after 40 packets: we followed, nothing failed to decrypt
    const c = path.conn.counters;
    assert.ok(c.keyUpdatesByPeer > 0, `peer key updates: ${c.keyUpdatesByPeer}`);
    assert.ok(path.conn.epoch >= 1);
    assert.equal(c.decryptErrors, 0);
    assert.ok(events.some((e) => e.type === "keyUpdated" && e.byPeer));
    // migration: a new local socket mid-stream; the connection (and the session) stays
    const link = path.link as import("../src/index.js").SecureUdpLink;
    const before = link.local.port;
    const big = randomBytes(200_000);
    session.write(big);
    await rebind(session);
    assert.notEqual(link.local.port, before);
    await within(got.until(big.length), 15000, "echo across the rebind");
    assert.ok(got.take().equals(big));
    await echo(session, got, randomBytes(3000), "after the rebind");
    const stats = session.stats;
    assert.ok((stats["secure_packets_opened"] ?? 0) > 100);
    assert.equal(stats["secure_decrypt_errors"], 0);
    // the server closes with a reason: we end at once with it
    const done = closed(session);
    session.write(Buffer.from("close please"));
    assert.equal(await within(done, 5000, "server CLOSE"), null);
    assert.equal(session.closeCode, 7);
    assert.equal(session.closeReason, "closed by peer: application: maintenance window");
  } finally {
    session.abort();
  }
});

test("our own key updates (every 30 packets); GOAWAY from the server is reported, the session stays open; our CLOSE", async () => {
  const session = await dial("127.0.0.1", port(keyed), { wire: { ...KEYED, rekeyAfterPackets: 30 }, session: { idleTimeoutMs: 20000 } });
  try {
    const path = securePathOf(session);
    assert.ok(path);
    const got = new Collector(session);
    await echo(session, got, Buffer.from("hello"), "hello");
    await echo(session, got, randomBytes(80_000), "80 kB");
    assert.ok(path.conn.counters.keyUpdates > 0, `own key updates: ${path.conn.counters.keyUpdates}`);
    assert.equal(path.conn.counters.decryptErrors, 0);
    session.write(Buffer.from("goaway please"));
    await within(got.until(11), 5000, "goaway answer");
    assert.equal(got.take().toString(), "goaway sent");
    assert.deepEqual(path.goawayReceived, [9, "draining"]);
    await echo(session, got, Buffer.from("still open"), "after GOAWAY");
    // our own close sends an authenticated CLOSE: the server's connection for it ends
    session.close(0, "bye");
    await within(session.whenClosed(), 5000, "close");
    assert.equal(path.conn.isOpen, false);
    assert.equal(path.conn.counters.closesSent, 1);
  } finally {
    session.abort();
  }
});

test("NNpsk0 (passphrase) with FEC 10/3 negotiated: stream echo", async () => {
  const session = await within(
    dial("127.0.0.1", port(pass), { wire: { mode: "secure", passphrase: PASSPHRASE, fec: [10, 3] }, session: { idleTimeoutMs: 20000 } }),
    5000,
    "dial",
  );
  try {
    const path = securePathOf(session);
    assert.ok(path);
    assert.equal(path.conn.params.dataShards, 10);
    assert.equal(path.conn.params.parityShards, 3);
    const got = new Collector(session);
    for (const size of [10, 3000, 60_000]) await echo(session, got, randomBytes(size), `${size} bytes`);
  } finally {
    session.abort();
  }
});

test("wrong passphrase: HandshakeKeyMismatch after one round trip, naming the server", async () => {
  const t0 = Date.now();
  await assert.rejects(dial("127.0.0.1", port(pass), { wire: { mode: "secure", passphrase: "wrong" } }), (e: unknown) => {
    assert.ok(e instanceof HandshakeKeyMismatch, String(e));
    assert.equal(
      e.message,
      `handshake failed: wrong key: the server at 127.0.0.1:${port(pass)} could not verify our handshake (check the passphrase/PSK, or the pinned server public key)`,
    );
    return true;
  });
  assert.ok(Date.now() - t0 < 2000);
});

test("wrong pinned key: HandshakeKeyMismatch; right key, wrong PSK: HandshakePskMismatch; bad token: HandshakeRefused", async () => {
  const other = generateKeypair(systemRng)[1];
  await assert.rejects(dial("127.0.0.1", port(keyed), { wire: { ...KEYED, serverPublicKey: other } }), HandshakeKeyMismatch);
  await assert.rejects(dial("127.0.0.1", port(keyed), { wire: { ...KEYED, psk: randomBytes(32) } }), (e: unknown) => {
    assert.ok(e instanceof HandshakePskMismatch, String(e));
    assert.match(e.message, /PSK mismatch: the server at 127\.0\.0\.1:\d+ holds the pinned key/);
    return true;
  });
  await assert.rejects(dial("127.0.0.1", port(keyed), { wire: { ...KEYED, token: new TextEncoder().encode("nope") } }), (e: unknown) => {
    assert.ok(e instanceof HandshakeRefused, String(e));
    assert.equal(e.code, 4);
    assert.match(e.message, /^handshake refused by the server at 127\.0\.0\.1:\d+: bad token: unknown \(check the client's token\)$/);
    return true;
  });
});

test("server down: nothing listening gives HandshakeUnreachable at once; a silent port HandshakeNoAnswer after the timeout", async () => {
  // a port that was just free: nothing listens there
  const probe = dgram.createSocket("udp4");
  await new Promise<void>((r) => probe.bind(0, "127.0.0.1", () => r()));
  const freePort = probe.address().port;
  await new Promise<void>((r) => probe.close(() => r()));
  const t0 = Date.now();
  await assert.rejects(dial("127.0.0.1", freePort, { wire: { mode: "secure", passphrase: "x" } }), (e: unknown) => {
    assert.ok(e instanceof HandshakeUnreachable, String(e));
    assert.equal(e.message, `handshake failed: connection refused (nothing listens on 127.0.0.1:${freePort})`);
    return true;
  });
  assert.ok(Date.now() - t0 < 2000);
  // a socket that receives and never answers
  const silent = dgram.createSocket("udp4");
  let received = 0;
  silent.on("message", () => received++);
  await new Promise<void>((r) => silent.bind(0, "127.0.0.1", () => r()));
  try {
    const t1 = Date.now();
    await assert.rejects(
      dial("127.0.0.1", silent.address().port, { wire: { mode: "secure", passphrase: "x", handshakeTimeoutMs: 800 } }),
      (e: unknown) => {
        assert.ok(e instanceof HandshakeNoAnswer, String(e));
        assert.match(e.message, /no answer from the server at 127\.0\.0\.1:\d+ within 0\.8 s: is the server running/);
        return true;
      },
    );
    const waited = Date.now() - t1;
    assert.ok(waited >= 750 && waited < 3000, `waited ${waited} ms`);
    assert.ok(received >= 2, `initiations received: ${received}`); // the first and its retransmissions
  } finally {
    silent.close();
  }
});
