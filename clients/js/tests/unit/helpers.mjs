// A scripted Sluice stand-in (node:http) and a manual clock, for the unit tests.
import { createServer } from "node:http";
import { gunzipSync } from "node:zlib";

/**
 * Starts a server on 127.0.0.1:0. `answer(req, n)` returns `{status, headers, body}` for the
 * n-th request (0-based); `req` has `events` (the decoded batch), `headers`, `raw`.
 */
export async function scriptedServer(answer) {
  const requests = [];
  const server = createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      let raw = Buffer.concat(chunks);
      const gz = req.headers["content-encoding"] === "gzip";
      if (gz) raw = gunzipSync(raw);
      let events;
      try {
        events = JSON.parse(raw.toString("utf8"));
      } catch {
        events = undefined;
      }
      const r = { method: req.method, url: req.url, headers: req.headers, gzip: gz, raw, events, at: Date.now() };
      requests.push(r);
      const a = answer(r, requests.length - 1) || { status: 200 };
      if (a.destroy) return req.socket.destroy();
      const body = a.body === undefined ? JSON.stringify(a.status < 300 ? okBody(events) : { error: { code: "scripted", message: "scripted" } }) : typeof a.body === "string" ? a.body : JSON.stringify(a.body);
      res.writeHead(a.status, { "content-type": "application/json", ...(a.headers || {}) });
      res.end(body);
    });
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const url = `http://127.0.0.1:${server.address().port}`;
  return {
    url,
    requests,
    close: () => new Promise((r) => { server.closeAllConnections(); server.close(r); }),
  };
}

export function okBody(events) {
  const list = Array.isArray(events) ? events : [];
  return { accepted: list.length, rejected: 0, results: list.map((e, index) => ({ index, id: e.id, status: 200 })) };
}

/** Waits for `cond()` to be truthy, polling, failing after `ms`. */
export async function until(cond, ms = 5000, what = "condition") {
  const end = Date.now() + ms;
  for (;;) {
    const v = cond();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Lets pending I/O and promise callbacks run (for asserting that nothing happened). */
/** Until the server has seen `n` requests and the client has none in flight. */
export function answered(server, client, n, ms) {
  return until(() => server.requests.length === n && client.stats().inFlight === 0, ms, `${n} requests answered`);
}

export async function settle(ms = 50) {
  await new Promise((r) => setTimeout(r, ms));
}

/** A clock that moves only when told; timers fire in order as it passes them. */
export class ManualClock {
  constructor(start = 1_700_000_000_000) {
    this.t = start;
    this.timers = new Map();
    this.next = 1;
  }
  now() {
    return this.t;
  }
  setTimeout(fn, ms) {
    const id = this.next++;
    this.timers.set(id, { at: this.t + Math.max(0, ms), fn });
    return id;
  }
  clearTimeout(id) {
    this.timers.delete(id);
  }
  /** The earliest pending timer's time, or undefined. */
  pending() {
    let min;
    for (const { at } of this.timers.values()) if (min === undefined || at < min) min = at;
    return min;
  }
  advance(ms) {
    const end = this.t + ms;
    for (;;) {
      let first;
      for (const [id, x] of this.timers) if (x.at <= end && (!first || x.at < first[1].at)) first = [id, x];
      if (!first) break;
      this.timers.delete(first[0]);
      this.t = first[1].at;
      first[1].fn();
    }
    this.t = end;
  }
}
