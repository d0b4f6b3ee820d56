"""Session behaviour that a fixed transcript cannot express: EHLO keywords,
the error limit, timeouts, the configured host name, and the mail log."""

import re
import time

import pytest

from harness.smtp import ConnectionClosed, SmtpConn, expect, send_message
from harness.wait import wait_until


def ehlo(port):
    c = SmtpConn(port)
    expect(c.reply(), 220)
    return c, expect(c.cmd("EHLO client.test"), 250)


@pytest.mark.parametrize("limit", [None, 2000])
def test_ehlo_keywords(start_server, limit):
    config = {"limits": {"max_message_size": limit}} if limit else None
    server = start_server(config=config)
    c, r = ehlo(server.port)
    with c:
        kw = r.keywords()
        for word in ("PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES",
                     "SMTPUTF8", "CHUNKING"):
            assert word in kw, f"EHLO lacks {word}:\n{r}"
        assert kw.get("SIZE") == str(limit or 26214400), f"EHLO SIZE:\n{r}"


def test_hostname_in_greeting_ehlo_and_received(start_server):
    server = start_server(config={"server": {"hostname": "mx.oncemail.test"}})
    with SmtpConn(server.port) as c:
        greeting = expect(c.reply(), 220)
        assert "mx.oncemail.test" in greeting.lines[0], greeting
        r = expect(c.cmd("EHLO client.test"), 250)
        assert r.lines[0].startswith("mx.oncemail.test"), r
    send_message(server.port, "s@remote.test", ["alice@example.com"],
                 b"Subject: rcvd\r\n\r\n")
    [d] = server.settle(1)
    assert b"mx.oncemail.test" in d.received, d.received


def test_error_limit_421_and_close(start_server):
    """After max_errors errors the server answers 421 4.7.0 and closes."""
    max_errors = 3
    server = start_server(config={"limits": {"max_errors": max_errors}})
    replies = []
    with SmtpConn(server.port) as c:
        expect(c.reply(), 220)
        for _ in range(max_errors + 2):
            try:
                c.send_line("FROB")
                r = c.reply()
            except (ConnectionClosed, OSError):
                break
            replies.append(r)
            if r.code == 421:
                break
        codes = [(r.code, r.enhanced) for r in replies]
        assert codes[-1] == (421, "4.7.0"), codes
        errors = codes[:-1]
        assert set(errors) == {(500, "5.5.1")}, codes
        assert len(errors) in (max_errors - 1, max_errors), codes
        assert c.closed or c.expect_closed(), "connection left open after 421"


def test_idle_session_closed_after_command_timeout(start_server):
    server = start_server(config={"limits": {"command_timeout": "1s"}})
    with SmtpConn(server.port) as c:
        expect(c.reply(), 220)
        expect(c.cmd("EHLO client.test"), 250)
        start = time.monotonic()
        try:
            r = c.reply(timeout=10)  # a 421 before closing is allowed
            assert r.code == 421, r
            assert c.expect_closed(5)
        except ConnectionClosed:
            pass
        assert time.monotonic() - start < 8


def test_stalled_data_times_out_and_leaves_nothing(start_server):
    server = start_server(config={"limits": {"data_timeout": "1s"}})
    with SmtpConn(server.port) as c:
        expect(c.reply(), 220)
        expect(c.cmd("EHLO client.test"), 250)
        expect(c.cmd("MAIL FROM:<s@remote.test>"), 250, "2.1.0")
        expect(c.cmd("RCPT TO:<alice@example.com>"), 250, "2.1.5")
        expect(c.cmd("DATA"), 354)
        c.send(b"Subject: stalled\r\n\r\npart of a body\r\n")
        try:
            r = c.reply(timeout=10)
            assert r.code == 421, r
            assert c.expect_closed(5)
        except ConnectionClosed:
            pass
    assert server.settle(0) == []


def test_mail_log_events_carry_the_queue_id(server):
    qid = send_message(server.port, "s@remote.test",
                       ["alice@example.com", "bob@other.test"],
                       b"Subject: logged\r\n\r\nbody\r\n")
    assert qid, "250 to end of data lacks 'queued as <ID>'"
    server.settle(2)

    def lines_with(word):
        return [l for l in server.log_text().splitlines()
                if f"queue_id={qid}" in l and re.search(rf"\b{word}\b", l)]

    accepted = wait_until(lambda: lines_with("accepted"), 5, "accepted line")
    assert re.search(r"\bgap_us=\d+", accepted[0]), accepted
    assert re.search(r"\bsize=\d+", accepted[0]), accepted
    assert re.search(r"\brecipients=2\b", accepted[0]), accepted
    delivered = wait_until(lambda: lines_with("delivered"), 5, "delivered lines")
    assert len(delivered) >= 1, delivered


def test_rejected_message_is_logged(server):
    with SmtpConn(server.port) as c:
        expect(c.reply(), 220)
        expect(c.cmd("EHLO client.test"), 250)
        expect(c.cmd("MAIL FROM:<s@remote.test>"), 250, "2.1.0")
        expect(c.cmd("RCPT TO:<alice@example.com>"), 250, "2.1.5")
        expect(c.cmd("DATA"), 354)
        c.send(b"Subject: bare\r\n\r\nbare\nlf\r\n.\r\n")
        expect(c.reply(), 550, "5.6.0")
    wait_until(
        lambda: any("queue_id=" in l and re.search(r"\brejected\b", l)
                    for l in server.log_text().splitlines()),
        5, "a 'rejected' log line with a queue_id")
    assert server.settle(0) == []
