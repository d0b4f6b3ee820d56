#!/usr/bin/env python3
"""gapbench - measure the SMTP "synchronization gap" (RFC 1047).

(The workplace's bench/gapbench.py, copied for oncemail's bench/run; the one
addition is --raw, which puts every message's gap into the JSON output.)

The gap is the time from the moment the client hands the end-of-data
marker (the final "." line, i.e. the "\\r\\n.\\r\\n" sequence) to the kernel
until the server's complete reply to it has been read.  For a server that
says 250 only after the message is durably queued, the gap is dominated by
the server's commit (fsync) path.

N concurrent sessions each send M messages; every reply code is checked
and every deviation counts as a failure.  Standard library only.

Examples:
    gapbench.py --port 2525 --sessions 20 --messages 100 --size 5000
    gapbench.py --port 2525 --sessions 1 --messages 500 --size 1000 --json
    gapbench.py --port 2525 --sessions 100 --messages 20 --reconnect --pipelining

Exit status: 0 when every message was accepted, 1 when any failed,
2 on bad arguments.
"""

import argparse
import asyncio
import json
import math
import os
import resource
import socket
import sys
import time

CRLF = b"\r\n"
_HAS_TIMEOUT = hasattr(asyncio, "timeout")  # Python >= 3.11: no extra task per bounded step
_PAYLOAD_CACHE = {}


class SmtpError(Exception):
    """A reply code other than the expected one (the session stays usable)."""

    def __init__(self, stage, expected, reply):
        self.stage = stage
        self.expected = expected
        self.reply = reply
        super().__init__(f"{stage}: expected {expected}, got {reply!r}")


class ConnLost(Exception):
    """The connection failed or timed out (the session must reconnect)."""


def percentile(sorted_vals, p):
    """Nearest-rank percentile of a non-empty ascending list (p in 0..100)."""
    k = max(1, math.ceil(p / 100.0 * len(sorted_vals)))
    return sorted_vals[min(k, len(sorted_vals)) - 1]


def payload(size):
    """`size` bytes of 78-char CRLF lines (like smtp-source -l); cached per size."""
    p = _PAYLOAD_CACHE.get(size)
    if p is None:
        line = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklmnop"  # 78
        out = bytearray()
        while len(out) < size:
            out += line[: max(0, min(len(line), size - len(out) - 2))] + CRLF
        # No line starts with ".", so no dot-stuffing is needed.
        p = _PAYLOAD_CACHE[size] = bytes(out)
    return p


def make_body(size, session_id, msg_no, from_addr, to_addrs):
    """A small unique header block followed by the payload; ends in CRLF."""
    hdr = (
        f"From: <{from_addr}>\r\n"
        f"To: <{to_addrs[0]}>\r\n"
        f"Subject: gapbench s{session_id} m{msg_no}\r\n"
        f"Message-ID: <gapbench.{os.getpid()}.{session_id}.{msg_no}.{time.time_ns()}@gapbench.invalid>\r\n"
        f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime())}\r\n"
        "\r\n"
    ).encode("ascii")
    return hdr + payload(size)


class Stats:
    def __init__(self):
        self.gaps = []  # seconds, final dot -> end-of-data reply
        self.txn = []  # seconds, MAIL FROM sent -> end-of-data reply
        self.connects = []  # seconds, connect() start -> EHLO reply
        self.ok = 0
        self.failed = 0
        self.conn_errors = 0
        self.fail_reasons = {}
        self.first_start = None
        self.last_end = None
        self.client_cpu = 0.0

    def fail(self, reason, count=1):
        self.failed += count
        key = reason[:120]
        self.fail_reasons[key] = self.fail_reasons.get(key, 0) + count


class Session:
    def __init__(self, sid, args, stats, deadline):
        self.sid = sid
        self.a = args
        self.stats = stats
        self.deadline = deadline
        self.reader = None
        self.writer = None
        self.pipelining = False
        self.stage = "connect"
        a = args
        self.rcpts = [a.to] if a.rcpts == 1 else [f"{i}{a.to}" for i in range(a.rcpts)]

    def _left(self):
        return max(0.001, min(self.a.timeout, self.deadline - time.monotonic()))

    async def _bounded(self, coro, what):
        """Run one protocol step under the per-step timeout (and the run deadline)."""
        try:
            if _HAS_TIMEOUT:
                async with asyncio.timeout(self._left()):
                    return await coro
            return await asyncio.wait_for(coro, self._left())
        except (asyncio.TimeoutError, TimeoutError):
            raise ConnLost(f"{what}: timeout waiting for {self.stage} reply") from None

    async def _reply(self, stage, expect):
        """Read one (possibly multi-line) reply; check its code.  Unbounded:
        callers wrap whole steps in _bounded()."""
        self.stage = stage
        lines = []
        while True:
            try:
                line = await self.reader.readline()
            except (OSError, asyncio.LimitOverrunError, ValueError) as e:
                raise ConnLost(f"{stage}: read {type(e).__name__}") from None
            if not line:
                raise ConnLost(f"{stage}: connection closed by server")
            lines.append(line)
            if len(line) < 4 or line[3:4] != b"-":
                break
        if lines[0][:3] not in expect:
            raise SmtpError(stage, b"/".join(expect).decode(), b"".join(lines).decode("latin-1").strip())
        return lines

    async def _send(self, data):
        """Hand `data` to the kernel (write buffer high-water mark is 0, so
        drain() returns only once nothing is left in user space)."""
        try:
            self.writer.write(data)
            await self.writer.drain()
        except OSError as e:
            raise ConnLost(f"write {type(e).__name__}") from None

    async def _cmd(self, data, stage, expect):
        await self._send(data)
        return await self._reply(stage, expect)

    async def _open(self):
        try:
            self.reader, self.writer = await asyncio.open_connection(self.a.host, self.a.port, limit=1 << 20)
        except OSError as e:
            raise ConnLost(f"connect {type(e).__name__}: {e}") from None
        self.writer.transport.set_write_buffer_limits(high=0)
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await self._reply("banner", (b"220",))
        return await self._cmd(b"EHLO " + self.a.ehlo.encode() + CRLF, "EHLO", (b"250",))

    async def connect(self):
        t0 = time.perf_counter()
        lines = await self._bounded(self._open(), "connect")
        caps = {l[4:].strip().split(b" ")[0].upper() for l in lines[1:]}
        self.pipelining = self.a.pipelining and b"PIPELINING" in caps
        if self.a.pipelining and not self.pipelining and self.sid == 0:
            print("warning: server does not advertise PIPELINING; sending lock-step", file=sys.stderr)
        self.stats.connects.append(time.perf_counter() - t0)

    async def close(self, quit_=True):
        if self.writer is None:
            return
        try:
            if quit_:
                await self._bounded(self._cmd(b"QUIT" + CRLF, "QUIT", (b"221",)), "QUIT")
        except (ConnLost, SmtpError):
            pass
        try:
            self.writer.close()
            await asyncio.wait_for(self.writer.wait_closed(), 2)
        except Exception:
            pass
        self.writer = self.reader = None

    async def _envelope(self, cmds, nrcpt):
        if not self.pipelining:
            await self._cmd(cmds[0], "MAIL", (b"250",))
            for c in cmds[1:-1]:
                await self._cmd(c, "RCPT", (b"250", b"251"))
            await self._cmd(cmds[-1], "DATA", (b"354",))
            return
        await self._send(b"".join(cmds))
        errs = []
        for stage, exp in [("MAIL", (b"250",))] + [("RCPT", (b"250", b"251"))] * nrcpt + [("DATA", (b"354",))]:
            try:
                await self._reply(stage, exp)
            except SmtpError as e:
                errs.append(e)
        if errs:
            if errs[-1].stage != "DATA":
                # DATA got 354 despite an earlier error: end the empty data.
                await self._send(b"." + CRLF)
                try:
                    await self._reply("abort-data", (b"250", b"451", b"550", b"554"))
                except SmtpError:
                    pass
            raise errs[0]

    async def _data(self, body):
        # Body first, then time only the end-of-data marker.
        await self._send(body)
        t_dot = time.perf_counter()
        await self._send(b"." + CRLF)  # body ends in CRLF, so the wire sees "\r\n.\r\n"
        await self._reply("end-of-data", (b"250",))
        return t_dot, time.perf_counter()

    async def transaction(self, msg_no):
        a = self.a
        rcpts = self.rcpts
        body = make_body(a.size, self.sid, msg_no, a.from_, rcpts)
        cmds = [b"MAIL FROM:<" + a.from_.encode() + b">" + CRLF]
        cmds += [b"RCPT TO:<" + r.encode() + b">" + CRLF for r in rcpts]
        cmds.append(b"DATA" + CRLF)
        t_mail = time.perf_counter()
        await self._bounded(self._envelope(cmds, len(rcpts)), "envelope")
        t_dot, t_end = await self._bounded(self._data(body), "data")
        self.stats.gaps.append(t_end - t_dot)
        self.stats.txn.append(t_end - t_mail)
        self.stats.ok += 1
        self.stats.last_end = t_end

    async def run(self):
        a = self.a
        sent = 0
        while sent < a.messages:
            if time.monotonic() >= self.deadline:
                self.stats.fail("deadline reached before send", a.messages - sent)
                break
            if self.writer is None:
                try:
                    await self.connect()
                except (ConnLost, SmtpError) as e:
                    self.stats.conn_errors += 1
                    self.stats.fail(f"session setup: {e}")
                    sent += 1
                    await self.close(quit_=False)
                    await asyncio.sleep(0.05)
                    continue
            try:
                await self.transaction(sent)
            except SmtpError as e:
                self.stats.fail(str(e))
                try:
                    await self._bounded(self._cmd(b"RSET" + CRLF, "RSET", (b"250",)), "RSET")
                except (ConnLost, SmtpError):
                    await self.close(quit_=False)
            except ConnLost as e:
                self.stats.conn_errors += 1
                self.stats.fail(str(e))
                await self.close(quit_=False)
            sent += 1
            if a.reconnect and self.writer is not None:
                await self.close()
        await self.close()


async def main_async(a):
    stats = Stats()
    deadline = time.monotonic() + a.max_seconds
    sessions = [Session(i, a, stats, deadline) for i in range(a.sessions)]
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    stats.first_start = time.perf_counter()
    await asyncio.gather(*(s.run() for s in sessions))
    end = time.perf_counter()
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    stats.client_cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    return stats, end - stats.first_start


def summarize(a, stats, wall):
    gaps = sorted(g * 1000.0 for g in stats.gaps)
    txn = sorted(t * 1000.0 for t in stats.txn)
    conn = sorted(c * 1000.0 for c in stats.connects)

    def dist(v):
        if not v:  # no successful message: null in JSON, "-" in text
            return {"n": 0, "p50": None, "p90": None, "p99": None, "max": None, "mean": None}
        return {
            "n": len(v),
            "p50": percentile(v, 50),
            "p90": percentile(v, 90),
            "p99": percentile(v, 99),
            "max": v[-1],
            "mean": sum(v) / len(v),
        }

    return {
        "host": a.host,
        "port": a.port,
        "sessions": a.sessions,
        "messages_per_session": a.messages,
        "size": a.size,
        "rcpts": a.rcpts,
        "pipelining": a.pipelining,
        "reconnect": a.reconnect,
        "ok": stats.ok,
        "failed": stats.failed,
        "conn_errors": stats.conn_errors,
        "wall_s": wall,
        "client_cpu_s": stats.client_cpu,
        "msgs_per_s": stats.ok / wall if wall > 0 else 0.0,
        "gap_ms": dist(gaps),
        "txn_ms": dist(txn),
        "connect_ms": dist(conn),
        "fail_reasons": stats.fail_reasons,
        **({"gaps_ms_raw": [round(g, 4) for g in gaps]} if a.raw else {}),
    }


def _f(x):
    return "-" if x is None else f"{x:.3f}"


def print_human(r):
    g, t, c = r["gap_ms"], r["txn_ms"], r["connect_ms"]
    print(
        f"target {r['host']}:{r['port']}  sessions={r['sessions']} msgs/session={r['messages_per_session']} "
        f"size={r['size']} rcpts={r['rcpts']} pipelining={r['pipelining']} reconnect={r['reconnect']}"
    )
    print(
        f"ok={r['ok']} failed={r['failed']} conn_errors={r['conn_errors']}  wall={r['wall_s']:.3f}s  "
        f"throughput={r['msgs_per_s']:.1f} msgs/s  client_cpu={r['client_cpu_s']:.2f}s"
    )
    print(f"gap (final dot -> 250) ms: p50={_f(g['p50'])} p90={_f(g['p90'])} p99={_f(g['p99'])} max={_f(g['max'])} mean={_f(g['mean'])}")
    print(f"txn (MAIL -> 250)      ms: p50={_f(t['p50'])} p90={_f(t['p90'])} p99={_f(t['p99'])} max={_f(t['max'])}")
    print(f"connect+banner+EHLO    ms: p50={_f(c['p50'])} p99={_f(c['p99'])} n={c['n']}")
    for reason, n in sorted(r["fail_reasons"].items(), key=lambda kv: -kv[1])[:10]:
        print(f"  failure x{n}: {reason}")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=25)
    p.add_argument("-s", "--sessions", type=int, default=1, help="concurrent SMTP sessions")
    p.add_argument("-m", "--messages", type=int, default=100, help="messages per session")
    p.add_argument("-l", "--size", type=int, default=1000, help="payload bytes per message, headers excluded (like smtp-source -l)")
    p.add_argument("-r", "--rcpts", type=int, default=1, help="recipients per message")
    p.add_argument("-f", "--from", dest="from_", default="from@example.com")
    p.add_argument("-t", "--to", default="to@example.net")
    p.add_argument("--ehlo", default="gapbench.invalid")
    p.add_argument("--pipelining", action="store_true", help="send MAIL/RCPT/DATA as one group when PIPELINING is offered")
    p.add_argument("--reconnect", action="store_true", help="new connection for every message (smtp-source default)")
    p.add_argument("--timeout", type=float, default=30.0, help="per-reply timeout, seconds")
    p.add_argument("--max-seconds", type=float, default=300.0, help="hard bound on the whole run; unsent messages count as failed")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the text summary")
    p.add_argument("--raw", action="store_true", help="with --json: include every gap (ms, sorted) as gaps_ms_raw")
    a = p.parse_args(argv)
    if a.sessions < 1 or a.messages < 1 or a.size < 0 or a.rcpts < 1 or a.timeout <= 0 or a.max_seconds <= 0:
        p.error("sessions, messages, rcpts must be >= 1; size >= 0; timeouts > 0")
    return a


def main(argv=None):
    a = parse_args(sys.argv[1:] if argv is None else argv)
    stats, wall = asyncio.run(main_async(a))
    r = summarize(a, stats, wall)
    if a.json:
        print(json.dumps(r, sort_keys=True))
    else:
        print_human(r)
    return 0 if r["failed"] == 0 and r["ok"] == a.sessions * a.messages else 1


if __name__ == "__main__":
    sys.exit(main())
