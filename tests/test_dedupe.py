"""Duplicate suppression (DESIGN.md, "Duplicate suppression"; I4).

A sender that lost the 250 to its final dot sends the same message again.
oncemail recognises the retry by envelope sender, recipient and content,
answers 250 and does not queue it again, per recipient, within the window
(`[dedupe] window`, "0s" turns it off), across restarts.

Transaction IDs (RFC 1845) are in test_transid.py.
"""

import re
import smtplib
import time
from collections import Counter

import pytest

from harness import maildir
from harness.gap import (
    HOLD_ENV, HOLD_EVENT, duplicate_of, events, hooked_server_factory,
    open_transaction, retry, send_and_vanish, wait_event,
)
from harness.peers import CuttingProxy
from harness.retry_client import Outgoing, RetryingSender
from harness.smtp import ConnectionClosed, dot_stuff, send_message
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


# -- the RFC 1047 scenario, end to end ----------------------------------------

SENDER = "s@remote.test"
ALICE = "alice@example.com"
FILE_QID = re.compile(r"^\d+\.([0-9A-Z]+)_\d+\.")


def file_qid(delivery) -> str:
    """The queue ID in a delivered file's name (<arrival>.<qid>_<n>.<host>)."""
    m = FILE_QID.match(delivery.path.name)
    assert m, f"unexpected Maildir file name {delivery.path.name}"
    return m.group(1)


@pytest.fixture
def start_hooked(request, tmp_path, start_server):
    """start_hooked(env={...}, config=...): a server with extra environment."""
    return hooked_server_factory(request, tmp_path)


def test_client_closes_after_its_final_dot_and_retries(server):
    # RFC 1047: the client sends its final dot and the connection is gone
    # before it reads anything. oncemail commits all the same.
    send_and_vanish(server.port, SENDER, [ALICE], WIRE)
    gap = wait_event(server, "session ended in the gap")
    assert len(gap) == 1
    qid = gap[0]["queue_id"]
    assert events(server, "accepted", queue_id=qid), "the first session was not accepted"

    # The sender saw no 250, so it sends the same bytes again.
    reply = retry(server.port, SENDER, [ALICE], WIRE)
    assert duplicate_of(reply) == qid, f"retry answered: {reply}"

    got = server.settle(1)
    assert len(got) == 1, [d.path.name for d in got]
    assert got[0].mailbox == ALICE and got[0].body == STORED
    assert file_qid(got[0]) == qid
    sup = events(server, "suppressed duplicate", queue_id=qid)
    assert [e["scope"] for e in sup] == ["whole message"]


def test_client_resets_while_the_250_is_held_and_retries(start_hooked):
    # The connection dies (RST) after the commit, before the 250 is written,
    # so writing it fails. What was committed must still be delivered, and
    # the retry, answered "already queued", must not be the only trace of it.
    server = start_hooked(env={HOLD_ENV: "500"})
    send_and_vanish(server.port, SENDER, [ALICE], WIRE,
                    reset_after=lambda: wait_event(server, HOLD_EVENT))
    qid = wait_event(server, HOLD_EVENT)[0]["queue_id"]
    wait_event(server, "disconnect", timeout=5)  # the only session so far
    gap = events(server, "session ended in the gap", queue_id=qid)
    assert len(gap) == 1, "the broken session was not logged as ended in the gap"

    reply = retry(server.port, SENDER, [ALICE], WIRE)
    assert duplicate_of(reply) == qid, f"retry answered: {reply}"
    got = server.settle(1, timeout=10)
    assert [(d.mailbox, file_qid(d)) for d in got] == [(ALICE, qid)]


@pytest.mark.timeout(60)
def test_hundred_messages_cut_through_smtplib_are_delivered_once(server):
    # smtplib through a proxy that drops the reply to the final dot. Round 1:
    # every message is cut. Round 2, again through the proxy: 30 retries are
    # cut once more. Round 3 goes direct. Each retry must be recognised.
    messages = [
        Outgoing(SENDER, [f"user{i % 7}@example.com"],
                 f"Subject: cut {i}\r\nMessage-ID: <cut-{i}@remote.test>\r\n\r\n"
                 f"message {i}\r\n".encode())
        for i in range(100)
    ]
    client = RetryingSender(messages, threads=8, max_rounds=4)
    with CuttingProxy(server.port, cut_final_replies=130) as proxy:
        done = client.run(lambda n: proxy.port if n <= 2 else server.port)
        cuts = proxy.cuts
    assert done, [m.attempts for m in client.pending()][:5]
    assert cuts == 130 and client.rounds == [100, 100, 30]
    assert all(m.attempts[0] == "no reply" for m in messages), "every message is cut"

    got = server.settle(100)
    assert len(got) == 100, f"{len(got)} deliveries for 100 messages"
    want = {}
    for m in messages:
        want.setdefault(m.rcpts[0], []).append(maildir.wire_to_stored(m.wire))
    assert maildir.by_mailbox(got) == {k: sorted(v) for k, v in want.items()}

    # Every retry's 250 named the queue ID the message was first committed as.
    qid_of = {}
    for d in got:
        mid = re.search(rb"Message-ID: <(cut-\d+)@", d.body).group(1).decode()
        qid_of[mid] = file_qid(d)
    for i, m in enumerate(messages):
        code, text = m.final
        assert text == (f"2.0.0 Ok: duplicate of {qid_of[f'cut-{i}']}, "
                        "already queued; not queued again"), (i, m.attempts)
    assert len(events(server, "accepted")) == 100
    sup = events(server, "suppressed duplicate")
    assert Counter(e["scope"] for e in sup) == {"whole message": 130}
    assert len(events(server, "session ended in the gap")) == 130


def test_partial_overlap_queues_only_the_new_recipient(server):
    send_cut(server.port, ["alice@example.com", "bob@other.test"])
    reply = retry(server.port, SENDER, ["bob@other.test", "carol@example.com"], WIRE)
    # One 250 for the transaction: the new recipient is queued under a new ID.
    assert reply.code == 250 and reply.queue_id and duplicate_of(reply) is None, str(reply)
    got = server.settle(3)
    assert boxes(got) == ["alice@example.com", "bob@other.test", "carol@example.com"]
    assert [file_qid(d) for d in got if d.mailbox == "carol@example.com"] == [reply.queue_id]
    sup = wait_event(server, "suppressed duplicate", scope="some recipients")
    assert [(e["queue_id"], e["recipients"]) for e in sup] == [(reply.queue_id, "1")]


def test_same_message_id_with_other_content_is_delivered(server):
    send_message(server.port, SENDER, [ALICE], WIRE)
    other = WIRE.replace(b"\r\n\r\nbody\r\n", b"\r\n\r\nanother body\r\n")
    assert other != WIRE and b"Message-ID: <retry-1@remote.test>" in other
    reply = retry(server.port, SENDER, [ALICE], other)
    assert reply.code == 250 and duplicate_of(reply) is None, str(reply)
    got = server.settle(2)
    assert sorted(d.body for d in got) == sorted([STORED, maildir.wire_to_stored(other)])
    assert not events(server, "suppressed duplicate")


def test_same_content_to_another_recipient_is_delivered(server):
    send_message(server.port, SENDER, [ALICE], WIRE)
    reply = retry(server.port, SENDER, ["bob@example.com"], WIRE)
    assert reply.code == 250 and duplicate_of(reply) is None, str(reply)
    assert boxes(server.settle(2)) == ["alice@example.com", "bob@example.com"]
    assert not events(server, "suppressed duplicate")


def test_same_message_after_the_window_is_delivered_again(start_server):
    server = start_server(config={"dedupe": {"window": "2s"}})
    first = send_message(server.port, SENDER, [ALICE], WIRE)
    # Within the window: a duplicate.
    assert duplicate_of(retry(server.port, SENDER, [ALICE], WIRE)) == first
    time.sleep(2.5)
    # After it: a new message.
    reply = retry(server.port, SENDER, [ALICE], WIRE)
    assert reply.code == 250 and duplicate_of(reply) is None, str(reply)
    assert reply.queue_id not in (None, first)
    got = server.settle(2)
    assert sorted(file_qid(d) for d in got) == sorted([first, reply.queue_id])
    assert all(d.body == STORED for d in got)


def test_kill_after_commit_before_250_then_retry_is_delivered_once(start_hooked):
    # The 250 is held after the commit; kill -9 inside that gap.
    server = start_hooked(env={HOLD_ENV: "30000"})
    with open_transaction(server.port, SENDER, [ALICE]) as c:
        c.send(dot_stuff(WIRE) + b".\r\n")
        qid = wait_event(server, HOLD_EVENT)[0]["queue_id"]
        server.kill()
        with pytest.raises(ConnectionClosed):
            reply = c.reply(timeout=5)
            pytest.fail(f"got a reply from a killed server: {reply}")

    server.env = {}  # the restarted server answers at once
    server.restart()
    reply = retry(server.port, SENDER, [ALICE], WIRE)
    assert duplicate_of(reply) == qid, f"retry after restart answered: {reply}"
    got = server.settle(1)
    assert [(d.mailbox, file_qid(d), d.body) for d in got] == [(ALICE, qid, STORED)]
    assert events(server, "recovered", queue_id=qid)
    assert [e["scope"] for e in events(server, "suppressed duplicate")] == ["whole message"]


def test_the_same_message_in_ten_sessions_at_once_is_queued_once(server):
    # Ten copies reach end of data together: one claims the fingerprint, the
    # others wait for its commit and are answered as duplicates of it.
    conns = [open_transaction(server.port, SENDER, [ALICE]) for _ in range(10)]
    try:
        for c in conns:
            c.send(dot_stuff(WIRE) + b".\r\n")
        replies = [c.reply() for c in conns]
    finally:
        for c in conns:
            c.close()
    queued = [r.queue_id for r in replies if r.code == 250 and r.queue_id]
    dups = [duplicate_of(r) for r in replies]
    assert len(queued) == 1, [str(r) for r in replies]
    assert sorted(filter(None, dups)) == queued * 9, [str(r) for r in replies]
    got = server.settle(1)
    assert [(d.mailbox, file_qid(d)) for d in got] == [(ALICE, queued[0])]
