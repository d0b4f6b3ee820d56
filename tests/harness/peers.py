"""Peer servers and network tricks for tests of oncemail as a client.

- `CaptureSink`: an aiosmtpd server in a thread that records every
  transaction (envelope and exact bytes) and can be told to answer RCPT or
  end-of-data with any reply, or to wait before answering the final dot.
- `SmtpSink`: Postfix's smtp-sink as a subprocess, dumping each message
  to a file; a fast, independent implementation to relay to.
- `ScriptedSink`: a `CaptureSink` that follows a script per transaction
  (refuse a recipient, 451 first and 250 later, drop the connection after
  the final dot, hold the reply), timestamps what it acknowledged and
  counts TCP connections. `split_sink_dump` reads smtp-sink's dump files.
- `CuttingProxy`: a TCP proxy that can drop the connection at the worst
  moment of a transaction: after the client's final dot has reached the
  server, before the server's reply reaches the client. That is the window
  duplicate suppression is about (DESIGN.md).

All listen on 127.0.0.1 only, on free ports, and stop by themselves at
teardown (use them as context managers).
"""

import asyncio
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from . import paths
from .wait import free_port, is_listening, wait_until


@dataclass
class Captured:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes          # as received, CRLF, dot-unstuffed
    mail_options: list[str]


class CaptureSink:
    """aiosmtpd on 127.0.0.1:<port>, recording what it is sent.

    rcpt_reply(address) -> None | "550 5.1.1 no": a reply overrides.
    data_reply: reply to end-of-data instead of 250 (message not recorded).
    data_delay: seconds to wait before answering end-of-data.
    """

    def __init__(self, rcpt_reply=None, data_reply=None, data_delay=0.0):
        from aiosmtpd.controller import Controller

        self.port = free_port()
        self.messages: list[Captured] = []
        self.rcpt_reply = rcpt_reply
        self.data_reply = data_reply
        self.data_delay = data_delay
        self._controller = Controller(
            self, hostname="127.0.0.1", port=self.port,
            enable_SMTPUTF8=True, decode_data=False, ready_timeout=10,
        )

    # aiosmtpd handler hooks
    async def handle_MAIL(self, server, session, envelope, address, options):
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server, session, envelope, address, options):
        reply = self.rcpt_reply(address) if self.rcpt_reply else None
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.data_delay:
            await asyncio.sleep(self.data_delay)
        if self.data_reply:
            return self.data_reply
        self.messages.append(Captured(
            envelope.mail_from, list(envelope.rcpt_tos),
            envelope.original_content, list(envelope.mail_options)))
        return "250 2.0.0 OK captured"

    def __enter__(self):
        self._controller.start()
        return self

    def __exit__(self, *exc):
        self._controller.stop()

    def wait_messages(self, n: int, timeout: float = 30.0):
        wait_until(lambda: len(self.messages) >= n, timeout, f"{n} captured messages")
        return self.messages


class SmtpSink:
    """Postfix smtp-sink on 127.0.0.1:<port>; `messages()` reads the dumps
    (each starts with smtp-sink's own X-* and Received header lines)."""

    def __init__(self, workdir: Path, extra_args=()):
        self.port = free_port()
        self.dump_dir = Path(workdir) / "smtp-sink"
        self.dump_dir.mkdir(parents=True, exist_ok=True)
        self.extra_args = list(extra_args)
        self.proc = None

    def __enter__(self):
        tool, env = paths.postfix_tool("smtp-sink")
        self.proc = subprocess.Popen(
            [tool, "-u", "root", "-d", f"{self.dump_dir}/msg.", *self.extra_args,
             f"127.0.0.1:{self.port}", "100"],
            env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: is_listening(self.port), 10, "smtp-sink to listen")
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def messages(self) -> list[bytes]:
        return [p.read_bytes() for p in sorted(self.dump_dir.glob("msg.*"))]


class CuttingProxy:
    """127.0.0.1:<port> -> 127.0.0.1:<target>, one thread per direction.

    With `cut_final_replies = n`, the first n replies to end-of-data are
    never forwarded: the proxy closes both sides instead, after the server
    has received the whole message (and may have committed it).

    Limits: it follows DATA only (not BDAT), and the client must wait for
    the 354 before sending the message, as smtplib and oncemail do.
    """

    def __init__(self, target_port: int, cut_final_replies: int = 0):
        self.target = target_port
        self.cuts_left = cut_final_replies
        self.cuts = 0
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []

    def __enter__(self):
        self._spawn(self._accept_loop)
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        for t in self.threads:
            t.join(5)
        self.listener.close()

    def _spawn(self, fn, *args):
        t = threading.Thread(target=fn, args=args, daemon=True)
        self.threads.append(t)
        t.start()

    def _accept_loop(self):
        while not self.stopping.is_set():
            try:
                client, _ = self.listener.accept()
            except socket.timeout:
                continue
            server = socket.create_connection(("127.0.0.1", self.target), timeout=10)
            self._spawn(self._pump, client, server)

    def _pump(self, client: socket.socket, server: socket.socket):
        """Both directions in one thread, so the cut decision sees the
        client's final dot before the server's reply to it."""
        import selectors

        sel = selectors.DefaultSelector()
        sel.register(client, selectors.EVENT_READ, "c")
        sel.register(server, selectors.EVENT_READ, "s")
        in_data = False      # the server said 354
        dot_sent = False     # the client finished the data since
        tail = b""
        deadline = time.monotonic() + 120
        try:
            while not self.stopping.is_set() and time.monotonic() < deadline:
                for key, _ in sel.select(0.2):
                    chunk = key.fileobj.recv(65536)
                    if not chunk:
                        return
                    if key.data == "c":
                        if in_data:
                            seen = tail + chunk
                            dot_sent = dot_sent or b"\r\n.\r\n" in seen
                            tail = seen[-4:]
                        server.sendall(chunk)
                        continue
                    if dot_sent and self._take_cut():
                        return  # drop the final reply and the connection
                    if chunk.startswith(b"354") or b"\r\n354" in chunk:
                        in_data, dot_sent, tail = True, False, b"\r\n"
                    elif dot_sent:
                        in_data = dot_sent = False
                    client.sendall(chunk)
        except OSError:
            return
        finally:
            sel.close()
            client.close()
            server.close()

    def _take_cut(self) -> bool:
        with self.lock:
            if self.cuts_left <= 0:
                return False
            self.cuts_left -= 1
            self.cuts += 1
            return True


# -- scripted peers for the relay tests ------------------------------------


@dataclass
class Arrival:
    """A message a `ScriptedSink` acknowledged, and when (time.monotonic())."""
    at: float
    message: Captured


class ScriptedSink(CaptureSink):
    """aiosmtpd that follows a script, transaction by transaction, and
    counts TCP connections. For oncemail as a client: refuse one recipient,
    fail the first attempt then accept, drop the connection after the final
    dot, hold the final reply.

    rcpt_script(address, n) -> None | "451 4.2.0 later": n is how many times
        this address was given in RCPT so far, this one included (1 first).
    data_script(captured, n) -> action, n counting end-of-data (1 first):
        None / "accept"  record it and answer 250;
        "NNN text"       answer that, record nothing;
        "close"          drop the connection without a reply (RFC 1047's
                         window, seen from the server); kept in `dropped`;
        ("hold", secs)   wait, then record and answer 250. If the client
                         goes away meanwhile, aiosmtpd ends the session and
                         nothing is recorded (counted in `abandoned`).
    The script functions run in the sink's thread; keep them quick.

    `messages` and `arrivals` hold what was acknowledged with a 250, in order;
    `connections` counts TCP connections accepted, `in_hold` the replies
    being held right now.
    """

    def __init__(self, rcpt_script=None, data_script=None):
        super().__init__()
        self.rcpt_script = rcpt_script
        self.data_script = data_script
        self.arrivals: list[Arrival] = []
        self.dropped: list[Captured] = []
        self.refused: list[tuple[Captured, str]] = []   # data replies other than 250
        self.rcpt_refusals: list[tuple[str, str]] = []
        self.connections = 0
        self.in_hold = 0
        self.abandoned = 0
        self._rcpt_counts: dict[str, int] = {}
        self._data_count = 0
        self._lock = threading.Lock()
        self._arrived = threading.Condition()
        self._controller = _counting_controller(self)

    def __enter__(self):
        super().__enter__()
        # aiosmtpd's Controller connects once to itself while starting.
        with self._lock:
            self.connections = 0
        return self

    def _connected(self):
        with self._lock:
            self.connections += 1

    async def handle_RCPT(self, server, session, envelope, address, options):
        with self._lock:
            n = self._rcpt_counts[address] = self._rcpt_counts.get(address, 0) + 1
        reply = self.rcpt_script(address, n) if self.rcpt_script else None
        if reply:
            self.rcpt_refusals.append((address, reply))
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        captured = Captured(envelope.mail_from, list(envelope.rcpt_tos),
                            envelope.original_content, list(envelope.mail_options))
        with self._lock:
            self._data_count += 1
            n = self._data_count
        action = self.data_script(captured, n) if self.data_script else None
        if isinstance(action, tuple) and action[0] == "hold":
            with self._lock:
                self.in_hold += 1
            try:
                await asyncio.sleep(action[1])
            except asyncio.CancelledError:
                with self._lock:
                    self.abandoned += 1
                raise
            finally:
                with self._lock:
                    self.in_hold -= 1
            action = None
        if action == "close":
            self.dropped.append(captured)
            # abort(): the reply aiosmtpd writes next is discarded, not sent.
            server.transport.abort()
            return "250 2.0.0 never sent"
        if action not in (None, "accept"):
            self.refused.append((captured, action))
            return action
        with self._arrived:
            self.messages.append(captured)
            self.arrivals.append(Arrival(time.monotonic(), captured))
            self._arrived.notify_all()
        return "250 2.0.0 OK captured"

    def wait_arrivals(self, n: int, timeout: float = 30.0) -> list[Arrival]:
        """Block (without polling) until `n` messages were acknowledged; wakes
        up as the 250 is about to be written, so a test can act within a
        millisecond of it."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self.arrivals) >= n, timeout):
                raise AssertionError(f"timed out after {timeout}s waiting for {n} "
                                     f"acknowledged messages (have {len(self.arrivals)})")
            return list(self.arrivals)


def _counting_controller(sink: "ScriptedSink"):
    """An aiosmtpd Controller that tells `sink` of every new connection:
    aiosmtpd calls factory() once per accepted TCP connection."""
    from aiosmtpd.controller import Controller

    class Counting(Controller):
        def factory(self):
            sink._connected()
            return super().factory()

    return Counting(sink, hostname="127.0.0.1", port=sink.port,
                    enable_SMTPUTF8=True, decode_data=False, ready_timeout=10)


def split_sink_dump(dump: bytes) -> tuple[dict[str, list[str]], bytes]:
    """An smtp-sink dump file -> ({"X-Rcpt-Args": [...], ...}, message).

    smtp-sink writes its X-* records, its own three-line Received: field,
    then the message as received with LF line endings, then one empty
    line. The message returned is what the client sent, LF line endings.
    """
    lines = dump.split(b"\n")
    records: dict[str, list[str]] = {}
    i = 0
    while lines[i].startswith(b"X-"):
        name, _, value = lines[i].decode("utf-8", "replace").partition(": ")
        records.setdefault(name, []).append(value)
        i += 1
    assert lines[i].startswith(b"Received: from "), lines[i][:80]
    i += 1
    assert b"(smtp-sink)" in lines[i], lines[i][:80]
    i += 2  # the "by" line and the date line
    rest = b"\n".join(lines[i:])
    assert rest.endswith(b"\n\n"), "smtp-sink dump without its final empty line"
    return records, rest[:-1]
