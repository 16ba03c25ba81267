// UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then a 12-bit counter seeded at random each
// millisecond (so ids made in one millisecond still sort in the order they were made), then 62
// random bits. Made on the client, so an event keeps its id through every retry and downstream
// consumers can drop duplicates by id.

const HEX: string[] = [];
for (let i = 0; i < 256; i++) HEX.push((i + 0x100).toString(16).slice(1));

// One getRandomValues call per 32 ids rather than one per id.
const pool = new Uint8Array(256);
let at = pool.length;
function random(n: number): number {
  if (at + n > pool.length) {
    crypto.getRandomValues(pool);
    at = 0;
  }
  const i = at;
  at += n;
  return i;
}

let lastMs = -1;
let counter = 0;

/** A new UUIDv7 string; `now` is for tests. Never goes backwards, even if the clock does. */
export function uuidv7(now: number = Date.now()): string {
  if (now > lastMs) {
    lastMs = now;
    const r = random(2);
    // Start in the lower half so the counter has room before it runs out.
    counter = ((pool[r] << 8) | pool[r + 1]) & 0x7ff;
  } else if (++counter > 0xfff) {
    // 4096 ids in one millisecond: borrow the next one.
    lastMs++;
    counter = 0;
  }
  const ms = lastMs;
  const hi = Math.floor(ms / 0x1000000); // top 24 of the 48 bits
  const lo = ms % 0x1000000;
  const r = random(8);
  const p = pool;
  return (
    HEX[(hi >>> 16) & 0xff] + HEX[(hi >>> 8) & 0xff] + HEX[hi & 0xff] +
    HEX[(lo >>> 16) & 0xff] + "-" + HEX[(lo >>> 8) & 0xff] + HEX[lo & 0xff] + "-" +
    HEX[0x70 | (counter >>> 8)] + HEX[counter & 0xff] + "-" +
    HEX[0x80 | (p[r] & 0x3f)] + HEX[p[r + 1]] + "-" +
    HEX[p[r + 2]] + HEX[p[r + 3]] + HEX[p[r + 4]] + HEX[p[r + 5]] + HEX[p[r + 6]] + HEX[p[r + 7]]
  );
}
