"""Other people's SMTP clients: swaks (pipelining) and Postfix's smtp-source."""

import re
import subprocess

import pytest

from harness import paths

SWAKS_DATA = (
    "From: Swaks Test <s@remote.test>\n"
    "To: alice@example.com, bob@other.test\n"
    "Subject: pipelined through swaks\n"
    "Message-ID: <swaks-1@remote.test>\n"
    "\n"
    "first line\n"
    ".a line that starts with a dot\n"
    "..two dots\n"
    "last line without newline"
)


def run(argv, timeout=60, env=None):
    p = subprocess.run(argv, capture_output=True, timeout=timeout, env=env,
                       stdin=subprocess.DEVNULL)
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")


def swaks(port, *args):
    return run([paths.swaks(), "--server", f"127.0.0.1:{port}",
                "--helo", "swaks.test", "--timeout", "30", *args])


def test_swaks_pipelined_transaction_is_delivered(server):
    rc, out, err = swaks(server.port, "--pipeline",
                         "--from", "s@remote.test",
                         "--to", "alice@example.com,bob@other.test",
                         "--data", SWAKS_DATA)
    assert rc == 0, out + err
    assert re.search(r"^<-  250[- ]PIPELINING", out, re.M), out

    # swaks sends MAIL, both RCPTs and DATA in one group, then reads.
    client_lines = [l for l in out.splitlines() if l.startswith((" -> ", "<-"))]
    i = next(i for i, l in enumerate(client_lines) if "MAIL FROM" in l)
    assert [l[:4] for l in client_lines[i:i + 4]] == [" -> "] * 4, out
    assert "2.0.0" in out

    # swaks ends the data with CRLF and dot-stuffs; we get it back unstuffed.
    want = SWAKS_DATA.encode() + b"\n"
    got = server.settle(2)
    assert sorted((d.mailbox, d.body) for d in got) == [
        ("alice@example.com", want), ("bob@other.test", want)]
    assert all(d.return_path == "s@remote.test" for d in got)


def test_swaks_null_sender(server):
    rc, out, err = swaks(server.port, "--from", "<>",
                         "--to", "carol@example.com",
                         "--header", "Subject: bounce-like")
    assert rc == 0, out + err
    [d] = server.settle(1)
    assert d.mailbox == "carol@example.com"
    assert d.return_path == ""
    assert b"Subject: bounce-like\n" in d.body


@pytest.mark.timeout(180)
def test_smtp_source_200_messages_10_sessions(server):
    """smtp-source -N numbers each recipient, so every message has its own
    mailbox (1bulk..200bulk): exactly one file in each proves once-only."""
    tool, env = paths.postfix_tool("smtp-source")
    n = 200
    rc, out, err = run([tool, "-N", "-d", "-s", "10", "-m", str(n),
                        "-l", "4000", "-f", "load@remote.test",
                        "-t", "bulk@example.com", "-M", "source.test",
                        f"127.0.0.1:{server.port}"], timeout=150, env=env)
    assert rc == 0, out + err

    got = server.settle(n, timeout=120)
    boxes = sorted(d.mailbox for d in got)
    assert boxes == sorted(f"{i}bulk@example.com" for i in range(1, n + 1))
    for d in got:
        assert d.return_path == "load@remote.test"
        assert d.body.startswith(b"From: <load@remote.test>\n"), d.body[:200]
        assert len(d.body) >= 4000


def test_smtp_source_several_recipients_per_message(server):
    tool, env = paths.postfix_tool("smtp-source")
    rc, out, err = run([tool, "-N", "-s", "2", "-m", "10", "-r", "3",
                        "-f", "load@remote.test", "-t", "multi@other.test",
                        "-M", "source.test", f"127.0.0.1:{server.port}"],
                       timeout=60, env=env)
    assert rc == 0, out + err
    got = server.settle(30)
    assert len(got) == 30
    assert len({d.mailbox for d in got}) == 30
