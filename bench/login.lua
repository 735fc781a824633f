-- wrk script for bench/proxy.sh login: POSTs /.auth/api/login with a distinct address per request,
-- <prefix><N>@example.com (prefix from env LOGIN_PREFIX, default "u"; N = thread * 10^8 + counter),
-- counts the answers by status and prints one machine-readable summary line.
local threads = {}
local next_id = 1

function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  prefix = os.getenv("LOGIN_PREFIX") or "u"
  base = tid * 100000000
  n = 0
  ok = 0
  limited = 0
  other = 0
end

function request()
  n = n + 1
  local body = string.format('{"email":"%s%d@example.com"}', prefix, base + n)
  return wrk.format("POST", "/.auth/api/login", { ["Content-Type"] = "application/json" }, body)
end

function response(status, headers, body)
  if status == 200 then
    ok = ok + 1
  elseif status == 429 then
    limited = limited + 1
  else
    other = other + 1
  end
end

done = function(summary, latency, requests)
  local sok, slim, soth = 0, 0, 0
  for _, t in ipairs(threads) do
    sok = sok + t:get("ok")
    slim = slim + t:get("limited")
    soth = soth + t:get("other")
  end
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d rps=%.1f p50_us=%.0f p90_us=%.0f p99_us=%.0f max_us=%.0f " ..
    "accepted=%d limited=%d other=%d err_connect=%d err_read=%d err_write=%d err_status=%d err_timeout=%d\n",
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    sok, slim, soth, e.connect, e.read, e.write, e.status, e.timeout))
end
