// The client without the page lifecycle: Node, Deno, Bun, workers. Call `flush()` or
// `close()` before the process exits.

import { Client, type ClientOptions } from "./core.js";

export { Client, KEEPALIVE_BUDGET } from "./core.js";
export type { ClientOptions, CloudEvent, SendError, Stats, Clock } from "./core.js";
export { uuidv7 } from "./uuid.js";

/** A client that batches and retries; see {@link ClientOptions}. */
export function createClient(options: ClientOptions): Client {
  return new Client(options);
}
