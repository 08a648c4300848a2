/**
 * {@link WebTransportTransport}: a kcprpc connection over the browser's `WebTransport` API
 * (docs/wire-format/web.md, "Over WebTransport"): one bidirectional stream carries OPEN, the
 * server's ACCEPT or REFUSE, then the raw smux byte stream; WebTransport datagrams carry the RPC
 * datagrams as they are (truly unreliable). It is a {@link DatagramTransport}, so
 * {@link MuxConnection} and the {@link Client} run on it unchanged.
 */
import { concat } from "../bytes.js";
import type { CloseInfo, DatagramTransport } from "../rpc/connection.js";
import { RpcError, Status, UsageError } from "../rpc/status.js";
import { globalWebTransport, type CertificateHash, type WebTransportConstructor, type WebTransportLike, type WriterLike } from "./dom.js";
import { decodeAnswer, fromBase64, type Accept } from "./framing.js";
import { WebPipe, refusalError, shortReason, webCloseStatus, webOpenSettings, within, type WebOpenOptions } from "./pipe.js";

/** Options of {@link WebTransportTransport.open}. */
export interface WebTransportTransportOptions extends WebOpenOptions {
  /**
   * SHA-256 hashes of the server's certificate (bytes, or base64 as `kcprpc web-cert` prints and
   * `/kcprpc.json` gives): the browser then accepts that self-signed development certificate
   * (valid at most 14 days) without a CA.
   */
  serverCertificateHashes?: ReadonlyArray<string | Uint8Array>;
  /** How long the session, the stream and the server's answer may take (default 5000 ms). */
  openTimeoutMs?: number;
  /** Bytes of smux data read while the mux is paused (at most one read's worth past it is held; default 8 MiB). */
  maxReceiveBuffer?: number;
  /** `write` reports a full queue once this many bytes are written and not yet handed on (default 1 MiB). */
  sendHighWater?: number;
  /** How long `waitClosed()` waits for the stream's queued bytes and the session's end (default 5000 ms). */
  closeLingerMs?: number;
  /** The `WebTransport` constructor (default the global one). */
  WebTransport?: WebTransportConstructor;
}

/** The `serverCertificateHashes` entries for base64 strings or bytes; throws UsageError for a bad one. */
export function certificateHashes(hashes: ReadonlyArray<string | Uint8Array>): CertificateHash[] {
  return hashes.map((h) => {
    const value = typeof h === "string" ? fromBase64(h) : h;
    if (!(value instanceof Uint8Array) || value.length !== 32) throw new UsageError(`a certificate hash is 32 bytes of SHA-256 (base64 or bytes), not ${String(h)}`);
    return { algorithm: "sha-256", value };
  });
}

/** A kcprpc connection over a WebTransport session: the byte pipe and datagrams under a {@link MuxConnection}. */
export class WebTransportTransport extends WebPipe implements DatagramTransport {
  readonly wireMode = null;
  /** The ACCEPT's binding. */
  readonly channelBinding: Uint8Array;
  /** The smux version the ACCEPT settled on. */
  readonly muxVersion: number;
  /** The largest RPC datagram sent (the ACCEPT's, within the session's). */
  readonly maxDatagramSize: number;
  private readonly highWater: number;
  private readonly lingerMs: number;
  private inFlight = 0;
  private drainWaiters: Array<() => void> = [];
  private resumeWaiter: (() => void) | null = null;
  private closing = false;
  private readonly dgramWriter: WriterLike;

  private constructor(
    private readonly wt: WebTransportLike,
    private readonly writer: WriterLike,
    private readonly reader: { read(): Promise<{ done: boolean; value?: Uint8Array | undefined }>; cancel(reason?: unknown): Promise<void> },
    readonly remoteAddress: string,
    accept: Accept,
    leftover: Uint8Array,
    o: { maxReceiveBuffer: number; sendHighWater: number; closeLingerMs: number },
  ) {
    super(o.maxReceiveBuffer);
    this.channelBinding = accept.binding;
    this.muxVersion = accept.muxVersion;
    const session = wt.datagrams.maxDatagramSize;
    this.maxDatagramSize = typeof session === "number" && session > 0 ? Math.min(accept.maxDatagram, session) : accept.maxDatagram;
    this.highWater = o.sendHighWater;
    this.lingerMs = o.closeLingerMs;
    this.dgramWriter = wt.datagrams.writable.getWriter();
    if (leftover.length) this.receiveBytes(leftover);
    void this.readStream();
    void this.readDatagrams();
    wt.closed.then(
      (info) => this.sessionEnded(info.closeCode, info.reason ?? ""),
      (e: unknown) => this.sessionEnded(undefined, e instanceof Error ? e.message : String(e)),
    );
  }

  /**
   * Open a WebTransport session to `url` (`https://`, the listener's path, default `/kcprpc`),
   * then its one stream; send OPEN and wait for the answer. Rejects with an {@link RpcError}: the
   * REFUSE's status and message, UNAVAILABLE when the session fails (no HTTP/3 server, a
   * certificate the browser refuses, UDP blocked) or nothing answers within `openTimeoutMs`.
   */
  static open(url: string, options: WebTransportTransportOptions = {}): Promise<WebTransportTransport> {
    const WT = options.WebTransport ?? globalWebTransport();
    if (!WT) throw new UsageError("no WebTransport in this runtime (a browser without it: use WebSocketTransport)");
    const { open, muxVersion, timeoutMs, limits } = webOpenSettings("WebTransportTransport", options);
    const hashes = certificateHashes(options.serverCertificateHashes ?? []);
    return WebTransportTransport.dial(WT, url, hashes, open, muxVersion, timeoutMs, limits);
  }

  private static async dial(
    WT: WebTransportConstructor,
    url: string,
    hashes: CertificateHash[],
    open: Uint8Array,
    muxVersion: number,
    timeoutMs: number,
    o: { maxReceiveBuffer: number; sendHighWater: number; closeLingerMs: number },
  ): Promise<WebTransportTransport> {
    let wt: WebTransportLike;
    try {
      wt = new WT(url, hashes.length ? { serverCertificateHashes: hashes } : {});
    } catch (e) {
      throw new RpcError(Status.UNAVAILABLE, `cannot open a WebTransport session to ${url}: ${(e as Error).message}`);
    }
    // the session's end, for a refusal carried only by its close code
    const end: { info: { closeCode?: number | undefined; reason?: string | undefined } | null } = { info: null };
    const ended = wt.closed.then(
      (i) => {
        end.info = i;
      },
      () => undefined,
    );
    let timer: ReturnType<typeof setTimeout> | null = null;
    const timeout = new Promise<never>((_, rej) => {
      timer = setTimeout(() => rej(new RpcError(Status.UNAVAILABLE, `no answer from ${url} within ${timeoutMs / 1000} s`)), timeoutMs);
    });
    const unavailable = (what: string, e: unknown): RpcError => {
      const err = new RpcError(Status.UNAVAILABLE, `${what} ${url} failed: ${e instanceof Error ? e.message : String(e)}`);
      if (e instanceof Error) err.cause = e;
      return err;
    };
    try {
      return await Promise.race([
        timeout,
        (async (): Promise<WebTransportTransport> => {
          try {
            await wt.ready;
          } catch (e) {
            throw unavailable("the WebTransport session to", e);
          }
          let bidi: Awaited<ReturnType<WebTransportLike["createBidirectionalStream"]>>;
          try {
            bidi = await wt.createBidirectionalStream();
          } catch (e) {
            throw unavailable("opening a stream to", e);
          }
          const writer = bidi.writable.getWriter();
          const reader = bidi.readable.getReader();
          void writer.write(open).catch(() => undefined);
          let got: Uint8Array = new Uint8Array(0);
          for (;;) {
            let r: { done: boolean; value?: Uint8Array | undefined };
            try {
              r = await reader.read();
            } catch (e) {
              await within(ended, 100);
              const status = webCloseStatus(end.info?.closeCode);
              if (status !== undefined) throw refusalError(status, end.info?.reason ?? "");
              throw unavailable("reading the answer from", e);
            }
            if (r.done) {
              await within(ended, 100);
              const status = webCloseStatus(end.info?.closeCode);
              if (status !== undefined) throw refusalError(status, end.info?.reason ?? "");
              throw new RpcError(Status.UNAVAILABLE, `${url} ended the stream before answering OPEN`);
            }
            if (r.value?.length) got = concat([got, r.value]);
            const a = decodeAnswer(got, muxVersion, true);
            if (a.kind === "incomplete") continue;
            if (a.kind === "refuse") throw refusalError(a.status, a.message);
            if (a.kind === "error") throw new RpcError(Status.UNAVAILABLE, `${url} answered OPEN with ${a.message}`);
            return new WebTransportTransport(wt, writer, reader, url, a, got.slice(a.used), o);
          }
        })(),
      ]);
    } catch (e) {
      try {
        wt.close({ closeCode: 0, reason: "connect failed" });
      } catch {
        // not open yet, or already closed
      }
      throw e;
    } finally {
      if (timer) clearTimeout(timer);
    }
  }

  /** Queue smux bytes on the stream; false once `sendHighWater` bytes are waiting. */
  write(data: Uint8Array): boolean {
    if (this.ended || this.closing) throw new Error("the WebTransport stream is closed");
    const n = data.length;
    this.inFlight += n;
    this.counters.bytes_sent += n;
    this.writer.write(data.slice()).then(
      () => {
        this.inFlight -= n;
        if (this.inFlight < this.highWater) this.wakeDrainers();
      },
      (e: unknown) => this.fail(`writing to the stream failed: ${e instanceof Error ? e.message : String(e)}`, null),
    );
    if (this.inFlight < this.highWater) return true;
    this.counters.send_blocked++;
    return false;
  }

  /** Resolves once fewer than `sendHighWater` bytes wait (or the connection ended). */
  drained(): Promise<void> {
    if (this.ended || this.inFlight < this.highWater) return Promise.resolve();
    return new Promise((r) => this.drainWaiters.push(r));
  }

  /** Send one RPC datagram as a WebTransport datagram; dropped and counted when too large or the queue is full. */
  sendDatagram(data: Uint8Array): void {
    if (this.ended || this.closing) return;
    if (data.length > this.maxDatagramSize) {
      this.counters.datagrams_oversized++;
      return;
    }
    const room = this.dgramWriter.desiredSize;
    if (room !== null && room <= 0) {
      this.counters.datagrams_dropped++;
      return;
    }
    this.counters.datagrams_sent++;
    this.dgramWriter.write(data.slice()).catch(() => {
      this.counters.datagrams_dropped++;
    });
  }

  /** Close the stream after what is queued (the server sees EOF), then the session. */
  close(): void {
    if (this.closing || this.ended) return;
    this.closing = true;
    void within(this.writer.close(), this.lingerMs).then(() => this.endSession(0, "closed"));
  }
  /** End the session at once. */
  abort(): void {
    this.closing = true;
    void this.writer.abort("aborted").catch(() => undefined);
    this.endSession(0, "aborted");
  }
  /** Resolves once the session has ended, or after `closeLingerMs` (twice: the stream's queue, then the session). */
  waitClosed(): Promise<void> {
    return within(this.whenEnded(), 2 * this.lingerMs);
  }

  protected override pausedChanged(paused: boolean): void {
    if (!paused && this.resumeWaiter) {
      const f = this.resumeWaiter;
      this.resumeWaiter = null;
      f();
    }
  }

  protected teardown(reason: string): void {
    this.closing = true;
    void this.reader.cancel(reason).catch(() => undefined);
    this.endSession(0, reason);
  }

  protected override finish(info: CloseInfo, err?: Error): void {
    super.finish(info, err);
    // a stream reader waiting for resume() ends
    this.pausedChanged(false);
  }

  private endSession(code: number, reason: string): void {
    try {
      this.wt.close({ closeCode: code, reason: shortReason(reason, 1024) });
    } catch {
      // already closed
    }
  }

  private wakeDrainers(): void {
    const w = this.drainWaiters;
    this.drainWaiters = [];
    for (const f of w) f();
  }

  /** Read the stream while the mux wants bytes (a paused mux leaves them to QUIC's flow control). */
  private async readStream(): Promise<void> {
    for (;;) {
      if (this.isPaused && !this.ended) await new Promise<void>((r) => (this.resumeWaiter = r));
      if (this.ended) return;
      let r: { done: boolean; value?: Uint8Array | undefined };
      try {
        r = await this.reader.read();
      } catch (e) {
        if (!this.ended) this.endWith(`the stream failed: ${e instanceof Error ? e.message : String(e)}`, true);
        return;
      }
      if (r.done) {
        this.endWith("the server ended the stream", false);
        return;
      }
      if (r.value && !this.receiveBytes(r.value)) return;
    }
  }

  private async readDatagrams(): Promise<void> {
    const reader = this.wt.datagrams.readable.getReader();
    for (;;) {
      let r: { done: boolean; value?: Uint8Array | undefined };
      try {
        r = await reader.read();
      } catch {
        return;
      }
      if (r.done || this.ended) return;
      if (r.value) this.receiveDatagram(r.value);
    }
  }

  private endWith(message: string, failed: boolean): void {
    if (this.ended) return;
    this.wakeDrainers();
    // a refusal or status carried by the session's close code arrives with wt.closed
    void within(this.wt.closed, 100).then(() => {
      if (this.ended) return;
      if (failed) this.finish({ reason: message, error: new Error(message) }, new Error(message));
      else this.finish({ reason: this.closing ? "connection closed" : message });
      this.endSession(0, "stream ended");
    });
  }

  private sessionEnded(code: number | undefined, reason: string): void {
    this.wakeDrainers();
    if (this.ended) return;
    const status = webCloseStatus(code);
    if (status !== undefined) this.finish({ reason: reason || Status[status], status });
    else if (this.closing) this.finish({ reason: "connection closed" });
    else this.finish({ reason: `the WebTransport session ended${reason ? `: ${reason}` : ""}` }, code === 0 || code === undefined ? undefined : new Error(reason || `close code ${code}`));
  }
}
