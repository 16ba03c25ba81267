// The browser bundle stays small and self-contained; the package has no runtime dependencies.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { gzipSync } from "node:zlib";

/** Gzipped bytes of dist/sluice.min.js; 4791 measured when set. */
export const BUDGET = 5 * 1024;

const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url)));

test(`bundle: dist/sluice.min.js under ${BUDGET} bytes gzipped, no imports`, () => {
  const code = readFileSync(new URL("../../dist/sluice.min.js", import.meta.url));
  const gz = gzipSync(code, { level: 9 }).length;
  assert.ok(gz <= BUDGET, `${gz} bytes gzipped, over the budget of ${BUDGET}`);
  assert.doesNotMatch(code.toString(), /\bimport\s*[{(*"']|\brequire\(/, "the bundle must not load anything");
});

test("package: no runtime dependencies, exports with types", () => {
  assert.equal(pkg.dependencies, undefined);
  assert.equal(pkg.peerDependencies, undefined);
  assert.equal(pkg.type, "module");
  for (const [k, v] of Object.entries(pkg.devDependencies)) assert.match(v, /^\d+\.\d+\.\d+$/, `${k} is pinned`);
  assert.equal(pkg.exports["."].types, "./dist/index.d.ts");
  assert.equal(pkg.exports["."].browser, "./dist/browser.js");
});

test("the browser entry outside a page is the plain client", async () => {
  const { createClient } = await import("../../dist/browser.js");
  const c = createClient({ url: "http://127.0.0.1:9" });
  assert.equal(c.keepalive, false);
  await c.close(0);
});
