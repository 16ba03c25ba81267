// The client in a web page: what is queued when the page is hidden or closed leaves in
// keepalive requests (64 KiB of bodies in flight at most, the Fetch standard's cap) and the
// rest waits in localStorage for the next load of a page of the same origin; sending pauses
// while the browser is offline.
//
// Not sendBeacon: it cannot set headers, and Sluice takes keys only in `X-API-Key` or
// `Authorization`, never in the URL (where they would end up in access logs).

import { Client, KEEPALIVE_BUDGET, utf8Length, type ClientOptions, type CloudEvent, type Entry } from "./core.js";

export { Client, KEEPALIVE_BUDGET } from "./core.js";
export type { ClientOptions, CloudEvent, SendError, Stats, Clock } from "./core.js";
export { uuidv7 } from "./uuid.js";

export interface BrowserOptions extends ClientOptions {
  /** localStorage key for events the page could not send before it went away; `false`: none.
   * Default: `sluice:` + the endpoint + the key's id, so two clients do not share one. */
  storageKey?: string | false;
}

function localStore(): Storage | null {
  try {
    return window.localStorage;
  } catch {
    return null; // blocked (third-party frames, privacy modes)
  }
}

/** A client that also keeps events across page loads; outside a page, the plain client. */
export function createClient(options: BrowserOptions): Client {
  const client = new Client(options);
  if (typeof window === "undefined" || typeof document === "undefined") return client;
  client.keepalive = true;
  const storage = options.storageKey === false ? null : localStore();
  const key = options.storageKey || "sluice:" + client.endpoint + (options.apiKey ? "#" + options.apiKey.slice(0, 19) : "");
  const maxQueue = options.maxQueue || 10000;
  let hidden = false;
  let leaving = false;
  /** Ids of requests in flight (not keepalive) when the page was hidden: stored in case the
   * page dies, and skipped when it comes back, since their answers arrive here as usual. */
  let skip: Set<string> | undefined;

  const read = (): CloudEvent[] => {
    try {
      const v = JSON.parse(storage!.getItem(key) || "[]");
      return Array.isArray(v) ? v.filter((e) => e && typeof e === "object" && typeof e.id === "string" && typeof e.type === "string") : [];
    } catch {
      return [];
    }
  };

  /** Adds events to storage (oldest dropped past `maxQueue` or the quota); false without storage. */
  const keep = (entries: Entry[]): boolean => {
    if (!storage) return false;
    const stored = read();
    const ids = new Set(stored.map((e) => e.id));
    let all = stored.concat(entries.map((x) => x.e).filter((e) => !ids.has(e.id)));
    let dropped: CloudEvent[] = all.slice(0, Math.max(0, all.length - maxQueue));
    all = all.slice(dropped.length);
    for (;;) {
      try {
        if (all.length) storage.setItem(key, JSON.stringify(all));
        else storage.removeItem(key);
        break;
      } catch {
        // Over the quota: give up the older half and try again.
        const half = Math.ceil(all.length / 2);
        dropped = dropped.concat(all.slice(0, half));
        all = all.slice(half);
      }
    }
    if (dropped.length && options.onError) {
      options.onError({ code: "storage_full", message: "localStorage is full; the oldest events kept for the next load were dropped", events: dropped, retrying: false });
    }
    return true;
  };

  const restore = () => {
    if (!storage) return;
    const stored = read();
    storage.removeItem(key);
    const held = client.holds();
    if (skip) for (const id of skip) held.add(id);
    skip = undefined;
    const now = Date.now();
    const entries = stored.filter((e) => !held.has(e.id)).map((e): Entry => {
      const j = JSON.stringify(e);
      return { e, j, n: utf8Length(j), t: 0, at: now };
    });
    if (entries.length) client.enqueue(entries, true);
  };

  /** Synchronous: the page may be gone once this returns. */
  const leave = () => {
    leaving = false;
    if (client.mayUnload()) {
      for (;;) {
        const batch = client.take(KEEPALIVE_BUDGET - client.keepaliveBytes, false);
        if (!batch.length) break;
        client.post(batch, true);
      }
    }
    const rest = client.drain();
    const unkept = client.unkept();
    skip = new Set(unkept.map((x) => x.e.id));
    // Without storage the rest stays queued, for a page that is only hidden.
    if ((rest.length || unkept.length) && !keep(unkept.concat(rest))) client.enqueue(rest, true);
  };

  const hide = () => {
    hidden = true;
    leave();
  };
  const show = () => {
    if (!hidden) return;
    hidden = false;
    restore();
    client.pump();
  };

  // Events sent while hidden (a "page left" event in the app's own pagehide handler) follow at
  // once, together, after the handler returns.
  client.onEnqueue = () => {
    if (!hidden) return false;
    if (!leaving) {
      leaving = true;
      queueMicrotask(leave);
    }
    return true;
  };
  client.onAbandon = keep;

  addEventListener("pagehide", hide);
  addEventListener("pageshow", (e) => (e as PageTransitionEvent).persisted && show());
  document.addEventListener("visibilitychange", () => (document.visibilityState === "hidden" ? hide() : show()));
  addEventListener("offline", () => client.pause(true));
  addEventListener("online", () => client.pause(false));
  if (navigator.onLine === false) client.paused = true;
  restore();
  return client;
}
