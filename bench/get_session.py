#!/usr/bin/env python3
"""Signs in through Portcullis' JSON API and prints a session token (bench/proxy.sh helper).

Usage: get_session.py --base http://127.0.0.1:PORT --mail-dir DIR [--count N] [--prefix bench]

The gateway must run with `email.transport: file` writing into DIR and rate limits raised.
For each of N addresses (N=1: bench@example.com; else <prefix><i>@example.com):
  1. POST /.auth/api/login {"email": ...}                      -> challenge_id
  2. wait for the .eml file addressed to it, extract the one-time code (MIME, any transfer encoding)
  3. POST /.auth/api/verify {"challenge_id", "code", "issue_token": true} -> session_token
Prints the last session token on stdout (progress on stderr). Standard library only.
"""

import argparse
import concurrent.futures
import email
import email.policy
import http.client
import json
import os
import re
import sys
import threading
import time
import urllib.parse

CODE_RE = re.compile(r"^\s*(\d{4,10})\s*$", re.MULTILINE)
local = threading.local()


def conn(base: urllib.parse.SplitResult) -> http.client.HTTPConnection:
    c = getattr(local, "conn", None)
    if c is None:
        c = http.client.HTTPConnection(base.hostname, base.port, timeout=30)
        local.conn = c
    return c


def post(base, path: str, obj: dict) -> dict:
    body = json.dumps(obj)
    for attempt in range(3):
        c = conn(base)
        try:
            c.request("POST", path, body, {"Content-Type": "application/json"})
            r = c.getresponse()
            data = r.read()
        except (http.client.HTTPException, OSError):
            c.close()
            local.conn = None
            if attempt == 2:
                raise
            continue
        if r.status != 200:
            raise SystemExit(f"get_session: POST {path} {obj.get('email', '')} -> HTTP {r.status}: {data[:300]!r}")
        return json.loads(data)
    raise AssertionError("unreachable")


def read_mail(path: str):
    with open(path, "rb") as f:
        msg = email.message_from_binary_file(f, policy=email.policy.default)
    to = str(msg["To"] or "")
    addr = email.utils.parseaddr(to)[1].lower()
    part = msg.get_body(preferencelist=("plain",))
    text = part.get_content() if part is not None else ""
    m = CODE_RE.search(text)
    return addr, (m.group(1) if m else None)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--mail-dir", required=True)
    ap.add_argument("--count", type=int, default=1)
    ap.add_argument("--prefix", default="bench")
    # Concurrent sign-ins can hang Portcullis for good (sled 0.34 flush_async deadlock,
    # spacejam/sled#1308), so one at a time unless asked otherwise.
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=300)
    args = ap.parse_args()
    base = urllib.parse.urlsplit(args.base)
    n = args.count
    emails = ["bench@example.com"] if n == 1 else [f"{args.prefix}{i}@example.com" for i in range(n)]
    started = time.monotonic()

    with concurrent.futures.ThreadPoolExecutor(args.workers) as pool:
        challenges = dict(zip(emails, pool.map(lambda e: post(base, "/.auth/api/login", {"email": e})["challenge_id"], emails)))
    print(f"get_session: {n} sign-ins requested in {time.monotonic() - started:.1f}s; waiting for mail", file=sys.stderr)

    codes: dict[str, str] = {}
    seen: set[str] = set()
    deadline = time.monotonic() + args.timeout
    while len(codes) < n:
        for name in os.listdir(args.mail_dir):
            if name in seen or name.startswith(".") or not name.endswith(".eml"):
                continue
            seen.add(name)
            addr, code = read_mail(os.path.join(args.mail_dir, name))
            if addr in challenges:
                if code is None:
                    raise SystemExit(f"get_session: no code found in {name}")
                codes[addr] = code
        if len(codes) < n:
            if time.monotonic() > deadline:
                raise SystemExit(f"get_session: only {len(codes)}/{n} mails arrived in {args.timeout}s")
            time.sleep(0.05)

    def verify(e: str) -> str:
        r = post(base, "/.auth/api/verify", {"challenge_id": challenges[e], "code": codes[e], "issue_token": True})
        return r["session_token"]

    with concurrent.futures.ThreadPoolExecutor(args.workers) as pool:
        tokens = list(pool.map(verify, emails))
    print(f"get_session: {n} sessions created in {time.monotonic() - started:.1f}s", file=sys.stderr)
    print(tokens[-1])


if __name__ == "__main__":
    main()
