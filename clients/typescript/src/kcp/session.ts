/**
 * KCP sessions over UDP: {@link KcpSession} and {@link dial} (compat mode).
 *
 * A session runs one KCP engine behind its packet pipeline (crypt, crc32, FEC, OOB) and sends
 * through a {@link Path} (see path.ts): {@link CompatPath} for kcp-go's format, or a secure path.
 * This is the TypeScript counterpart of the Python `kcp/session.py`.
 *
 * API (implementation follows in the next commits; the shape is fixed):
 *
 * - `new KcpSession(path, conv, options)` (normally via {@link dial}, or by a secure dialer that
 *   has done its handshake and built its path);
 * - `session.write(bytes)`: queue for reliable, ordered delivery; returns false when the send
 *   queue is above its high-water mark (then `await session.drained()`);
 * - `session.onData(cb)`: `cb(bytes)` for each run of received stream bytes;
 * - `session.sendDatagram(bytes)` / `session.onDatagram(cb)`: unreliable OOB datagrams (0xf3);
 * - `session.onClose(cb)`: `cb(error | null)` once the session ended (null for a normal close);
 * - `session.close()`: linger until sent data is acknowledged (bounded), then end;
 *   `session.abort()`: end now; `await session.closedPromise()`;
 * - `session.stats`: counters (garbage, bad crc, undecryptable... dropped and counted).
 */
export {};
