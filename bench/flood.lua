-- wrk script for bench/flood.sh: POSTs /.auth/api/login with a distinct address per request
-- (<prefix><N>@example.com, prefix from env FLOOD_PREFIX, default "f") and a distinct client
-- address per request in X-Forwarded-For (10.0.0.0/8; the gateway trusts 127.0.0.1), i.e. a
-- botnet of ever new IPs. Each thread stops after FLOOD_COUNT / threads requests (env
-- FLOOD_COUNT, FLOOD_THREADS) and, if FLOOD_DONE_DIR is set, creates the file t<thread> there
-- (wrk itself runs until -d or SIGINT; bench/flood.sh sends SIGINT once every thread is done).
-- Counts answers by status; prints one machine-readable line.
local threads = {}
local next_id = 1

function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  prefix = os.getenv("FLOOD_PREFIX") or "f"
  local total = tonumber(os.getenv("FLOOD_COUNT") or "100000")
  local nthreads = tonumber(os.getenv("FLOOD_THREADS") or "1")
  quota = math.floor(total / nthreads)
  base = tid * 100000000
  sent = 0
  answered = 0
  ok = 0
  limited = 0
  busy = 0
  other = 0
end

function request()
  sent = sent + 1
  local n = base + sent
  -- 10.x.y.z from the request number (tid in the second octet's top bits): never repeats
  -- within a run of fewer than 2^22 requests per thread.
  local ip = string.format("10.%d.%d.%d", (tid * 64 + math.floor(sent / 65536)) % 256,
    math.floor(sent / 256) % 256, sent % 256)
  local body = string.format('{"email":"%s%d@example.com"}', prefix, n)
  return wrk.format("POST", "/.auth/api/login",
    { ["Content-Type"] = "application/json", ["X-Forwarded-For"] = ip }, body)
end

function response(status, headers, body)
  answered = answered + 1
  if status == 200 then
    ok = ok + 1
  elseif status == 429 then
    limited = limited + 1
  elseif status == 503 then
    busy = busy + 1
  else
    other = other + 1
  end
  if answered == quota then
    local dir = os.getenv("FLOOD_DONE_DIR")
    if dir then
      local f = io.open(dir .. "/t" .. tid, "w")
      if f then f:close() end
    end
    wrk.thread:stop()
  end
end

done = function(summary, latency, requests)
  local sok, slim, sbusy, soth = 0, 0, 0, 0
  for _, t in ipairs(threads) do
    sok = sok + t:get("ok")
    slim = slim + t:get("limited")
    sbusy = sbusy + t:get("busy")
    soth = soth + t:get("other")
  end
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d rps=%.1f p50_us=%.0f p99_us=%.0f max_us=%.0f " ..
    "accepted=%d limited=%d busy=%d other=%d err_connect=%d err_read=%d err_write=%d err_timeout=%d\n",
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99), latency.max,
    sok, slim, sbusy, soth, e.connect, e.read, e.write, e.timeout))
end
