// The built bundle in headless Chromium, against the real Sluice binary with browser keys and
// CORS, through a recording proxy. What each test proves is in its name; the assertions read
// Sluice's file sink (each id exactly once) and the proxy's log (requests, timing).
import { test } from "node:test";
import assert from "node:assert/strict";
import { rmSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { prerequisites, startSluice, startStatic, startProxy, launchChromium, holdAdmission, until } from "./harness.mjs";

const pre = prerequisites();

/** Each id once in the sink, and nothing else of that type. */
function assertExactlyOnce(sluice, type, ids, what) {
  const got = sluice.ids(type);
  const counts = new Map();
  for (const id of got) counts.set(id, (counts.get(id) || 0) + 1);
  const dup = [...counts].filter(([, n]) => n > 1);
  assert.deepEqual(dup, [], `${what}: duplicates in the sink`);
  const missing = ids.filter((id) => !counts.has(id));
  assert.deepEqual(missing, [], `${what}: missing from the sink`);
  assert.equal(got.length, ids.length, `${what}: events in the sink`);
}

test("browser client against Sluice", { skip: pre.skip, timeout: 180000 }, async (t) => {
  const stat = await startStatic();
  const origin = `http://127.0.0.1:${stat.port}`;
  const sluice = await startSluice(pre.sluice, origin);
  const proxy = await startProxy(sluice.url);
  const browser = await launchChromium(pre.chromium);
  t.after(async () => {
    await browser.close();
    await proxy.close();
    await sluice.stop();
    await stat.close();
  });

  /** A fresh context (own storage, own network state) with the test page loaded. */
  async function open(cfg, pageOrigin = origin) {
    const context = await browser.newContext();
    const page = await context.newPage();
    page.on("pageerror", (e) => console.error("page error:", e));
    const q = cfg ? "?cfg=" + encodeURIComponent(JSON.stringify(cfg)) : "";
    await page.goto(`${pageOrigin}/page.html${q}`);
    await page.waitForFunction(() => window.ready === true);
    return { context, page };
  }
  const base = (key, extra) => ({ url: proxy.url, apiKey: key, ...extra });
  const sendMany = (page, type, n, data = {}) =>
    page.evaluate(({ type, n, data }) => Array.from({ length: n }, (_, i) => window.client.send(type, { path: "/p/" + i, n: i, ...data })), { type, n, data });

  await t.test("batches (gzip) arrive exactly once per id", async () => {
    const { context, page } = await open(base(sluice.keys.web, { batch: 100, flushInterval: 200 }));
    const ids = await sendMany(page, "web.click", 250, { pad: "x".repeat(100) });
    await until(() => sluice.ids("web.click").length >= 250, 15000, "250 events in the sink");
    assertExactlyOnce(sluice, "web.click", ids, "batches");
    await until(() => proxy.posts("web.click").every((p) => p.answered), 5000, "the answers");
    const posts = proxy.posts("web.click");
    assert.ok(posts.every((p) => p.origin === origin && p.status === 200));
    assert.ok(posts.some((p) => p.gzip), "bodies over 1 KiB are gzipped (CompressionStream)");
    assert.ok(posts.every((p) => p.ids.length <= 100));
    assert.deepEqual(await page.evaluate(() => window.errors), []);
    await context.close();
  });

  await t.test("207 with one invalid event: it is reported with code and pointer, only the others are retried", async () => {
    // A directory where the topic's file should be: the file sink fails those writes (503,
    // retriable) until the test removes it, while the invalid event gets its 400 at once.
    const blocker = join(sluice.dir, "data", "events.web.flaky.ndjson");
    mkdirSync(blocker);
    const { context, page } = await open(base(sluice.keys.web, { batch: 10, flushInterval: 100 }));
    const ids = await page.evaluate(() => {
      const c = window.client;
      const out = [];
      for (let i = 0; i < 4; i++) out.push(c.send("web.flaky", { path: "/ok/" + i }));
      out.push(c.send("web.flaky", { n: "not a path" }));
      return out;
    });
    const invalid = ids[4];
    const valid = ids.slice(0, 4);
    await until(() => proxy.posts("web.flaky").some((p) => p.answered), 10000, "the first answer");
    const first = proxy.posts("web.flaky")[0];
    assert.equal(first.status, 503, first.answer);
    assert.ok(first.retryAfter >= 1);
    rmSync(blocker, { recursive: true });
    await until(() => sluice.ids("web.flaky").length >= 4, 15000, "the valid events in the sink");
    assertExactlyOnce(sluice, "web.flaky", valid, "flaky");
    const posts = proxy.posts("web.flaky");
    assert.equal(posts.filter((p) => p.ids.includes(invalid)).length, 1, "the invalid event is never sent again");
    for (const id of valid) assert.ok(posts.filter((p) => p.ids.includes(id)).length >= 2, "valid events retried");
    const retry = posts[1];
    assert.ok(retry.arrived - first.answered >= first.retryAfter * 1000 - 20, "Retry-After honoured");
    const errors = await page.evaluate(() => window.errors);
    const perm = errors.filter((e) => !e.retrying);
    assert.equal(perm.length, 1);
    assert.equal(perm[0].code, "schema_violation");
    assert.equal(perm[0].status, 400);
    assert.match(perm[0].pointer, /^\/data/);
    assert.deepEqual(perm[0].ids, [invalid]);

    // And the plain 207: one invalid among valid ones, nothing to retry.
    const more = await page.evaluate(() => [window.client.send("web.click", { path: "/a" }), window.client.send("web.click", { bad: 1 }), window.client.send("web.click", { path: "/b" })]);
    await until(() => sluice.ids("web.click").includes(more[2]), 10000, "the 207's events");
    const p = proxy.posts("web.click").find((x) => x.ids.includes(more[1]));
    await until(() => p.answered, 5000, "the 207");
    assert.equal(p.status, 207);
    await page.evaluate(() => window.client.flush());
    assert.equal(proxy.posts("web.click").filter((x) => x.ids.some((id) => more.includes(id))).length, 1, "one request");
    assert.equal((await page.evaluate(() => window.errors)).filter((e) => e.code === "schema_violation").length, 2);
    await context.close();
  });

  await t.test("a Sluice shedding load (admission full): Retry-After is honoured, nothing lost", async () => {
    const release = await holdAdmission(sluice.port, sluice.keys.server);
    const { context, page } = await open(base(sluice.keys.web, { batch: 20, flushInterval: 50 }));
    const ids = await sendMany(page, "web.shed", 20);
    await until(() => proxy.posts("web.shed").filter((p) => p.status === 503).length >= 2, 15000, "two 503 answers");
    release();
    await until(() => sluice.ids("web.shed").length >= 20, 15000, "the events in the sink");
    assertExactlyOnce(sluice, "web.shed", ids, "shed");
    await until(() => proxy.posts("web.shed").every((p) => p.answered), 5000, "the answers");
    const posts = proxy.posts("web.shed");
    const shed = posts.filter((p) => p.status === 503);
    for (let i = 1; i < posts.length; i++) {
      const prev = posts[i - 1];
      if (prev.status !== 503) continue;
      assert.ok(prev.retryAfter >= 1, "503 carries Retry-After");
      const gap = posts[i].arrived - prev.answered;
      assert.ok(gap >= prev.retryAfter * 1000 - 20, `request ${i} came ${gap} ms after a Retry-After of ${prev.retryAfter} s`);
    }
    assert.ok(shed.every((p) => JSON.parse(p.answer).error.code === "overloaded"));
    assert.equal(posts.length, shed.length + 1, "one request per Retry-After, then the one that went through");
    t.diagnostic(`shedding: ${shed.length} answers 503 (Retry-After ${shed.map((p) => p.retryAfter)}), ${posts.length} requests`);
    await context.close();
  });

  await t.test("a tenant over its rate limit: RateLimit headers pace the client, Retry-After after any 429", async () => {
    const { context, page } = await open(base(sluice.keys.slow, { batch: 10, flushInterval: 20 }));
    const started = Date.now();
    const ids = await sendMany(page, "web.rate", 60);
    await until(() => sluice.ids("web.rate").length >= 60, 20000, "60 events in the sink");
    const took = Date.now() - started;
    assertExactlyOnce(sluice, "web.rate", ids, "rate");
    await until(() => proxy.posts("web.rate").every((p) => p.answered), 5000, "the answers");
    const posts = proxy.posts("web.rate");
    const limited = posts.filter((p) => p.status === 429);
    for (let i = 1; i < posts.length; i++) {
      if (posts[i - 1].status === 429) assert.ok(posts[i].arrived - posts[i - 1].answered >= posts[i - 1].retryAfter * 1000 - 20);
    }
    // 20 events/s with a 1 s burst: 60 events need ~2 s; a client that ignored the budget
    // would get a 429 for most requests.
    assert.ok(took >= 1500, `took ${took} ms`);
    assert.ok(limited.length <= 1, `${limited.length} answers 429: ` + JSON.stringify(posts.map((p) => [p.arrived - started, p.answered - started, p.status, p.ids.length, p.retryAfter])));
    assert.equal(posts.length, 6 + limited.length);
    t.diagnostic(`rate limit: ${posts.length} requests, ${limited.length} answered 429, ${took} ms`);
    await context.close();
  });

  for (const how of ["navigation", "close"]) {
    await t.test(`the page goes away (${how}) with events queued: they arrive on keepalive or on the next load, once`, async () => {
      const cfg = base(sluice.keys.web, { batch: 1000, batchBytes: 500000, flushInterval: 60000 });
      const { context, page } = await open(cfg);
      const type = "web.close";
      const before = sluice.ids(type).length;
      const postsBefore = proxy.posts(type).length;
      // ~400 bytes each: ~120 KB, more than keepalive's 64 KiB.
      const ids = await sendMany(page, type, 300, { pad: "y".repeat(300) });
      if (how === "navigation") await page.goto("about:blank");
      else await page.close({ runBeforeUnload: true });
      await until(() => proxy.posts(type).length > postsBefore, 10000, "the keepalive request");
      await until(() => proxy.posts(type).every((p) => p.answered), 10000, "its answer");
      const onKeepalive = proxy.posts(type).slice(postsBefore).flatMap((p) => p.ids);
      assert.ok(onKeepalive.length > 0 && onKeepalive.length < 300, `${onKeepalive.length} on keepalive: ` + JSON.stringify(proxy.posts(type).slice(postsBefore).map((p) => [p.ids.length, p.bytes, p.gzip, p.status])));
      assert.ok(proxy.posts(type).slice(postsBefore).every((p) => !p.gzip && p.bytes <= 65536));
      // The next load of a page of that origin sends the rest.
      const next = await context.newPage();
      await next.goto(`${origin}/page.html?cfg=${encodeURIComponent(JSON.stringify(cfg))}`);
      await next.waitForFunction(() => window.ready === true);
      await next.evaluate(() => window.client.flush());
      await until(() => sluice.ids(type).length >= before + 300, 10000, "all 300 in the sink");
      const got = sluice.ids(type).slice(before);
      assert.equal(got.length, 300);
      assert.deepEqual([...got].sort(), [...ids].sort(), "each id exactly once");
      assert.equal(await next.evaluate(() => localStorage.length), 0, "storage emptied");
      t.diagnostic(`${how}: ${onKeepalive.length} events on keepalive, ${300 - onKeepalive.length} on the next load`);
      await context.close();
    });
  }

  await t.test("a wrong origin is refused by the CORS preflight and reported", async () => {
    const wrong = `http://localhost:${stat.port}`;
    const { context, page } = await open(base(sluice.keys.web, { flushInterval: 20 }), wrong);
    const ids = await sendMany(page, "web.origin", 3);
    await until(() => page.evaluate(() => window.errors.length > 0), 10000, "onError");
    const errors = await page.evaluate(() => window.errors);
    assert.equal(errors[0].code, "network_error");
    assert.equal(errors[0].retrying, true);
    assert.deepEqual(errors[0].ids, ids);
    const seen = proxy.log.filter((r) => r.origin === wrong);
    assert.ok(seen.length >= 1 && seen.every((r) => r.method === "OPTIONS" && r.status === 403), JSON.stringify(seen.map((r) => [r.method, r.status])));
    assert.match(seen[0].answer, /origin_not_allowed/);
    assert.deepEqual(sluice.ids("web.origin"), []);
    assert.equal(await page.evaluate(() => window.client.stats().queued + window.client.stats().inFlight), 3, "kept, not dropped");
    await context.close();
  });

  await t.test("offline pauses sending; online resumes it", async () => {
    const { context, page } = await open(base(sluice.keys.web, { flushInterval: 20 }));
    await context.setOffline(true);
    await until(() => page.evaluate(() => navigator.onLine === false), 5000, "offline");
    const ids = await sendMany(page, "web.offline", 5);
    // Wait well past flushInterval, for the condition that must stay true.
    await page.waitForTimeout(500);
    assert.equal(proxy.posts("web.offline").length, 0, "nothing sent while offline");
    assert.deepEqual(await page.evaluate(() => window.errors), []);
    await context.setOffline(false);
    await until(() => sluice.ids("web.offline").length >= 5, 10000, "events after going online");
    assertExactlyOnce(sluice, "web.offline", ids, "offline");
    await context.close();
  });

  await t.test("JWT: a 401 calls getToken again once", async () => {
    const bad = sluice.jwt("not-the-secret-0123456789abcdef0123456789ab");
    const good = sluice.jwt();
    const { context, page } = await open({ url: proxy.url, tokens: [bad, good], flushInterval: 20 });
    const ids = await sendMany(page, "web.jwt", 3);
    await until(() => sluice.ids("web.jwt").length >= 3, 10000, "events with the second token");
    assertExactlyOnce(sluice, "web.jwt", ids, "jwt");
    await until(() => proxy.posts("web.jwt").every((p) => p.answered), 5000, "the answers");
    assert.deepEqual(proxy.posts("web.jwt").map((p) => p.status), [401, 200]);
    assert.deepEqual(await page.evaluate(() => window.errors), []);
    await context.close();
  });
});
