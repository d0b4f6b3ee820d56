"""A raw SMTP client: bytes out, parsed replies in, nothing hidden.

smtplib fixes up what it sends (line endings, dot-stuffing, command order);
protocol tests need to send exactly the bytes they mean, pipelined or not,
and to see every reply line. Every socket operation has a timeout.
"""

import re
import socket
import time
from dataclasses import dataclass

REPLY_TIMEOUT = 10.0
_LINE = re.compile(rb"^(\d{3})([ -]?)(.*)$", re.S)
_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$)")
_QUEUED = re.compile(r"queued as <?([A-Za-z0-9._-]+)>?")


class ConnectionClosed(AssertionError):
    pass


@dataclass
class Reply:
    code: int
    lines: list[str]  # text after "NNN-" / "NNN ", one per line

    @property
    def text(self) -> str:
        return self.lines[-1]

    @property
    def enhanced(self) -> str | None:
        """The enhanced status code of the last line, e.g. "2.1.0"."""
        m = _ENHANCED.match(self.text)
        return ".".join(m.groups()) if m else None

    @property
    def queue_id(self) -> str | None:
        m = _QUEUED.search(self.text)
        return m.group(1) if m else None

    def keywords(self) -> dict[str, str]:
        """EHLO extensions: {"SIZE": "26214400", "PIPELINING": "", ...}."""
        out = {}
        for line in self.lines[1:]:
            word, _, arg = line.partition(" ")
            out[word.upper()] = arg
        return out

    def matches(self, code: int, enhanced: str | None = None) -> bool:
        return self.code == code and (enhanced is None or self.enhanced == enhanced)

    def __str__(self):
        return "\n".join(
            f"{self.code}{'-' if i < len(self.lines) - 1 else ' '}{t}"
            for i, t in enumerate(self.lines)
        )


class SmtpConn:
    def __init__(self, port: int, timeout: float = REPLY_TIMEOUT, host="127.0.0.1"):
        assert host.startswith("127."), "tests talk to loopback only"
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.timeout = timeout
        self.buf = b""
        self.closed = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    # -- sending ---------------------------------------------------------

    def send(self, data: bytes):
        self.sock.sendall(data)

    def send_line(self, line: str | bytes):
        if isinstance(line, str):
            line = line.encode()
        self.send(line + b"\r\n")

    def cmd(self, line: str | bytes) -> Reply:
        self.send_line(line)
        return self.reply()

    # -- receiving -------------------------------------------------------

    def _read_line(self, deadline: float) -> bytes:
        while b"\n" not in self.buf:
            if len(self.buf) > 65536:
                raise AssertionError(f"reply line too long: {self.buf[:200]!r}")
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise AssertionError(
                    f"no reply within {self.timeout}s (partial: {self.buf!r})"
                ) from None
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.closed = True
                raise ConnectionClosed(
                    "server closed the connection"
                    + (f" mid-line: {self.buf!r}" if self.buf else "")
                )
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line.removesuffix(b"\r")

    def reply(self, timeout: float | None = None) -> Reply:
        deadline = time.monotonic() + (timeout or self.timeout)
        code, lines = None, []
        while True:
            raw = self._read_line(deadline)
            m = _LINE.match(raw)
            if not m or (code is not None and int(m.group(1)) != code):
                raise AssertionError(f"malformed reply line {raw!r} after {lines}")
            code = int(m.group(1))
            lines.append(m.group(3).decode("utf-8", "replace"))
            if m.group(2) != b"-":
                return Reply(code, lines)

    def expect_closed(self, timeout: float = 5.0) -> bool:
        """True if the server closes the connection (EOF or reset) within
        `timeout` without sending anything more."""
        if self.buf:
            raise AssertionError(f"unexpected data before close: {self.buf!r}")
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return False
        except ConnectionResetError:
            data = b""
        if data:
            raise AssertionError(f"unexpected data instead of close: {data!r}")
        self.closed = True
        return True


def send_message(port: int, sender: str, rcpts: list[str], wire: bytes,
                 helo="client.test", mail_params="", timeout=REPLY_TIMEOUT) -> str:
    """One transaction over DATA with `wire` (already CRLF, not dot-stuffed).

    Returns the queue ID from the 250. Fails on any unexpected reply.
    """
    with SmtpConn(port, timeout) as c:
        expect(c.reply(), 220)
        expect(c.cmd(f"EHLO {helo}"), 250)
        expect(c.cmd(f"MAIL FROM:<{sender}>{mail_params}"), 250, "2.1.0")
        for r in rcpts:
            expect(c.cmd(f"RCPT TO:<{r}>"), 250, "2.1.5")
        expect(c.cmd("DATA"), 354)
        c.send(dot_stuff(wire) + b".\r\n")
        final = expect(c.reply(), 250, "2.0.0")
        c.cmd("QUIT")
        return final.queue_id


def expect(reply: Reply, code: int, enhanced: str | None = None) -> Reply:
    if not reply.matches(code, enhanced):
        want = f"{code} {enhanced or ''}".strip()
        raise AssertionError(f"expected {want}, got: {reply}")
    return reply


def dot_stuff(wire: bytes) -> bytes:
    """RFC 5321 4.5.2 transparency for a CRLF message that ends in CRLF."""
    assert wire == b"" or wire.endswith(b"\r\n"), "message must end in CRLF"
    stuffed = wire.replace(b"\r\n.", b"\r\n..")
    return b"." + stuffed if stuffed.startswith(b".") else stuffed
