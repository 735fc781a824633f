#!/usr/bin/env python3
"""Turns one h2load run into the `BENCH key=value ...` line bench/report.lua prints for wrk
(bench/proxy.sh helper; latencies in microseconds).

Usage: h2load_stats.py H2LOAD_STDOUT H2LOAD_LOG_FILE [--expect-proto h2]

H2LOAD_STDOUT is what h2load printed; H2LOAD_LOG_FILE is its --log-file (one line per request:
start time in us since the epoch, HTTP status or -1 for a failed stream, us until the end of the
response). h2load prints no percentiles, so p50/p90/p99/max come from that file (nearest rank,
over every request that got a response, like wrk's latency over every response).

  requests    h2load's "done" (responses of any status, like wrk's request count)
  rps         h2load's req/s (done / the main duration); duration_us = requests / rps
  err_status  4xx + 5xx answers; err_timeout: h2load's "timeout";
  err_read    the other failed requests (stream or connection errors); err_connect, err_write 0
  proto, tls, cipher  what h2load negotiated (Application protocol, TLS Protocol, Cipher)
Exits non-zero (with a message on stderr) when the output cannot be parsed or the protocol is not
the expected one. Standard library only.
"""

import argparse
import math
import re
import sys


def die(msg: str) -> None:
    print(f"h2load_stats: {msg}", file=sys.stderr)
    sys.exit(1)


def percentile(sorted_values: list, p: float) -> int:
    if not sorted_values:
        return 0
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("stdout")
    ap.add_argument("log")
    ap.add_argument("--expect-proto", default="")
    args = ap.parse_args()

    with open(args.stdout, encoding="utf-8", errors="replace") as f:
        out = f.read()

    def field(pattern: str, default=None):
        m = re.search(pattern, out, re.MULTILINE)
        if m:
            return m.group(1)
        if default is None:
            die(f"no match for {pattern!r} in {args.stdout}:\n{out[-2000:]}")
        return default

    proto = field(r"^Application protocol: (\S+)", "none")
    if args.expect_proto and proto != args.expect_proto:
        die(f"negotiated protocol {proto!r}, expected {args.expect_proto!r}:\n{out[-2000:]}")
    tls = field(r"^TLS Protocol: (\S+)", "none")
    cipher = field(r"^Cipher: (\S+)", "none")
    rps = float(field(r"^finished in [^,]+, ([0-9.]+) req/s"))
    m = re.search(
        r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout",
        out,
        re.MULTILINE,
    )
    if not m:
        die(f"no requests line in {args.stdout}:\n{out[-2000:]}")
    _total, _started, done, _ok, failed, _errored, timeout = map(int, m.groups())
    m = re.search(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out, re.MULTILINE)
    if not m:
        die(f"no status codes line in {args.stdout}")
    err_status = int(m.group(3)) + int(m.group(4))
    err_read = max(0, failed - err_status - timeout)

    times = []
    with open(args.log, encoding="utf-8", errors="replace") as f:
        for line in f:
            cols = line.split("\t")
            if len(cols) < 3 or cols[1].strip() == "-1":
                continue
            try:
                times.append(int(cols[2]))
            except ValueError:
                continue
    times.sort()
    duration_us = round(done / rps * 1e6) if rps > 0 else 0
    print(
        f"BENCH requests={done} duration_us={duration_us} rps={rps:.1f} "
        f"p50_us={percentile(times, 50)} p90_us={percentile(times, 90)} p99_us={percentile(times, 99)} "
        f"max_us={times[-1] if times else 0} err_connect=0 err_read={err_read} err_write=0 "
        f"err_status={err_status} err_timeout={timeout} proto={proto} tls={tls} cipher={cipher} logged={len(times)}"
    )


if __name__ == "__main__":
    main()
