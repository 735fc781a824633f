#!/usr/bin/env python3
"""Revocation delay across two replicas sharing one store (bench/proxy.sh redis helper).

Usage: revocation.py --a http://127.0.0.1:PA --b http://127.0.0.1:PB --mail-dir DIR [--mail-dir DIR2]
                     [--trials 50] [--poll-ms 10] [--hot 3] [--jitter-ms 0] [--give-up 10]
                     [--prefix rev] [--out FILE]

Both gateways use the same store (same Redis, same key prefix) and `email.transport: file`, each
writing into its own folder (either replica's outbox worker may deliver a mail, so every
--mail-dir is scanned). Rate limits must be raised in their configs. For each trial i:
  1. POST A /.auth/api/login {"email": "<prefix><i>@example.com"}          -> challenge_id
  2. wait for the .eml addressed to it, take the one-time code
  3. POST A /.auth/api/verify {challenge_id, code, issue_token: true}      -> session_token
  4. GET B /.auth/api/session with `Authorization: Bearer <token>` --hot times: each must be 200
     (B reads the session from the shared store and caches it); optional random pause of
     0..--jitter-ms after that (0, the default, logs out right after B cached it: the worst case)
  5. POST A /.auth/api/logout with the bearer                              -> 200
  6. GET B /.auth/api/session every --poll-ms (a fixed schedule from the moment the logout was
     sent) until it answers 401. delay = B's first 401 answer - the logout request being sent.
     Also recorded: the delay after A answered the logout, and the logout's own latency.
     A trial that is still 200 after --give-up seconds counts as "not revoked".
Prints progress on stderr and one summary line on stdout:
  REVOKE trials=N ok=N not_revoked=N errors=N p50_ms=.. p90_ms=.. p99_ms=.. max_ms=.. min_ms=..
         mean_ms=.. after_ack_p50_ms=.. after_ack_p99_ms=.. logout_p50_ms=.. polls_p50=.. signin_p50_ms=..
(percentiles: nearest rank over the successful trials; with 50 trials p99 is the largest).
--out FILE gets one line per trial (tab-separated). Standard library only.
"""

import argparse
import email
import email.policy
import email.utils
import http.client
import json
import math
import os
import random
import re
import sys
import time
import urllib.parse

CODE_RE = re.compile(r"^\s*(\d{4,10})\s*$", re.MULTILINE)


class Client:
    """One keep-alive HTTP/1.1 connection to one gateway; reconnects once on a broken connection."""

    def __init__(self, base: str, timeout: float = 10):
        u = urllib.parse.urlsplit(base)
        self.host, self.port, self.timeout = u.hostname, u.port, timeout
        self.c = None

    def request(self, method: str, path: str, body=None, headers=None):
        hdrs = dict(headers or {})
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        for attempt in range(2):
            if self.c is None:
                self.c = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self.c.request(method, path, data, hdrs)
                r = self.c.getresponse()
                payload = r.read()
                if r.getheader("Connection", "").lower() == "close":
                    self.c.close()
                    self.c = None
                return r.status, payload
            except (http.client.HTTPException, OSError):
                self.c.close()
                self.c = None
                if attempt == 1:
                    raise
        raise AssertionError("unreachable")


def read_mail(path: str):
    with open(path, "rb") as f:
        msg = email.message_from_binary_file(f, policy=email.policy.default)
    addr = email.utils.parseaddr(str(msg["To"] or ""))[1].lower()
    part = msg.get_body(preferencelist=("plain",))
    text = part.get_content() if part is not None else ""
    m = CODE_RE.search(text)
    return addr, (m.group(1) if m else None)


class Mailbox:
    """Scans the mail folders for new .eml files; remembers codes by address."""

    def __init__(self, dirs):
        self.dirs = dirs
        self.seen = set()
        self.codes = {}

    def wait_code(self, addr: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            if addr in self.codes:
                return self.codes.pop(addr)
            for d in self.dirs:
                for name in os.listdir(d):
                    if not name.endswith(".eml") or name.startswith("."):
                        continue
                    path = os.path.join(d, name)
                    if path in self.seen:
                        continue
                    try:
                        to, code = read_mail(path)
                    except OSError:
                        continue  # being written; next scan
                    if code is None:
                        continue  # possibly half written; retried next scan
                    self.seen.add(path)
                    self.codes[to] = code
            if addr in self.codes:
                return self.codes.pop(addr)
            if time.monotonic() > deadline:
                raise RuntimeError(f"no mail for {addr} within {timeout}s")
            time.sleep(0.005)


def pct(sorted_vals, p):
    if not sorted_vals:
        return float("nan")
    k = max(1, math.ceil(p / 100 * len(sorted_vals)))
    return sorted_vals[k - 1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--a", required=True, help="replica A (sign-in and logout)")
    ap.add_argument("--b", required=True, help="replica B (the session is hot here; polled)")
    ap.add_argument("--mail-dir", action="append", required=True)
    ap.add_argument("--trials", type=int, default=50)
    ap.add_argument("--poll-ms", type=float, default=10)
    ap.add_argument("--hot", type=int, default=3)
    ap.add_argument("--jitter-ms", type=float, default=0)
    ap.add_argument("--give-up", type=float, default=10)
    ap.add_argument("--mail-timeout", type=float, default=30)
    ap.add_argument("--prefix", default="rev")
    ap.add_argument("--out")
    args = ap.parse_args()

    a, b = Client(args.a), Client(args.b)
    box = Mailbox(args.mail_dir)
    poll = args.poll_ms / 1000
    delays, after_ack, logouts, polls, signins = [], [], [], [], []
    not_revoked = errors = 0
    out = open(args.out, "w") if args.out else None
    if out:
        print("trial\tstatus\tdelay_ms\tafter_ack_ms\tlogout_ms\tpolls\tsignin_ms", file=out)
    run_tag = f"{int(time.time())}"

    for i in range(args.trials):
        addr = f"{args.prefix}{run_tag}x{i}@example.com"
        status = "ok"
        delay = ack_delay = logout_ms = None
        n_polls = 0
        try:
            t_sign = time.monotonic()
            st, body = a.request("POST", "/.auth/api/login", {"email": addr})
            if st != 200:
                raise RuntimeError(f"login on A: HTTP {st} {body[:200]!r}")
            challenge = json.loads(body)["challenge_id"]
            code = box.wait_code(addr, args.mail_timeout)
            st, body = a.request("POST", "/.auth/api/verify", {"challenge_id": challenge, "code": code, "issue_token": True})
            if st != 200:
                raise RuntimeError(f"verify on A: HTTP {st} {body[:200]!r}")
            token = json.loads(body)["session_token"]
            signin_ms = (time.monotonic() - t_sign) * 1000
            bearer = {"Authorization": f"Bearer {token}"}
            for _ in range(args.hot):
                st, body = b.request("GET", "/.auth/api/session", headers=bearer)
                if st != 200:
                    raise RuntimeError(f"session on B before the logout: HTTP {st} {body[:200]!r} (is the store shared?)")
            if args.jitter_ms > 0:
                time.sleep(random.uniform(0, args.jitter_ms / 1000))
            t0 = time.monotonic()
            st, body = a.request("POST", "/.auth/api/logout", {}, headers=bearer)
            t_ack = time.monotonic()
            if st != 200:
                raise RuntimeError(f"logout on A: HTTP {st} {body[:200]!r}")
            logout_ms = (t_ack - t0) * 1000
            # Poll B on a fixed 10 ms schedule counted from the logout being sent.
            k = 0
            while True:
                st, body = b.request("GET", "/.auth/api/session", headers=bearer)
                now = time.monotonic()
                n_polls += 1
                if st == 401:
                    delay = (now - t0) * 1000
                    ack_delay = (now - t_ack) * 1000
                    break
                if st != 200:
                    raise RuntimeError(f"session on B after the logout: HTTP {st} {body[:200]!r}")
                if now - t0 > args.give_up:
                    status = "not_revoked"
                    not_revoked += 1
                    break
                k = max(k + 1, math.floor((now - t0) / poll) + 1)
                time.sleep(max(0.0, t0 + k * poll - time.monotonic()))
            if status == "ok":
                st, _ = a.request("GET", "/.auth/api/session", headers=bearer)
                if st != 401:
                    raise RuntimeError(f"session on A after its own logout: HTTP {st}")
                delays.append(delay)
                after_ack.append(ack_delay)
                logouts.append(logout_ms)
                polls.append(n_polls)
                signins.append(signin_ms)
        except (RuntimeError, OSError, http.client.HTTPException, ValueError, KeyError) as e:
            status = "error"
            errors += 1
            print(f"revocation: trial {i}: {e}", file=sys.stderr)
            signin_ms = None
        if out:
            f = lambda v: "" if v is None else f"{v:.1f}"
            print(f"{i}\t{status}\t{f(delay)}\t{f(ack_delay)}\t{f(logout_ms)}\t{n_polls}\t{f(signin_ms)}", file=out, flush=True)
        if (i + 1) % 10 == 0 or i + 1 == args.trials:
            last = f"{delay:.0f} ms" if delay is not None else status
            print(f"revocation: {i + 1}/{args.trials} trials (last: {last})", file=sys.stderr)

    d, aa, lo, po, si = (sorted(x) for x in (delays, after_ack, logouts, polls, signins))
    mean = sum(d) / len(d) if d else float("nan")
    print(
        f"REVOKE trials={args.trials} ok={len(d)} not_revoked={not_revoked} errors={errors} "
        f"p50_ms={pct(d, 50):.1f} p90_ms={pct(d, 90):.1f} p99_ms={pct(d, 99):.1f} "
        f"max_ms={(d[-1] if d else float('nan')):.1f} min_ms={(d[0] if d else float('nan')):.1f} mean_ms={mean:.1f} "
        f"after_ack_p50_ms={pct(aa, 50):.1f} after_ack_p99_ms={pct(aa, 99):.1f} "
        f"logout_p50_ms={pct(lo, 50):.1f} logout_max_ms={(lo[-1] if lo else float('nan')):.1f} "
        f"polls_p50={pct(po, 50)} signin_p50_ms={pct(si, 50):.1f}"
    )


if __name__ == "__main__":
    main()
