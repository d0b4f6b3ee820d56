"""A TCP proxy that cuts connections at random, for the chaos run.

`RandomCuttingProxy(target_port, ...)` listens on 127.0.0.1:<port> and
forwards each connection to 127.0.0.1:<target_port>, like `peers.CuttingProxy`,
but decides for every connection, at random, how it will end:

- "dot" (probability `p_dot`): the reply to the k-th end-of-data of the
  connection (k = 1..3) is never forwarded; the proxy closes both sides
  instead. The server has the whole message and may have committed it: the
  RFC 1047 window, exactly.
- "bytes" (probability `p_bytes`): the connection is cut once a random number
  of bytes (0 .. `max_cut_bytes`, both directions counted) went through:
  inside a command, inside a reply, in the middle of DATA, anywhere.
- otherwise it lives until one side closes it.

Each cut is a FIN, or a RST (SO_LINGER 0) with probability `p_rst`. A
connection the target refuses (the server is down) is closed at once. Counters
(`cuts_dot`, `cuts_bytes`, `refused`, `connections`) say what happened;
`on_final_dot`, if set, is called (from the proxy's thread) whenever a
client's end of data has been forwarded, so a killer can aim at the gap.

Like `CuttingProxy`, it follows DATA only (not BDAT) and expects a client
that waits for 354 before the message (smtplib does).
"""

import random
import selectors
import socket
import struct
import threading
import time


class RandomCuttingProxy:
    def __init__(self, target_port: int, p_dot: float = 0.1, p_bytes: float = 0.1,
                 p_rst: float = 0.5, max_cut_bytes: int = 20000, seed=None):
        self.target = target_port
        self.p_dot, self.p_bytes, self.p_rst = p_dot, p_bytes, p_rst
        self.max_cut_bytes = max_cut_bytes
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.cuts_dot = self.cuts_bytes = self.refused = self.connections = 0
        self.on_final_dot = None
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=256)
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []

    # -- lifecycle ---------------------------------------------------------

    def __enter__(self):
        self._spawn(self._accept_loop)
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        for t in list(self.threads):
            t.join(5)
        self.listener.close()

    @property
    def cuts(self) -> int:
        return self.cuts_dot + self.cuts_bytes

    def _spawn(self, fn, *args):
        t = threading.Thread(target=fn, args=args, daemon=True)
        with self.lock:
            self.threads = [x for x in self.threads if x.is_alive()]
            self.threads.append(t)
        t.start()

    def _accept_loop(self):
        while not self.stopping.is_set():
            try:
                client, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.connections += 1
                r = self.rng.random()
                if r < self.p_dot:
                    fate = ("dot", self.rng.randint(1, 3))
                elif r < self.p_dot + self.p_bytes:
                    fate = ("bytes", self.rng.randint(0, self.max_cut_bytes))
                else:
                    fate = (None, 0)
                rst = self.rng.random() < self.p_rst
            self._spawn(self._pump, client, fate, rst)

    # -- one connection ----------------------------------------------------

    @staticmethod
    def _end(sock: socket.socket, rst: bool):
        try:
            if rst:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        except OSError:
            pass

    def _pump(self, client: socket.socket, fate, rst: bool):
        try:
            server = socket.create_connection(("127.0.0.1", self.target), timeout=5)
        except OSError:
            with self.lock:
                self.refused += 1
            self._end(client, rst)
            return
        kind, n = fate
        sel = selectors.DefaultSelector()
        sel.register(client, selectors.EVENT_READ, "c")
        sel.register(server, selectors.EVENT_READ, "s")
        in_data = dot_sent = False
        tail = b""
        dots = 0          # end-of-data replies seen
        moved = 0         # bytes forwarded, both directions
        cut = False
        deadline = time.monotonic() + 300
        try:
            while not self.stopping.is_set() and time.monotonic() < deadline:
                for key, _ in sel.select(0.2):
                    chunk = key.fileobj.recv(65536)
                    if not chunk:
                        return
                    if kind == "bytes" and moved + len(chunk) > n:
                        # Forward part of the chunk, then cut.
                        part = chunk[: max(0, n - moved)]
                        dest = server if key.data == "c" else client
                        if part:
                            dest.sendall(part)
                        with self.lock:
                            self.cuts_bytes += 1
                        cut = True
                        return
                    moved += len(chunk)
                    if key.data == "c":
                        if in_data:
                            seen = tail + chunk
                            if not dot_sent and b"\r\n.\r\n" in seen:
                                dot_sent = True
                                server.sendall(chunk)
                                if self.on_final_dot:
                                    self.on_final_dot()
                                continue
                            tail = seen[-4:]
                        server.sendall(chunk)
                        continue
                    if dot_sent:
                        dots += 1
                        if kind == "dot" and dots == n:
                            with self.lock:
                                self.cuts_dot += 1
                            cut = True
                            return  # the reply to the final dot is dropped
                    if chunk.startswith(b"354") or b"\r\n354" in chunk:
                        in_data, dot_sent, tail = True, False, b"\r\n"
                    elif dot_sent:
                        in_data = dot_sent = False
                    client.sendall(chunk)
        except OSError:
            return
        finally:
            sel.close()
            self._end(client, rst and cut)
            self._end(server, rst and cut)
