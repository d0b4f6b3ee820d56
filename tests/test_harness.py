"""The harness's own peers work, checked against software we did not write
(smtplib, swaks, aiosmtpd, smtp-sink), so that a later failure in a relay or
duplicate-suppression test points at oncemail and not at the tools."""

import smtplib

import pytest

from harness.peers import CaptureSink, CuttingProxy, SmtpSink
from harness.smtp import send_message
from harness.wait import wait_until

WIRE = b"Subject: harness\r\n\r\n.leading dot\r\nbody\r\n"


def test_capture_sink_records_exact_bytes():
    with CaptureSink() as sink:
        send_message(sink.port, "s@remote.test", ["x@dest.test", "y@dest.test"],
                     WIRE)
        [m] = sink.wait_messages(1)
    assert m.mail_from == "s@remote.test"
    assert m.rcpt_tos == ["x@dest.test", "y@dest.test"]
    assert m.data == WIRE


def test_capture_sink_scripted_replies():
    def rcpt(addr):
        return "550 5.1.1 no such user" if addr.startswith("nobody") else None

    with CaptureSink(rcpt_reply=rcpt, data_reply="451 4.3.0 try later") as sink:
        with smtplib.SMTP("127.0.0.1", sink.port, timeout=10) as c:
            c.ehlo("client.test")
            c.mail("s@remote.test")
            assert c.rcpt("nobody@dest.test")[0] == 550
            assert c.rcpt("x@dest.test")[0] == 250
            assert c.data(WIRE)[0] == 451
        assert sink.messages == []


def test_smtp_sink_dumps_messages(tmp_path):
    with SmtpSink(tmp_path) as sink:
        send_message(sink.port, "s@remote.test", ["x@dest.test"], WIRE)
        wait_until(sink.messages, 10, "an smtp-sink dump")
        [dump] = sink.messages()
    assert b"X-Mail-Args: <s@remote.test>" in dump
    assert b"\nSubject: harness\n\n.leading dot\nbody\n" in dump


def test_cutting_proxy_drops_only_the_final_reply():
    with CaptureSink() as sink, CuttingProxy(sink.port, cut_final_replies=1) as proxy:
        with pytest.raises(smtplib.SMTPServerDisconnected):
            with smtplib.SMTP("127.0.0.1", proxy.port, timeout=10) as c:
                c.sendmail("s@remote.test", ["x@dest.test"], WIRE)
        sink.wait_messages(1)  # the server did get it
        assert proxy.cuts == 1
        # The next session passes untouched.
        with smtplib.SMTP("127.0.0.1", proxy.port, timeout=10) as c:
            c.sendmail("s@remote.test", ["x@dest.test"], WIRE)
        sink.wait_messages(2)
        assert proxy.cuts == 1
