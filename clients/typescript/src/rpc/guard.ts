/**
 * Calling application code (event handlers, hooks, state callbacks) from the client's loops and
 * transport callbacks: what it throws, or what the promise it returns rejects with, is the
 * application's bug. It is reported and the caller goes on; it never ends a reading loop, skips a
 * reconnect or becomes an unhandled rejection.
 */

/** Where an application callback's error goes: `err` and what threw (`"event handler for Chat"`). */
export type CallbackErrorReporter = (err: unknown, where: string) => void;

/**
 * A reporter writing to `console.error`, at most `burst` reports per `intervalMs` (a peer can make
 * a buggy handler throw at will); the next report let through says how many were left out.
 */
export function rateLimitedReporter(burst = 10, intervalMs = 60_000, now: () => number = () => Date.now()): CallbackErrorReporter {
  let start = -Infinity;
  let count = 0;
  let left = 0;
  return (err, where) => {
    const t = now();
    if (t - start >= intervalMs) {
      start = t;
      count = 0;
    }
    if (count >= burst) {
      left++;
      return;
    }
    count++;
    const note = left ? ` (${left} earlier report${left === 1 ? "" : "s"} left out)` : "";
    left = 0;
    console.error(`kcprpc: ${where} threw${note}:`, err);
  };
}

/** The reporter of code without its own (the web transports, a StateView without `onCallbackError`). */
export const defaultReporter: CallbackErrorReporter = rateLimitedReporter();

function tell(report: CallbackErrorReporter, err: unknown, where: string): void {
  try {
    report(err, where);
  } catch {
    // the reporter's own error: nothing more to do
  }
}

/**
 * Call `f()` guarded: a throw, or the rejection of a promise it returns, goes to `report` (and
 * `onError`, e.g. a counter), never to the caller. Returns false when `f` threw.
 */
export function callGuarded(report: CallbackErrorReporter, where: string, f: () => unknown, onError?: () => void): boolean {
  let r: unknown;
  try {
    r = f();
  } catch (e) {
    onError?.();
    tell(report, e, where);
    return false;
  }
  if (r !== null && (typeof r === "object" || typeof r === "function") && typeof (r as PromiseLike<unknown>).then === "function") {
    // an async callback: its rejection is reported, not left unhandled
    Promise.resolve(r as PromiseLike<unknown>).then(undefined, (e: unknown) => {
      onError?.();
      tell(report, e, where);
    });
  }
  return true;
}
