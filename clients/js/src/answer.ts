// How Sluice's answers map to what happens to each event of a request (docs/api.md). Pure
// functions: the client decides, these only read. Answers are treated as untrusted: a body that
// is not JSON, results that are missing, duplicated or out of range never make an event count
// as delivered unless the status says the whole request was.

/** A permanent failure: the event is reported through `onError` and never sent again. */
export interface Problem {
  status: number;
  code: string;
  message: string;
  pointer?: string;
}

/**
 * What became of one event: `0` durable, a positive number: not durable now but could be
 * later (the status it got; `-1` when the answer does not say), or a {@link Problem}.
 */
export type Verdict = number | Problem;

/** Statuses that say "not now" rather than "never". */
export function retriable(status: number): boolean {
  return status === 408 || status === 425 || status === 429 || (status >= 500 && status !== 501 && status !== 505);
}

function str(v: unknown): string | undefined {
  return typeof v === "string" ? v : undefined;
}

function problem(status: number, error: unknown): Problem {
  const e = (error && typeof error === "object" ? error : {}) as Record<string, unknown>;
  return {
    status,
    code: str(e.code) || "http_" + status,
    message: str(e.message) || "HTTP " + status,
    pointer: str(e.pointer),
  };
}

function verdict(status: unknown, error: unknown, top: number): Verdict {
  if (typeof status !== "number" || status % 1) return -1;
  // Durable inside an answer that is neither 200 nor 207 contradicts itself: not trusted.
  if (status >= 200 && status < 300) return top < 300 ? 0 : -1;
  return retriable(status) ? status : problem(status, error);
}

/**
 * One verdict per event sent (`ids` in request order). Per-event `results` are used whenever
 * the answer has them; an event they do not cover, or whose id does not match, is retried
 * (it may or may not be durable: a duplicate is better than a loss).
 */
export function judge(status: number, body: unknown, ids: string[]): Verdict[] {
  const n = ids.length;
  if (status >= 200 && status < 300 && status !== 207) return new Array(n).fill(0);
  const b = (body && typeof body === "object" ? body : {}) as Record<string, unknown>;
  const results = b.results;
  if (Array.isArray(results) && status !== 401 && status !== 429) {
    const out: (Verdict | undefined)[] = new Array(n);
    for (const r of results) {
      if (!r || typeof r !== "object") continue;
      const { index, id, status: s, error } = r as Record<string, unknown>;
      if (typeof index !== "number" || !(index >= 0 && index < n) || index % 1 || out[index] !== undefined) continue;
      out[index] = id !== undefined && id !== ids[index] ? -1 : verdict(s, error, status);
    }
    for (let i = 0; i < n; i++) if (out[i] === undefined) out[i] = -1;
    return out as Verdict[];
  }
  // One status for the whole request. A 207 without readable results says nothing per event.
  const v: Verdict = status === 207 ? -1 : verdict(status, b.error, status);
  return new Array(n).fill(v);
}

/**
 * `Retry-After` in milliseconds: delta-seconds or an HTTP-date (RFC 9110), clamped to
 * `[0, cap]`; `undefined` when absent or unreadable.
 */
export function retryAfter(value: string | null, now: number, cap: number): number | undefined {
  if (!value) return undefined;
  const v = value.trim();
  let ms: number;
  if (/^\d+$/.test(v)) ms = Number(v) * 1000;
  else if (!/^[a-z]{3}, /i.test(v)) return undefined;
  else {
    const at = Date.parse(v);
    if (isNaN(at)) return undefined;
    ms = at - now;
  }
  return Math.min(Math.max(ms, 0), cap);
}
