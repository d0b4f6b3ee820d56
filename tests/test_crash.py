"""kill -9 at the worst moments: nothing acknowledged is lost (I1, I3),
nothing is delivered twice (I4), nothing half-received survives.
"""

import threading
import time

import pytest

from harness import maildir
from harness.smtp import SmtpConn, dot_stuff, expect
from harness.wait import wait_until

RCPTS = ["alice@example.com", "bob@example.com", "carol@other.test"]


def message(tag: str, i: int, pad: int = 0) -> bytes:
    """A unique CRLF message."""
    lines = [f"Subject: {tag} {i}", f"Message-ID: <{tag}-{i}@crash.test>", ""]
    lines += [f"{tag} {i} line {k} " + "x" * 60 for k in range(pad)]
    return ("\r\n".join(lines) + "\r\nend\r\n").encode()


def open_session(port) -> SmtpConn:
    c = SmtpConn(port)
    expect(c.reply(), 220)
    expect(c.cmd("EHLO crash.test"), 250)
    return c


def send_pipelined(c: SmtpConn, sender, rcpts, wire) -> str:
    """One RFC 2920 transaction: MAIL+RCPTs+DATA in one write, then the
    body and the dot. Returns the queue ID from the final 250."""
    cmds = f"MAIL FROM:<{sender}>\r\n"
    cmds += "".join(f"RCPT TO:<{r}>\r\n" for r in rcpts) + "DATA\r\n"
    c.send(cmds.encode())
    expect(c.reply(), 250, "2.1.0")
    for _ in rcpts:
        expect(c.reply(), 250, "2.1.5")
    expect(c.reply(), 354)
    c.send(dot_stuff(wire) + b".\r\n")
    return expect(c.reply(), 250, "2.0.0").queue_id


def assert_exactly(deliveries, expected: dict[str, list[bytes]]):
    got = maildir.by_mailbox(deliveries)
    want = {k: sorted(v) for k, v in expected.items()}
    for box in sorted(set(got) | set(want)):
        g, w = got.get(box, []), want.get(box, [])
        assert g == w, (
            f"{box}: {len(g)} files, {len(w)} expected; "
            f"missing {[b[:40] for b in w if b not in g][:5]}, "
            f"extra/duplicate {[b[:40] for b in g if g.count(b) > w.count(b)][:5]}"
        )


@pytest.mark.timeout(180)
def test_kill_right_after_250_twenty_times(server):
    """Each 250 is durable: kill -9 the moment the client reads it."""
    rounds = 20
    expected = {}
    for i in range(rounds):
        wire = message("after250", i)
        with open_session(server.port) as c:
            send_pipelined(c, "s@remote.test", RCPTS[:2], wire)
            server.kill()  # before QUIT, before anything else
        for r in RCPTS[:2]:
            expected.setdefault(r, []).append(maildir.wire_to_stored(wire))
        server.restart()

    got = server.settle(rounds * 2, timeout=60)
    assert_exactly(got, expected)
    assert maildir.leftovers(server.mail_root) == []


@pytest.mark.parametrize("how", ["data", "bdat_mid_chunk", "bdat_between_chunks"])
def test_kill_mid_transaction_leaves_nothing(server, how):
    """An unfinished transaction never becomes mail, and its spooled bytes
    are removed after the restart."""
    # Over 64 KiB before the kill, so the server has spilled the body into
    # its own file in spool/data/ (smaller bodies stay in memory).
    body = message("middle", 0, pad=6000)  # ~500 KB
    half = body[: len(body) // 2]
    with open_session(server.port) as c:
        expect(c.cmd("MAIL FROM:<s@remote.test>"), 250, "2.1.0")
        expect(c.cmd("RCPT TO:<alice@example.com>"), 250, "2.1.5")
        if how == "data":
            expect(c.cmd("DATA"), 354)
            c.send(half)
        elif how == "bdat_mid_chunk":
            c.send(b"BDAT %d LAST\r\n" % len(body) + half)
        else:
            c.send(b"BDAT %d\r\n" % len(half) + half)
            expect(c.reply(), 250, "2.0.0")
        time.sleep(0.5)  # let the server stream what it got to the spool
        print(f"spool/data before the kill: {server.spool_files()}")
        server.kill()

    server.restart()
    server.wait_spool_empty(timeout=20)
    assert server.settle(0) == []
    assert maildir.leftovers(server.mail_root) == []


class Load:
    """Senders that push messages as fast as they can until told to stop
    or until the server goes away; `acked` holds what got a 250."""

    def __init__(self, port, total, sessions=4):
        self.port = port
        self.wires = [message("load", i, pad=20) for i in range(total)]
        self.acked: set[int] = set()
        self.attempted: set[int] = set()
        self.lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self.run, args=(range(k, total, sessions),))
            for k in range(sessions)
        ]

    def run(self, indexes):
        try:
            with open_session(self.port) as c:
                for i in indexes:
                    with self.lock:
                        self.attempted.add(i)
                    send_pipelined(c, f"load{i}@remote.test", RCPTS, self.wires[i])
                    with self.lock:
                        self.acked.add(i)
        except (AssertionError, OSError):
            pass  # the server was killed under us

    def start(self):
        for t in self.threads:
            t.start()

    def join(self):
        for t in self.threads:
            t.join(60)
        assert not any(t.is_alive() for t in self.threads), "a sender hung"


@pytest.mark.timeout(240)
def test_kill_mid_delivery(server):
    """~300 messages x 3 recipients as fast as possible; kill -9 while the
    Maildirs hold some but not all; after the restart every acknowledged
    message is there exactly once per recipient, nothing is torn."""
    total = 300
    load = Load(server.port, total)
    load.start()

    def mid_delivery():
        with load.lock:
            acked = len(load.acked)
        n = server.count_delivered()
        return acked >= total // 2 and 0 < n < len(RCPTS) * acked

    wait_until(mid_delivery, 60, "a moment with deliveries in flight",
               interval=0.002)
    server.kill()
    with load.lock:
        acked_at_kill = len(load.acked)
    at_kill = server.count_delivered()
    load.join()
    print(f"killed with {at_kill} files for {acked_at_kill} acked")
    assert 0 < at_kill < len(RCPTS) * acked_at_kill

    server.restart()
    got = server.settle(len(RCPTS) * len(load.acked), timeout=90)

    # Nothing torn: every file is a whole message we sent.
    sent = {maildir.wire_to_stored(w): i for i, w in enumerate(load.wires)}
    for d in got:
        assert d.body in sent, f"{d.path}: not a message we sent (torn?)"

    # Acknowledged: exactly once per recipient. Sent but not acknowledged
    # (in flight at the kill): at most once per recipient.
    count = {}
    for d in got:
        key = (sent[d.body], d.mailbox)
        count[key] = count.get(key, 0) + 1
    for i in load.attempted:
        for r in RCPTS:
            n = count.get((i, r), 0)
            if i in load.acked:
                assert n == 1, f"acknowledged message {i} delivered {n}x to {r}"
            else:
                assert n <= 1, f"message {i} delivered {n}x to {r}"
    assert maildir.leftovers(server.mail_root) == []
    assert server.spool_files() == []
