"""SIGTERM and configuration errors.

SIGTERM: sessions get 421 4.3.2 (or are closed), the process exits 0 within
shutdown_grace, and whatever was acknowledged is delivered, at the latest
after a restart. A bad config file: `serve` exits non-zero naming the key,
without ever listening.
"""

import time

import pytest

from harness import maildir
from harness.server import Server
from harness.smtp import ConnectionClosed, SmtpConn, expect, send_message
from harness.wait import is_listening

GRACE = {"server": {"shutdown_grace": "2s"}}
EXIT_TIMEOUT = 15  # grace + slack


def next_reply_or_close(c: SmtpConn, line: str):
    """Send `line`; return its reply, or None when the server closed."""
    try:
        c.send_line(line)
        return c.reply()
    except (ConnectionClosed, OSError):
        return None


def test_sigterm_idle_server_exits_zero(server):
    assert server.stop(EXIT_TIMEOUT) == 0


def test_sigterm_mid_session(start_server):
    server = start_server(config=GRACE)
    with SmtpConn(server.port) as c:
        expect(c.reply(), 220)
        expect(c.cmd("EHLO client.test"), 250)
        expect(c.cmd("MAIL FROM:<s@remote.test>"), 250, "2.1.0")
        server.terminate()
        time.sleep(0.3)

        # No new sessions once shutdown began.
        try:
            with SmtpConn(server.port, timeout=5) as late:
                r = late.reply()
                assert r.matches(421, "4.3.2"), f"new session during shutdown got {r}"
        except (ConnectionRefusedError, ConnectionClosed, ConnectionResetError):
            pass

        r = next_reply_or_close(c, "RCPT TO:<alice@example.com>")
        if r is not None:
            assert r.matches(421, "4.3.2"), f"expected 421 4.3.2 or close, got {r}"
            assert c.expect_closed(EXIT_TIMEOUT), "open after 421"
    assert server.wait_exit(EXIT_TIMEOUT) == 0
    assert server.settle(0) == []


def test_sigterm_mid_data_is_all_or_nothing(start_server):
    """SIGTERM while the client is inside DATA. Whatever the server decides,
    its answer must hold: a 250 means delivered once (after a restart at
    the latest); a 421 or a closed connection means not delivered."""
    server = start_server(config=GRACE)
    wire = b"Subject: interrupted\r\n\r\n" + b"line\r\n" * 1000
    with SmtpConn(server.port) as c:
        expect(c.reply(), 220)
        expect(c.cmd("EHLO client.test"), 250)
        expect(c.cmd("MAIL FROM:<s@remote.test>"), 250, "2.1.0")
        expect(c.cmd("RCPT TO:<alice@example.com>"), 250, "2.1.5")
        expect(c.cmd("DATA"), 354)
        c.send(wire[:3000])
        server.terminate()
        time.sleep(0.3)
        try:
            c.send(wire[3000:] + b".\r\n")
            r = c.reply()
        except (ConnectionClosed, OSError):
            r = None
    assert server.wait_exit(EXIT_TIMEOUT) == 0
    print(f"reply after SIGTERM mid-DATA: {r}")

    server.restart()
    if r is not None and r.code == 250:
        assert r.enhanced == "2.0.0", r
        [d] = server.settle(1)
        assert d.body == maildir.wire_to_stored(wire)
    else:
        assert r is None or r.matches(421, "4.3.2"), r
        assert server.settle(0) == []


def test_acknowledged_message_survives_sigterm(start_server):
    server = start_server(config=GRACE)
    wire = b"Subject: before shutdown\r\n\r\nbody\r\n"
    send_message(server.port, "s@remote.test",
                 ["alice@example.com", "bob@other.test"], wire)
    assert server.stop(EXIT_TIMEOUT) == 0
    server.restart()
    got = server.settle(2)
    assert sorted(d.mailbox for d in got) == ["alice@example.com", "bob@other.test"]
    assert all(d.body == maildir.wire_to_stored(wire) for d in got)


def test_every_documented_key_is_accepted(tmp_path):
    """The full config from the documentation starts and serves mail."""
    s = Server(tmp_path)
    data = s.data_dir
    s.config_path = tmp_path / "full.toml"
    s.config_path.write_text(f"""
[server]
listen = ["127.0.0.1:{s.port}"]
data_dir = "{data}"
hostname = "mx.example.com"
shutdown_grace = "30s"
[local]
domains = ["localhost"]
users = []
recipient_delimiter = "+"
[limits]
max_message_size = 26214400
max_recipients = 1000
max_line_length = 2048
max_errors = 20
command_timeout = "5m"
data_timeout = "3m"
""")
    try:
        s.start()
        send_message(s.port, "s@remote.test", ["alice@example.com"],
                     b"Subject: full config\r\n\r\n")
        assert len(s.settle(1)) == 1
        assert s.stop(EXIT_TIMEOUT) == 0
    finally:
        if s.running:
            s.kill()


BAD_CONFIGS = [
    ("unknown_key", "[limits]\nmax_bogus = 1\n", "max_bogus"),
    ("unknown_table", "[bogus]\nx = 1\n", "bogus"),
    ("unknown_top_level_key", "frobnicate = true\n", "frobnicate"),
    ("unknown_server_key", "[server]\nlisten_backlog = 5\n", "listen_backlog"),
    ("string_for_int", '[limits]\nmax_recipients = "many"\n', "max_recipients"),
    ("negative_int", "[limits]\nmax_errors = -1\n", "max_errors"),
    ("bad_duration", '[limits]\ncommand_timeout = "soon"\n', "command_timeout"),
    ("bad_grace", '[server]\nshutdown_grace = "forever"\n', "shutdown_grace"),
    ("string_for_list", '[local]\nusers = "alice"\n', "users"),
    ("int_for_string", "[local]\nrecipient_delimiter = 5\n", "recipient_delimiter"),
]


@pytest.mark.parametrize("name,text,key", BAD_CONFIGS, ids=[b[0] for b in BAD_CONFIGS])
def test_bad_config_exits_nonzero_naming_the_key(tmp_path, name, text, key):
    s = Server(tmp_path, config=text)
    s.spawn()
    try:
        deadline = time.monotonic() + 10
        while s.running and time.monotonic() < deadline:
            assert not is_listening(s.port), "listened despite a bad config"
            time.sleep(0.02)
        assert not s.running, "still running 10s after a bad config"
        rc = s.wait_exit(1)
    finally:
        if s.running:
            s.kill()
    out = s.log_text()
    assert rc != 0, out
    assert key in out, f"error output does not name {key!r}:\n{out}"


def test_invalid_toml_exits_nonzero(tmp_path):
    s = Server(tmp_path, config="[limits\nmax_errors = \n")
    s.spawn()
    try:
        rc = s.wait_exit(10)
    finally:
        if s.running:
            s.kill()
    assert rc != 0, s.log_text()
