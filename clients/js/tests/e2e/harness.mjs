// What the browser tests run against: the real Sluice binary (SLUICE_BIN, else the debug build
// `cargo test` made) with browser keys, a file sink and small admission limits; a static server
// for the test page and the bundle; a recording proxy in front of Sluice so the tests can count
// requests and read their timing; and Debian's Chromium driven by playwright-core.
import { spawn, execFileSync } from "node:child_process";
import { createServer, request as httpRequest } from "node:http";
import { existsSync, mkdtempSync, mkdirSync, readFileSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, extname } from "node:path";
import { fileURLToPath } from "node:url";
import { gunzipSync } from "node:zlib";
import { createHmac } from "node:crypto";
import net from "node:net";

export const PKG = fileURLToPath(new URL("../..", import.meta.url));
const REPO = join(PKG, "../..");

/** The Sluice binary and Chromium, or why the browser tests cannot run. */
export function prerequisites() {
  const candidates = [
    process.env.SLUICE_BIN,
    process.env.CARGO_TARGET_DIR && join(process.env.CARGO_TARGET_DIR, "debug/sluice"),
    join(REPO, "target/debug/sluice"),
  ].filter(Boolean);
  const sluice = candidates.find((p) => existsSync(p));
  const chromium = process.env.CHROMIUM_BIN || "/usr/bin/chromium";
  const missing = [];
  if (!sluice) missing.push(`no Sluice binary (tried ${candidates.join(", ")}; set SLUICE_BIN)`);
  if (!existsSync(chromium)) missing.push(`no Chromium at ${chromium} (scripts/debian-package chromium chromium)`);
  if (!existsSync(join(PKG, "dist/sluice.min.js"))) missing.push("no dist/sluice.min.js (npm run build)");
  if (missing.length && process.env.SLUICE_JS_E2E === "required") throw new Error(missing.join("; "));
  return { sluice, chromium, skip: missing.length ? missing.join("; ") : false };
}

export async function freePort() {
  const s = net.createServer();
  await new Promise((r) => s.listen(0, "127.0.0.1", r));
  const { port } = s.address();
  await new Promise((r) => s.close(r));
  return port;
}

/** Waits for `cond()` (may be async) to be truthy, failing after `ms`. */
export async function until(cond, ms, what) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const SCHEMA = {
  $schema: "https://json-schema.org/draft/2020-12/schema",
  type: "object",
  properties: { path: { type: "string" }, n: { type: "integer" }, pad: { type: "string" } },
  required: ["path"],
};
export const TYPES = ["web.click", "web.flaky", "web.shed", "web.rate", "web.close", "web.origin", "web.offline", "web.jwt"];

function generateKey(bin, args) {
  const out = execFileSync(bin, ["keys", "generate", ...args], { encoding: "utf8" });
  const key = out.split("\n")[0].trim();
  const entry = out.slice(out.indexOf("[[auth.api_keys]]"));
  return { key, entry };
}

/** Starts Sluice in a temp dir; `pageOrigin` is the only origin its browser keys allow. */
export async function startSluice(bin, pageOrigin) {
  const dir = mkdtempSync(join(tmpdir(), "sluice-js-e2e-"));
  for (const t of TYPES) {
    mkdirSync(join(dir, "schemas", t), { recursive: true });
    writeFileSync(join(dir, "schemas", t, "1.json"), JSON.stringify(SCHEMA));
  }
  mkdirSync(join(dir, "data"));
  const port = await freePort();
  const web = generateKey(bin, ["--class", "browser", "--tenant", "web", "--scope", "events:write:web.*", "--origin", pageOrigin]);
  const slow = generateKey(bin, ["--class", "browser", "--tenant", "slow", "--scope", "events:write:web.*", "--origin", pageOrigin]);
  const server = generateKey(bin, ["--tenant", "hog", "--scope", "events:write:web.*"]);
  const jwtSecret = "e2e-secret-0123456789abcdef0123456789abcdef";
  writeFileSync(
    join(dir, "sluice.toml"),
    `[server]
listen = "127.0.0.1:${port}"
shutdown_grace = "2s"
drain_delay = "0s"

[schemas]
dir = "${dir}/schemas"

[registry]
url = "sqlite://${dir}/registry.db"

[file]
dir = "${dir}/data"

# Small enough that one held request fills the process (the shedding test).
[limits]
max_body_bytes = "1MiB"
max_decompressed_bytes = "1MiB"
max_event_bytes = "1MiB"
max_inflight_bytes = "1MiB"
max_inflight_bytes_per_connection = "1MiB"
admission_wait = "200ms"

[[auth.keys]]
kid = "e2e"
algorithm = "HS256"
secret = "${jwtSecret}"

[auth.cors]
allowed_origins = ["${pageOrigin}"]

${web.entry}
${slow.entry}
${server.entry}

[[rate_limits.tenants]]
tenant = "slow"
events_per_second = 20
`,
  );
  const proc = spawn(bin, ["serve", "--config", join(dir, "sluice.toml")], { cwd: dir, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, RUST_LOG: "warn" } });
  let log = "";
  proc.stdout.on("data", (d) => (log += d));
  proc.stderr.on("data", (d) => (log += d));
  const url = `http://127.0.0.1:${port}`;
  await until(async () => {
    if (proc.exitCode !== null) throw new Error("sluice exited: " + log);
    try {
      return (await fetch(url + "/readyz")).ok;
    } catch {
      return false;
    }
  }, 30000, "Sluice /readyz");
  return {
    url,
    port,
    dir,
    keys: { web: web.key, slow: slow.key, server: server.key },
    jwt: (secret = jwtSecret) => jwtHS256({ tenant: "web", scope: "events:write:web.*", exp: Math.floor(Date.now() / 1000) + 600 }, secret, "e2e"),
    log: () => log,
    /** ce_id of every line of a type's NDJSON file, in order. */
    ids(type) {
      const f = join(dir, "data", `events.${type}.ndjson`);
      if (!existsSync(f)) return [];
      return readFileSync(f, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l).headers.ce_id);
    },
    async stop() {
      proc.kill("SIGTERM");
      await new Promise((r) => (proc.exitCode !== null ? r() : proc.on("exit", r)));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function b64url(x) {
  return Buffer.from(typeof x === "string" ? x : JSON.stringify(x)).toString("base64url");
}
export function jwtHS256(claims, secret, kid) {
  const head = b64url({ alg: "HS256", typ: "JWT", kid }) + "." + b64url(claims);
  return head + "." + createHmac("sha256", secret).update(head).digest("base64url");
}

/** Serves the package directory (the test page and dist/). */
export async function startStatic() {
  const types = { ".html": "text/html", ".js": "text/javascript", ".mjs": "text/javascript" };
  const server = createServer((req, res) => {
    const path = new URL(req.url, "http://x").pathname;
    const file = path === "/page.html" ? join(PKG, "tests/e2e/page.html") : path.startsWith("/dist/") ? join(PKG, path) : null;
    if (!file || !existsSync(file)) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "content-type": types[extname(file)] || "application/octet-stream", "cache-control": "no-store" });
    res.end(readFileSync(file));
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return { port: server.address().port, close: () => new Promise((r) => { server.closeAllConnections(); server.close(r); }) };
}

/**
 * A pass-through proxy in front of Sluice that records every exchange: method, Origin, when
 * the request arrived and when its answer left, the status, Retry-After, and the ids in the body.
 */
export async function startProxy(target) {
  const log = [];
  const server = createServer((req, res) => {
    const chunks = [];
    const arrived = Date.now();
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks);
      const rec = { method: req.method, origin: req.headers.origin, arrived, gzip: req.headers["content-encoding"] === "gzip", bytes: body.length, ids: [], types: [] };
      if (req.method === "POST") {
        try {
          const events = JSON.parse((rec.gzip ? gunzipSync(body) : body).toString("utf8"));
          rec.ids = events.map((e) => e.id);
          rec.types = [...new Set(events.map((e) => e.type))];
        } catch {
          rec.ids = null;
        }
      }
      log.push(rec);
      const up = httpRequest(target + req.url, { method: req.method, headers: req.headers }, (r) => {
        const out = [];
        r.on("data", (c) => out.push(c));
        r.on("end", () => {
          rec.status = r.statusCode;
          rec.retryAfter = r.headers["retry-after"] === undefined ? undefined : Number(r.headers["retry-after"]);
          rec.answered = Date.now();
          rec.answer = Buffer.concat(out).toString("utf8");
          res.writeHead(r.statusCode, r.headers);
          res.end(Buffer.concat(out));
        });
      });
      up.on("error", (e) => {
        rec.status = 502;
        rec.answered = Date.now();
        res.writeHead(502).end(String(e));
      });
      up.end(body);
    });
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    log,
    /** Exchanges carrying events of `type`. */
    posts: (type) => log.filter((r) => r.method === "POST" && r.types.includes(type)),
    close: () => new Promise((r) => { server.closeAllConnections(); server.close(r); }),
  };
}

/** Opens a connection straight to Sluice that declares a 1 MiB body and sends none of it:
 * its bytes are admitted before they are read, so it fills `max_inflight_bytes` until closed. */
export async function holdAdmission(port, apiKey) {
  const sock = net.connect(port, "127.0.0.1");
  await new Promise((r, j) => sock.on("connect", r).on("error", j));
  sock.on("error", () => {});
  sock.write(`POST /v1/events HTTP/1.1\r\nhost: 127.0.0.1\r\nx-api-key: ${apiKey}\r\ncontent-type: application/cloudevents-batch+json\r\ncontent-length: 1048576\r\n\r\n[`);
  return () => sock.destroy();
}

export async function launchChromium(executablePath) {
  const { chromium } = await import("playwright-core");
  return chromium.launch({
    executablePath,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
}
