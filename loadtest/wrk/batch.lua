-- wrk script: POST batches of app.page_view events (ids left out: Sluice assigns UUIDv7s).
-- Usage: wrk -t1 -c16 -d20s -s loadtest/wrk/batch.lua http://127.0.0.1:8080/v1/events
-- BATCH (events per request, default 100) from the environment.
local n = tonumber(os.getenv("BATCH") or "100")
local events = {}
for i = 1, n do
  events[i] = string.format(
    '{"type":"app.page_view","source":"/bench","partitionkey":"user-%d","data":{"url":"https://example.com/products/%d?ref=bench","referrer":"https://example.com/","duration_ms":%d}}',
    i % 50, i, i * 7)
end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/cloudevents-batch+json"
wrk.body = "[" .. table.concat(events, ",") .. "]"

local non2xx = 0
response = function(status, headers, body)
  if status ~= 200 then non2xx = non2xx + 1 end
end

done = function(summary, latency, requests)
  io.write(string.format("events/s: %.0f (batch %d)\n", summary.requests / (summary.duration / 1e6) * n, n))
  io.write(string.format("p50 %.1f ms, p99 %.1f ms\n", latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
