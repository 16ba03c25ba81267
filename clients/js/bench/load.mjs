#!/usr/bin/env node
// Load mode that drives a running Sluice through the Node client, to measure what the client
// itself costs: events/s, and this process's CPU (process.cpuUsage: making the events, JSON,
// ids, batching, gzip, fetch) per event. Run Sluice with the blackhole sink so the server is
// not the limit, and read "per core" as events per CPU-second of this process.
//
//   node bench/load.mjs --url http://127.0.0.1:8080 --duration 10 [--api-key K] [--batch 100]
//        [--concurrency 4] [--size 300] [--compression true|false] [--fetch real|null] [--json]
//
// --fetch null answers 200 inside the process without a request: the client's own logic,
// JSON and gzip alone, without Node's HTTP stack.
import { createClient } from "../dist/index.js";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith("--") ? [...acc, [a.slice(2), all[i + 1] && !all[i + 1].startsWith("--") ? all[i + 1] : "true"]] : acc), []),
);
const url = args.url || "http://127.0.0.1:8080";
const seconds = Number(args.duration || 10);
const batch = Number(args.batch || 100);
const concurrency = Number(args.concurrency || 4);
const size = Number(args.size || 300);
const compression = args.compression !== "false";

const nullFetch = async (_url, init) => {
  // Read the body as fetch would (a gzip body is a Uint8Array already).
  if (typeof init.body === "string") Buffer.byteLength(init.body);
  return new Response(null, { status: 200 });
};

const errors = new Map();
const client = createClient({
  url,
  apiKey: args["api-key"],
  batch,
  concurrency,
  flushInterval: 50,
  compression,
  maxQueue: 1_000_000,
  maxQueueBytes: 1 << 30,
  fetch: args.fetch === "null" ? nullFetch : undefined,
  onError: (e) => errors.set(e.code, (errors.get(e.code) || 0) + e.events.length),
});

const pages = ["/", "/pricing", "/docs/getting-started", "/blog/2026/ingest", "/products/42", "/checkout"];
const pad = "x".repeat(Math.max(0, size - 150));
const highWater = batch * concurrency * 4;
const tick = () => new Promise((r) => setImmediate(r));

const cpu0 = process.cpuUsage();
const t0 = performance.now();
const end = t0 + seconds * 1000;
let made = 0;
while (performance.now() < end) {
  // Keep the queue a few batches ahead of the requests in flight, no more.
  while (client.stats().queued < highWater) {
    const i = made++;
    client.send("app.page_view", { url: "https://shop.example.com" + pages[i % pages.length], referrer: "https://www.example.org/search?q=" + (i % 1000), duration_ms: i % 30000, pad }, { partitionkey: "user-" + (i % 10000) });
  }
  await tick();
}
await client.close(30000);
const wall = (performance.now() - t0) / 1000;
const cpu = process.cpuUsage(cpu0);
const cpuSeconds = (cpu.user + cpu.system) / 1e6;
const s = client.stats();
const report = {
  url: args.fetch === "null" ? "(null fetch)" : url,
  batch,
  concurrency,
  event_bytes: JSON.stringify({ specversion: "1.0", id: "0190b6f2-6c1e-7a3b-8c2d-1234567890ab", type: "app.page_view", time: new Date().toISOString(), partitionkey: "user-1234", data: { url: "https://shop.example.com/pricing", referrer: "https://www.example.org/search?q=123", duration_ms: 12345, pad } }).length,
  compression,
  seconds: Number(wall.toFixed(2)),
  events_sent: s.sent,
  requests: s.requests,
  events_per_second: Math.round(s.sent / wall),
  client_cpu_seconds: Number(cpuSeconds.toFixed(2)),
  client_cpu_seconds_per_million_events: Number(((cpuSeconds / s.sent) * 1e6).toFixed(2)),
  client_events_per_cpu_second: Math.round(s.sent / cpuSeconds),
  errors: Object.fromEntries(errors),
};
if (args.json) console.log(JSON.stringify(report));
else for (const [k, v] of Object.entries(report)) console.log(`${k.padEnd(40)} ${typeof v === "object" ? JSON.stringify(v) : v}`);
if (!s.sent) process.exit(1);
