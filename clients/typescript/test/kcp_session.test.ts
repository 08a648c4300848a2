import { test } from "node:test";
import assert from "node:assert/strict";
import dgram from "node:dgram";
import { randomBytes } from "node:crypto";
import { dial, IdleTimeoutError, KcpSession, type CompatWireOptions } from "../src/kcp/session.js";
import { ConnectionClosedError, KcpUsageError, WireMismatchError } from "../src/kcp/errors.js";
import { startPython, type PythonServer } from "./helpers/python.js";
import { Collector, within } from "./helpers/session.js";

async function withServer(args: string[], body: (port: number) => Promise<void>): Promise<void> {
  const server: PythonServer = await startPython(["tests/clients/kcp_echo_server.py", ...args]);
  try {
    await body(Number(server.firstLine));
  } finally {
    await server.stop();
  }
}

const SIZES = [1, 2, 100, 1000, 1300, 1400, 1401, 4096, 10000, 65536, 300000];

async function echoRoundTrips(port: number, wire: CompatWireOptions): Promise<KcpSession> {
  const session = await dial("127.0.0.1", port, { wire, session: { idleTimeoutMs: 20000 } });
  const got = new Collector(session);
  for (const size of SIZES) {
    const msg = randomBytes(size);
    session.write(msg);
    await within(got.until(size), 10000, `echo of ${size} bytes`);
    assert.ok(got.take().equals(msg), `echo of ${size} bytes differs`);
  }
  // many small writes in a row, then one check: order is kept
  const parts = Array.from({ length: 200 }, (_, i) => randomBytes(1 + (i % 50)));
  for (const p of parts) session.write(p);
  const total = parts.reduce((n, p) => n + p.length, 0);
  await within(got.until(total), 10000, "200 small writes");
  assert.ok(got.take().equals(Buffer.concat(parts)));
  // out-of-band datagrams come back through the server's OOB echo
  const oob: Buffer[] = [];
  let wake: (() => void) | null = null;
  session.onDatagram((d) => {
    oob.push(Buffer.from(d));
    wake?.();
  });
  const sentOob = [Buffer.from("ping"), Buffer.alloc(0), randomBytes(session.maxDatagramSize())];
  for (const d of sentOob) {
    session.sendDatagram(d);
    // OOB is unreliable, but 127.0.0.1 does not lose: each comes back
    await within(new Promise<void>((r) => (oob.length > sentOob.indexOf(d) ? r() : (wake = r))), 5000, "OOB echo");
  }
  assert.deepEqual(oob, sentOob);
  assert.throws(() => session.sendDatagram(new Uint8Array(session.maxDatagramSize() + 1)), KcpUsageError);
  assert.equal(session.counters.inErrs, 0);
  return session;
}

test("session: echo round trips with a Python KCP server, aes, no FEC", async () => {
  await withServer(["aes", "a shared secret", "0", "0"], async (port) => {
    const s = await echoRoundTrips(port, { crypt: "aes", key: "a shared secret" });
    assert.ok(s.counters.inSegs > 0 && s.counters.oobIn === 3);
    s.close();
    await within(s.whenClosed(), 6000, "close");
    assert.throws(() => s.write(new Uint8Array(1)), ConnectionClosedError);
  });
});

test("session: echo round trips with a Python KCP server, aes-128-gcm + FEC 10/3", async () => {
  await withServer(["aes-128-gcm", "another secret", "10", "3"], async (port) => {
    const s = await echoRoundTrips(port, { crypt: "aes-128-gcm", key: "another secret", fec: [10, 3] });
    assert.ok(s.counters.fecParityShards > 0, "the server's parity shards arrive");
    s.close();
    await within(s.whenClosed(), 6000, "close");
  });
});

test("session: garbage datagrams are dropped and counted, the session keeps working", async () => {
  await withServer(["aes", "k1", "10", "3"], async (port) => {
    const s = await dial("127.0.0.1", port, { wire: { crypt: "aes", key: "k1", fec: [10, 3] }, conv: 1234 });
    const got = new Collector(s);
    s.write(Buffer.from("before"));
    await within(got.until(6), 5000, "first echo");
    got.take();
    // what the path hands the session (compat: every datagram from the peer's address)
    const before = { ...s.counters };
    for (const j of [new Uint8Array(5), randomBytes(19), randomBytes(100), randomBytes(1400)]) s.feed(j, s.now());
    assert.equal(s.counters.shortPackets - before.shortPackets, 2);
    assert.equal(s.counters.inCsumErrors - before.inCsumErrors, 2);
    assert.equal(s.counters.inErrs - before.inErrs, 4);
    assert.equal(s.stats["inErrs"], s.counters.inErrs);
    s.write(Buffer.from("after"));
    await within(got.until(5), 5000, "echo after garbage");
    assert.equal(got.take().toString(), "after");
    assert.equal(s.state, "open");
    s.abort();
  });
});

test("session: garbage answers from the peer over real UDP are counted (aes, aes-128-gcm, null), never thrown", async () => {
  // a plain UDP peer that answers every datagram with garbage stands in for a broken server
  const sock = dgram.createSocket("udp4");
  await new Promise<void>((r) => sock.bind(0, "127.0.0.1", () => r()));
  const port = sock.address().port;
  sock.on("message", (_msg, rinfo) => {
    for (const g of [Buffer.alloc(3), randomBytes(64), Buffer.from("not a kcp packet at all, really not")]) sock.send(g, rinfo.port, rinfo.address);
  });
  try {
    for (const crypt of ["aes", "aes-128-gcm", "null"] as const) {
      const s = await dial("127.0.0.1", port, { wire: { crypt, key: "x" }, session: { idleTimeoutMs: 5000 } });
      s.write(Buffer.from("hi"));
      await within(
        (async () => {
          while (s.counters.inPkts < 3) await new Promise((r) => setTimeout(r, 5));
        })(),
        5000,
        `garbage replies (${crypt})`,
      );
      const c = s.counters;
      if (crypt === "aes") assert.ok(c.shortPackets >= 1 && c.inCsumErrors >= 2, JSON.stringify(c));
      if (crypt === "aes-128-gcm") assert.ok(c.shortPackets >= 1 && c.decryptErrors >= 2, JSON.stringify(c));
      if (crypt === "null") assert.ok(c.kcpInErrors + c.shortPackets >= 3, JSON.stringify(c));
      assert.equal(s.state, "open");
      s.abort();
    }
  } finally {
    sock.close();
  }
});

test("session: a silent peer ends the session with IdleTimeoutError; bad options are KcpUsageError", async () => {
  const sock = dgram.createSocket("udp4");
  await new Promise<void>((r) => sock.bind(0, "127.0.0.1", () => r()));
  try {
    const s = await dial("127.0.0.1", sock.address().port, { session: { idleTimeoutMs: 300 } });
    const ended = new Promise<Error | undefined>((r) => s.onClose(r));
    s.write(Buffer.from("anyone?"));
    const err = await within(ended, 3000, "idle timeout");
    assert.ok(err instanceof IdleTimeoutError);
    assert.equal(s.closeReason, "idle timeout");
    assert.throws(() => s.write(new Uint8Array(1)), IdleTimeoutError);
  } finally {
    sock.close();
  }
  await assert.rejects(dial("127.0.0.1", 9, { wire: { crypt: "aes" } }), KcpUsageError);
  await assert.rejects(dial("127.0.0.1", 9, { wire: { crypt: "rot13" as "aes", key: "k" } }), KcpUsageError);
  await assert.rejects(dial("127.0.0.1", 0), KcpUsageError);
});

test("session: 10 % loss each way (Python relay): FEC 10/3 rebuilds, KCP resends, every byte arrives in order", async () => {
  await withServer(["aes-128-gcm", "lossy", "10", "3", "10"], async (port) => {
    const s = await dial("127.0.0.1", port, { wire: { crypt: "aes-128-gcm", key: "lossy", fec: [10, 3] } });
    const got = new Collector(s);
    const payload = randomBytes(400000);
    for (let off = 0; off < payload.length; off += 16384) {
      if (!s.write(payload.subarray(off, off + 16384))) await within(s.drained(), 10000, "drain");
    }
    await within(got.until(payload.length), 30000, "lossy echo");
    assert.ok(got.take().equals(payload));
    assert.ok(s.counters.fecRecovered > 0, `fecRecovered ${s.counters.fecRecovered}`);
    assert.ok(s.counters.retransSegs > 0, `retransSegs ${s.counters.retransSegs}`);
    s.close();
    await within(s.whenClosed(), 6000, "close");
  });
});

test("session: loss recovery as the Python SessionConfig's; small messages at 10 % loss recover with spaced copies", async () => {
  const sock = dgram.createSocket("udp4");
  await new Promise<void>((r) => sock.bind(0, "127.0.0.1", () => r()));
  const port = sock.address().port;
  try {
    const def = await dial("127.0.0.1", port);
    assert.equal(def.engine.recoveryFlight, 8); // "adaptive" by default
    assert.ok(def.engine.recoveryAdaptive);
    assert.equal(def.engine.recoveryCopies, 2);
    assert.equal(def.engine.recoveryLead, 0);
    def.abort();
    const ikcp = await dial("127.0.0.1", port, { session: { lossRecovery: "ikcp" } });
    assert.equal(ikcp.engine.recoveryFlight, 0);
    ikcp.abort();
    const auto = await dial("127.0.0.1", port, { session: { leadCopies: "auto", maxCopies: 3, copyGapMs: 20 } });
    assert.equal(auto.engine.recoveryAutoLead, 2);
    assert.equal(auto.engine.recoveryMaxCopies, 3);
    assert.equal(auto.engine.recoveryGap, 20);
    auto.abort();
    // held acks need secure mode's agreement: a compat session refuses them
    const compat = await dial("127.0.0.1", port, { session: { ackHoldMs: 100 } });
    assert.equal(compat.engine.holdAware, false);
    assert.equal(compat.holdAcks(100), false);
    compat.abort();
  } finally {
    sock.close();
  }
  for (const bad of [{ lossRecovery: "tcp" as "ikcp" }, { leadCopies: 9 }, { maxCopies: 0 }, { copyGapMs: 0 }, { ackHoldMs: 251 }, { sndWnd: 0 }, { rcvWnd: 70000 }]) {
    await assert.rejects(dial("127.0.0.1", 9, { session: bad }), KcpUsageError);
  }
  // one small message at a time (a call), 10 % loss each way, 15 ms each way (so that a round's
  // spaced copy, 10 ms behind, leaves before the ack can come): the recovery rounds send spaced
  // copies (copySegs), ikcp's do not; every echo arrives either way
  await withServer(["null", "-", "0", "0", "10", "15"], async (p) => {
    const copies: Record<string, number> = {};
    for (const lossRecovery of ["adaptive", "ikcp"] as const) {
      const s = await dial("127.0.0.1", p, { session: { lossRecovery } });
      const got = new Collector(s);
      for (let i = 0; i < 300 && s.counters.lostSegs < 3; i++) {
        const msg = randomBytes(40);
        s.write(msg);
        await within(got.until(40), 10000, `echo ${i}`);
        assert.ok(got.take().equals(msg));
      }
      assert.ok(s.counters.lostSegs > 0, `${lossRecovery}: nothing was lost (lostSegs 0)`);
      copies[lossRecovery] = s.counters.copySegs;
      s.abort();
    }
    assert.ok(copies.adaptive! > 0, `adaptive sent no spaced copies`);
    assert.equal(copies.ikcp, 0);
  });
});

test("session: congestion control as the Python SessionConfig's; bulk through an 8 Mbit/s bottleneck keeps its queue short with bbr", async () => {
  const sock = dgram.createSocket("udp4");
  await new Promise<void>((r) => sock.bind(0, "127.0.0.1", () => r()));
  try {
    const def = await dial("127.0.0.1", sock.address().port);
    assert.equal(def.congestionController?.state, "startup"); // "bbr" by default
    assert.deepEqual([def.engine.sndWnd, def.engine.rcvWnd], [512, 512]); // as the Python SessionConfig's
    def.abort();
    const ikcp = await dial("127.0.0.1", sock.address().port, { session: { congestion: "ikcp" } });
    assert.equal(ikcp.congestionController, null);
    ikcp.abort();
  } finally {
    sock.close();
  }
  await assert.rejects(dial("127.0.0.1", 9, { session: { congestion: "cubic" as "bbr" } }), KcpUsageError);
  // 1 MB up to a sink through the relay's bottleneck: 8,000 kbit/s, a 100 ms queue, 10 ms each
  // way (a base RTT of about 22 ms). ikcp keeps its whole window (128 segments, 180 kB) in flight,
  // so the queue fills and the RTT is the queue's; bbr paces to the bottleneck
  await withServer(["null", "-", "0", "0", "0", "10", "8000", "100", "sink"], async (port) => {
    const rtt: Record<string, number> = {};
    const secs: Record<string, number> = {};
    for (const congestion of ["bbr", "ikcp"] as const) {
      const s = await dial("127.0.0.1", port, { session: { congestion } });
      const got = new Collector(s);
      const payload = randomBytes(1 << 20);
      const srtts: number[] = [];
      const sampler = setInterval(() => srtts.push(s.engine.rxSrtt), 20);
      const t0 = performance.now();
      for (let off = 0; off < payload.length; off += 16384) {
        if (!s.write(payload.subarray(off, off + 16384))) await within(s.drained(), 10000, "drain");
      }
      await within(got.until(payload.length / 16384), 20000, `${congestion}: 1 MB received`);
      clearInterval(sampler);
      secs[congestion] = (performance.now() - t0) / 1000;
      const tail = srtts.slice(srtts.length >> 2).sort((a, b) => a - b);
      rtt[congestion] = tail[tail.length >> 1]!;
      const cc = s.congestionController;
      if (congestion === "bbr") {
        // it measured the bottleneck (payload bytes per ms: 1,000 less the headers' share) and paced
        assert.ok(cc !== null && cc.bw > 700 && cc.bw < 1300, `bbr: bw ${cc?.bw} B/ms`);
        assert.ok(cc.pacingRate > 0 && cc.state !== "startup", `bbr: ${cc.state}`);
      }
      s.abort();
    }
    assert.ok(rtt.bbr! < 60, `bbr: the median srtt is ${rtt.bbr} ms (ikcp: ${rtt.ikcp} ms)`);
    assert.ok(rtt.ikcp! > rtt.bbr! + 30, `ikcp fills the queue: median srtt ${rtt.ikcp} ms against bbr's ${rtt.bbr}`);
    // and the short queue costs no throughput (1 MB at 8 Mbit/s: about 1.1 s)
    assert.ok(secs.bbr! < 1.3 * secs.ikcp!, `bbr took ${secs.bbr} s, ikcp ${secs.ikcp} s`);
  });
});

test("session: a compat dial to a secure-wire server ends at once with WireMismatchError (the server's wire hint)", async () => {
  await withServer(["secure", "a passphrase", "0", "0"], async (port) => {
    for (const wire of [{ crypt: "aes", key: "a passphrase" }, {}] as CompatWireOptions[]) {
      const s = await dial("127.0.0.1", port, { wire, session: { idleTimeoutMs: 10000 } });
      const ended = new Promise<Error | undefined>((r) => s.onClose(r));
      s.write(Buffer.from("hello?"));
      const err = await within(ended, 5000, "wire hint");
      assert.ok(err instanceof WireMismatchError, String(err));
      assert.match(err.message, /secure wire/);
      assert.equal(s.closeReason, "wire mismatch");
    }
  });
});
