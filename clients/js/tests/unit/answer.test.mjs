import { test } from "node:test";
import assert from "node:assert/strict";
import { judge, retryAfter, retriable } from "../../dist/answer.js";
import { uuidv7 } from "../../dist/uuid.js";

test("judge: whole-request statuses", () => {
  assert.deepEqual(judge(200, undefined, ["a", "b"]), [0, 0]);
  assert.deepEqual(judge(503, { error: { code: "overloaded" } }, ["a"]), [503]);
  assert.deepEqual(judge(429, { results: [{ index: 0, status: 200 }] }, ["a"]), [429], "429 is about the request");
  assert.deepEqual(judge(207, "garbage", ["a"]), [-1]);
  assert.deepEqual(judge(403, { error: { code: "origin_not_allowed", message: "m" } }, ["a"]), [
    { status: 403, code: "origin_not_allowed", message: "m", pointer: undefined },
  ]);
  assert.deepEqual(judge(418, null, ["a"]), [{ status: 418, code: "http_418", message: "HTTP 418", pointer: undefined }]);
});

test("judge: per-event results, all rejected (400) and mixed (503 with a 400)", () => {
  const v = judge(503, { results: [{ index: 0, id: "a", status: 503 }, { index: 1, id: "b", status: 400, error: { code: "schema_violation", pointer: "/data/x", message: "m" } }] }, ["a", "b"]);
  assert.equal(v[0], 503);
  assert.equal(v[1].code, "schema_violation");
  assert.equal(v[1].pointer, "/data/x");
  assert.deepEqual(judge(207, { results: [{ index: 0, status: 200.5 }, { index: 1.5, status: 200 }] }, ["a", "b"]), [-1, -1]);
});

test("retriable statuses", () => {
  assert.deepEqual([408, 425, 429, 500, 502, 503, 504].map(retriable), [true, true, true, true, true, true, true]);
  assert.deepEqual([400, 401, 403, 413, 415, 501].map(retriable), [false, false, false, false, false, false]);
});

test("Retry-After: seconds, HTTP-date, garbage, negative and huge", () => {
  const now = Date.parse("Wed, 21 Oct 2026 07:28:00 GMT");
  assert.equal(retryAfter("2", now, 60000), 2000);
  assert.equal(retryAfter(" 2 ", now, 60000), 2000);
  assert.equal(retryAfter("Wed, 21 Oct 2026 07:28:05 GMT", now, 60000), 5000);
  assert.equal(retryAfter("Wed, 21 Oct 2026 07:27:00 GMT", now, 60000), 0, "a date in the past: now");
  assert.equal(retryAfter("99999999999", now, 60000), 60000);
  assert.equal(retryAfter("-1", now, 60000), undefined);
  assert.equal(retryAfter("soon", now, 60000), undefined);
  assert.equal(retryAfter(null, now, 60000), undefined);
});

test("uuidv7: layout, time, order within a millisecond, never backwards", () => {
  const re = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
  const t = 1_700_000_000_123;
  const id = uuidv7(t);
  assert.match(id, re);
  assert.equal(parseInt(id.replace(/-/g, "").slice(0, 12), 16), t);
  const many = [];
  for (let i = 0; i < 10000; i++) many.push(uuidv7(t + 1));
  for (const x of many) assert.match(x, re);
  assert.equal(new Set(many).size, many.length);
  assert.deepEqual([...many].sort(), many, "sorted in the order made, across the counter's overflow");
  const back = uuidv7(t - 5000);
  assert.ok(back > many[many.length - 1], "a clock that went back does not reorder");
});
