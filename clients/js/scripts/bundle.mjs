// Builds dist/sluice.min.js, the browser entry as one minified ES module for a <script
// type="module"> or a CDN, and prints its gzipped size (the budget is checked by
// tests/unit/bundle.test.mjs).
import { build } from "esbuild";
import { readFileSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const outfile = root + "dist/sluice.min.js";
await build({
  entryPoints: [root + "src/browser.ts"],
  bundle: true,
  minify: true,
  format: "esm",
  target: "es2022",
  outfile,
  legalComments: "none",
});
const code = readFileSync(outfile);
console.log(`dist/sluice.min.js: ${code.length} bytes, ${gzipSync(code, { level: 9 }).length} gzipped`);
