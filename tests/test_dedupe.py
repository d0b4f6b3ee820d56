"""Duplicate suppression (DESIGN.md, "Duplicate suppression"; I4).

A sender that lost the 250 to its final dot sends the same message again.
oncemail recognises the retry by envelope sender, recipient and content,
answers 250 and does not queue it again, per recipient, within the window
(`[dedupe] window`, "0s" turns it off), across restarts.
"""

import re
import smtplib

import pytest

from harness import maildir
from harness.peers import CuttingProxy
from harness.smtp import send_message
from harness.wait import wait_until

WIRE = b"Subject: retried\r\nMessage-ID: <retry-1@remote.test>\r\n\r\nbody\r\n"
STORED = maildir.wire_to_stored(WIRE)


def send_cut(port, rcpts, wire=WIRE, sender="s@remote.test"):
    """Send through a proxy that loses the 250 to the final dot."""
    with CuttingProxy(port, cut_final_replies=1) as proxy:
        with pytest.raises(smtplib.SMTPServerDisconnected):
            with smtplib.SMTP("127.0.0.1", proxy.port, timeout=10) as c:
                c.sendmail(sender, rcpts, wire)
        assert proxy.cuts == 1


def boxes(deliveries):
    return sorted(d.mailbox for d in deliveries)


def suppressed_lines(server):
    return [l for l in server.log_text().splitlines()
            if re.search(r"\bsuppressed\b", l) and "queue_id=" in l]


def test_retry_after_lost_reply_is_delivered_once(server):
    send_cut(server.port, ["alice@example.com"])
    # The retry is answered 250 like any accepted message.
    send_message(server.port, "s@remote.test", ["alice@example.com"], WIRE)
    got = server.settle(1)
    assert boxes(got) == ["alice@example.com"]
    assert got[0].body == STORED
    wait_until(lambda: suppressed_lines(server), 5, "a 'suppressed' log line")


def test_retry_with_more_recipients_delivers_only_the_new_ones(server):
    send_cut(server.port, ["alice@example.com", "bob@other.test"])
    send_message(server.port, "s@remote.test",
                 ["alice@example.com", "bob@other.test", "carol@example.com"], WIRE)
    got = server.settle(3)
    assert boxes(got) == ["alice@example.com", "bob@other.test", "carol@example.com"]
    assert all(d.body == STORED for d in got)


def test_retry_with_fewer_recipients_is_suppressed(server):
    send_cut(server.port, ["alice@example.com", "bob@other.test"])
    send_message(server.port, "s@remote.test", ["bob@other.test"], WIRE)
    assert boxes(server.settle(2)) == ["alice@example.com", "bob@other.test"]


def test_retry_recognised_after_kill_and_restart(server):
    send_message(server.port, "s@remote.test", ["alice@example.com"], WIRE)
    server.kill()
    server.restart()
    send_message(server.port, "s@remote.test", ["alice@example.com"], WIRE)
    assert boxes(server.settle(1)) == ["alice@example.com"]


def test_different_sender_or_content_is_not_a_duplicate(server):
    send_message(server.port, "s@remote.test", ["alice@example.com"], WIRE)
    send_message(server.port, "other@remote.test", ["alice@example.com"], WIRE)
    send_message(server.port, "s@remote.test", ["alice@example.com"],
                 WIRE.replace(b"body", b"body changed"))
    assert len(server.settle(3)) == 3


def test_window_zero_turns_suppression_off(start_server):
    server = start_server(config={"dedupe": {"window": "0s"}})
    send_message(server.port, "s@remote.test", ["alice@example.com"], WIRE)
    send_message(server.port, "s@remote.test", ["alice@example.com"], WIRE)
    assert boxes(server.settle(2)) == ["alice@example.com"] * 2
