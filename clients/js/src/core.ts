// The client: a bounded queue of serialized events, sent in batches by count, bytes and time,
// with retries that keep each event's id. Platform-neutral: browser.ts adds the page lifecycle
// and localStorage on top; index.ts is this alone (Node, workers, Deno, Bun).

import { judge, retryAfter, type Problem } from "./answer.js";
import { uuidv7 } from "./uuid.js";

/** A CloudEvent as sent. `data` and extension attributes are whatever `send` was given. */
export interface CloudEvent {
  specversion: string;
  id: string;
  type: string;
  source?: string;
  time?: string;
  data?: unknown;
  [attribute: string]: unknown;
}

/**
 * What `onError` receives. `retrying: false`: the events are dropped for good (a permanent
 * answer such as a schema violation, a full queue, the client closed); `retrying: true`: they
 * are kept and will be sent again (a network error, a CORS refusal, an unreadable answer).
 */
export interface SendError {
  /** Sluice's error code (`schema_violation`, `origin_not_allowed`, ...) or the client's own:
   * `network_error`, `invalid_response`, `queue_full`, `storage_full`, `retries_exhausted`,
   * `closed`, `no_token`. */
  code: string;
  message: string;
  /** The HTTP status the events got, when there was an answer. */
  status?: number;
  /** JSON pointer to the offending field (`/data/plan`), from Sluice. */
  pointer?: string;
  events: CloudEvent[];
  retrying: boolean;
}

/** Time, for tests: `now` in milliseconds and a one-shot timer. */
export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export interface ClientOptions {
  /** Sluice's base URL (`https://events.example.com`) or the full `/v1/events` URL. */
  url: string;
  /** An API key, sent as `X-API-Key` (a browser key in web pages). */
  apiKey?: string;
  /** Returns a JWT, sent as `Authorization: Bearer`. Called once, and again after a 401. */
  getToken?: () => string | Promise<string>;
  /** CloudEvents `source` for every event; unset: Sluice fills in the authenticated client. */
  source?: string;
  /** Most events per request (default 100; Sluice's `limits.max_events` is 1000). */
  batch?: number;
  /** Most bytes of JSON per request, before compression (default 512 KiB). */
  batchBytes?: number;
  /** How long an event may wait for others to fill its batch, ms (default 1000). */
  flushInterval?: number;
  /** Most events held (default 10 000); past it the oldest are dropped and reported. */
  maxQueue?: number;
  /** Most bytes of JSON held (default 5 MiB). */
  maxQueueBytes?: number;
  /** Requests in flight at once (default 2). */
  concurrency?: number;
  /** gzip bodies of at least `compressAbove` bytes where `CompressionStream` exists (default true). */
  compression?: boolean;
  /** Default 1024. */
  compressAbove?: number;
  /** First retry delay after a failure without `Retry-After`, ms (default 500); doubles each time. */
  retryBase?: number;
  /** Longest wait before a retry, `Retry-After` included, ms (default 60 000). */
  retryCap?: number;
  /** Sends of one event that may end in a server error other than 429/503 (default 5). */
  maxAttempts?: number;
  /** A request not answered by then is abandoned and retried, ms (default 30 000). */
  timeout?: number;
  onError?: (error: SendError) => void;
  /** Another `fetch` (a proxy agent in Node, or instrumentation). */
  fetch?: typeof fetch;
  /** For tests. */
  clock?: Clock;
  /** For tests: a number in [0, 1), for the backoff's jitter. */
  random?: () => number;
}

/** Counters since the client was made. */
export interface Stats {
  /** Events waiting to be sent. */
  queued: number;
  /** Requests in flight. */
  inFlight: number;
  /** Events Sluice answered as durable. */
  sent: number;
  /** Events dropped for good (reported through `onError` with `retrying: false`). */
  failed: number;
  /** Events handed back to the queue after an answer or an error. */
  retried: number;
  /** Requests made. */
  requests: number;
}

/** An event as queued: the object, its JSON text and byte length, sends that failed. */
export interface Entry {
  e: CloudEvent;
  j: string;
  n: number;
  t: number;
  /** When it entered the queue; its batch is due `flushInterval` later (a retried one at once, after the backoff). */
  at: number;
}

interface Flight {
  entries: Entry[];
  /** Aborts the request (its timeout, or `close` giving up). */
  abort: AbortController;
  done?: Promise<void>;
  /** Body bytes charged to the keepalive budget; 0 when not a keepalive request. */
  keepalive: number;
}

/** Chrome and the Fetch standard: at most 64 KiB of keepalive bodies in flight per page. */
export const KEEPALIVE_BUDGET = 65536;

const CLOSED: Problem = { status: 0, code: "closed", message: "the client was closed before these events were sent" };

const realClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as ReturnType<typeof setTimeout>),
};

/** UTF-8 length of a string from JSON.stringify (which leaves no lone surrogates). */
export function utf8Length(s: string): number {
  let n = s.length;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > 0x7f) {
      if (c < 0x800) n += 1;
      else if (c >= 0xd800 && c < 0xdc00) (n += 2), i++;
      else n += 2;
    }
  }
  return n;
}

async function gzip(body: string): Promise<Uint8Array> {
  const stream = new Blob([body]).stream().pipeThrough(new CompressionStream("gzip"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

export class Client {
  readonly endpoint: string;
  readonly #o: Required<Pick<ClientOptions, "batch" | "batchBytes" | "flushInterval" | "maxQueue" | "maxQueueBytes" | "concurrency" | "compressAbove" | "retryBase" | "retryCap" | "maxAttempts" | "timeout">>;
  readonly #opts: ClientOptions;
  readonly #clock: Clock;
  readonly #random: () => number;
  readonly #fetch: typeof fetch;
  readonly #gzip: boolean;
  #queue: Entry[] = [];
  #queueBytes = 0;
  readonly #flights = new Set<Flight>();
  #timer: unknown;
  /** No request before this time (Retry-After, backoff). */
  #notBefore = 0;
  /** Failed exchanges in a row, for the exponential backoff. */
  #failures = 0;
  /** Lowered after a 413 for a whole batch: the server's limits are tighter than ours. */
  #batchLimit: number;
  #rate?: { limit: number; remaining: number; at: number };
  #token?: string;
  #flushing = 0;
  #idle: (() => void)[] = [];
  #closed = false;
  /** Keepalive body bytes in flight (browser.ts sets `keepalive`). */
  keepaliveBytes = 0;
  keepalive = false;
  paused = false;
  /** browser.ts: events still queued when `close` gives up go to storage, not to onError. */
  onAbandon?: (entries: Entry[]) => boolean;
  /** browser.ts: while the page is hidden, new events leave through keepalive or storage (returns true). */
  onEnqueue?: () => boolean;
  readonly #counts = { sent: 0, failed: 0, retried: 0, requests: 0 };

  constructor(options: ClientOptions) {
    if (!options || typeof options.url !== "string") throw new TypeError("createClient: `url` is required");
    this.#opts = options;
    const url = options.url.replace(/\/+$/, "");
    this.endpoint = /\/v1\/events$/.test(url) ? url : url + "/v1/events";
    const pos = (v: number | undefined, d: number) => (typeof v === "number" && v >= 0 ? v : d);
    this.#o = {
      batch: Math.max(1, pos(options.batch, 100)),
      batchBytes: Math.max(1, pos(options.batchBytes, 512 * 1024)),
      flushInterval: pos(options.flushInterval, 1000),
      maxQueue: Math.max(1, pos(options.maxQueue, 10000)),
      maxQueueBytes: Math.max(1, pos(options.maxQueueBytes, 5 * 1024 * 1024)),
      concurrency: Math.max(1, pos(options.concurrency, 2)),
      compressAbove: pos(options.compressAbove, 1024),
      retryBase: Math.max(1, pos(options.retryBase, 500)),
      retryCap: pos(options.retryCap, 60000),
      maxAttempts: Math.max(1, pos(options.maxAttempts, 5)),
      timeout: pos(options.timeout, 30000),
    };
    this.#batchLimit = this.#o.batch;
    this.#clock = options.clock || realClock;
    this.#random = options.random || Math.random;
    this.#fetch = options.fetch || ((input, init) => fetch(input, init));
    this.#gzip = options.compression !== false && typeof CompressionStream === "function";
  }

  /**
   * Queues one event and returns its id. `attributes` are CloudEvents attributes and
   * extensions (`subject`, `partitionkey`, `schemaversion`, or `id`/`time` of your own).
   */
  send(type: string, data?: unknown, attributes?: Record<string, unknown>): string {
    if (this.#closed) throw new Error("sluice: send after close");
    const e: CloudEvent = { specversion: "1.0", id: uuidv7(), type, time: new Date().toISOString() };
    if (this.#opts.source) e.source = this.#opts.source;
    if (attributes) Object.assign(e, attributes);
    if (data !== undefined) e.data = data;
    const j = JSON.stringify(e);
    this.enqueue([{ e, j, n: utf8Length(j), t: 0, at: this.#clock.now() }], false);
    return e.id;
  }

  /** Sends everything queued now; resolves once nothing is queued or in flight. */
  flush(): Promise<void> {
    if (!this.#queue.length && !this.#flights.size) return Promise.resolve();
    this.#flushing++;
    const done = new Promise<void>((resolve) => this.#idle.push(resolve));
    this.pump();
    return done;
  }

  /**
   * Stops taking events, sends what is queued, and waits for it at most `timeout` ms
   * (default 10 000). What is still queued then is reported as `closed` (browser: kept in
   * storage for the next page load).
   */
  async close(timeout = 10000): Promise<void> {
    this.#closed = true;
    let handle: unknown;
    await Promise.race([this.flush(), new Promise<void>((r) => (handle = this.#clock.setTimeout(r, timeout)))]);
    this.#clock.clearTimeout(handle);
    this.#flushing = 0;
    this.#disarm();
    // Requests still out: abandoned, and their events reported (or stored) with the rest.
    const out = [...this.#flights];
    for (const f of out) f.abort.abort();
    await Promise.all(out.map((f) => f.done));
    const left = this.drain();
    if (left.length && !(this.onAbandon && this.onAbandon(left))) this.#fail(left, CLOSED);
    for (const w of this.#idle.splice(0)) w();
  }

  stats(): Stats {
    return { queued: this.#queue.length, inFlight: this.#flights.size, ...this.#counts };
  }

  /** Pauses sending (offline) or resumes it. */
  pause(paused: boolean): void {
    this.paused = paused;
    this.pump();
  }

  // ---- queue ----

  /** Adds entries (new ones at the back, retried ones at the front), dropping the oldest past the bounds. */
  enqueue(entries: Entry[], front: boolean): void {
    for (const x of entries) this.#queueBytes += x.n;
    if (front) this.#queue.unshift(...entries);
    else if (entries.length === 1) this.#queue.push(entries[0]);
    else this.#queue.push(...entries);
    let drop = 0;
    let bytes = this.#queueBytes;
    while (drop < this.#queue.length && (this.#queue.length - drop > this.#o.maxQueue || bytes > this.#o.maxQueueBytes)) {
      bytes -= this.#queue[drop++].n;
    }
    if (drop) {
      const dropped = this.#queue.splice(0, drop);
      this.#queueBytes = bytes;
      this.#fail(dropped, { status: 0, code: "queue_full", message: `the queue is full (maxQueue ${this.#o.maxQueue}, maxQueueBytes ${this.#o.maxQueueBytes}); the oldest events were dropped` });
    }
    if (!(this.onEnqueue && !front && this.onEnqueue()) && (this.#isFull() || !this.#timer)) this.pump();
  }

  #isFull(): boolean {
    return this.#queue.length >= this.#limit() || this.#queueBytes >= this.#o.batchBytes;
  }

  /** Events per request: the configured batch, lowered by a 413 and by a known rate limit. */
  #limit(): number {
    return Math.max(1, Math.min(this.#batchLimit, this.#rate ? this.#rate.limit || 1 : Infinity));
  }

  /** Takes the next batch off the queue: at most `limit()` events and `bytes` of body (at least one event). */
  take(bytes: number, atLeastOne = true): Entry[] {
    let n = 0;
    let size = 2;
    const max = this.#limit();
    while (n < this.#queue.length && n < max) {
      const add = this.#queue[n].n + (n ? 1 : 0);
      if (size + add > bytes && (n || !atLeastOne)) break;
      size += add;
      n++;
    }
    const out = this.#queue.splice(0, n);
    for (const x of out) this.#queueBytes -= x.n;
    return out;
  }

  /** Everything queued, off the queue (browser.ts moves it to storage). */
  drain(): Entry[] {
    this.#queueBytes = 0;
    return this.#queue.splice(0);
  }

  /** Entries of requests in flight that would not survive the page (not keepalive). */
  unkept(): Entry[] {
    const out: Entry[] = [];
    for (const f of this.#flights) if (!f.keepalive) out.push(...f.entries);
    return out;
  }

  /** Ids queued or in flight. */
  holds(): Set<string> {
    const ids = new Set<string>();
    for (const x of this.#queue) ids.add(x.e.id);
    for (const f of this.#flights) for (const x of f.entries) ids.add(x.e.id);
    return ids;
  }

  // ---- scheduling ----

  /** Milliseconds until the rate limit Sluice announced has room for `k` events. */
  #rateWait(k: number, now: number): number {
    const r = this.#rate;
    if (!r || !r.limit) return 0;
    const need = Math.min(k, r.limit);
    const have = r.remaining + (r.limit * (now - r.at)) / 1000;
    return have >= need ? 0 : Math.min(Math.ceil(((need - have) * 1000) / r.limit), this.#o.retryCap);
  }

  /** When the next request may go, or Infinity when none is waiting. */
  #nextAt(now: number): number {
    if (this.paused || !this.#queue.length || this.#flights.size >= this.#o.concurrency || (this.#closed && !this.#flushing)) return Infinity;
    const due = this.#isFull() || this.#flushing ? now : this.#queue[0].at + this.#o.flushInterval;
    return Math.max(due, this.#notBefore, now + this.#rateWait(Math.min(this.#queue.length, this.#limit()), now));
  }

  /** Starts every request that may go now, then sets the timer for the next one. */
  pump = (): void => {
    this.#disarm();
    for (;;) {
      const now = this.#clock.now();
      const at = this.#nextAt(now);
      if (at === Infinity) return;
      if (at > now) {
        this.#timer = this.#clock.setTimeout(this.pump, at - now);
        return;
      }
      const batch = this.take(this.#o.batchBytes);
      // Spend the budget now: the answer that says what is left comes later.
      if (this.#rate) this.#rate.remaining -= batch.length;
      this.post(batch, false);
    }
  };

  #disarm(): void {
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  /** Whether a request may go now (browser.ts, before it spends the keepalive budget). */
  mayUnload(): boolean {
    return !this.paused && this.#clock.now() >= this.#notBefore && !(this.#opts.getToken && this.#token === undefined);
  }

  // ---- requests ----

  /**
   * Sends `entries` in one request. `unloading`: the page is going away, so the request must
   * start before this returns (no compression, no token fetch) and be a keepalive request.
   */
  post(entries: Entry[], unloading: boolean): void {
    const flight: Flight = { entries, keepalive: 0, abort: new AbortController() };
    this.#flights.add(flight);
    flight.done = this.#exchange(flight, unloading)
      .catch((err) => this.#report(entries, { code: "internal", message: String(err), retrying: false }))
      .then(() => {
        this.#flights.delete(flight);
        this.keepaliveBytes -= flight.keepalive;
        flight.keepalive = 0;
        this.pump();
        this.#settle();
      });
  }

  async #exchange(flight: Flight, unloading: boolean): Promise<void> {
    const { entries } = flight;
    const body = "[" + entries.map((x) => x.j).join(",") + "]";
    let bytes = 1 + entries.length;
    for (const x of entries) bytes += x.n;
    let refreshed = false;
    for (;;) {
      const headers: Record<string, string> = { "content-type": "application/cloudevents-batch+json" };
      let res: Response;
      let text = "";
      try {
        if (this.#opts.apiKey) headers["x-api-key"] = this.#opts.apiKey;
        if (this.#opts.getToken) {
          if (this.#token === undefined) this.#token = await this.#opts.getToken();
          headers.authorization = "Bearer " + this.#token;
        }
        let payload: string | Uint8Array = body;
        let size = bytes;
        if (!unloading && this.#gzip && bytes >= this.#o.compressAbove) {
          payload = await gzip(body);
          size = payload.byteLength;
          headers["content-encoding"] = "gzip";
        }
        // In a page every request that fits the budget is keepalive, so that one in flight when
        // the page goes away still arrives (and is not sent again from storage).
        if (this.keepalive && !flight.keepalive && size <= KEEPALIVE_BUDGET - this.keepaliveBytes) {
          flight.keepalive = size;
          this.keepaliveBytes += size;
        }
        const init: RequestInit = { method: "POST", headers, body: payload as BodyInit, keepalive: flight.keepalive > 0, credentials: "omit" };
        // A safety net, on the real clock: a request that hangs must not hold its slot forever.
        const timer = unloading || !this.#o.timeout ? 0 : setTimeout(() => flight.abort.abort(), this.#o.timeout);
        if (!unloading) init.signal = flight.abort.signal;
        this.#counts.requests++;
        try {
          res = await this.#fetch(this.endpoint, init);
          text = await res.text();
        } finally {
          clearTimeout(timer);
        }
      } catch (err) {
        if (this.#closed && !this.#flushing) return this.#requeue(entries);
        // No answer: a refused connection, DNS, a timeout, or (in a page) a CORS refusal, which
        // scripts cannot tell apart from the network failing.
        if (this.#opts.getToken && this.#token === undefined) {
          return this.#fail(entries, { status: 0, code: "no_token", message: "getToken failed: " + String(err) });
        }
        this.#report(entries, { code: "network_error", message: String(err), retrying: true });
        return this.#retry(entries, undefined);
      }
      const status = res.status;
      let json: unknown;
      // A 200 says it all; other answers are read (unreadable ones are judged on the status).
      if (status !== 200) {
        try {
          json = text ? JSON.parse(text) : undefined;
        } catch {}
      }
      this.#noteRate(res.headers, flight);
      if (status === 401 && this.#opts.getToken && !refreshed && !unloading) {
        refreshed = true;
        this.#token = undefined;
        continue;
      }
      if (status === 413 && entries.length > 1 && !(json && Array.isArray((json as { results?: unknown }).results))) {
        // Over a request limit of the server's: send the same events in smaller requests.
        this.#batchLimit = Math.max(1, Math.ceil(entries.length / 2));
        this.#requeue(entries);
        return;
      }
      const verdicts = judge(status, json, entries.map((x) => x.e.id));
      const again: Entry[] = [];
      const problems = new Map<Problem, Entry[]>();
      let unread = 0;
      let durable = 0;
      verdicts.forEach((v, i) => {
        const x = entries[i];
        if (v === 0) durable++;
        else if (typeof v === "number") {
          // 429 and 503 say "later"; other server errors count towards maxAttempts.
          if (v !== 429 && v !== 503 && v !== -1 && ++x.t >= this.#o.maxAttempts) {
            const p = { status: v, code: "retries_exhausted", message: `answered ${v} ${this.#o.maxAttempts} times` };
            problems.set(p, [x]);
          } else again.push(x);
          if (v === -1) unread++;
        } else {
          const list = problems.get(v);
          if (list) list.push(x);
          else problems.set(v, [x]);
        }
      });
      this.#counts.sent += durable;
      for (const [p, list] of problems) this.#fail(list, p);
      if (unread) {
        this.#report(entries.filter((_, i) => verdicts[i] === -1), { code: "invalid_response", status, message: `the ${status} answer does not say what became of these events`, retrying: true });
      }
      if (again.length) {
        const ms = retryAfter(res.headers.get("retry-after"), this.#clock.now(), this.#o.retryCap);
        this.#retry(again, ms ?? (status === 429 && this.#rate ? this.#rateWait(this.#limit(), this.#clock.now()) || undefined : undefined));
      } else this.#failures = 0;
      return;
    }
  }

  /** Back into the queue, after `Retry-After` when the server gave one, else exponential backoff with full jitter. */
  #retry(entries: Entry[], serverMs: number | undefined): void {
    const now = this.#clock.now();
    this.#failures++;
    let wait: number;
    if (serverMs !== undefined) {
      // Honour it, plus up to 10% (at most 1 s) so that many clients told the same do not return together.
      wait = Math.min(serverMs + this.#random() * Math.min(serverMs * 0.1, 1000), this.#o.retryCap);
    } else {
      wait = this.#random() * Math.min(this.#o.retryCap, this.#o.retryBase * 2 ** Math.min(this.#failures - 1, 30));
    }
    this.#notBefore = Math.max(this.#notBefore, now + wait);
    this.#counts.retried += entries.length;
    this.#requeue(entries);
  }

  /** Back to the front of the queue, unless `close` has given up on it. */
  #requeue(entries: Entry[]): void {
    if (this.#closed && !this.#flushing) {
      if (!(this.onAbandon && this.onAbandon(entries))) this.#fail(entries, CLOSED);
    } else this.enqueue(entries, true);
  }

  /**
   * Reads the RateLimit headers; other requests in flight may not be counted in them yet, so
   * their events are taken off. A budget of another unit than events (Sluice says
   * `qu="content-bytes"` for a tenant limited in bytes only) does not pace events: 429 and
   * Retry-After do.
   */
  #noteRate(h: Headers, answered: Flight): void {
    if (/;\s*qu=/.test(h.get("ratelimit-policy") || "")) {
      this.#rate = undefined;
      return;
    }
    const limit = Number(h.get("ratelimit-limit"));
    let remaining = Number(h.get("ratelimit-remaining") ?? NaN);
    if (limit > 0 && remaining >= 0) {
      for (const f of this.#flights) if (f !== answered) remaining -= f.entries.length;
      this.#rate = { limit, remaining, at: this.#clock.now() };
    }
  }

  #fail(entries: Entry[], p: Problem): void {
    this.#counts.failed += entries.length;
    this.#report(entries, { status: p.status || undefined, code: p.code, message: p.message, pointer: p.pointer, retrying: false });
  }

  #report(entries: Entry[], e: Omit<SendError, "events">): void {
    const handler = this.#opts.onError;
    if (!handler) return;
    const err: SendError = { code: e.code, message: e.message, events: entries.map((x) => x.e), retrying: e.retrying };
    if (e.status) err.status = e.status;
    if (e.pointer !== undefined) err.pointer = e.pointer;
    try {
      handler(err);
    } catch {
      // A throwing handler must not stop delivery.
    }
  }

  #settle(): void {
    if (this.#queue.length || this.#flights.size) return;
    this.#flushing = 0;
    const waiters = this.#idle.splice(0);
    for (const w of waiters) w();
  }
}
