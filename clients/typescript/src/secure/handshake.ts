/**
 * {@link secureHandshake}: the client handshake over a real UDP socket (the Python
 * `kcp.secure_path.secure_handshake`). Sends the initiation, retransmits it on the core's timer,
 * feeds every datagram from the server to the core, and settles with the established
 * {@link SecureConnection} (its key-confirming PING already sent) or the core's typed
 * {@link HandshakeError}: `HandshakeUnreachable` at once on ICMP "port unreachable",
 * `HandshakeKeyMismatch` / `HandshakeWireMismatch` after one round trip (a wire hint),
 * `HandshakePskMismatch`, `HandshakeRefused` with the server's reason, `HandshakeNoAnswer` or
 * `HandshakeTimeout` after `handshakeTimeoutMs`. Every path ends with no timer left behind.
 */
import type { Rng } from "./bytes.js";
import { SecureClient } from "./client.js";
import type { ClientConfig, SecureOptions } from "./config.js";
import type { SecureConnection } from "./connection.js";
import { HandshakeError, HandshakeUnreachable } from "./errors.js";
import type { SecureUdpLink } from "./link.js";

/** Injected time and randomness of a handshake. */
export interface HandshakeInit {
  /** Random bytes (default: the OS CSPRNG). */
  rng?: Rng;
  /** The clock in ms (default: `performance.now()` floored, as the KCP session's). */
  clock?: () => number;
  /** Abandon the handshake when this signal aborts (rejects with the signal's reason). */
  signal?: AbortSignal;
}

/** The session layer's default clock. */
export const defaultClock = (): number => Math.floor(performance.now());

/** Run the client handshake on `link`; resolves with the connection and the client core. */
export function secureHandshake(
  link: SecureUdpLink,
  options: SecureOptions | ClientConfig,
  init: HandshakeInit = {},
): Promise<{ conn: SecureConnection; client: SecureClient }> {
  const clock = init.clock ?? defaultClock;
  const client = new SecureClient(options, { ...(init.rng ? { rng: init.rng } : {}), peer: link.peer });
  return new Promise((resolve, reject) => {
    let timer: ReturnType<typeof setTimeout> | null = null;
    let done = false;
    const end = (): void => {
      done = true;
      if (timer !== null) clearTimeout(timer);
      timer = null;
      link.setReceiver(() => {});
      link.onError(null);
      init.signal?.removeEventListener("abort", onAbort);
    };
    const settle = (): void => {
      const now = clock();
      for (const d of client.datagramsToSend(now)) link.send(d);
      if (done) return;
      if (client.state === "established" && client.connection !== null) {
        const conn = client.connection;
        for (const [d] of conn.datagramsToSend(now)) link.send(d);
        end();
        resolve({ conn, client });
      } else if (client.state === "failed") {
        end();
        reject(client.error ?? new HandshakeError("handshake failed"));
      } else {
        arm();
      }
    };
    const arm = (): void => {
      if (timer !== null) clearTimeout(timer);
      const t = client.getTimer();
      if (t === null) return;
      timer = setTimeout(() => {
        timer = null;
        client.handleTimer(Math.max(clock(), t));
        settle();
      }, Math.max(0, t - clock()));
    };
    const onAbort = (): void => {
      if (done) return;
      client.abandon(clock());
      end();
      reject(init.signal?.reason ?? client.error);
    };
    link.setReceiver((d) => {
      if (done || client.state !== "initiating") return;
      client.receive(d, link.peer, clock());
      settle();
    });
    link.onError((err) => {
      if (done || err.code !== "ECONNREFUSED") return;
      client.failWith(new HandshakeUnreachable(`handshake failed: connection refused (nothing listens on ${link.peer})`));
      settle();
    });
    if (init.signal?.aborted) {
      reject(init.signal.reason);
      return;
    }
    init.signal?.addEventListener("abort", onAbort);
    link.send(client.initiate(clock()));
    arm();
  });
}
