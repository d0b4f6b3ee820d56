"""Connections that break: the client vanishes mid-transaction, or the
server's reply to the final dot is lost on the way back."""

import smtplib
import time

import pytest

from harness import maildir
from harness.peers import CuttingProxy
from harness.smtp import SmtpConn, expect


@pytest.mark.parametrize("where", ["after_rcpt", "mid_data", "mid_bdat"])
def test_client_vanishes_nothing_is_kept(server, where):
    with SmtpConn(server.port) as c:
        expect(c.reply(), 220)
        expect(c.cmd("EHLO client.test"), 250)
        expect(c.cmd("MAIL FROM:<s@remote.test>"), 250, "2.1.0")
        expect(c.cmd("RCPT TO:<alice@example.com>"), 250, "2.1.5")
        if where == "mid_data":
            expect(c.cmd("DATA"), 354)
            # Over 64 KiB: the body has spilled into spool/data/.
            c.send(b"Subject: gone\r\n\r\n" + b"half a message\r\n" * 20000)
        elif where == "mid_bdat":
            c.send(b"BDAT 1000000 LAST\r\n" + b"y" * 300000)
        time.sleep(0.3)  # let the server take it in before the close
    # The socket is closed without QUIT or final dot.
    assert server.settle(0) == []
    assert server.spool_files() == []
    # The server is still fine.
    with SmtpConn(server.port) as c:
        expect(c.reply(), 220)
        expect(c.cmd("NOOP"), 250, "2.0.0")


def test_final_reply_lost_in_transit_message_delivered_once(server):
    """The 250 never reaches the client (the proxy cuts the connection right
    after the server sent it): the server committed, so it delivers, once.
    (A retry by the client is the duplicate-suppression story, DESIGN.md.)"""
    wire = b"Subject: lost reply\r\n\r\nbody\r\n"
    with CuttingProxy(server.port, cut_final_replies=1) as proxy:
        with pytest.raises(smtplib.SMTPServerDisconnected):
            with smtplib.SMTP("127.0.0.1", proxy.port, timeout=10) as c:
                c.sendmail("s@remote.test", ["alice@example.com"], wire)
        assert proxy.cuts == 1
    [d] = server.settle(1)
    assert d.body == maildir.wire_to_stored(wire)
