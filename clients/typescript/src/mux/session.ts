/**
 * The smux session glue: drives a {@link MuxCore} over a {@link ByteTransport} (a KCP session in
 * stream mode, or an in-memory pipe), with async stream reads and writes, timers for keepalive
 * and backpressure onto the transport (reading stops while the receive bucket is empty).
 */
import { MuxClosedError, MuxCore, MuxStreamClosedError, StreamRecord, type MuxConfig, type MuxCounter } from "./core.js";

/** A reliable ordered byte pipe under the mux (what a KCP session in stream mode gives). */
export interface ByteTransport {
  /** Queue bytes to the peer; false (optional) when its queue is above its high-water mark. */
  write(data: Uint8Array): boolean | void;
  /** Resolves once the queue is below its high-water mark again (with a `write` that returns false). */
  drained?(): Promise<void>;
  /** Register the receiver of incoming bytes (called once). */
  onData(cb: (data: Uint8Array) => void): void;
  /** Register the callback for the end of the transport (EOF when `err` is undefined). */
  onClose(cb: (err?: Error) => void): void;
  /** Why the transport ended, when it knows (a KCP session closed by its peer: "closed by peer: ..."). */
  readonly closeReason?: string;
  /** Stop delivering data (backpressure), optional. */
  pause?(): void;
  /** Resume delivering data, optional. */
  resume?(): void;
  /** Close the transport. */
  close(): void;
}

/** Options of a {@link MuxSession}. */
export interface MuxSessionOptions {
  /** Mux settings. */
  config?: Partial<MuxConfig>;
  /** Dialling side (odd stream ids). */
  client: boolean;
  /** Clock in ms (default Date.now): injected for tests. */
  now?: () => number;
}

interface Waiter {
  resolve: () => void;
}

/** One mux stream: async reads, queued writes, half-close and abort. */
export class MuxStream {
  private readers: Waiter[] = [];
  private drainers: Waiter[] = [];
  /** @internal */
  constructor(private readonly session: MuxSession, readonly record: StreamRecord) {}
  /** The stream id. */
  get id(): number {
    return this.record.streamId;
  }
  /** @internal wake readers */
  wakeReaders(): void {
    const r = this.readers;
    this.readers = [];
    for (const w of r) w.resolve();
  }
  /** @internal wake drainers */
  wakeDrainers(): void {
    const r = this.drainers;
    this.drainers = [];
    for (const w of r) w.resolve();
  }
  /**
   * Up to `n` bytes (any amount when n < 0); an empty array at end of stream. Throws
   * {@link MuxClosedError} when the session died before the peer's FIN.
   */
  async read(n = -1): Promise<Uint8Array> {
    for (;;) {
      const data = this.session.core.read(this.record, n);
      if (data.length) {
        this.session.pump();
        return data;
      }
      if (n === 0 || this.record.atEof) return data;
      await new Promise<void>((resolve) => this.readers.push({ resolve }));
    }
  }
  /** Queue bytes; throws if our direction is closed or the session is dead. */
  write(data: Uint8Array): void {
    this.session.core.send(this.record, data);
    this.session.pump();
  }
  /** Wait until this stream's queued bytes fall below `streamSendBuffer`. */
  async drain(): Promise<void> {
    while (this.record.sendBytes >= this.session.core.config.streamSendBuffer) {
      if (this.session.core.closed) throw new MuxClosedError(this.session.core.error?.message ?? "session closed");
      await new Promise<void>((resolve) => this.drainers.push({ resolve }));
    }
  }
  /** Half-close: FIN after the data written so far. */
  close(): void {
    this.session.core.closeStream(this.record);
    this.session.pump();
  }
  /** Full close: drop queued and unread data, FIN, forget the id. */
  abort(): void {
    this.session.core.abortStream(this.record);
    this.wakeReaders();
    this.session.pump();
  }
  /** True once our direction is closed. */
  get writable(): boolean {
    return this.record.writable;
  }
}

/** A smux session over a byte transport. */
export class MuxSession {
  /** The state machine. */
  readonly core: MuxCore;
  private readonly transport: ByteTransport;
  private readonly now: () => number;
  private readonly streams = new Map<number, MuxStream>();
  private acceptQueue: MuxStream[] = [];
  private acceptors: Array<{ resolve: (s: MuxStream) => void; reject: (e: Error) => void }> = [];
  private timer: ReturnType<typeof setTimeout> | null = null;
  private timerAt = 0;
  private flushScheduled = false;
  private blocked = false;
  private paused = false;
  private closeWaiters: Array<() => void> = [];

  /** @param transport the byte pipe @param opts client side, config, clock */
  constructor(transport: ByteTransport, opts: MuxSessionOptions) {
    this.transport = transport;
    this.now = opts.now ?? Date.now;
    this.core = new MuxCore(opts.config, opts.client, this.now());
    transport.onData((d) => {
      this.core.receiveData(d, this.now());
      this.pump();
    });
    transport.onClose((err) => {
      // why the transport ended, when it says (a KCP session closed by its peer does)
      const why = transport.closeReason ?? "";
      this.core.connectionLost(err, why === "closed" ? "" : why);
      this.pump();
    });
    this.armTimer();
  }

  /** Mux counters. */
  get counters(): Readonly<Record<MuxCounter, number>> {
    return this.core.counters;
  }
  /** True once dead. */
  get closed(): boolean {
    return this.core.closed;
  }

  /** Open a stream (SYN; data may follow at once). */
  openStream(): MuxStream {
    const rec = this.core.openStream();
    const s = new MuxStream(this, rec);
    this.streams.set(rec.streamId, s);
    this.pump();
    return s;
  }

  /** Wait for a stream the peer opened; throws {@link MuxClosedError} once the session is dead. */
  acceptStream(): Promise<MuxStream> {
    const s = this.acceptQueue.shift();
    if (s) return Promise.resolve(s);
    if (this.core.closed) return Promise.reject(new MuxClosedError(this.core.error?.message ?? "session closed"));
    return new Promise((resolve, reject) => this.acceptors.push({ resolve, reject }));
  }

  /** Resolves once the session is dead. */
  waitClosed(): Promise<void> {
    if (this.core.closed) return Promise.resolve();
    return new Promise((r) => this.closeWaiters.push(r));
  }

  /** Graceful close: FIN on every stream after queued data, then close the transport. */
  close(): void {
    if (this.core.closed) return;
    this.core.close();
    // what the streams still queue goes to the transport even past its high-water mark (the KCP
    // session's close lingers until it is acknowledged); bounded, as kcprpc's mux: data parked
    // behind a closed window is dropped
    for (let i = 0; i < 64; i++) {
      const out = this.core.dataToSend();
      if (!out.length) break;
      try {
        this.transport.write(out);
      } catch {
        break;
      }
    }
    this.core.terminate("session closed locally");
    this.transport.close();
    this.pump();
  }

  /** @internal process events and schedule a flush */
  pump(): void {
    for (const ev of this.core.events()) {
      switch (ev.type) {
        case "opened": {
          const rec = this.core.getStream(ev.streamId);
          if (!rec) break;
          const s = new MuxStream(this, rec);
          this.streams.set(ev.streamId, s);
          const a = this.acceptors.shift();
          if (a) a.resolve(s);
          else this.acceptQueue.push(s);
          break;
        }
        case "data":
        case "ended":
          this.streams.get(ev.streamId)?.wakeReaders();
          break;
        case "window":
          break;
        case "released":
          this.streams.get(ev.streamId)?.wakeReaders();
          this.streams.delete(ev.streamId);
          break;
        case "terminated": {
          for (const s of this.streams.values()) {
            s.wakeReaders();
            s.wakeDrainers();
          }
          this.streams.clear();
          const acc = this.acceptors;
          this.acceptors = [];
          for (const a of acc) a.reject(new MuxClosedError(ev.error.message));
          if (this.timer) clearTimeout(this.timer);
          this.timer = null;
          const w = this.closeWaiters;
          this.closeWaiters = [];
          for (const f of w) f();
          try {
            this.transport.close();
          } catch {
            // already closed
          }
          break;
        }
      }
    }
    if (!this.core.closed) {
      if (!this.core.wantsRead && !this.paused) {
        this.paused = true;
        this.transport.pause?.();
      } else if (this.core.wantsRead && this.paused) {
        this.paused = false;
        this.transport.resume?.();
      }
    }
    if (this.core.hasDataToSend() && !this.flushScheduled && !this.blocked) {
      this.flushScheduled = true;
      queueMicrotask(() => {
        this.flushScheduled = false;
        this.flush();
      });
    }
  }

  private flush(): void {
    while (!this.blocked) {
      const out = this.core.dataToSend();
      if (!out.length) break;
      try {
        if (this.transport.write(out) === false && this.transport.drained) {
          // the transport's queue is full: frame nothing more until it drains (the data waits
          // in the streams' queues, where drain() sees it)
          this.blocked = true;
          void this.transport.drained().then(
            () => {
              this.blocked = false;
              this.flush();
            },
            () => undefined,
          );
        }
      } catch (e) {
        this.core.connectionLost(e instanceof Error ? e : new Error(String(e)));
        break;
      }
    }
    for (const s of this.streams.values()) if (s.record.sendBytes < this.core.config.streamSendBuffer) s.wakeDrainers();
    this.pump();
    this.armTimer();
  }

  /** Send no more NOPs and never close on silence ({@link MuxCore.stopKeepalive}); the pending wake-up is dropped. */
  stopKeepalive(): void {
    this.core.stopKeepalive();
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  private armTimer(): void {
    const at = this.core.nextTimer();
    if (at === null) return;
    if (this.timer && this.timerAt === at) return;
    if (this.timer) clearTimeout(this.timer);
    this.timerAt = at;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.core.handleTimer(this.now());
      this.pump();
      this.armTimer();
    }, Math.max(0, at - this.now()));
    this.timer.unref?.();
  }
}

export { MuxClosedError, MuxStreamClosedError };
