-- wrk script for bench/proxy.sh: prints one machine-readable summary line (latencies in microseconds).
-- With BENCH_TOKENS_FILE set (one session token per line), every request carries a random one of
-- them as its session cookie, so lookups spread over the whole session store.
local tokens_file = os.getenv("BENCH_TOKENS_FILE")
if tokens_file and tokens_file ~= "" then
  local tokens = {}
  for line in io.lines(tokens_file) do
    if #line > 0 then tokens[#tokens + 1] = line end
  end
  init = function(args)
    math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 100000)
  end
  request = function()
    return wrk.format(nil, nil, { ["Cookie"] = "portcullis_session=" .. tokens[math.random(#tokens)] })
  end
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d rps=%.1f p50_us=%.0f p90_us=%.0f p99_us=%.0f max_us=%.0f " ..
    "err_connect=%d err_read=%d err_write=%d err_status=%d err_timeout=%d\n",
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
