"""SMTP dialogues as data.

A transcript is text, one step per line, that reads like the conversation:

    S: 220                    read one reply; check its code only
    S: 250 2.1.0              check the code and the enhanced status code
    S: closed                 the server closes the connection now
    C: MAIL FROM:<a@b.test>   queue this line (CRLF is added)
    C~ body\\r\\nwith \\x00    queue these bytes, Python escapes, no CRLF added
    C= b"x" * 3000 + b"\\r\\n"  queue the bytes a Python expression gives
    D: alice@example.com <- Subject: t\\n\\nhi\\n
                              after the dialogue, this mailbox holds exactly
                              this body (Python escapes, LF line endings)
    D: alice@example.com from=<> <- ...   also check the Return-Path
    D: ?@example.com <- ...   some mailbox of that domain, whichever
    D: none                   nothing is delivered (also the default)
    --- reconnect             close, open a new connection (expect S: 220)
    # comment

Queued client bytes are sent in ONE write when the next `S:` line comes, so
consecutive `C` lines are a pipelined group. After the dialogue the runner
waits for the deliveries and an empty spool, then checks that the Maildirs
hold exactly the `D:` messages and nothing else.
"""

import codecs
import re
import textwrap
from dataclasses import dataclass, field

from . import smtp

_REPLY = re.compile(r"^(\d{3})(?:\s+([245]\.\d{1,3}\.\d{1,3}))?\s*$")


@dataclass
class Transcript:
    name: str
    text: str
    config: dict | None = None
    domains: tuple = ("example.com", "other.test")
    marks: list = field(default_factory=list)

    def __str__(self):
        return self.name


@dataclass
class Step:
    lineno: int
    kind: str        # "send", "reply", "closed", "reconnect"
    data: bytes = b""
    code: int = 0
    enhanced: str | None = None


@dataclass
class Expected:
    mailbox: str     # "user@domain" or "?@domain"
    body: bytes
    return_path: str | None


def unescape(s: str) -> bytes:
    return codecs.escape_decode(s.encode("utf-8"))[0]


def parse(text: str) -> tuple[list[Step], list[Expected]]:
    steps, expected = [], []
    for n, raw in enumerate(textwrap.dedent(text).splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("--- reconnect"):
            steps.append(Step(n, "reconnect"))
            continue
        tag, rest = raw.lstrip()[:2], raw.lstrip()[3:]
        if tag == "C:":
            steps.append(Step(n, "send", rest.encode("utf-8") + b"\r\n"))
        elif tag == "C~":
            steps.append(Step(n, "send", unescape(rest)))
        elif tag == "C=":
            data = eval(rest, {})  # test-authored expressions only
            assert isinstance(data, bytes), f"line {n}: C= must give bytes"
            steps.append(Step(n, "send", data))
        elif tag == "S:" and rest.strip() == "closed":
            steps.append(Step(n, "closed"))
        elif tag == "S:":
            m = _REPLY.match(rest.strip())
            assert m, f"line {n}: bad reply spec {rest!r}"
            steps.append(Step(n, "reply", code=int(m.group(1)), enhanced=m.group(2)))
        elif tag == "D:":
            if rest.strip() != "none":
                expected.append(_delivery(n, rest))
        else:
            raise AssertionError(f"line {n}: cannot parse {raw!r}")
    return steps, expected


def _delivery(n: int, rest: str) -> Expected:
    head, sep, body = rest.partition(" <-")
    assert sep, f"line {n}: D: needs 'mailbox <- body'"
    body = body.removeprefix(" ")
    words = head.split()
    rp = None
    for w in words[1:]:
        assert w.startswith("from=<") and w.endswith(">"), f"line {n}: {w!r}"
        rp = w[6:-1]
    return Expected(words[0], unescape(body), rp)


def run(text: str, server) -> list[smtp.Reply]:
    """Play a transcript against a running server; returns all replies.

    Fails with the transcript marked at the step that went wrong.
    """
    steps, expected = parse(text)
    replies = []
    conn = smtp.SmtpConn(server.port)
    pending = b""
    try:
        for step in steps:
            try:
                if step.kind == "send":
                    pending += step.data
                    continue
                if pending:
                    conn.send(pending)
                    pending = b""
                if step.kind == "reply":
                    r = conn.reply()
                    replies.append(r)
                    smtp.expect(r, step.code, step.enhanced)
                elif step.kind == "closed":
                    if not conn.expect_closed():
                        raise AssertionError("connection still open")
                elif step.kind == "reconnect":
                    conn.close()
                    conn = smtp.SmtpConn(server.port)
            except (AssertionError, OSError) as e:
                raise AssertionError(
                    f"transcript failed at line {step.lineno}: {e}\n"
                    + _marked(text, step.lineno)
                ) from None
        if pending:
            conn.send(pending)
    finally:
        conn.close()
    check_deliveries(server, expected)
    return replies


def check_deliveries(server, expected: list[Expected]):
    """The Maildirs hold exactly `expected`, and the spool drained."""
    got = server.settle(len(expected))
    remaining = list(got)
    missing = []
    for e in expected:
        match = next((d for d in remaining if _fits(d, e)), None)
        if match is None:
            missing.append(e)
        else:
            remaining.remove(match)
    if missing or remaining:
        raise AssertionError(
            "deliveries differ from the transcript's D: lines\n"
            f"  missing: {[(e.mailbox, e.body[:200]) for e in missing]}\n"
            f"  unexpected: {[(d.mailbox, d.body[:200]) for d in remaining]}"
        )


def _fits(d, e: Expected) -> bool:
    user, _, domain = e.mailbox.rpartition("@")
    if domain != d.domain or (user != "?" and user != d.user):
        return False
    if e.return_path is not None and d.return_path != e.return_path:
        return False
    return d.body == e.body


def _marked(text: str, lineno: int) -> str:
    lines = textwrap.dedent(text).splitlines()
    return "\n".join(
        f"{'>>' if i == lineno else '  '} {line.strip()}"
        for i, line in enumerate(lines, 1) if line.strip()
    )
