-- wrk script for the monitor load test (tools/bench/monitor-load.sh).
-- Debian's wrk 4.1 has no -R (that is wrk2): each connection waits
-- `delay()` ms after every response; 4 connections × 17 ms give ~200 requests/s.
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("GW_TOKEN") or "")

function delay()
  return tonumber(os.getenv("GW_DELAY_MS") or "17")
end

local codes = {}
function response(status, headers, body)
  codes[status] = (codes[status] or 0) + 1
end

function done(summary, latency, requests)
  io.write(string.format("requests/s %.1f\n", summary.requests / (summary.duration / 1e6)))
  for _, p in pairs({50, 90, 99, 99.9}) do
    io.write(string.format("p%s %.3f ms\n", p, latency:percentile(p) / 1000))
  end
  io.write(string.format("max %.3f ms\n", latency.max / 1000))
  io.write(string.format("non-2xx %d, errors %d\n", summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
