"""Real mail through Python's smtplib: every byte arrives, once per recipient.

240 SpamAssassin messages (multipart, 8-bit, lines over 998 octets, 300 KB
attachments, dot-leading lines, a message without a final newline) go to
several users across two local domains, some to several recipients, over
four concurrent sessions. Each Maildir file must equal the original after
the three prepended fields are stripped.
"""

import smtplib
import threading

import pytest

from harness import corpus, maildir

# (address as sent, mailbox it must land in)
RECIPIENTS = [
    ("alice@example.com", "alice@example.com"),
    ("bob@example.com", "bob@example.com"),
    ("carol@other.test", "carol@other.test"),
    ("dave@other.test", "dave@other.test"),
    ("Erin@Example.COM", "erin@example.com"),
    ("frank+lists@other.test", "frank@other.test"),
]
SESSIONS = 4


def plan(messages):
    """Deterministic envelopes: (message, sender, [(rcpt, mailbox), ...])."""
    out = []
    for i, m in enumerate(messages):
        n = 1 + (i % 3 == 0) + (i % 7 == 0)
        rcpts = [RECIPIENTS[(i + k * 2) % len(RECIPIENTS)] for k in range(n)]
        sender = "" if i % 10 == 5 else f"sender{i}@remote.test"
        out.append((m, sender, rcpts))
    return out


def send_all(port, jobs):
    """Send `jobs` over one smtplib session; returns [(job, queue reply)]."""
    done = []
    with smtplib.SMTP("127.0.0.1", port, local_hostname="corpus.test",
                      timeout=30) as c:
        c.ehlo()
        for job in jobs:
            m, sender, rcpts = job
            opts = []
            if m.eight_bit:
                opts.append("BODY=8BITMIME")
            if m.eight_bit_headers:
                opts.append("SMTPUTF8")
            code, resp = c.mail(sender, opts)
            assert code == 250, (m.name, code, resp)
            for rcpt, _ in rcpts:
                code, resp = c.rcpt(rcpt)
                assert code == 250, (m.name, rcpt, code, resp)
            # smtplib.data() dot-stuffs and adds the final <CRLF>.<CRLF>.
            code, resp = c.data(m.wire)
            assert code == 250, (m.name, code, resp)
            assert resp.startswith(b"2.0.0"), resp
            done.append((job, resp))
    return done


@pytest.mark.timeout(300)
def test_corpus_delivered_byte_exact_once_per_recipient(server, corpus_sample):
    jobs = plan(corpus_sample)
    assert len(jobs) >= 200
    assert any(m.multipart for m, _, _ in jobs)
    assert any(m.long_lines for m, _, _ in jobs)
    assert any(m.eight_bit for m, _, _ in jobs)
    assert any(len(r) > 1 for _, _, r in jobs)

    results, errors = [], []

    def worker(slice_):
        try:
            results.extend(send_all(server.port, slice_))
        except Exception as e:  # reported below, with the others
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(jobs[k::SESSIONS],))
               for k in range(SESSIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(240)
    assert not any(t.is_alive() for t in threads), "a sending session hung"
    assert not errors, errors
    assert len(results) == len(jobs)

    # Everything each mailbox must hold, and who sent it to whom.
    expected: dict[str, list[bytes]] = {}
    envelope = {}
    for m, sender, rcpts in jobs:
        envelope[m.stored] = (m.name, sender, rcpts)
        for _, box in rcpts:
            expected.setdefault(box, []).append(m.stored)
    total = sum(len(v) for v in expected.values())

    got = server.settle(total, timeout=120)
    assert len(got) == total, f"{len(got)} files delivered, {total} expected"

    # Content: byte-exact, once per recipient.
    by_box = maildir.by_mailbox(got)
    assert sorted(by_box) == sorted(expected)
    for box, bodies in expected.items():
        assert by_box[box] == sorted(bodies), f"mailbox {box} differs"

    # Envelope fields prepended to each file.
    for d in got:
        name, sender, rcpts = envelope[d.body]
        assert b"\r" not in d.path.read_bytes(), f"{d.path}: CR in Maildir file"
        assert d.return_path == sender, (name, d.return_path, sender)
        # The recipient as sent, or the mailbox it resolved to.
        allowed = {r.lower() for r, box in rcpts if box == d.mailbox}
        allowed.add(d.mailbox)
        assert d.delivered_to.lower() in allowed, (
            f"{name}: Delivered-To {d.delivered_to!r} in {d.mailbox}")
        assert d.received, name

    assert maildir.leftovers(server.mail_root) == []
    assert server.spool_files() == []


def test_corpus_messages_with_bare_cr_are_refused(server):
    """Real spam with stray CRs: each is refused 550 5.6.0 after its data,
    and the same session goes on to deliver a clean message."""
    bad = corpus.with_bare_cr()
    assert bad, "the corpus should hold messages with a bare CR"
    clean = b"Subject: clean\r\n\r\nafter the refusals\r\n"
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as c:
        c.ehlo("corpus.test")
        for m in bad:
            assert c.mail("s@remote.test", ["BODY=8BITMIME"])[0] == 250
            assert c.rcpt("alice@example.com")[0] == 250
            code, resp = c.data(m.wire)
            assert (code, resp[:5]) == (550, b"5.6.0"), (m.name, code, resp)
        assert c.sendmail("s@remote.test", ["alice@example.com"], clean) == {}
    [d] = server.settle(1)
    assert d.body == maildir.wire_to_stored(clean)
