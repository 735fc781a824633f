#!/usr/bin/env python3
"""Minimal SMTP sink for bench/proxy.sh login: accepts every message, keeps nothing, counts them.

Usage: smtp_sink.py --port PORT --count-file FILE

Speaks just enough SMTP for a client with no TLS and no auth (EHLO/HELO, MAIL, RCPT, DATA,
RSET, NOOP, QUIT). The number of messages received so far is rewritten into FILE (atomically)
every 50 ms and at exit, so the benchmark can wait for the gateway's outbox to drain.
Standard library only (asyncio), so it needs no download.

--quickack re-arms TCP_QUICKACK after every line read, so the sink ACKs at once instead of
using the kernel's delayed ACK (up to 40 ms). Off by default: a real MTA does not do that, and
a client that writes "<body>" and "\r\n.\r\n" in two segments without TCP_NODELAY then waits
for the delayed ACK on every message (Nagle). On shows what the client could do without it.
"""

import argparse
import asyncio
import os
import signal
import socket

received = 0
QUICKACK = False


def quickack(writer: asyncio.StreamWriter) -> None:
    if QUICKACK:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    global received
    write = writer.write
    write(b"220 bench-sink ESMTP ready\r\n")
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            quickack(writer)
            cmd = line[:4].upper()
            if cmd == b"EHLO":
                write(b"250-bench-sink\r\n250-8BITMIME\r\n250 SIZE 104857600\r\n")
            elif cmd == b"HELO":
                write(b"250 bench-sink\r\n")
            elif cmd in (b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                write(b"250 OK\r\n")
            elif cmd == b"DATA":
                write(b"354 end with <CRLF>.<CRLF>\r\n")
                await writer.drain()
                while True:
                    data = await reader.readline()
                    if not data:
                        return
                    quickack(writer)
                    if data in (b".\r\n", b".\n"):
                        break
                received += 1
                write(b"250 OK queued\r\n")
            elif cmd == b"QUIT":
                write(b"221 bye\r\n")
                await writer.drain()
                break
            else:
                write(b"502 command not implemented\r\n")
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


def dump(path: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{received}\n")
    os.replace(tmp, path)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--count-file", required=True)
    ap.add_argument("--quickack", action="store_true")
    args = ap.parse_args()
    global QUICKACK
    QUICKACK = args.quickack
    server = await asyncio.start_server(handle, args.host, args.port, limit=1 << 20)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    dump(args.count_file)
    print(f"smtp sink listening on {args.host}:{args.port}", flush=True)
    async with server:
        last = -1
        while not stop.is_set():
            if received != last:
                last = received
                dump(args.count_file)
            try:
                await asyncio.wait_for(stop.wait(), 0.05)
            except asyncio.TimeoutError:
                pass
    dump(args.count_file)
    print(f"smtp sink: {received} messages received", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
