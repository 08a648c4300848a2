/**
 * {@link connectWeb}: a {@link Client} over WebTransport or WebSocket (docs/wire-format/web.md).
 * Given the server's base `http(s)://` URL it reads `/kcprpc.json` (discovery) and tries
 * WebTransport first when the browser has it and the server offers it, else WebSocket; a reconnect
 * dials again the same way (re-reading discovery after a failed dial, and skipping a WebTransport
 * that failed where WebSocket worked for a back-off period: {@link webConnector}).
 */
import { RPC_MUX_CONFIG, type MuxConfig } from "../mux/core.js";
import { Client, type ClientOptions } from "../rpc/client.js";
import { MuxConnection } from "../rpc/connection.js";
import { RpcError, Status, UsageError } from "../rpc/status.js";
import { globalWebTransport } from "./dom.js";
import { WEB_DEFAULT_PATH, parseDiscovery } from "./framing.js";
import { WebTransportBackoff, type WebTransportBackoffPolicy } from "./fallback.js";
import { WebSocketTransport, type WebSocketTransportOptions } from "./websocket.js";
import { WebTransportTransport, type WebTransportTransportOptions } from "./webtransport.js";

/** Where a server listens for web clients (what discovery gives, or what the page knows). */
export interface WebEndpoints {
  /** The WebSocket URL (`ws://` or `wss://`), or absent. */
  websocket?: string | null;
  /** The WebTransport URL (`https://`), or with the development certificate's hashes (base64 or bytes); or absent. */
  webtransport?: string | { url: string; certificateHashes?: ReadonlyArray<string | Uint8Array> } | null;
}

/** The `fetch` discovery uses (the global one by default); it asks for `{ cache: "no-store" }`. */
export type FetchLike = (url: string, init?: { cache?: "no-store" }) => Promise<{ readonly ok: boolean; readonly status: number; json(): Promise<unknown> }>;

/** Options of {@link connectWeb}: the client's, plus the transports'. */
export interface WebConnectOptions extends ClientOptions {
  /** The credential OPEN carries for the server's `authorize` hook (a string is sent as UTF-8). */
  token?: string | Uint8Array;
  /** `"auto"` (default): WebTransport when offered and available, else WebSocket; or force one. */
  transport?: "auto" | "websocket" | "webtransport";
  /** smux settings (default: version 2 with 512 KiB windows; the server's ACCEPT settles the version). */
  mux?: Partial<MuxConfig>;
  /** WebSocket options (limits, the constructor). */
  webSocket?: Omit<WebSocketTransportOptions, "token" | "muxVersion">;
  /** WebTransport options (certificate hashes, limits, the constructor). */
  webTransport?: Omit<WebTransportTransportOptions, "token" | "muxVersion">;
  /** The `fetch` for `/kcprpc.json` (default the global one). */
  fetch?: FetchLike;
  /**
   * `"auto"`: how long dials skip WebTransport after it failed to connect where WebSocket
   * connected (default five minutes, doubling at each such fallback up to an hour); see
   * {@link webConnector}.
   */
  webTransportBackoff?: WebTransportBackoffPolicy;
}

/** `http:` → `ws:`, `https:` → `wss:` (other schemes unchanged). */
function wsScheme(u: URL): string {
  if (u.protocol === "http:") u.protocol = "ws:";
  else if (u.protocol === "https:") u.protocol = "wss:";
  return u.toString();
}

/**
 * The endpoints behind `base` (an `http(s)://` URL; a page passes its own origin): its
 * `kcprpc.json` (resolved against `base`, so `https://host/` reads `https://host/kcprpc.json`).
 * A server without discovery (404, or not JSON) gets WebSocket at the default path `/kcprpc`;
 * an unreachable one (or none answering within `timeoutMs`, when given) rejects with UNAVAILABLE.
 */
export async function discover(base: string, fetchFn?: FetchLike, timeoutMs?: number): Promise<WebEndpoints> {
  let baseUrl: URL;
  try {
    baseUrl = new URL(base);
  } catch {
    throw new UsageError(`not a URL: ${base}`);
  }
  if (baseUrl.protocol !== "http:" && baseUrl.protocol !== "https:") throw new UsageError(`discovery needs an http(s):// URL, not ${base}`);
  const f = fetchFn ?? (globalThis as { fetch?: FetchLike }).fetch;
  if (!f) throw new UsageError("no fetch in this runtime: pass options.fetch or the endpoints");
  const doc = new URL("kcprpc.json", baseUrl);
  let body: unknown = null;
  let timer: ReturnType<typeof setTimeout> | null = null;
  try {
    const read = (async (): Promise<unknown> => {
      // never the HTTP cache's copy: a restarted server may announce a new certificate
      const r = await f(doc.toString(), { cache: "no-store" });
      return r.ok ? await r.json().catch(() => null) : null;
    })();
    if (timeoutMs === undefined) body = await read;
    else {
      read.catch(() => undefined);
      const late = new Promise<never>((_, rej) => {
        timer = setTimeout(() => rej(new Error(`no answer within ${timeoutMs / 1000} s`)), timeoutMs);
      });
      body = await Promise.race([read, late]);
    }
  } catch (e) {
    const err = new RpcError(Status.UNAVAILABLE, `cannot read ${doc.toString()}: ${e instanceof Error ? e.message : String(e)}`);
    if (e instanceof Error) err.cause = e;
    throw err;
  } finally {
    if (timer) clearTimeout(timer);
  }
  const d = body === null ? null : parseDiscovery(body);
  if (d === null || "error" in d) return { websocket: wsScheme(new URL(WEB_DEFAULT_PATH, doc)) };
  return {
    websocket: d.websocket === null ? null : wsScheme(new URL(d.websocket, doc)),
    webtransport: d.webtransport ? { url: new URL(d.webtransport.url, doc).toString(), certificateHashes: d.webtransport.certificateHashes } : null,
  };
}

/** Options of {@link webConnector}: {@link connectWeb}'s own, the connect timeout and clock, and how to re-read the endpoints. */
export interface WebConnectorOptions extends Omit<WebConnectOptions, keyof ClientOptions>, Pick<ClientOptions, "connectTimeoutMs" | "now"> {
  /**
   * Re-read the endpoints (what {@link connectWeb} passes for an `http(s)://` target: its
   * discovery, bounded by `timeoutMs`). Called at most once per dial, and only after a dial
   * with the endpoints in hand failed: see {@link webConnector}.
   */
  rediscover?: (timeoutMs: number) => Promise<WebEndpoints>;
}

type WtEndpoint = { url: string; certificateHashes: ReadonlyArray<string | Uint8Array> };

function wtEndpoint(e: WebEndpoints): WtEndpoint | null {
  const w = e.webtransport ?? null;
  return w === null ? null : typeof w === "string" ? { url: w, certificateHashes: [] } : { url: w.url, certificateHashes: w.certificateHashes ?? [] };
}

/** Whether two WebTransport endpoints differ (URL or certificate hashes). */
function wtChanged(a: WtEndpoint | null, b: WtEndpoint | null): boolean {
  const key = (w: WtEndpoint | null): string => (w === null ? "" : JSON.stringify([w.url, w.certificateHashes.map((h) => (typeof h === "string" ? h : Array.from(h).join(",")))]));
  return key(a) !== key(b);
}

const unavailable = (e: unknown): boolean => e instanceof RpcError && e.code === Status.UNAVAILABLE;

/**
 * The connector {@link connectWeb} uses: each call opens a web transport and starts the mux on it
 * with the version the server accepted. In `"auto"` it tries WebTransport first when offered and
 * the runtime has it, and WebSocket when that fails UNAVAILABLE (a refusal is final on any
 * transport). It keeps state across the calls of one client (its reconnects):
 *
 * - **WebTransport back-off.** When WebTransport failed to connect and WebSocket then connected
 *   (UDP blocked), later calls go straight to WebSocket for `webTransportBackoff.initialMs`
 *   (default five minutes; doubling at each such fallback, up to `maximumMs`, default an hour),
 *   then try WebTransport again. A WebTransport connection that was up and is lost is tried
 *   first again (the loss may be transient); a failure of both transports (server down), or a
 *   WebTransport failure whose endpoints could not be re-read (the server may be back with new
 *   ones), starts no back-off.
 * - **Re-reading discovery** (with `rediscover`): a call after a failed call re-reads the
 *   endpoints first; and a call whose WebTransport dial failed with endpoints read before it
 *   re-reads them before falling back, and dials WebTransport once more if its URL or
 *   certificate hashes changed (a restarted development server makes a new certificate). At most
 *   one re-read per call; a failed re-read keeps the endpoints in hand.
 *
 * Each call fits `connectTimeoutMs`: WebTransport gets half of what is left when WebSocket can
 * follow, a re-read at most half of what is left.
 */
export function webConnector(endpoints: WebEndpoints, options: WebConnectorOptions = {}): () => Promise<MuxConnection> {
  const mode = options.transport ?? "auto";
  if (mode !== "auto" && mode !== "websocket" && mode !== "webtransport") throw new UsageError(`transport is "auto", "websocket" or "webtransport", not ${String(mode)}`);
  const hasWT = (options.webTransport?.WebTransport ?? globalWebTransport()) !== undefined;
  if (mode === "websocket" && !endpoints.websocket) throw new UsageError("transport: \"websocket\" but the server offers no WebSocket endpoint");
  if (mode === "webtransport" && !wtEndpoint(endpoints)) throw new UsageError("transport: \"webtransport\" but the server offers no WebTransport endpoint");
  if (mode === "webtransport" && !hasWT) throw new UsageError("transport: \"webtransport\" but this browser has no WebTransport");
  const usesWT = (e: WebEndpoints): boolean => wtEndpoint(e) !== null && hasWT && mode !== "websocket";
  const usesWS = (e: WebEndpoints): boolean => !!e.websocket && mode !== "webtransport";
  if (!usesWT(endpoints) && !usesWS(endpoints)) throw new UsageError("no endpoint this runtime can use: give a websocket URL (or a browser with WebTransport)");
  const muxVersion = (options.mux?.version ?? RPC_MUX_CONFIG.version) === 1 ? 1 : 2;
  const total = options.connectTimeoutMs ?? 5000;
  const now = options.now ?? Date.now;
  const token = options.token;
  const backoff = new WebTransportBackoff(options.webTransportBackoff ?? {}, now);
  const rediscover = options.rediscover ?? null;
  let current = endpoints;
  /** The last call failed with `current`: the next one re-reads it first. */
  let stale = false;

  const start = (t: WebSocketTransport | WebTransportTransport): MuxConnection => new MuxConnection(t, { ...RPC_MUX_CONFIG, ...(options.mux ?? {}), version: t.muxVersion });
  const openWT = (wt: WtEndpoint, timeoutMs: number): Promise<WebTransportTransport> =>
    WebTransportTransport.open(wt.url, {
      openTimeoutMs: timeoutMs,
      ...(options.webTransport ?? {}),
      ...(wt.certificateHashes.length && !options.webTransport?.serverCertificateHashes ? { serverCertificateHashes: wt.certificateHashes } : {}),
      ...(token !== undefined ? { token } : {}),
      muxVersion,
    });
  /** Re-read the endpoints within `timeoutMs`: whether the WebTransport endpoint "changed", is the "same", or the read "failed" (the endpoints in hand are kept). */
  const reread = async (timeoutMs: number): Promise<"changed" | "same" | "failed"> => {
    if (!rediscover) return "failed";
    let fresh: WebEndpoints;
    try {
      fresh = await rediscover(Math.max(1, Math.floor(timeoutMs)));
    } catch {
      return "failed";
    }
    if (!usesWT(fresh) && !usesWS(fresh)) return "failed";
    const changed = wtChanged(wtEndpoint(current), wtEndpoint(fresh));
    current = fresh;
    if (!changed) return "same";
    backoff.reset();
    return "changed";
  };

  const dial = async (): Promise<MuxConnection> => {
    const deadline = now() + total;
    const left = (): number => Math.max(1, deadline - now());
    let rereadDone = false;
    /** The endpoints in hand are known current (read in this call, or given: nothing to re-read). */
    let fresh = rediscover === null;
    if (stale && rediscover) {
      rereadDone = true;
      fresh = (await reread(left() / 2)) !== "failed";
    }
    let wtError: unknown = null;
    const tryWT = async (): Promise<MuxConnection | null> => {
      const wt = wtEndpoint(current);
      if (!wt || !usesWT(current)) return null;
      try {
        const t = await openWT(wt, usesWS(current) ? Math.max(1, Math.floor(left() / 2)) : left());
        backoff.connected();
        return start(t);
      } catch (e) {
        if (!unavailable(e)) throw e;
        wtError = e;
        return null;
      }
    };
    if (usesWT(current) && !(mode === "auto" && usesWS(current) && backoff.skip())) {
      let c = await tryWT();
      if (!c && wtError !== null && rediscover && !rereadDone) {
        // the endpoints in hand may be a restarted server's old ones (a new certificate or port)
        rereadDone = true;
        const r = await reread(left() / 2);
        fresh = r !== "failed";
        if (r === "changed") c = await tryWT();
      }
      if (c) return c;
    }
    if (!usesWS(current)) throw wtError ?? new RpcError(Status.UNAVAILABLE, "no endpoint this runtime can use");
    const ws = current.websocket as string;
    const t = await WebSocketTransport.open(ws, { openTimeoutMs: left(), ...(options.webSocket ?? {}), ...(token !== undefined ? { token } : {}), muxVersion });
    // WebTransport failed with current endpoints where WebSocket works: UDP is likely blocked (not
    // after a failed re-read: the server may have come back with new ones, so no back-off then)
    if (wtError !== null && fresh && mode === "auto") backoff.fellBack();
    return start(t);
  };
  return async (): Promise<MuxConnection> => {
    try {
      const c = await dial();
      stale = false;
      return c;
    } catch (e) {
      stale = unavailable(e);
      throw e;
    }
  };
}

/**
 * Connect a browser (or any runtime with `WebSocket` / `WebTransport`) to a kcprpc server:
 *
 * ```ts
 * const client = await connectWeb(location.origin, { token: "t" });   // reads /kcprpc.json
 * const client2 = await connectWeb("ws://127.0.0.1:8080/kcprpc");      // WebSocket only
 * const client3 = await connectWeb({ webtransport: { url, certificateHashes: [hash] }, websocket: wsUrl });
 * ```
 *
 * `target` is a `ws(s)://` URL (WebSocket), an `http(s)://` base URL (discovery, then
 * WebTransport or WebSocket) or the endpoints themselves. Rejects as {@link Client.connect}: an
 * {@link RpcError} with the server's refusal (UNAUTHENTICATED for a refused token) or
 * UNAVAILABLE. With `reconnect`, a lost connection is dialled again the same way and the session
 * resumed (the ACCEPT's binding is the channel binding the resume proof is bound to); a reconnect
 * after a failed dial re-reads `/kcprpc.json`, and `"auto"` backs off from a WebTransport that
 * does not connect ({@link webConnector}).
 */
export async function connectWeb(target: string | WebEndpoints, options: WebConnectOptions = {}): Promise<Client> {
  const { token, transport, mux, webSocket, webTransport, fetch: fetchFn, webTransportBackoff, ...clientOptions } = options ?? {};
  let endpoints: WebEndpoints;
  let rediscover: ((timeoutMs: number) => Promise<WebEndpoints>) | null = null;
  if (typeof target === "string") {
    let u: URL;
    try {
      u = new URL(target);
    } catch {
      throw new UsageError(`connectWeb(): not a URL: ${target}`);
    }
    if (u.protocol === "ws:" || u.protocol === "wss:") endpoints = { websocket: target };
    else if (u.protocol === "http:" || u.protocol === "https:") {
      endpoints = await discover(target, fetchFn);
      rediscover = (timeoutMs) => discover(target, fetchFn, timeoutMs);
    }
    else throw new UsageError(`connectWeb(): a ws(s):// or http(s):// URL, not ${target}`);
  } else if (typeof target === "object" && target !== null) endpoints = target;
  else throw new UsageError("connectWeb(): the target is a URL or { websocket, webtransport }");
  const connector = webConnector(endpoints, {
    ...(token !== undefined ? { token } : {}),
    ...(transport !== undefined ? { transport } : {}),
    ...(mux !== undefined ? { mux } : {}),
    ...(webSocket !== undefined ? { webSocket } : {}),
    ...(webTransport !== undefined ? { webTransport } : {}),
    ...(webTransportBackoff !== undefined ? { webTransportBackoff } : {}),
    ...(clientOptions.connectTimeoutMs !== undefined ? { connectTimeoutMs: clientOptions.connectTimeoutMs } : {}),
    ...(clientOptions.now !== undefined ? { now: clientOptions.now } : {}),
    ...(rediscover !== null ? { rediscover } : {}),
  });
  return Client.connect(connector, clientOptions);
}
