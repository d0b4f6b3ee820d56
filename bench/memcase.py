#!/usr/bin/env python3
"""memcase: N concurrent SMTP sessions, each stopped in the middle of a large DATA.

Every session connects, says EHLO, MAIL, RCPT, DATA, then sends the first
`--fraction` of a `--size`-byte body and stops. Once every session got that
far (or `--ready-timeout` passed) it prints one line `READY <n> <t>` on stdout,
holds for `--hold` seconds (the moment to sample the server's memory), then
ends every session: `--end abort` closes the sockets mid-DATA (the server must
throw the partial message away), `--end finish` sends the rest and the final
dot and counts the 250s. A JSON summary is the last line of stdout.

Standard library only. Example:
    memcase.py --port 2525 --sessions 1000 --size 10485760 --hold 5
"""

import argparse
import asyncio
import json
import socket
import sys
import time

CRLF = b"\r\n"
LINE = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklmnop" + CRLF


def body_chunk(n: int) -> bytes:
    """n bytes (rounded down to whole 80-byte lines) of dot-free CRLF text."""
    return LINE * max(1, n // len(LINE))


async def reply(reader, expect: bytes):
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("closed by server")
        if line[3:4] != b"-":
            break
    if not line.startswith(expect):
        raise ConnectionError(f"expected {expect.decode()}, got {line[:80]!r}")


class Session:
    def __init__(self, a, sid):
        self.a = a
        self.sid = sid
        self.reader = self.writer = None
        self.sent = 0

    async def open_and_half(self, chunk: bytes, half: int):
        a = self.a
        self.reader, self.writer = await asyncio.open_connection(a.host, a.port, limit=1 << 16)
        self.writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await reply(self.reader, b"220")
        for cmd, exp in ((b"EHLO memcase.invalid", b"250"),
                         (b"MAIL FROM:<" + a.sender.encode() + b">", b"250"),
                         (b"RCPT TO:<" + a.to.encode() + b">", b"250"),
                         (b"DATA", b"354")):
            self.writer.write(cmd + CRLF)
            await reply(self.reader, exp)
        self.writer.write(f"Subject: memcase {self.sid}\r\nMessage-ID: <memcase.{self.sid}.{time.time_ns()}@memcase.invalid>\r\n\r\n".encode())
        while self.sent < half:
            self.writer.write(chunk)
            self.sent += len(chunk)
            await self.writer.drain()

    async def finish(self, chunk: bytes, total: int) -> bool:
        while self.sent < total:
            self.writer.write(chunk)
            self.sent += len(chunk)
            await self.writer.drain()
        self.writer.write(b".\r\n")
        await reply(self.reader, b"250")
        self.writer.write(b"QUIT\r\n")
        await self.writer.drain()
        self.writer.close()
        return True

    def abort(self):
        if self.writer is not None:
            self.writer.transport.abort()


async def main_async(a):
    chunk = body_chunk(64 * 1024)
    half = int(a.size * a.fraction)
    sessions = [Session(a, i) for i in range(a.sessions)]
    connect_gate = asyncio.Semaphore(a.connect_concurrency)
    errors: dict[str, int] = {}

    async def start(s):
        try:
            async with connect_gate:
                await s.open_and_half(chunk, half)
            return True
        except (OSError, ConnectionError, asyncio.IncompleteReadError) as e:
            key = f"{type(e).__name__}: {e}"[:100]
            errors[key] = errors.get(key, 0) + 1
            return False

    t0 = time.monotonic()
    tasks = [asyncio.ensure_future(start(s)) for s in sessions]
    done, pending = await asyncio.wait(tasks, timeout=a.ready_timeout)
    ready = sum(1 for t in done if t.result())
    t_ready = time.monotonic() - t0
    print(f"READY {ready} {t_ready:.2f}", flush=True)
    await asyncio.sleep(a.hold)
    for t in pending:
        t.cancel()
    finished = 0
    if a.end == "finish":
        async def fin(s):
            try:
                return await asyncio.wait_for(s.finish(chunk, a.size), a.ready_timeout)
            except (OSError, ConnectionError, asyncio.TimeoutError):
                return False
        live = [s for s, t in zip(sessions, tasks) if t.done() and not t.cancelled() and t.result()]
        finished = sum(await asyncio.gather(*(fin(s) for s in live)))
    for s in sessions:
        s.abort()
    return {
        "sessions": a.sessions, "ready": ready, "ready_s": round(t_ready, 2),
        "bytes_each": half, "size": a.size, "end": a.end, "finished": finished,
        "errors": errors,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--sessions", type=int, default=1000)
    p.add_argument("--size", type=int, default=10 * 1024 * 1024)
    p.add_argument("--fraction", type=float, default=0.5)
    p.add_argument("--hold", type=float, default=5.0)
    p.add_argument("--end", choices=("abort", "finish"), default="abort")
    p.add_argument("--ready-timeout", type=float, default=180.0)
    p.add_argument("--connect-concurrency", type=int, default=100)
    p.add_argument("-f", "--from", dest="sender", default="from@example.com")
    p.add_argument("-t", "--to", default="to@example.net")
    a = p.parse_args()
    r = asyncio.run(main_async(a))
    print(json.dumps(r, sort_keys=True), flush=True)
    return 0 if r["ready"] == a.sessions else 1


if __name__ == "__main__":
    sys.exit(main())
