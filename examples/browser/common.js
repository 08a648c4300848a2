// What both example pages share: the connection (through the kcprpc browser bundle), the query
// parameters, the status line, and the page's view of its connection (window.liveView,
// window.gameView: its state, transport, drops and reconnects). Plain ES module, no framework.
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
 * Connect to the page's own server over the wanted transport: the endpoints come from the
 * server's discovery document (/kcprpc.json); with "auto", WebTransport when the server offers it
 * and the browser has it, else (or when it fails) WebSocket. The client reconnects a dropped
 * connection and resumes its session (`reconnect.restore`), dialling the same way.
 *
 * Returns `{client, link}`: `link.transport` names the transport of the current connection
 * ("websocket" or "webtransport"), `link.drop()` cuts it the hard way (abort, as a lost network
 * would: the client notices and reconnects).
 */
export async function connect(hooks = {}) {
  const want = wantedTransport();
  const endpoints = await kcprpc.discover(new URL("/", location.href).href);
  const canWT = Boolean(endpoints.webtransport) && typeof globalThis.WebTransport !== "undefined";
  const order = want === "auto" ? (canWT ? ["webtransport", "websocket"] : ["websocket"]) : [want];
  const timeout = { connectTimeoutMs: 5000 };
  const dial = {};
  for (const name of order) dial[name] = kcprpc.webConnector(endpoints, { transport: name, ...timeout });
  const link = { transport: null, connection: null, connections: 0 };
  link.drop = () => link.connection?.transport.abort();
  const connector = async () => {
    let failure = null;
    for (const name of order) {
      try {
        const connection = await dial[name]();
        Object.assign(link, { transport: name, connection, connections: link.connections + 1 });
        hooks.onTransport?.(name);
        return connection;
      } catch (e) {
        failure = e; // "auto": WebTransport failed, WebSocket next
      }
    }
    throw failure;
  };
  const client = await kcprpc.Client.connect(connector, {
    ...timeout,
    defaultTimeoutMs: 5000,
    heartbeat: { intervalMs: 500, timeoutMs: 2500 },
    reconnect: { initialMs: 100, maximumMs: 1000, restore: true },
    onDisconnect: (reason) => hooks.onDisconnect?.(reason),
    onReconnect: () => hooks.onReconnect?.(),
  });
  return { client, link };
}

/**
 * Set the page's state: `view.state` (for the tests) and the status line (for people).
 */
export function setState(view, state, text) {
  view.state = state;
  status(state, text);
}

/**
 * The page's connection, kept in `view`: `connect` with the state "connecting", then
 * `view.transport` (also shown in #transport), `view.disconnects` and `view.reconnects` (with the
 * states "disconnected" and "reconnected") follow it; `view.client` and `view.link` are set once
 * connected. `view.drop()` cuts the connection (as a lost network would: the client reconnects
 * and resumes). Returns the client.
 */
export async function connectView(view) {
  setState(view, "connecting");
  const { client, link } = await connect({
    onTransport: (name) => {
      view.transport = name;
      show("transport", name);
    },
    onDisconnect: (reason) => {
      view.disconnects++;
      setState(view, "disconnected", reason);
    },
    onReconnect: () => {
      view.reconnects++;
      setState(view, "reconnected", `${view.reconnects} time(s)`);
    },
  });
  view.client = client;
  view.link = link;
  return client;
}

/**
 * Publish the page's view as `window[name]` (for the tests) with `view.drop()`: cut the
 * connection (see connectView; nothing before it is connected).
 */
export function publishView(name, view) {
  view.drop = () => view.link?.drop();
  window[name] = view;
  return view;
}

/** Run the page's `main`; a failure is kept in `view.error` and shown as the state "error". */
export async function run(view, main) {
  try {
    await main();
  } catch (e) {
    view.error = e instanceof Error ? e.message : String(e);
    setState(view, "error", view.error);
  }
}
