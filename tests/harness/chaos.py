"""Chaos: nothing lost, nothing doubled, while connections are cut and the
server is killed with SIGKILL at random.

`run_chaos(server, cfg)` drives one oncemail (`server.Server`, started) this way:

- A sender that behaves like a real retrying MTA (`ChaosSender`): `threads`
  workers share `n` distinct messages, at most `rate` attempts per second (1-3 recipients each, sizes from a few
  hundred bytes to beyond the 64 KiB at which oncemail spills the body to its
  own file). Each worker uses Python's smtplib over a `cutter.RandomCuttingProxy`
  in front of the server, sometimes keeping its connection for the next
  message, sometimes not. A message that did not get a 2xx to its final dot
  (cut, reset, timeout, 4xx) goes back into the queue and is sent again later
  with the same envelope and the same bytes. 5xx is final (and reported).
- A killer thread that, every `kill_every` seconds (random in a range), sends
  SIGKILL to the server, half of the time at once and half of the time aimed
  at the final-dot gap (right after the proxy forwards a client's end of data),
  and restarts it on the same data dir and port.

When every message was acknowledged (or `deadline` passed), the killer stops,
the server is stopped with SIGTERM and started once more, and the run waits
(bounded) until every message that server recovered from its spool is removed,
i.e. delivered. Then copies are counted per (message, recipient), in the
Maildirs (`mode="local"`) or at an smtp-sink the server relays to
(`mode="relay"`, the sink given by the caller):

- lost: acknowledged with a 2xx, never delivered. Must be 0.
- duplicated: copies beyond the first. Split by cause, using the queue ID that
  oncemail writes into every copy (Maildir file name / its Received: field):
  * `dup_queued_twice`: copies from different queue IDs: the retry was queued
    again instead of being recognised. Must be 0.
  * `dup_redelivered`: two copies from one queue ID. For Maildir delivery this
    must be 0 (the file name is fixed per queue ID and recipient). For relay it
    is legitimate when oncemail was killed after the sink's 250 and before it
    recorded the outcome, because smtp-sink offers no CHECKPOINT (RFC 1845) to
    recognise the re-send: such copies count as `dup_relay_window` when a kill
    falls between the two arrivals, else as `dup_redelivered` (a bug).
- corrupt: a copy whose bytes differ from what was sent. Must be 0.
"""

import os
import queue
import random
import re
import shutil
import smtplib
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import maildir
from .cutter import RandomCuttingProxy
from .wait import free_port, is_listening, wait_until

LOCAL_DOMAIN = "example.com"
REMOTE_DOMAIN = "chaos-remote.test"
_MSGID = re.compile(rb"^Message-ID: <chaos\.(\d+)@chaos\.test>", re.M | re.I)
# A relay re-send counts as explained by a kill only if the kill came at most this
# long after the sink stored the first copy (oncemail records a remote outcome
# with one group-commit flush, milliseconds after the 250).
RELAY_WINDOW = 1.0
_QID_RECEIVED = re.compile(rb"\(oncemail\) with E?SMTPS?A? id ([0-9A-Z]+)")


@dataclass
class ChaosConfig:
    mode: str = "local"              # "local" or "relay"
    n: int = 200                     # distinct messages
    threads: int = 8                 # concurrent sender workers
    rate: float = 40.0               # attempts per second, all workers together (0: no limit)
    kill_every: tuple = (0.5, 2.0)   # seconds between kills, uniform
    max_kills: int | None = None     # stop killing after this many
    p_dot: float = 0.08              # per connection: cut after an end of data
    p_bytes: float = 0.08            # per connection: cut after random bytes
    p_rst: float = 0.5
    p_reuse: float = 0.6             # keep the connection for the next message
    big_every: int = 15              # every k-th message is 70-200 KiB
    deadline: float = 120.0          # for sending (seconds)
    settle_timeout: float = 60.0     # for delivery after the last restart
    seed: int | None = None


@dataclass
class Msg:
    idx: int
    sender: str
    rcpts: list[str]
    wire: bytes
    attempts: int = 0
    acked: bool = False
    ack_text: str = ""
    permanent: str = ""
    not_before: float = 0.0


@dataclass
class ChaosResult:
    mode: str
    n: int
    pairs: int = 0                    # (message, recipient) pairs
    acked: int = 0                    # messages acknowledged with 2xx
    acked_as_duplicate: int = 0       # ... by "duplicate of ..." (a retry recognised)
    unacked: int = 0                  # never acknowledged before the deadline
    permanent: int = 0                # refused with 5xx
    attempts: int = 0
    kills: int = 0
    kills_aimed: int = 0              # aimed at the final-dot gap
    cuts_dot: int = 0
    cuts_bytes: int = 0
    refused: int = 0                  # connections while the server was down
    connections: int = 0
    lost: int = 0
    duplicated: int = 0
    dup_queued_twice: int = 0
    dup_redelivered: int = 0
    dup_relay_window: int = 0
    relay_window_lags: list[float] = field(default_factory=list)
    corrupt: int = 0
    delivered_unacked: int = 0        # delivered though the sender never saw the 250
    killed_in_gap: int = 0            # commits whose server was killed before the 250
    settled: bool = False
    seconds: float = 0.0
    details: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (self.lost == 0 and self.duplicated - self.dup_relay_window == 0
                and self.corrupt == 0 and self.permanent == 0 and self.settled
                and self.unacked == 0)

    def summary(self) -> str:
        s = (f"chaos {self.mode}: N={self.n} messages ({self.pairs} message-recipient pairs), "
             f"acked={self.acked} (as duplicate of an earlier commit: {self.acked_as_duplicate}), "
             f"unacked={self.unacked}, 5xx={self.permanent}, attempts={self.attempts}; "
             f"kills={self.kills} (aimed at the gap: {self.kills_aimed}), "
             f"cuts={self.cuts_dot + self.cuts_bytes} (after the final dot: {self.cuts_dot}, "
             f"at a random byte: {self.cuts_bytes}), refused while down={self.refused}, "
             f"connections={self.connections}; "
             f"lost={self.lost}, duplicated={self.duplicated - self.dup_relay_window}"
             f" (queued twice {self.dup_queued_twice}, delivered twice from one queue entry "
             f"{self.dup_redelivered}), corrupt={self.corrupt}")
        if self.mode == "relay":
            s += (f"; relay re-sends after a kill between the sink's 250 and oncemail recording it "
                  f"(smtp-sink has no CHECKPOINT): {self.dup_relay_window}")
            if self.relay_window_lags:
                lags = sorted(self.relay_window_lags)
                s += (f" (kill came {1000 * lags[0]:.0f}-{1000 * lags[-1]:.0f} ms after the sink "
                      f"stored the first copy, median {1000 * lags[len(lags) // 2]:.0f} ms)")
        s += (f"; commits whose server was killed before their 250: {self.killed_in_gap}"
              f"; delivered though never acknowledged: {self.delivered_unacked}; "
              f"settled={self.settled}; {self.seconds:.1f} s")
        return s


# -- messages -------------------------------------------------------------------------

def make_messages(cfg: ChaosConfig, rng: random.Random) -> list[Msg]:
    domain = LOCAL_DOMAIN if cfg.mode == "local" else REMOTE_DOMAIN
    out = []
    for i in range(cfg.n):
        k = rng.choice((1, 1, 1, 2, 3))
        rcpts = [f"user{j}@{domain}" for j in rng.sample(range(10), k)]
        if cfg.big_every and i % cfg.big_every == cfg.big_every - 1:
            size = rng.randint(70_000, 200_000)
        else:
            size = rng.randint(100, 8_000)
        lines = [f"From: <sender{i % 7}@chaos.test>", f"To: <{rcpts[0]}>",
                 f"Subject: chaos {i}", f"Message-ID: <chaos.{i}@chaos.test>", ""]
        body = []
        n = 0
        while n < size:
            line = f"{i} {n} " + "".join(rng.choice("abcdefghij .,:-") for _ in range(60))
            body.append(line)
            n += len(line) + 2
        if rng.random() < 0.1:
            body.append(".a line that starts with a dot")
        wire = ("\r\n".join(lines + body) + "\r\n").encode()
        out.append(Msg(i, f"sender{i % 7}@chaos.test", rcpts, wire))
    return out


# -- the retrying sender --------------------------------------------------------------

class ChaosSender:
    def __init__(self, port: int, messages: list[Msg], cfg: ChaosConfig, rng: random.Random):
        self.port = port
        self.cfg = cfg
        self.rng = random.Random(rng.random())
        self.todo: "queue.Queue[Msg]" = queue.Queue()
        for m in messages:
            self.todo.put(m)
        self.messages = messages
        self.remaining = len(messages)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self._next_slot = time.monotonic()

    def _pace(self):
        """Spread attempts at cfg.rate per second, so that kills land among them."""
        if not self.cfg.rate:
            return
        with self.lock:
            now = time.monotonic()
            self._next_slot = max(self._next_slot, now) + 1.0 / self.cfg.rate
            wait = self._next_slot - now - 1.0 / self.cfg.rate
        if wait > 0:
            time.sleep(wait)

    def _finish(self, m: Msg):
        with self.lock:
            self.remaining -= 1
            if self.remaining == 0:
                self.stop.set()

    def _worker(self, wid: int, deadline: float):
        rng = random.Random(self.rng.random() + wid)
        conn = None

        def drop():
            nonlocal conn
            if conn is not None:
                try:
                    conn.close()
                except Exception:
                    pass
                conn = None

        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                m = self.todo.get(timeout=0.1)
            except queue.Empty:
                continue
            wait = m.not_before - time.monotonic()
            if wait > 0:
                time.sleep(min(wait, 0.5))
            self._pace()
            m.attempts += 1
            try:
                if conn is None:
                    conn = smtplib.SMTP("127.0.0.1", self.port, local_hostname="chaos-mta.test",
                                        timeout=10)
                    conn.ehlo()
                code, text = self._transaction(conn, m)
            except (smtplib.SMTPException, OSError, socket.timeout):
                code, text = None, "connection lost"
                drop()
            if code is not None and 200 <= code < 300:
                m.acked, m.ack_text = True, text
                self._finish(m)
                if rng.random() >= self.cfg.p_reuse:
                    try:
                        conn.quit()
                    except Exception:
                        pass
                    drop()
                continue
            if code is not None and code >= 500:
                m.permanent = f"{code} {text}"
                self._finish(m)
                drop()
                continue
            # 4xx or no reply: try again later, with the same bytes.
            drop()
            m.not_before = time.monotonic() + rng.uniform(0.02, 0.3)
            self.todo.put(m)
        drop()

    @staticmethod
    def _transaction(conn: smtplib.SMTP, m: Msg):
        code, text = conn.mail(m.sender)
        if code != 250:
            conn.rset()
            return code, text.decode(errors="replace")
        for r in m.rcpts:
            code, text = conn.rcpt(r)
            if code not in (250, 251):
                conn.rset()
                return code, text.decode(errors="replace")
        code, text = conn.data(m.wire)
        return code, text.decode(errors="replace")

    def run(self, deadline: float):
        workers = [threading.Thread(target=self._worker, args=(i, deadline), daemon=True)
                   for i in range(self.cfg.threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(max(1.0, deadline - time.monotonic() + 15))


# -- the killer -----------------------------------------------------------------------

class Killer:
    def __init__(self, server, proxy: RandomCuttingProxy, cfg: ChaosConfig, rng: random.Random):
        self.server = server
        self.cfg = cfg
        self.rng = random.Random(rng.random())
        self.stop = threading.Event()
        self.dot = threading.Event()
        self.kills = self.aimed = 0
        self.kill_times: list[float] = []       # time.time() of each SIGKILL
        self.error: BaseException | None = None
        proxy.on_final_dot = self.dot.set
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        try:
            while not self.stop.is_set():
                if self.cfg.max_kills is not None and self.kills >= self.cfg.max_kills:
                    return
                if self.stop.wait(self.rng.uniform(*self.cfg.kill_every)):
                    return
                aimed = self.rng.random() < 0.5
                if aimed:
                    self.dot.clear()
                    if not self.dot.wait(2.0) or self.stop.is_set():
                        aimed = False
                    else:
                        time.sleep(self.rng.uniform(0, 0.002))
                self.server.kill()
                self.kill_times.append(time.time())
                self.kills += 1
                self.aimed += aimed
                time.sleep(self.rng.uniform(0, 0.3))
                self.server.start()
        except BaseException as e:   # reported by run_chaos
            self.error = e

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(60)


# -- settling and counting ----------------------------------------------------------------

_EVENT = re.compile(r"^\S+\s+\w+\s+(recovered|removed)\s+queue_id=(\S+)")


def _pending_after_restart(log_path: Path) -> set[str]:
    """Queue IDs this start recovered from the spool and has not removed yet."""
    recovered, removed = set(), set()
    for line in log_path.read_text(errors="replace").splitlines():
        m = _EVENT.match(line)
        if m:
            (recovered if m.group(1) == "recovered" else removed).add(m.group(2))
    return recovered - removed


def settle(server, timeout: float) -> bool:
    """Stop the server cleanly, start it again on the same spool and wait until
    everything it recovered is delivered (removed)."""
    if server.running:
        server.stop()
    server.start()
    log = server.logs[-1]
    try:
        wait_until(lambda: not _pending_after_restart(log), timeout,
                   lambda: f"{len(_pending_after_restart(log))} recovered messages to be delivered",
                   interval=0.1)
        return True
    except AssertionError:
        return False


@dataclass
class Copy:
    idx: int
    rcpt: str
    qid: str
    body: bytes       # the message as delivered, LF line ends, oncemail's fields removed
    at: float         # arrival (mtime), time.time() scale


def local_copies(server) -> list[Copy]:
    out = []
    for d in maildir.scan(server.mail_root):
        m = _MSGID.search(d.body)
        if not m:
            continue
        # File name: <arrival>.<queue id>_<recipient index>.<host>
        qid = d.path.name.split(".")[1].rsplit("_", 1)[0]
        out.append(Copy(int(m.group(1)), d.delivered_to.lower(), qid, d.body,
                        d.path.stat().st_mtime))
    return out


def sink_copies(dump_dir: Path) -> list[Copy]:
    out = []
    for p in sorted(dump_dir.glob("msg.*")):
        raw = p.read_bytes()
        lines = raw.split(b"\n")
        rcpts, i = [], 0
        while i < len(lines) and lines[i].startswith(b"X-"):
            if lines[i].startswith(b"X-Rcpt-Args: <"):
                rcpts.append(lines[i][len(b"X-Rcpt-Args: <"):].split(b">")[0].decode().lower())
            i += 1
        rest = b"\n".join(lines[i:])
        qm = _QID_RECEIVED.search(rest)
        m = _MSGID.search(rest)
        if not m:
            continue
        # The message starts after smtp-sink's and oncemail's Received: fields.
        start = rest.find(b"\nFrom: <sender")
        body = rest[start + 1:] if start >= 0 else rest
        if body.endswith(b"\n\n"):
            body = body[:-1]        # smtp-sink adds one empty line
        for r in rcpts:
            out.append(Copy(int(m.group(1)), r, qm.group(1).decode() if qm else "?", body,
                            p.stat().st_mtime))
    return out


def killed_in_gap(server) -> set[str]:
    """Queue IDs some start recovered from the spool though no start logged them
    `accepted`: committed by a server killed before its 250 went out."""
    accepted, recovered = set(), set()
    for line in server.log_text().splitlines():
        m = re.match(r"^\S+\s+\w+\s+(accepted|recovered)\s+queue_id=(\S+)", line)
        if m:
            (accepted if m.group(1) == "accepted" else recovered).add(m.group(2))
    return recovered - accepted


def count(result: ChaosResult, messages: list[Msg], copies: list[Copy], kill_times: list[float],
          in_gap: set[str] = frozenset()):
    by_pair: dict[tuple[int, str], list[Copy]] = {}
    for c in copies:
        by_pair.setdefault((c.idx, c.rcpt), []).append(c)
    for m in messages:
        want = maildir.wire_to_stored(m.wire)
        for r in m.rcpts:
            result.pairs += 1
            got = sorted(by_pair.pop((m.idx, r.lower()), []), key=lambda c: c.at)
            for c in got:
                if c.body != want:
                    result.corrupt += 1
                    result.details.append(f"corrupt: message {m.idx} to {r} (queue id {c.qid})")
            if not got:
                if m.acked:
                    result.lost += 1
                    result.details.append(f"lost: message {m.idx} to {r}, acked {m.ack_text!r} "
                                          f"after {m.attempts} attempts")
                continue
            if not m.acked:
                result.delivered_unacked += 1
            if len(got) == 1:
                continue
            result.duplicated += len(got) - 1
            for a, b in zip(got, got[1:]):
                if a.qid != b.qid:
                    result.dup_queued_twice += 1
                    why = (f"; {a.qid} was committed by a server killed before its 250 "
                           "(recovered at the next start)" if a.qid in in_gap else "")
                    result.details.append(f"duplicate: message {m.idx} to {r} queued twice "
                                          f"({a.qid}, {b.qid}){why}")
                elif result.mode == "relay" and (
                        lags := [k - a.at for k in kill_times
                                 if a.at - 0.05 <= k <= min(b.at, a.at + RELAY_WINDOW)]):
                    result.dup_relay_window += 1
                    result.relay_window_lags.append(min(lags))
                else:
                    result.dup_redelivered += 1
                    result.details.append(f"duplicate: message {m.idx} to {r} delivered twice from "
                                          f"queue id {a.qid}")
    for (idx, r), extra in by_pair.items():
        result.details.append(f"unexpected: {len(extra)} copies of message {idx} for {r}")


# -- the sink for relay mode ------------------------------------------------------------------

def smtp_sink_binary() -> tuple[str, dict]:
    """Postfix's smtp-sink: the installed one, else the copy tests/run unpacked."""
    env = dict(os.environ)
    found = shutil.which("smtp-sink") or ("/usr/sbin/smtp-sink" if os.path.exists("/usr/sbin/smtp-sink") else None)
    if found:
        return found, env
    from . import paths
    return paths.postfix_tool("smtp-sink")


class DumpingSink:
    """smtp-sink on 127.0.0.1:<port> writing one file per message into dump_dir."""

    def __init__(self, workdir: Path):
        self.port = free_port()
        self.dump_dir = Path(workdir) / "sink"
        self.dump_dir.mkdir(parents=True, exist_ok=True)
        self.proc = None

    def __enter__(self):
        tool, env = smtp_sink_binary()
        self.proc = subprocess.Popen(
            [tool, "-u", "root", "-d", f"{self.dump_dir}/msg.", f"127.0.0.1:{self.port}", "256"],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: is_listening(self.port), 10, "smtp-sink to listen")
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def server_config(mode: str, sink_port: int | None = None) -> dict:
    """oncemail settings for a chaos run: fast retries; relay mode trusts
    loopback and routes everything to the sink."""
    cfg = {"queue": {"retry_delays": ["1s"]},
           "limits": {"max_connections_per_ip": 1000}}
    if mode == "relay":
        cfg["relay"] = {"trusted_networks": ["127.0.0.0/8"],
                        "routes": {"*": f"127.0.0.1:{sink_port}"},
                        "starttls": False}
    return cfg


# -- the whole run ----------------------------------------------------------------------------

def run_chaos(server, cfg: ChaosConfig, sink: DumpingSink | None = None,
              progress=None) -> ChaosResult:
    """`server` is a started `Server` (config from `server_config`); for relay
    mode `sink` is the running DumpingSink it relays to."""
    t0 = time.monotonic()
    rng = random.Random(cfg.seed)
    messages = make_messages(cfg, rng)
    result = ChaosResult(cfg.mode, cfg.n)
    with RandomCuttingProxy(server.port, cfg.p_dot, cfg.p_bytes, cfg.p_rst,
                            seed=rng.random()) as proxy:
        sender = ChaosSender(proxy.port, messages, cfg, rng)
        with Killer(server, proxy, cfg, rng) as killer:
            sender.run(time.monotonic() + cfg.deadline)
        if killer.error:
            raise killer.error
        result.kills, result.kills_aimed = killer.kills, killer.aimed
        result.cuts_dot, result.cuts_bytes = proxy.cuts_dot, proxy.cuts_bytes
        result.refused, result.connections = proxy.refused, proxy.connections
    if progress:
        progress(f"sending done after {time.monotonic() - t0:.1f}s; settling")
    result.settled = settle(server, cfg.settle_timeout)
    if cfg.mode == "relay":
        time.sleep(0.5)
        copies = sink_copies(sink.dump_dir)
    else:
        copies = local_copies(server)
    result.acked = sum(m.acked for m in messages)
    result.acked_as_duplicate = sum(m.acked and "duplicate of" in m.ack_text for m in messages)
    result.unacked = sum(not m.acked and not m.permanent for m in messages)
    result.permanent = sum(bool(m.permanent) for m in messages)
    for m in messages:
        if m.permanent:
            result.details.append(f"5xx: message {m.idx}: {m.permanent}")
    result.attempts = sum(m.attempts for m in messages)
    in_gap = killed_in_gap(server)
    result.killed_in_gap = len(in_gap)
    count(result, messages, copies, killer.kill_times, in_gap)
    result.seconds = time.monotonic() - t0
    return result
