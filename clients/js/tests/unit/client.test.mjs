// The client against a scripted server: batching, gzip, per-event answers, retries and their
// timing (on a manual clock), auth refresh, bounds, flush and close.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createClient } from "../../dist/index.js";
import { scriptedServer, until, answered, settle, ManualClock } from "./helpers.mjs";

/** A client of `s` on a manual clock, collecting what `onError` reports. */
function clientOn(s, options) {
  const clock = new ManualClock();
  const errors = [];
  const c = createClient({ url: s.url, clock, onError: (e) => errors.push(e), ...options });
  return { c, clock, errors };
}

const ids = (req) => req.events.map((e) => e.id);

test("batches by count, then by time", async (t) => {
  const s = await scriptedServer(() => ({ status: 200 }));
  t.after(s.close);
  const clock = new ManualClock();
  const c = createClient({ url: s.url, batch: 10, flushInterval: 1000, clock, compression: false });
  const sent = [];
  for (let i = 0; i < 25; i++) sent.push(c.send("web.click", { i }));
  await until(() => s.requests.length === 2 && c.stats().inFlight === 0, 5000, "two full batches");
  await settle();
  assert.equal(s.requests.length, 2, "a partial batch waits for flushInterval");
  clock.advance(999);
  await settle();
  assert.equal(s.requests.length, 2);
  clock.advance(1);
  await until(() => s.requests.length === 3);
  assert.deepEqual(s.requests.flatMap(ids), sent, "every event once, in order");
  assert.deepEqual(s.requests.map((r) => r.events.length), [10, 10, 5]);
  const r = s.requests[0];
  assert.equal(r.url, "/v1/events");
  assert.equal(r.headers["content-type"], "application/cloudevents-batch+json");
  const e = r.events[0];
  assert.equal(e.specversion, "1.0");
  assert.equal(e.type, "web.click");
  assert.deepEqual(e.data, { i: 0 });
  assert.match(e.time, /^\d{4}-\d\d-\d\dT/);
  await until(() => c.stats().sent === 25);
});

test("batches by bytes", async (t) => {
  const s = await scriptedServer(() => ({ status: 200 }));
  t.after(s.close);
  const c = createClient({ url: s.url + "/v1/events/", batch: 100, batchBytes: 2000, flushInterval: 10, compression: false });
  for (let i = 0; i < 12; i++) c.send("web.click", { pad: "é".repeat(200) });
  await c.flush();
  assert.equal(s.requests.flatMap(ids).length, 12);
  for (const r of s.requests) assert.ok(r.raw.length <= 2000, `request of ${r.raw.length} bytes`);
  assert.ok(s.requests.length >= 4);
});

test("gzip above compressAbove, plain below", async (t) => {
  const s = await scriptedServer(() => ({ status: 200 }));
  t.after(s.close);
  const c = createClient({ url: s.url, batch: 50, flushInterval: 10 });
  const big = [];
  for (let i = 0; i < 50; i++) big.push(c.send("web.click", { path: "/products/" + i, agent: "Mozilla/5.0 ".repeat(5) }));
  await c.flush();
  c.send("web.click", { i: 1 });
  await c.flush();
  assert.equal(s.requests.length, 2);
  assert.equal(s.requests[0].gzip, true);
  assert.equal(s.requests[0].headers["content-encoding"], "gzip");
  assert.deepEqual(ids(s.requests[0]), big);
  assert.equal(s.requests[1].gzip, false);
});

test("207: permanent failures reported with code and pointer, never retried; retriable ones resent with their ids after Retry-After", async (t) => {
  const s = await scriptedServer((req, n) =>
    n === 0
      ? {
          status: 207,
          headers: { "retry-after": "1" },
          body: {
            accepted: 1,
            rejected: 3,
            results: [
              { index: 0, id: req.events[0].id, status: 200 },
              { index: 1, id: req.events[1].id, status: 400, error: { code: "schema_violation", pointer: "/data/plan", message: "value is not one of ..." } },
              { index: 2, id: req.events[2].id, status: 503, error: { code: "delivery_timeout", pointer: "", message: "..." } },
              { index: 3, id: req.events[3].id, status: 500, error: { code: "delivery_rejected", pointer: "", message: "..." } },
            ],
          },
        }
      : { status: 200 },
  );
  t.after(s.close);
  const { c, clock, errors } = clientOn(s, { batch: 4, random: () => 0 });
  const sent = [0, 1, 2, 3].map((i) => c.send("app.signup", { i }));
  await answered(s, c, 1);
  assert.equal(errors.length, 1);
  const e = errors[0];
  assert.equal(e.code, "schema_violation");
  assert.equal(e.pointer, "/data/plan");
  assert.equal(e.status, 400);
  assert.equal(e.retrying, false);
  assert.deepEqual(e.events.map((x) => x.id), [sent[1]]);
  clock.advance(999);
  await settle();
  assert.equal(s.requests.length, 1, "Retry-After: 1 is honoured");
  clock.advance(1);
  await until(() => s.requests.length === 2);
  assert.deepEqual(ids(s.requests[1]), [sent[2], sent[3]], "only the retriable events, with their ids");
  await until(() => c.stats().sent === 3);
  assert.deepEqual(c.stats(), { queued: 0, inFlight: 0, sent: 3, failed: 1, retried: 2, requests: 2 });
});

test("hostile answers: never counted as delivered unless the status says so", async (t) => {
  const answers = [
    // Not JSON at all.
    { status: 207, body: "<html>oops</html>" },
    // Index 1 missing, an index out of range, index 0 twice (the first counts), a wrong id for 2.
    (req) => ({
      status: 207,
      body: {
        results: [
          { index: 0, id: req.events[0].id, status: 200 },
          { index: 0, id: req.events[0].id, status: 400, error: { code: "x" } },
          { index: 99, status: 200 },
          { index: "1", status: 200 },
          { index: 2, id: "someone-else", status: 200 },
          null,
          { index: 3, id: req.events[3].id, status: 400 },
        ],
      },
    }),
    // 200 whose body is not JSON: the status alone says durable.
    { status: 200, body: "ok" },
  ];
  const s = await scriptedServer((req, n) => (typeof answers[n] === "function" ? answers[n](req) : answers[n]));
  t.after(s.close);
  const { c, clock, errors } = clientOn(s, { batch: 4, random: () => 0.5 });
  const sent = [0, 1, 2, 3].map((i) => c.send("t", { i }));
  await answered(s, c, 1);
  assert.deepEqual(errors.map((e) => [e.code, e.retrying, e.events.length]), [["invalid_response", true, 4]]);
  assert.equal(clock.pending() - clock.now(), 250, "backoff: half of retryBase (random 0.5)");
  clock.advance(clock.pending() - clock.now());
  await answered(s, c, 2);
  assert.deepEqual(ids(s.requests[1]), sent);
  const second = errors.slice(1).map((e) => [e.code, e.retrying, e.events.map((x) => x.id)]);
  assert.deepEqual(second, [
    ["http_400", false, [sent[3]]],
    ["invalid_response", true, [sent[1], sent[2]]],
  ]);
  clock.advance(clock.pending() - clock.now());
  await answered(s, c, 3);
  assert.deepEqual(ids(s.requests[2]), [sent[1], sent[2]]);
  assert.equal(c.stats().sent, 3);
  assert.equal(c.stats().queued, 0);
});

test("401 calls getToken again once, then succeeds", async (t) => {
  const s = await scriptedServer((req) =>
    req.headers.authorization === "Bearer fresh" ? { status: 200 } : { status: 401, body: { error: { code: "token_expired", message: "..." } } },
  );
  t.after(s.close);
  let calls = 0;
  const c = createClient({ url: s.url, flushInterval: 5, getToken: async () => (++calls === 1 ? "stale" : "fresh") });
  c.send("t", {});
  c.send("t", {});
  await c.flush();
  c.send("t", {});
  await c.flush();
  assert.equal(calls, 2, "the token is kept until a 401");
  assert.deepEqual(s.requests.map((r) => r.headers.authorization), ["Bearer stale", "Bearer fresh", "Bearer fresh"]);
  assert.equal(c.stats().sent, 3);
});

test("401 twice: reported with the server's code, no loop", async (t) => {
  const s = await scriptedServer(() => ({ status: 401, body: { error: { code: "bad_signature", message: "the signature does not verify" } } }));
  t.after(s.close);
  let calls = 0;
  const errors = [];
  const c = createClient({ url: s.url, flushInterval: 5, getToken: () => "t" + ++calls, onError: (e) => errors.push(e) });
  c.send("t", {});
  await c.flush();
  assert.equal(calls, 2);
  assert.equal(s.requests.length, 2);
  assert.deepEqual(errors.map((e) => [e.code, e.status, e.retrying]), [["bad_signature", 401, false]]);
});

test("403, 400 and 415 for the whole request are permanent", async (t) => {
  for (const [status, code] of [[403, "origin_not_allowed"], [400, "malformed_json"], [415, "unsupported_media_type"]]) {
    const s = await scriptedServer(() => ({ status, body: { error: { code, message: "no" } } }));
    const errors = [];
    const c = createClient({ url: s.url, flushInterval: 5, apiKey: "pk_x", onError: (e) => errors.push(e) });
    c.send("t", {});
    c.send("t", {});
    await c.flush();
    await s.close();
    assert.equal(s.requests.length, 1, `${status} is not retried`);
    assert.equal(s.requests[0].headers["x-api-key"], "pk_x");
    assert.deepEqual(errors.map((e) => [e.code, e.status, e.retrying, e.events.length]), [[code, status, false, 2]]);
  }
});

test("Retry-After as an HTTP-date, and a huge one capped at retryCap", async (t) => {
  const clock = new ManualClock(1_700_000_000_000); // a whole second, as HTTP-dates are
  const date = new Date(clock.now() + 3000).toUTCString();
  const s = await scriptedServer((req, n) =>
    n === 0 ? { status: 503, headers: { "retry-after": date } } : n === 1 ? { status: 429, headers: { "retry-after": "999999" } } : { status: 200 },
  );
  t.after(s.close);
  const c = createClient({ url: s.url, flushInterval: 0, clock, random: () => 0, retryCap: 20000 });
  c.send("t", {});
  await answered(s, c, 1);
  assert.equal(clock.pending() - clock.now(), 3000);
  clock.advance(3000);
  await answered(s, c, 2);
  assert.equal(clock.pending() - clock.now(), 20000, "999999 s capped");
  clock.advance(20000);
  await until(() => c.stats().sent === 1);
});

test("network errors: exponential backoff with jitter, capped; reported as retrying", async (t) => {
  // A port nobody listens on: take one, close it.
  const s = await scriptedServer(() => ({ status: 200 }));
  await s.close();
  const { c, clock, errors } = clientOn(s, { flushInterval: 0, random: () => 0.5, retryBase: 100, retryCap: 1000 });
  c.send("t", {});
  const waits = [];
  for (let i = 0; i < 6; i++) {
    await until(() => c.stats().inFlight === 0 && clock.pending() !== undefined && errors.length === i + 1, 5000, "failure " + i);
    waits.push(clock.pending() - clock.now());
    clock.advance(clock.pending() - clock.now());
  }
  assert.deepEqual(waits, [50, 100, 200, 400, 500, 500]);
  assert.ok(errors.every((e) => e.code === "network_error" && e.retrying && e.events.length === 1));
  assert.equal(c.stats().queued + c.stats().inFlight, 1, "the event is kept");
});

test("413 for a whole batch: the same events again in smaller requests", async (t) => {
  const s = await scriptedServer((req) => (req.events.length > 4 ? { status: 413, body: { error: { code: "body_too_large", message: "" } } } : { status: 200 }));
  t.after(s.close);
  const c = createClient({ url: s.url, batch: 10, flushInterval: 60000, concurrency: 1 });
  const sent = [];
  for (let i = 0; i < 10; i++) sent.push(c.send("t", { i }));
  await c.flush();
  assert.deepEqual(s.requests.map((r) => r.events.length), [10, 5, 3, 3, 3, 1]);
  const ok = s.requests.filter((r) => r.events.length <= 4).flatMap(ids);
  assert.deepEqual([...ok].sort(), [...sent].sort());
  assert.equal(c.stats().sent, 10);
});

test("server errors other than 429/503 stop after maxAttempts", async (t) => {
  const s = await scriptedServer(() => ({ status: 500, body: { error: { code: "internal", message: "" } } }));
  t.after(s.close);
  const errors = [];
  const c = createClient({ url: s.url, flushInterval: 0, retryBase: 1, maxAttempts: 3, onError: (e) => errors.push(e) });
  c.send("t", {});
  await c.flush();
  assert.equal(s.requests.length, 3);
  assert.deepEqual(errors.map((e) => [e.code, e.status, e.retrying]), [["retries_exhausted", 500, false]]);
});

test("the queue is bounded: the oldest are dropped and reported", async (t) => {
  const errors = [];
  const c = createClient({ url: "http://127.0.0.1:9", maxQueue: 5, onError: (e) => errors.push(e) });
  c.pause(true);
  const sent = [];
  for (let i = 0; i < 8; i++) sent.push(c.send("t", { i }));
  assert.equal(c.stats().queued, 5);
  assert.deepEqual(errors.map((e) => [e.code, e.retrying]), [["queue_full", false], ["queue_full", false], ["queue_full", false]]);
  assert.deepEqual(errors.flatMap((e) => e.events.map((x) => x.id)), sent.slice(0, 3));
  const c2 = createClient({ url: "http://127.0.0.1:9", maxQueueBytes: 1000, onError: (e) => errors.push(e) });
  c2.pause(true);
  for (let i = 0; i < 20; i++) c2.send("t", { pad: "x".repeat(100) });
  assert.ok(c2.stats().queued <= 6 && c2.stats().queued >= 4);
  await c.close(0);
  await c2.close(0);
});

/** A client that sent 30 events and was answered 200 with `headers`, with 30 more queued. */
async function afterAnswer(t, headers) {
  const s = await scriptedServer(() => ({ status: 200, headers }));
  t.after(s.close);
  const { c, clock } = clientOn(s, { batch: 50, flushInterval: 60000 });
  for (let i = 0; i < 30; i++) c.send("t", { i });
  c.flush();
  await answered(s, c, 1);
  for (let i = 0; i < 30; i++) c.send("t", { i });
  return { s, c, clock };
}

test("RateLimit headers: the next batch waits for the budget, and batches fit the limit", async (t) => {
  const { s, c, clock } = await afterAnswer(t, { "ratelimit-limit": "10", "ratelimit-remaining": "0", "ratelimit-reset": "1" });
  assert.equal(s.requests[0].events.length, 30);
  assert.equal(clock.pending() - clock.now(), 1000, "10 events at 10/s after a budget of 0");
  clock.advance(999);
  await settle();
  assert.equal(s.requests.length, 1);
  clock.advance(1);
  await answered(s, c, 2);
  assert.equal(s.requests[1].events.length, 10, "no batch larger than the limit");
  assert.equal(clock.pending() - clock.now(), 1000);
});

test("a RateLimit budget in bytes does not pace events", async (t) => {
  const { s, c } = await afterAnswer(t, {
    "ratelimit-limit": "10",
    "ratelimit-remaining": "0",
    "ratelimit-reset": "1",
    "ratelimit-policy": '10;w=1;qu="content-bytes"',
  });
  c.flush();
  await answered(s, c, 2);
  assert.equal(s.requests[1].events.length, 30, "not cut to 10 events: the 10 are bytes");
});

test("flush and close for a graceful shutdown", async (t) => {
  const s = await scriptedServer(() => ({ status: 200 }));
  t.after(s.close);
  const c = createClient({ url: s.url, flushInterval: 60000 });
  for (let i = 0; i < 5; i++) c.send("t", { i });
  await c.close();
  assert.equal(s.requests.flatMap(ids).length, 5);
  assert.throws(() => c.send("t", {}), /after close/);
});

test("close gives up after its timeout and reports what is left", async (t) => {
  const s = await scriptedServer(() => ({ status: 503, headers: { "retry-after": "30" } }));
  t.after(s.close);
  const errors = [];
  const c = createClient({ url: s.url, flushInterval: 60000, onError: (e) => errors.push(e) });
  c.send("t", {});
  c.send("t", {});
  const started = Date.now();
  await c.close(300);
  assert.ok(Date.now() - started < 2000);
  assert.deepEqual(errors.map((e) => [e.code, e.retrying, e.events.length]), [["closed", false, 2]]);
  assert.equal(s.requests.length, 1, "Retry-After still honoured while closing");
});
