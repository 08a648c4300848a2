// What both example pages share: the connection (through the kcprpc browser bundle), the query
// parameters, and the status line. Plain ES module, no framework.
//
// The bundle (clients/typescript/dist/browser/kcprpc.js, `npm run build:browser` there) is served
// by the example's server at /kcprpc.js (python -m examples.live --serve --web, see README.md).
import * as kcprpc from "/kcprpc.js";

export { kcprpc };

/** The page's query parameters. */
export const params = new URLSearchParams(location.search);

/**
 * Which transport to use: `?transport=websocket` or `?transport=webtransport` forces one;
 * otherwise WebTransport when the server offers it (and the browser has it), else WebSocket.
 */
export function wantedTransport() {
  const t = params.get("transport");
  if (t === null || t === "" || t === "auto") return "auto";
  if (t !== "websocket" && t !== "webtransport") throw new Error(`?transport= takes websocket, webtransport or auto, not ${t}`);
  return t;
}

/** Set the text of the element with id `id`. */
export function show(id, text) {
  const el = document.getElementById(id);
  if (el) el.textContent = String(text);
}

/** The status line: what the connection is doing (`state` is also its data-state, for the tests). */
export function status(state, text) {
  const el = document.getElementById("status");
  if (!el) return;
  el.dataset.state = state;
  el.textContent = text ? `${state}: ${text}` : state;
}

/**
 * Connect to the page's own server (discovery: GET /kcprpc.json) over the wanted transport, with
 * reconnect and resume (the client takes its session back after a dropped connection). Returns
 * the client and the name of the transport in use.
 */
export async function connect(hooks = {}) {
  const client = await kcprpc.connectWeb({
    discovery: new URL("/kcprpc.json", location.href).href,
    transport: wantedTransport(),
    defaultTimeoutMs: 5000,
    heartbeat: { intervalMs: 500, timeoutMs: 2500 },
    reconnect: { initialMs: 100, maximumMs: 1000, restore: true },
    onDisconnect: (reason) => hooks.onDisconnect?.(reason),
    onReconnect: () => hooks.onReconnect?.(),
  });
  return { client, transport: client.transport ?? wantedTransport() };
}
