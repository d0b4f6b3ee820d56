"""The final-dot gap (RFC 1047) from the client's side, and what the server logged.

- `HookedServer`: a `Server` started with extra environment variables, for
  the test hook `ONCEMAIL_TEST_HOLD_REPLY_MS` (commit, log
  `test hook: committed, holding the 250`, sleep, then write the 250).
  `hooked_server_factory(request, tmp_path)` registers it with the
  `start_server` fixture's list, so teardown and log attachment cover it.
- `send_and_vanish`: one transaction over a raw socket that ends the
  connection right after the final dot, without reading its reply (with a
  FIN, or with a RST after the server's hold hook fired).
- `retry`: the same transaction again, returning the reply to the dot.
- `events` / `wait_event`: oncemail's log lines, parsed into fields.

Every wait here is bounded.
"""

import os
import re
import socket
import struct
from pathlib import Path

from .server import Server
from .smtp import SmtpConn, dot_stuff, expect
from .wait import wait_until

HOLD_ENV = "ONCEMAIL_TEST_HOLD_REPLY_MS"
HOLD_EVENT = "test hook: committed, holding the 250"


class HookedServer(Server):
    """A `Server` whose process gets `env` added to the inherited environment.

    `env` may be changed between starts (e.g. drop the hold hook before a
    restart).
    """

    def __init__(self, workdir: Path, env: dict | None = None, **kwargs):
        super().__init__(workdir, **kwargs)
        self.env = dict(env or {})

    def spawn(self):
        # Server.spawn copies os.environ into the child at Popen time; add ours
        # for that moment only (the suite's main thread is the only one that
        # spawns processes).
        saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        try:
            return super().spawn()
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def hooked_server_factory(request, tmp_path):
    """start(env=..., **Server kwargs) -> a started HookedServer.

    Use together with the `start_server` fixture (request it in the test or
    fixture), whose teardown stops every server in its list.
    """

    def start(env=None, **kwargs) -> HookedServer:
        servers = request.node.oncemail_servers
        s = HookedServer(tmp_path / f"server{len(servers) + 1}", env=env, **kwargs)
        servers.append(s)
        return s.start()

    return start


# -- the client side of the gap ------------------------------------------

def open_transaction(port, sender, rcpts, helo="client.test", mail_params="",
                     timeout=10.0) -> SmtpConn:
    """Connect, EHLO, MAIL, RCPT..., DATA; returns the connection after 354."""
    c = SmtpConn(port, timeout)
    try:
        expect(c.reply(), 220)
        expect(c.cmd(f"EHLO {helo}"), 250)
        expect(c.cmd(f"MAIL FROM:<{sender}>{mail_params}"), 250, "2.1.0")
        for r in rcpts:
            expect(c.cmd(f"RCPT TO:<{r}>"), 250, "2.1.5")
        expect(c.cmd("DATA"), 354)
    except BaseException:
        c.close()
        raise
    return c


def send_and_vanish(port, sender, rcpts, wire, helo="client.test", mail_params="",
                    reset_after=None):
    """Send one message and end the connection right after its final dot,
    reading nothing after the 354.

    reset_after=None closes at once (FIN). Otherwise it is a function that
    returns when the connection should end; the end is then a RST (SO_LINGER
    0), as from a client host that crashed or a middlebox that gave up.
    """
    c = open_transaction(port, sender, rcpts, helo, mail_params)
    try:
        c.send(dot_stuff(wire) + b".\r\n")
        if reset_after is not None:
            reset_after()
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                              struct.pack("ii", 1, 0))
    finally:
        c.close()


def retry(port, sender, rcpts, wire, helo="client.test", mail_params="",
          timeout=10.0):
    """The whole transaction again, as a sender's retry; returns the reply to
    the final dot (and says QUIT)."""
    with open_transaction(port, sender, rcpts, helo, mail_params, timeout) as c:
        c.send(dot_stuff(wire) + b".\r\n")
        final = c.reply()
        expect(c.cmd("QUIT"), 221)
        return final


DUPLICATE = re.compile(r"^2\.0\.0 Ok: duplicate of (\S+), already queued; not queued again$")


def duplicate_of(reply) -> str | None:
    """The original queue ID named by a 250 that answers a duplicate."""
    m = DUPLICATE.match(reply.text) if reply.code == 250 else None
    return m.group(1) if m else None


# -- the server's log ------------------------------------------------------

_LINE = re.compile(r"^\S+\s+(?:TRACE|DEBUG|INFO|WARN|ERROR)\s+(.*)$")
_FIELD = re.compile(r' (\w+)=("(?:[^"\\]|\\.)*"|\S+)')


def parse_line(line: str):
    """(message, {field: value}) for one log line, or None."""
    m = _LINE.match(line)
    if not m:
        return None
    rest = m.group(1)
    first = _FIELD.search(rest)
    message = rest[: first.start()] if first else rest
    fields = {}
    for k, v in _FIELD.findall(rest[len(message):]):
        fields[k] = v[1:-1].replace('\\"', '"') if v.startswith('"') else v
    return message.strip(), fields


def events(server: Server, message: str, **match) -> list[dict]:
    """Fields of every log line (of every start) with this message whose
    fields include `match`."""
    out = []
    for line in server.log_text().splitlines():
        parsed = parse_line(line)
        if parsed and parsed[0] == message and all(
            parsed[1].get(k) == str(v) for k, v in match.items()
        ):
            out.append(parsed[1])
    return out


def wait_event(server: Server, message: str, timeout: float = 10.0, count: int = 1,
               **match) -> list[dict]:
    """Wait until at least `count` such lines are logged; returns them all."""
    return wait_until(
        lambda: (found := events(server, message, **match)) and len(found) >= count
        and found,
        timeout,
        lambda: f"{count} log line(s) {message!r} {match or ''} "
                f"(have {len(events(server, message, **match))})",
        interval=0.05,
    )
