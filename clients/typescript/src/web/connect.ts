/**
 * {@link connectWeb}: a {@link Client} over WebTransport or WebSocket (docs/wire-format/web.md).
 * Given the server's base `http(s)://` URL it reads `/kcprpc.json` (discovery) and tries
 * WebTransport first when the browser has it and the server offers it, else WebSocket; a reconnect
 * dials again the same way.
 */
import { RPC_MUX_CONFIG, type MuxConfig } from "../mux/core.js";
import { Client, type ClientOptions } from "../rpc/client.js";
import { MuxConnection } from "../rpc/connection.js";
import { RpcError, Status, UsageError } from "../rpc/status.js";
import { globalWebTransport } from "./dom.js";
import { WEB_DEFAULT_PATH, parseDiscovery } from "./framing.js";
import { WebSocketTransport, type WebSocketTransportOptions } from "./websocket.js";
import { WebTransportTransport, type WebTransportTransportOptions } from "./webtransport.js";

/** Where a server listens for web clients (what discovery gives, or what the page knows). */
export interface WebEndpoints {
  /** The WebSocket URL (`ws://` or `wss://`), or absent. */
  websocket?: string | null;
  /** The WebTransport URL (`https://`), or with the development certificate's hashes (base64 or bytes); or absent. */
  webtransport?: string | { url: string; certificateHashes?: ReadonlyArray<string | Uint8Array> } | null;
}

/** The `fetch` discovery uses (the global one by default). */
export type FetchLike = (url: string) => Promise<{ readonly ok: boolean; readonly status: number; json(): Promise<unknown> }>;

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
 * an unreachable one rejects with UNAVAILABLE.
 */
export async function discover(base: string, fetchFn?: FetchLike): Promise<WebEndpoints> {
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
  try {
    const r = await f(doc.toString());
    if (r.ok) body = await r.json().catch(() => null);
  } catch (e) {
    const err = new RpcError(Status.UNAVAILABLE, `cannot read ${doc.toString()}: ${e instanceof Error ? e.message : String(e)}`);
    if (e instanceof Error) err.cause = e;
    throw err;
  }
  const d = body === null ? null : parseDiscovery(body);
  if (d === null || "error" in d) return { websocket: wsScheme(new URL(WEB_DEFAULT_PATH, doc)) };
  return {
    websocket: d.websocket === null ? null : wsScheme(new URL(d.websocket, doc)),
    webtransport: d.webtransport ? { url: new URL(d.webtransport.url, doc).toString(), certificateHashes: d.webtransport.certificateHashes } : null,
  };
}

/**
 * The connector {@link connectWeb} uses: each call opens a web transport (WebTransport first in
 * `"auto"` when offered and the runtime has it, WebSocket when that fails UNAVAILABLE or is not
 * there) and starts the mux on it with the version the server accepted.
 */
export function webConnector(endpoints: WebEndpoints, options: Omit<WebConnectOptions, keyof ClientOptions> & Pick<ClientOptions, "connectTimeoutMs"> = {}): () => Promise<MuxConnection> {
  const mode = options.transport ?? "auto";
  if (mode !== "auto" && mode !== "websocket" && mode !== "webtransport") throw new UsageError(`transport is "auto", "websocket" or "webtransport", not ${String(mode)}`);
  const ws = endpoints.websocket ?? null;
  const wtGiven = endpoints.webtransport ?? null;
  const wt = wtGiven === null ? null : typeof wtGiven === "string" ? { url: wtGiven, certificateHashes: [] } : { url: wtGiven.url, certificateHashes: wtGiven.certificateHashes ?? [] };
  const hasWT = (options.webTransport?.WebTransport ?? globalWebTransport()) !== undefined;
  if (mode === "websocket" && !ws) throw new UsageError("transport: \"websocket\" but the server offers no WebSocket endpoint");
  if (mode === "webtransport" && !wt) throw new UsageError("transport: \"webtransport\" but the server offers no WebTransport endpoint");
  if (mode === "webtransport" && !hasWT) throw new UsageError("transport: \"webtransport\" but this browser has no WebTransport");
  const useWT = wt !== null && hasWT && mode !== "websocket";
  const useWS = ws !== null && mode !== "webtransport";
  if (!useWT && !useWS) throw new UsageError("no endpoint this runtime can use: give a websocket URL (or a browser with WebTransport)");
  const muxVersion = (options.mux?.version ?? RPC_MUX_CONFIG.version) === 1 ? 1 : 2;
  const total = options.connectTimeoutMs ?? 5000;
  const token = options.token;
  const start = (t: WebSocketTransport | WebTransportTransport): MuxConnection => new MuxConnection(t, { ...RPC_MUX_CONFIG, ...(options.mux ?? {}), version: t.muxVersion });
  return async (): Promise<MuxConnection> => {
    if (useWT && wt) {
      try {
        const t = await WebTransportTransport.open(wt.url, {
          openTimeoutMs: useWS ? Math.max(1, Math.floor(total / 2)) : total,
          ...(options.webTransport ?? {}),
          ...(wt.certificateHashes.length && !options.webTransport?.serverCertificateHashes ? { serverCertificateHashes: wt.certificateHashes } : {}),
          ...(token !== undefined ? { token } : {}),
          muxVersion,
        });
        return start(t);
      } catch (e) {
        if (!useWS || !(e instanceof RpcError && e.code === Status.UNAVAILABLE)) throw e;
      }
    }
    const t = await WebSocketTransport.open(ws as string, { openTimeoutMs: total, ...(options.webSocket ?? {}), ...(token !== undefined ? { token } : {}), muxVersion });
    return start(t);
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
 * resumed (the ACCEPT's binding is the channel binding the resume proof is bound to).
 */
export async function connectWeb(target: string | WebEndpoints, options: WebConnectOptions = {}): Promise<Client> {
  const { token, transport, mux, webSocket, webTransport, fetch: fetchFn, ...clientOptions } = options ?? {};
  let endpoints: WebEndpoints;
  if (typeof target === "string") {
    let u: URL;
    try {
      u = new URL(target);
    } catch {
      throw new UsageError(`connectWeb(): not a URL: ${target}`);
    }
    if (u.protocol === "ws:" || u.protocol === "wss:") endpoints = { websocket: target };
    else if (u.protocol === "http:" || u.protocol === "https:") endpoints = await discover(target, fetchFn);
    else throw new UsageError(`connectWeb(): a ws(s):// or http(s):// URL, not ${target}`);
  } else if (typeof target === "object" && target !== null) endpoints = target;
  else throw new UsageError("connectWeb(): the target is a URL or { websocket, webtransport }");
  const connector = webConnector(endpoints, {
    ...(token !== undefined ? { token } : {}),
    ...(transport !== undefined ? { transport } : {}),
    ...(mux !== undefined ? { mux } : {}),
    ...(webSocket !== undefined ? { webSocket } : {}),
    ...(webTransport !== undefined ? { webTransport } : {}),
    ...(clientOptions.connectTimeoutMs !== undefined ? { connectTimeoutMs: clientOptions.connectTimeoutMs } : {}),
  });
  return Client.connect(connector, clientOptions);
}
