"""Transaction IDs (RFC 1845 CHECKPOINT), both ways (DESIGN.md, "Duplicate
suppression"; I4, I5).

As a server, oncemail offers CHECKPOINT while duplicate suppression is on.
`MAIL FROM:<a> TRANSID=<id>` naming a transaction it committed (scoped by
the client's EHLO name) is answered `355 <size> is the transaction offset`;
DATA and an empty content then get the original's `250 ... queued as <ID>`,
and nothing is queued. As a client, oncemail names every relay attempt
`TRANSID=<qid.tag@host>`, the same on every retry, so a retry after a
"possibly delivered" attempt is recognised by an oncemail next hop.
"""

import re
from collections import Counter

import pytest

from harness import maildir
from harness.gap import (
    HOLD_ENV, HOLD_EVENT, events, hooked_server_factory, open_transaction,
    wait_event,
)
from harness.peers import CuttingProxy
from harness.smtp import ConnectionClosed, SmtpConn, dot_stuff, expect, send_message

SENDER = "s@remote.test"
ALICE = "alice@example.com"
WIRE = b"Subject: checkpointed\r\nMessage-ID: <t-1@remote.test>\r\n\r\nbody\r\n"
STORED = maildir.wire_to_stored(WIRE)
TRANSID = "t1.x@client.test"
OFFSET = re.compile(r"^(\d+) is the transaction offset$")


@pytest.fixture
def start_hooked(request, tmp_path, start_server):
    return hooked_server_factory(request, tmp_path)


def file_qid(delivery) -> str:
    m = re.match(r"^\d+\.([0-9A-Z]+)_\d+\.", delivery.path.name)
    assert m, delivery.path.name
    return m.group(1)


def resume(port, helo, transid, sender=SENDER, rcpts=(), timeout=10.0):
    """The RFC 1845 dialogue for a transaction the server already holds:
    MAIL with TRANSID (expects 355), optional RCPTs, DATA, an empty content.
    Returns (offset, reply to the final dot)."""
    with SmtpConn(port, timeout) as c:
        expect(c.reply(), 220)
        ehlo = expect(c.cmd(f"EHLO {helo}"), 250)
        assert "CHECKPOINT" in ehlo.keywords(), str(ehlo)
        mail = c.cmd(f"MAIL FROM:<{sender}> TRANSID=<{transid}>")
        m = OFFSET.match(mail.text) if mail.code == 355 else None
        assert m, f"expected 355 <size> is the transaction offset, got: {mail}"
        for r in rcpts:
            expect(c.cmd(f"RCPT TO:<{r}>"), 250)
        expect(c.cmd("DATA"), 354)
        c.send(b".\r\n")
        final = c.reply()
        expect(c.cmd("QUIT"), 221)
        return int(m.group(1)), final


def test_checkpoint_is_offered_while_suppression_is_on(start_server):
    on = start_server()
    with SmtpConn(on.port) as c:
        expect(c.reply(), 220)
        assert "CHECKPOINT" in expect(c.cmd("EHLO client.test"), 250).keywords()
    off = start_server(config={"dedupe": {"window": "0s"}})
    with SmtpConn(off.port) as c:
        expect(c.reply(), 220)
        assert "CHECKPOINT" not in expect(c.cmd("EHLO client.test"), 250).keywords()
        expect(c.cmd(f"MAIL FROM:<{SENDER}> TRANSID=<{TRANSID}>"), 555, "5.5.4")
    with SmtpConn(on.port) as c:
        expect(c.reply(), 220)
        expect(c.cmd("HELO client.test"), 250)
        expect(c.cmd(f"MAIL FROM:<{SENDER}> TRANSID=<{TRANSID}>"), 555, "5.5.4")


def test_transid_retry_after_a_cut_gets_the_original_reply(server):
    # First attempt: TRANSID unknown, a normal transaction; the connection is
    # gone right after the final dot, the reply never read.
    c = open_transaction(server.port, SENDER, [ALICE], helo="client.test",
                         mail_params=f" TRANSID=<{TRANSID}>")
    with c:
        c.send(dot_stuff(WIRE) + b".\r\n")
    qid = wait_event(server, "session ended in the gap")[0]["queue_id"]

    # The retry follows RFC 1845: 355 with the whole size, DATA, ".", and the
    # original's 250. RCPT is acknowledged and ignored.
    offset, final = resume(server.port, "client.test", TRANSID,
                           rcpts=[ALICE, "mallory@example.com"])
    assert offset == len(WIRE)
    assert final.matches(250, "2.0.0") and final.text == f"2.0.0 Ok: queued as {qid}", \
        str(final)

    got = server.settle(1)
    assert [(d.mailbox, file_qid(d), d.body) for d in got] == [(ALICE, qid, STORED)]
    sup = wait_event(server, "suppressed duplicate", scope="transid")
    assert [e["queue_id"] for e in sup] == [qid]
    assert len(events(server, "accepted")) == 1


def test_same_transid_from_another_ehlo_name_is_a_new_transaction(server):
    send_message(server.port, SENDER, [ALICE], WIRE, helo="client.test",
                 mail_params=f" TRANSID=<{TRANSID}>")
    other = WIRE.replace(b"body", b"other body")
    with SmtpConn(server.port) as c:
        expect(c.reply(), 220)
        expect(c.cmd("EHLO elsewhere.test"), 250)
        # Another client's ID space: a plain 250, not a 355.
        expect(c.cmd(f"MAIL FROM:<{SENDER}> TRANSID=<{TRANSID}>"), 250, "2.1.0")
        expect(c.cmd(f"RCPT TO:<{ALICE}>"), 250, "2.1.5")
        expect(c.cmd("DATA"), 354)
        c.send(dot_stuff(other) + b".\r\n")
        final = expect(c.reply(), 250, "2.0.0")
        assert final.queue_id, str(final)
        expect(c.cmd("QUIT"), 221)
    got = server.settle(2)
    assert sorted(d.body for d in got) == sorted([STORED, maildir.wire_to_stored(other)])
    assert not events(server, "suppressed duplicate")


def test_transid_survives_kill_inside_the_gap(start_hooked):
    server = start_hooked(env={HOLD_ENV: "30000"})
    with open_transaction(server.port, SENDER, [ALICE], helo="client.test",
                          mail_params=f" TRANSID=<{TRANSID}>") as c:
        c.send(dot_stuff(WIRE) + b".\r\n")
        qid = wait_event(server, HOLD_EVENT)[0]["queue_id"]
        server.kill()
        with pytest.raises(ConnectionClosed):
            reply = c.reply(timeout=5)
            pytest.fail(f"got a reply from a killed server: {reply}")
    server.env = {}
    server.restart()

    offset, final = resume(server.port, "client.test", TRANSID)
    assert offset == len(WIRE)
    assert final.text == f"2.0.0 Ok: queued as {qid}", str(final)
    got = server.settle(1)
    assert [(d.mailbox, file_qid(d)) for d in got] == [(ALICE, qid)]
    assert [e["queue_id"] for e in events(server, "suppressed duplicate",
                                          scope="transid")] == [qid]


RELAY_MESSAGES = 100
# More cuts than messages: some attempts lost are retries (TRANSID replays)
# themselves, which must be recognised again on the next one.
RELAY_CUTS = 150


@pytest.mark.timeout(90)
def test_relay_to_oncemail_retries_are_recognised_by_transid(start_server):
    # A relays remote.test through a proxy that drops the reply to A's final
    # dot, 150 times, to B, which has remote.test as a local domain.
    b = start_server(domains=["remote.test"])
    with CuttingProxy(b.port, cut_final_replies=RELAY_CUTS) as proxy:
        a = start_server(config={
            "relay": {
                "trusted_networks": ["127.0.0.0/8"],
                "routes": {"remote.test": f"127.0.0.1:{proxy.port}"},
                "data_term_timeout": "2s",
                # The proxy must see the final dot: no STARTTLS to B.
                "starttls": False,
            },
            "queue": {"retry_delays": ["1s"]},
        })
        wires = {
            f"relay-{i}": (f"Subject: relayed {i}\r\nMessage-ID: <relay-{i}@example.com>"
                           f"\r\n\r\nmessage {i}\r\n").encode()
            for i in range(RELAY_MESSAGES)
        }
        rcpt = {mid: f"user{i % 5}@remote.test" for i, mid in enumerate(wires)}
        with SmtpConn(a.port) as c:
            expect(c.reply(), 220)
            expect(c.cmd("EHLO submitter.test"), 250)
            for mid, wire in wires.items():
                expect(c.cmd("MAIL FROM:<sender@example.com>"), 250)
                expect(c.cmd(f"RCPT TO:<{rcpt[mid]}>"), 250)
                expect(c.cmd("DATA"), 354)
                c.send(dot_stuff(wire) + b".\r\n")
                expect(c.reply(), 250, "2.0.0")
            expect(c.cmd("QUIT"), 221)

        got = b.settle(RELAY_MESSAGES, timeout=60, quiet=0.5)
        wait_event(a, "delivered", timeout=30, count=RELAY_MESSAGES)
        a.wait_spool_empty(timeout=10)
        cuts = proxy.cuts

    # Each message exactly once in B's Maildirs, byte for byte after A's
    # Received field.
    assert len(got) == RELAY_MESSAGES, f"{len(got)} deliveries at B"
    seen = Counter()
    for d in got:
        mid = re.search(rb"^Message-ID: <(relay-\d+)@", d.body, re.M).group(1).decode()
        seen[mid] += 1
        assert d.mailbox == rcpt[mid]
        assert d.body.endswith(maildir.wire_to_stored(wires[mid])), mid
    assert seen == Counter(wires.keys())

    assert cuts == RELAY_CUTS
    possibly = events(a, "possibly delivered")
    assert len(possibly) == cuts, f"{len(possibly)} 'possibly delivered' lines at A"
    per_message = Counter(e["queue_id"] for e in possibly)
    assert max(per_message.values()) >= 2  # 150 cuts, 100 messages
    assert len(events(a, "delivered")) == RELAY_MESSAGES
    # Every retry after a cut was answered from B's TRANSID index, not queued.
    transid = events(b, "suppressed duplicate", scope="transid")
    assert len(transid) == cuts, f"{len(transid)} TRANSID replays at B"
    assert not events(b, "suppressed duplicate", scope="whole message")
    assert len(events(b, "accepted")) == RELAY_MESSAGES
