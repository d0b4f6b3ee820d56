"""Security: TLS, submission and AUTH, connection limits, slow clients,
mailbox paths, certificate reload and TLS configuration errors.

What is proved here, against the real binary on 127.0.0.x:
- STARTTLS (RFC 3207) works with smtplib and swaks, at TLS 1.2 and 1.3;
  `Received:` says ESMTPS/ESMTPSA and names the version and cipher; EHLO
  offers STARTTLS and not AUTH before TLS, AUTH and not STARTTLS after it;
- plaintext pipelined behind STARTTLS is never executed (the 2011 command
  injection family): after the handshake the session is new;
- implicit TLS (RFC 8314) from the first byte, with AUTH; a plaintext client
  there gets no SMTP;
- submission: AUTH PLAIN and LOGIN in all their forms, 530 before AUTH, 538
  before TLS, 535 after the failure delay, 421 after max_failures, failed
  logins logged without the password, `user del` effective at once,
  authenticated relaying while the unauthenticated are refused, sender
  ownership (553 5.7.1);
- connection limits per client address and overall (421 4.7.0 at connect, a
  freed place is given again), across listeners;
- a client that trickles bytes is cut off by the session deadline (421
  4.4.2), in commands, in DATA and in a TLS handshake, while others are
  served; a client that hits the error limit does not disturb another;
- local parts that could name a path are refused and create nothing;
- SIGHUP reloads the certificate (a bad one is refused and the old kept),
  and is handled from the moment the port is open;
- half a TLS configuration stops the start with an error naming the keys.
"""

import base64
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness import paths
from harness.peers import CaptureSink
from harness.server import Server
from harness.smtp import ConnectionClosed, SmtpConn, dot_stuff, expect, send_message
from harness.tls_client import (
    TlsConn, add_user, auth_plain, b64, client_context, del_user, make_cert,
    pem_sha256, served_certificate, session, timed,
)
from harness.wait import free_port, is_listening, wait_until

ALICE_PW = "Alice-pw-7f3c9e1b"     # distinctive strings, grepped for in the log
BOB_PW = "Bob-pw-0d8a55e2"
WRONG_PW = "Wrong-pw-c4e2a913"
REMOTE = "remote.test"
TLS_RECEIVED = re.compile(rb"\(using (TLSv1\.[23]) with cipher ([A-Za-z0-9_]+)\)")


def wire(subject: str, sender: str = "alice@example.com") -> bytes:
    return (f"From: <{sender}>\r\nTo: <rcpt@example.com>\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject.replace(' ', '-')}@security.test>\r\n\r\n"
            f"body of {subject}\r\n").encode()


def unfold(field: bytes) -> bytes:
    return re.sub(rb"\s+", b" ", field)


def with_protocol(received: bytes) -> bytes:
    m = re.search(rb" with (\S+) id ", unfold(received))
    assert m, f"no 'with <protocol> id' in Received: {received!r}"
    return m.group(1)


def transaction(c: SmtpConn, sender: str, rcpts: list[str], data: bytes) -> str:
    """MAIL, RCPT..., DATA on an open session; returns the queue ID."""
    expect(c.cmd(f"MAIL FROM:<{sender}>"), 250, "2.1.0")
    for r in rcpts:
        expect(c.cmd(f"RCPT TO:<{r}>"), 250, "2.1.5")
    expect(c.cmd("DATA"), 354)
    c.send(dot_stuff(data) + b".\r\n")
    return expect(c.reply(), 250, "2.0.0").queue_id


def swaks(port: int, *args, timeout=60) -> tuple[int, str]:
    p = subprocess.run([paths.swaks(), "--server", f"127.0.0.1:{port}",
                        "--helo", "swaks.test", "--timeout", "20", *args],
                       capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    return p.returncode, (p.stdout + p.stderr).decode(errors="replace")


# -- a server with every listener and two users --------------------------------


@dataclass
class Secure:
    server: Server
    smtp: int         # port-25-style listener: STARTTLS offered, AUTH after it
    sub: int          # submission (587-style): STARTTLS, then AUTH before MAIL
    tls: int          # submission over implicit TLS (465-style)

    def add(self, name, password):
        add_user(self.server.data_dir, name, password)

    def delete(self, name):
        del_user(self.server.data_dir, name)


def start_secure(start_server, config: dict | None = None, users=True) -> Secure:
    sub, tls = free_port(), free_port()
    config = dict(config or {})
    config["submission"] = {"listen": [f"127.0.0.1:{sub}"],
                            "tls_listen": [f"127.0.0.1:{tls}"]}
    auth = {"failure_delay": "1s", "max_failures": 3}
    config["auth"] = {**auth, **config.get("auth", {})}
    server = start_server(config=config)
    for port in (sub, tls):
        wait_until(lambda: is_listening(port), 10, f"listener on {port}")
    s = Secure(server, server.port, sub, tls)
    if users:
        s.add("alice", ALICE_PW)
        s.add("bob@example.com", BOB_PW)
    return s


@pytest.fixture
def secure(start_server) -> Secure:
    return start_secure(start_server)


def login(c: SmtpConn, user="alice", password=ALICE_PW):
    return expect(c.cmd(f"AUTH PLAIN {auth_plain(user, password)}"), 235, "2.7.0")


# -- 1. STARTTLS on the SMTP listener ------------------------------------------


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3],
                         ids=["tls1.2", "tls1.3"])
def test_starttls_with_smtplib_received_says_esmtps(secure, version):
    ctx = client_context(version)
    with smtplib.SMTP("127.0.0.1", secure.smtp, timeout=10) as s:
        s.ehlo("smtplib.test")
        assert s.has_extn("starttls"), s.esmtp_features
        # Users exist, so only the missing TLS keeps AUTH out of this list.
        assert not s.has_extn("auth"), s.esmtp_features
        code, _ = s.starttls(context=ctx)
        assert code == 220
        s.ehlo("smtplib.test")
        assert s.has_extn("auth") and "PLAIN" in s.esmtp_features["auth"].split()
        assert not s.has_extn("starttls"), "STARTTLS offered again over TLS"
        client_version, client_cipher = s.sock.version(), s.sock.cipher()[0]
        s.sendmail("s@remote.test", ["carol@example.com"], wire("starttls smtplib"))

    [d] = secure.server.settle(1)
    assert with_protocol(d.received) == b"ESMTPS", d.received
    m = TLS_RECEIVED.search(unfold(d.received))
    assert m, f"Received: does not name the TLS version and cipher: {d.received!r}"
    assert m.group(1).decode() == client_version, (m.group(0), client_version)
    if version == ssl.TLSVersion.TLSv1_3:
        # rustls says TLS13_AES_256_GCM_SHA384 where OpenSSL says TLS_AES_256_GCM_SHA384.
        assert m.group(2).decode().endswith(client_cipher.removeprefix("TLS_")), \
            (m.group(0), client_cipher)
    assert b"Subject: starttls smtplib" in d.body


def test_starttls_with_swaks(secure):
    rc, out = swaks(secure.smtp, "--tls", "--from", "s@remote.test",
                    "--to", "dave@example.com", "--header", "Subject: swaks tls")
    assert rc == 0, out
    assert re.search(r"^=== TLS started with cipher", out, re.M), out
    [d] = secure.server.settle(1)
    assert d.mailbox == "dave@example.com"
    assert with_protocol(d.received) == b"ESMTPS", d.received
    assert TLS_RECEIVED.search(unfold(d.received)), d.received


def test_ehlo_offers_starttls_not_auth_before_tls(secure):
    for port in (secure.smtp, secure.sub):
        c, r = session(port)
        with c:
            kw = r.keywords()
            assert "STARTTLS" in kw and "AUTH" not in kw, f"port {port}:\n{r}"
            c.starttls()
            kw = expect(c.cmd("EHLO client.test"), 250).keywords()
            assert kw.get("AUTH", "").split() == ["PLAIN", "LOGIN"], kw
            assert "STARTTLS" not in kw, kw


# -- 2. STARTTLS command injection ----------------------------------------------


INJECTIONS = {
    "ehlo_and_mail": b"EHLO injected.test\r\nMAIL FROM:<x@injected.test>\r\n",
    "rset": b"RSET\r\n",
    "mail_rcpt_data": (b"MAIL FROM:<x@injected.test>\r\nRCPT TO:<victim@example.com>\r\n"
                       b"DATA\r\nSubject: injected\r\n\r\nowned\r\n.\r\n"),
}


@pytest.mark.parametrize("name", list(INJECTIONS))
def test_plaintext_pipelined_behind_starttls_is_not_executed(secure, name):
    c, _ = session(secure.smtp)
    with c:
        # One write: STARTTLS and what a man in the middle would append.
        c.send(b"STARTTLS\r\n" + INJECTIONS[name])
        expect(c.reply(), 220, "2.0.0")
        assert c.buf == b"", f"plaintext after the 220: {c.buf!r}"
        assert c.nothing_within(0.3) == b"", "plaintext replies before the handshake"
        c.handshake_after_220()
        # No reply to the injected commands may arrive over TLS.
        assert c.nothing_within(0.5) == b"", f"replies to injected commands: {c.buf!r}"
        # A fresh session: no EHLO yet, no transaction.
        expect(c.cmd("MAIL FROM:<s@remote.test>"), 503, "5.5.1")
        expect(c.cmd("EHLO client.test"), 250)
        expect(c.cmd("RCPT TO:<carol@example.com>"), 503)
        transaction(c, "s@remote.test", ["carol@example.com"], wire("after injection"))
        expect(c.cmd("QUIT"), 221)

    got = secure.server.settle(1)
    assert [d.mailbox for d in got] == ["carol@example.com"], got
    [d] = got
    assert b"injected" not in unfold(d.received), d.received
    assert b"from client.test " in unfold(d.received), d.received
    assert "discarding plaintext sent after STARTTLS" in secure.server.log_text()


def test_starttls_twice_is_503(secure):
    c, _ = session(secure.smtp, starttls=True)
    with c:
        expect(c.cmd("STARTTLS"), 503, "5.5.1")
        expect(c.cmd("NOOP"), 250)  # still in step, still encrypted
        assert c.version.startswith("TLSv1.")
        transaction(c, "s@remote.test", ["carol@example.com"], wire("tls twice"))
    [d] = secure.server.settle(1)
    assert with_protocol(d.received) == b"ESMTPS"


def test_starttls_off_is_not_offered(start_server):
    server = start_server(config={"tls": {"starttls": False}})
    c, r = session(server.port)
    with c:
        assert "STARTTLS" not in r.keywords(), r
        r = c.cmd("STARTTLS")
        assert r.code in (454, 502) and r.enhanced in ("4.7.0", "5.5.1"), r
        expect(c.cmd("NOOP"), 250)  # no handshake was started: still plaintext


# -- 3. implicit TLS --------------------------------------------------------------


def test_implicit_tls_greets_over_tls_and_offers_auth(secure):
    with TlsConn(secure.tls, implicit=True) as c:
        assert c.version in ("TLSv1.2", "TLSv1.3"), c.version
        expect(c.reply(), 220)
        kw = expect(c.cmd("EHLO client.test"), 250).keywords()
        assert kw.get("AUTH", "").split() == ["PLAIN", "LOGIN"], kw
        assert "STARTTLS" not in kw, kw
        expect(c.cmd("STARTTLS"), 503, "5.5.1")
        expect(c.cmd("MAIL FROM:<alice@example.com>"), 530, "5.7.0")
        login(c)
        transaction(c, "alice@example.com", ["carol@example.com"], wire("implicit"))
        expect(c.cmd("QUIT"), 221)
    [d] = secure.server.settle(1)
    assert with_protocol(d.received) == b"ESMTPSA", d.received
    assert TLS_RECEIVED.search(unfold(d.received)), d.received


def test_plaintext_client_on_implicit_tls_port_gets_no_smtp(secure):
    with socket.create_connection(("127.0.0.1", secure.tls), timeout=5) as s:
        s.settimeout(1.0)
        with pytest.raises(socket.timeout):
            got = s.recv(4096)
            pytest.fail(f"the server spoke first in plaintext: {got!r}")
        s.sendall(b"EHLO client.test\r\n")
        s.settimeout(5.0)
        got, deadline = b"", time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(4096)
            except ConnectionResetError:
                break
            if not chunk:
                break
            got += chunk
        else:
            pytest.fail("connection still open 5 s after plaintext on the TLS port")
    assert b"220" not in got and b"250" not in got, got


def test_swaks_implicit_tls_and_submission(secure):
    rc, out = swaks(secure.tls, "--tlsc", "--auth", "PLAIN", "--auth-user", "alice",
                    "--auth-password", ALICE_PW, "--from", "alice@example.com",
                    "--to", "carol@example.com", "--header", "Subject: swaks 465")
    assert rc == 0, out
    rc, out = swaks(secure.sub, "--tls", "--auth", "LOGIN", "--auth-user", "alice",
                    "--auth-password", ALICE_PW, "--from", "alice@example.com",
                    "--to", "dave@example.com", "--header", "Subject: swaks 587")
    assert rc == 0, out
    got = secure.server.settle(2)
    assert sorted(d.mailbox for d in got) == ["carol@example.com", "dave@example.com"]
    assert all(with_protocol(d.received) == b"ESMTPSA" for d in got), got


# -- 4. submission and AUTH ---------------------------------------------------


def test_submission_requires_starttls_then_auth(secure):
    c, r = session(secure.sub)
    with c:
        expect(c.cmd("MAIL FROM:<alice@example.com>"), 530, "5.7.0")
        expect(c.cmd(f"AUTH PLAIN {auth_plain('alice', ALICE_PW)}"), 538, "5.7.11")
        c.starttls()
        expect(c.cmd("EHLO client.test"), 250)
        expect(c.cmd("MAIL FROM:<alice@example.com>"), 530, "5.7.0")
        login(c)
        expect(c.cmd(f"AUTH PLAIN {auth_plain('alice', ALICE_PW)}"), 503, "5.5.1")
        transaction(c, "alice@example.com", ["carol@example.com"], wire("submission"))
        expect(c.cmd("QUIT"), 221)
    [d] = secure.server.settle(1)
    assert with_protocol(d.received) == b"ESMTPSA", d.received
    assert d.return_path == "alice@example.com"


def test_auth_before_starttls_on_smtp_listener_is_538(secure):
    c, r = session(secure.smtp)
    with c:
        assert "AUTH" not in r.keywords()
        expect(c.cmd(f"AUTH PLAIN {auth_plain('alice', ALICE_PW)}"), 538, "5.7.11")
        expect(c.cmd("AUTH LOGIN"), 538, "5.7.11")
        # Nothing was read as a SASL response: the session is in step.
        expect(c.cmd("NOOP"), 250)
    assert ALICE_PW not in secure.server.log_text()


def _plain_initial(c):
    return c.cmd(f"AUTH PLAIN {auth_plain('alice', ALICE_PW)}")


def _plain_challenge(c):
    expect(c.cmd("AUTH PLAIN"), 334)
    return c.cmd(auth_plain("alice", ALICE_PW))


def _plain_authzid(c):
    return c.cmd(f"AUTH PLAIN {auth_plain('alice', ALICE_PW, authzid='alice')}")


def _login_challenges(c):
    r = expect(c.cmd("AUTH LOGIN"), 334)
    assert base64.b64decode(r.text) == b"Username:", r
    r = expect(c.cmd(b64("alice")), 334)
    assert base64.b64decode(r.text) == b"Password:", r
    return c.cmd(b64(ALICE_PW))


def _login_initial(c):
    expect(c.cmd(f"AUTH LOGIN {b64('alice')}"), 334)
    return c.cmd(b64(ALICE_PW))


@pytest.mark.parametrize("exchange", [_plain_initial, _plain_challenge, _plain_authzid,
                                      _login_challenges, _login_initial],
                         ids=lambda f: f.__name__.strip("_"))
def test_auth_exchanges_succeed(secure, exchange):
    c, _ = session(secure.sub, starttls=True)
    with c:
        expect(exchange(c), 235, "2.7.0")
        transaction(c, "alice@example.com", ["carol@example.com"], wire("auth"))
    [d] = secure.server.settle(1)
    assert with_protocol(d.received) == b"ESMTPSA"


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_smtplib_login(secure, mechanism):
    with smtplib.SMTP("127.0.0.1", secure.sub, timeout=10) as s:
        s.ehlo("smtplib.test")
        s.starttls(context=client_context())
        s.ehlo("smtplib.test")
        s.user, s.password = "alice", ALICE_PW
        auth = {"PLAIN": s.auth_plain, "LOGIN": s.auth_login}[mechanism]
        code, _ = s.auth(mechanism, auth)
        assert code == 235
        s.sendmail("alice@example.com", ["carol@example.com"], wire("smtplib login"))
    assert len(secure.server.settle(1)) == 1


def test_failed_auth_delay_limit_and_log(secure):
    server = secure.server
    c, _ = session(secure.sub, starttls=True)
    with c:
        r, took = timed(c.cmd, f"AUTH PLAIN {auth_plain('alice', WRONG_PW)}")
        expect(r, 535, "5.7.8")
        assert took >= 0.95, f"535 after {took:.3f}s, before auth.failure_delay (1s)"
        # An unknown user is refused the same way, after the same delay.
        expect(c.cmd("AUTH LOGIN"), 334)
        expect(c.cmd(b64("mallory")), 334)
        r, took = timed(c.cmd, b64(WRONG_PW + "-2"))
        expect(r, 535, "5.7.8")
        assert took >= 0.95, f"535 after {took:.3f}s"
        # The third failure (max_failures = 3) ends the session.
        r, took = timed(c.cmd, f"AUTH PLAIN {auth_plain('alice', WRONG_PW + '-3')}")
        expect(r, 421, "4.7.0")
        assert took >= 0.95, f"421 after {took:.3f}s"
        assert c.expect_closed(5), "connection left open after 421"

    # The limit is per session: the right password still works.
    c, _ = session(secure.sub, starttls=True)
    with c:
        login(c)

    log = server.log_text()
    failed = [l for l in log.splitlines() if "authentication failed" in l]
    assert len(failed) == 3, "\n".join(failed) or log[-3000:]
    assert all("127.0.0.1" in l for l in failed), failed
    assert sum("alice" in l for l in failed) == 2 and any("mallory" in l for l in failed)
    secrets = [ALICE_PW, WRONG_PW, b64(ALICE_PW), b64(WRONG_PW + "-2"),
               auth_plain("alice", WRONG_PW), auth_plain("alice", ALICE_PW)]
    for secret in secrets:
        assert secret not in log, f"the server log contains {secret!r}"


def test_user_del_and_password_change_apply_without_restart(secure):
    pid = secure.server.proc.pid
    secure.add("carol", "carol-old-pw")
    c, _ = session(secure.sub, starttls=True)
    with c:
        expect(c.cmd(f"AUTH PLAIN {auth_plain('carol', 'carol-old-pw')}"), 235, "2.7.0")

    secure.add("carol", "carol-new-pw")
    c, _ = session(secure.sub, starttls=True)
    with c:
        expect(c.cmd(f"AUTH PLAIN {auth_plain('carol', 'carol-old-pw')}"), 535, "5.7.8")
        expect(c.cmd(f"AUTH PLAIN {auth_plain('carol', 'carol-new-pw')}"), 235, "2.7.0")

    secure.delete("carol")
    c, _ = session(secure.sub, starttls=True)
    with c:
        expect(c.cmd(f"AUTH PLAIN {auth_plain('carol', 'carol-new-pw')}"), 535, "5.7.8")
        login(c)  # the other users are still there
    assert secure.server.running and secure.server.proc.pid == pid


def test_no_users_no_auth(start_server):
    s = start_secure(start_server, users=False)
    c, r = session(s.sub, starttls=True)
    with c:
        assert "AUTH" not in r.keywords(), r
        r = c.cmd(f"AUTH PLAIN {auth_plain('alice', ALICE_PW)}")
        assert r.code in (502, 504), r
        expect(c.cmd("MAIL FROM:<alice@example.com>"), 530, "5.7.0")


def test_authenticated_client_relays_unauthenticated_is_refused(start_server):
    with CaptureSink() as sink:
        s = start_secure(start_server, config={
            "relay": {"routes": {REMOTE: f"127.0.0.1:{sink.port}"}},
            "queue": {"retry_delays": ["1s"]}})
        # Unauthenticated, in plaintext and over TLS, on the SMTP listener.
        for tls in (False, True):
            c, _ = session(s.smtp, starttls=tls)
            with c:
                expect(c.cmd("MAIL FROM:<alice@example.com>"), 250)
                expect(c.cmd(f"RCPT TO:<x@{REMOTE}>"), 550, "5.7.1")
                expect(c.cmd(f"RCPT TO:<x%{REMOTE}@example.com>"), 553, "5.1.3")
        # Authenticated on the same listener, and on submission.
        for port in (s.smtp, s.sub):
            c, _ = session(port, starttls=True)
            with c:
                login(c)
                transaction(c, "alice@example.com", [f"x@{REMOTE}"],
                            wire(f"relayed via {port}"))
        got = sink.wait_messages(2, timeout=30)
        time.sleep(0.3)
        assert len(sink.messages) == 2, sink.messages
        for m in got:
            assert m.mail_from == "alice@example.com" and m.rcpt_tos == [f"x@{REMOTE}"]
            assert m.data.startswith(b"Received: "), m.data[:200]
            top = m.data.split(b"\r\n\r\n", 1)[0].split(b"\r\nReceived:")[0]
            assert with_protocol(top) == b"ESMTPSA", top
    assert s.server.count_delivered() == 0


def test_sender_must_be_owned(secure):
    cases = [
        ("alice", ALICE_PW, ["alice@example.com", "alice@other.test", "Alice@Example.COM",
                             ""], ["bob@example.com", f"alice@{REMOTE}", "alice2@example.com",
                                   "postmaster@example.com"]),
        ("bob@example.com", BOB_PW, ["bob@example.com", ""],
         ["bob@other.test", "alice@example.com"]),
    ]
    for user, password, owned, foreign in cases:
        c, _ = session(secure.sub, starttls=True)
        with c:
            login(c, user, password)
            for sender in foreign:
                expect(c.cmd(f"MAIL FROM:<{sender}>"), 553, "5.7.1")
            for sender in owned:
                expect(c.cmd(f"MAIL FROM:<{sender}>"), 250, "2.1.0")
                expect(c.cmd("RSET"), 250)
            transaction(c, owned[0], ["carol@example.com"], wire(f"as {user}", owned[0]))
    got = secure.server.settle(2)
    assert sorted(d.return_path for d in got) == ["alice@example.com", "bob@example.com"]
    assert all(with_protocol(d.received) == b"ESMTPSA" for d in got)


def test_sender_must_match_off(start_server):
    s = start_secure(start_server, config={"auth": {"sender_must_match": False}})
    c, _ = session(s.sub, starttls=True)
    with c:
        login(c)
        transaction(c, "bob@example.com", ["carol@example.com"], wire("as bob"))
    [d] = s.server.settle(1)
    assert d.return_path == "bob@example.com"


# -- 5. limits ---------------------------------------------------------------


def greeted(port: int, source: str = "127.0.0.1") -> TlsConn:
    c = TlsConn(port, source=source)
    expect(c.reply(), 220)
    return c


def turned_away(port: int, source: str = "127.0.0.1"):
    with TlsConn(port, source=source) as c:
        expect(c.reply(), 421, "4.7.0")
        assert c.expect_closed(5), "connection left open after the 421"


def admitted_again(port: int, source: str, timeout: float = 5.0) -> TlsConn:
    """A new connection is greeted with 220 once a place is free again (the
    server frees it when it notices the closed session)."""
    deadline = time.monotonic() + timeout
    while True:
        c = TlsConn(port, source=source)
        r = c.reply()
        if r.code == 220:
            return c
        c.close()
        assert r.matches(421, "4.7.0"), r
        assert time.monotonic() < deadline, f"still turned away {timeout}s after a close"
        time.sleep(0.05)


def test_connection_limit_per_client_address(start_server):
    server = start_server(config={"limits": {"max_connections_per_ip": 2}})
    held = [greeted(server.port), greeted(server.port)]
    try:
        turned_away(server.port)
        held.append(greeted(server.port, source="127.0.0.2"))  # another address
        held.append(greeted(server.port, source="127.0.0.2"))
        turned_away(server.port, source="127.0.0.2")
        expect(held[0].cmd("QUIT"), 221)
        held.pop(0).close()
        c = admitted_again(server.port, "127.0.0.1")
        held.append(c)
        expect(c.cmd("EHLO client.test"), 250)
        turned_away(server.port)
    finally:
        for c in held:
            c.close()
    assert "connection limit reached" in server.log_text()


def test_connection_limit_overall_across_listeners(start_server):
    s = start_secure(start_server, config={
        "limits": {"max_connections": 3, "max_connections_per_ip": 50}}, users=False)
    held = [greeted(s.smtp, "127.0.0.1"), greeted(s.sub, "127.0.0.2")]
    try:
        implicit = TlsConn(s.tls, implicit=True, source="127.0.0.3")
        held.append(implicit)
        expect(implicit.reply(), 220)
        for port, source in [(s.smtp, "127.0.0.4"), (s.sub, "127.0.0.1"),
                             (s.smtp, "127.0.0.3")]:
            turned_away(port, source)
        held.pop(1).close()
        c = admitted_again(s.smtp, "127.0.0.5")
        held.append(c)
        turned_away(s.sub, "127.0.0.6")
    finally:
        for c in held:
            c.close()


class Trickler(threading.Thread):
    """A slow client in a thread: connects, runs `preamble` at normal speed
    (each step: command line, expected code, seconds to wait before it), then
    sends `payload` one byte per `interval` until the server answers or
    closes. `final` is "421 4.4.2" (the reply it got) or "closed" (no
    reply, for a trickled TLS handshake); `lasted` is seconds from the
    connect to that moment."""

    def __init__(self, port: int, payload: bytes, interval: float = 1.0,
                 preamble=(), greeting=True, limit: float = 15.0):
        super().__init__(daemon=True)
        self.port, self.payload, self.interval = port, payload, interval
        self.preamble, self.greeting, self.limit = list(preamble), greeting, limit
        self.connected_at = self.final_at = None
        self.final: str | None = None
        self.sent = 0
        self.error: BaseException | None = None
        self.ready = threading.Event()

    def run(self):
        try:
            self._run()
        except BaseException as e:  # reported by the test
            self.error = e
        finally:
            self.ready.set()

    def _run(self):
        with TlsConn(self.port) as c:
            self.connected_at = time.monotonic()
            if self.greeting:
                expect(c.reply(), 220)
            for line, code, wait in self.preamble:
                time.sleep(wait)
                expect(c.cmd(line), code)
            self.ready.set()
            deadline = self.connected_at + self.limit
            answered = False
            for byte in self.payload:
                if time.monotonic() > deadline:
                    return  # never cut off: final stays None
                try:
                    c.send(bytes([byte]))
                    self.sent += 1
                except OSError:
                    break
                if c.nothing_within(self.interval):
                    answered = True
                    break
            self.final_at = time.monotonic()
            if not answered or not c.buf or not c.buf[:3].isdigit():
                self.final = "closed"  # EOF, a reset, or TLS alert bytes
                return
            try:
                r = c.reply(timeout=5)
                self.final = f"{r.code} {r.enhanced}"
                c.expect_closed(5)
            except ConnectionClosed:
                self.final = "closed"

    @property
    def lasted(self) -> float:
        return self.final_at - self.connected_at


SLOW = {"limits": {"session_timeout": "3s", "command_timeout": "2s", "data_timeout": "2s"}}


@pytest.mark.timeout(60)
def test_slowloris_in_commands_is_cut_off_while_others_are_served(start_server):
    server = start_server(config=SLOW)
    slow = Trickler(server.port, b"EHLO " + b"a" * 40)
    slow.start()
    assert slow.ready.wait(5)
    time.sleep(0.5)
    send_message(server.port, "s@remote.test", ["carol@example.com"], wire("meanwhile"))
    slow.join(20)
    assert not slow.is_alive() and slow.error is None, slow.error
    assert slow.final == "421 4.4.2", slow.final
    assert 2.5 <= slow.lasted <= 4.0, f"cut off after {slow.lasted:.2f}s (session 3s)"
    assert slow.sent >= 2, "the trickle was cut by the command timeout, not the session's"
    [d] = server.settle(1)
    assert d.mailbox == "carol@example.com"


@pytest.mark.timeout(60)
def test_slowloris_in_data_is_cut_off(start_server):
    server = start_server(config=SLOW)
    slow = Trickler(server.port, b"Subject: slow\r\n\r\n" + b"x" * 40,
                    preamble=[("EHLO slow.test", 250, 0), ("MAIL FROM:<s@remote.test>", 250, 0),
                              ("RCPT TO:<carol@example.com>", 250, 0), ("DATA", 354, 0)])
    slow.start()
    assert slow.ready.wait(5)
    send_message(server.port, "s@remote.test", ["dave@example.com"], wire("meanwhile"))
    slow.join(20)
    assert not slow.is_alive() and slow.error is None, slow.error
    assert slow.final == "421 4.4.2", slow.final
    assert 2.5 <= slow.lasted <= 4.0, f"cut off after {slow.lasted:.2f}s (session 3s)"
    got = server.settle(1)
    assert [d.mailbox for d in got] == ["dave@example.com"], got


def client_hello() -> bytes:
    """The bytes of a real TLS ClientHello (Python's ssl, memory BIOs)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = client_context().wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    hello = outgoing.read()
    assert hello[:1] == b"\x16", hello[:8]
    return hello


@pytest.mark.timeout(60)
@pytest.mark.parametrize("where", ["implicit_tls", "starttls_late_in_session"])
def test_slowloris_in_tls_handshake_is_cut_off(start_server, where):
    """A ClientHello at one byte per 0.5 s is cut off like any trickle: by
    the command timeout (2 s) on the implicit TLS port, and by the session
    deadline (3 s) when STARTTLS comes late (at 2.4 s, kept alive by NOOPs):
    the whole session is bounded, a handshake included."""
    s = start_secure(start_server, config=SLOW, users=False)
    hello = client_hello()
    if where == "implicit_tls":
        slow, limit = Trickler(s.tls, hello, interval=0.5, greeting=False), 2.8
    else:
        keepalive = [("EHLO slow.test", 250, 0)] + [("NOOP", 250, 0.8)] * 3
        slow = Trickler(s.smtp, hello, interval=0.5,
                        preamble=keepalive + [("STARTTLS", 220, 0)])
        limit = 3.8
    slow.start()
    assert slow.ready.wait(10)
    send_message(s.smtp, "s@remote.test", ["carol@example.com"], wire("meanwhile"))
    slow.join(25)
    assert not slow.is_alive() and slow.error is None, slow.error
    assert slow.final is not None, \
        f"the trickled handshake was never cut off ({slow.sent} bytes in {slow.limit}s)"
    assert slow.lasted <= limit, \
        f"the connection lasted {slow.lasted:.2f}s (limit {limit}s; session_timeout 3s, " \
        f"command_timeout 2s; {slow.sent} of {len(hello)} ClientHello bytes sent)"
    assert len(s.server.settle(1)) == 1


def test_error_limit_does_not_affect_concurrent_client(start_server):
    server = start_server(config={"limits": {"max_errors": 3}})
    with SmtpConn(server.port) as good, SmtpConn(server.port) as bad:
        expect(good.reply(), 220)
        expect(bad.reply(), 220)
        expect(good.cmd("EHLO good.test"), 250)
        expect(good.cmd("MAIL FROM:<s@remote.test>"), 250)
        # The bad client's errors, pipelined in one write.
        bad.send(b"FROB\r\nMAIL FROM:<x>\r\nRCPT TO:<nobody>\r\nDATA\r\nNOOP\r\n")
        codes = []
        for _ in range(5):
            try:
                r = bad.reply(timeout=5)
            except ConnectionClosed:
                break
            codes.append((r.code, r.enhanced))
            if r.code == 421:
                break
        assert codes[-1] == (421, "4.7.0"), codes
        assert bad.closed or bad.expect_closed(), "left open after 421"
        # The good client has its own count and carries on.
        expect(good.cmd("RCPT TO:<carol@example.com>"), 250)
        expect(good.cmd("FROB"), 500)
        expect(good.cmd("FROB"), 500)  # two errors of its own: still under 3
        expect(good.cmd("DATA"), 354)
        good.send(dot_stuff(wire("good client")) + b".\r\n")
        expect(good.reply(), 250, "2.0.0")
        expect(good.cmd("QUIT"), 221)
    [d] = server.settle(1)
    assert d.mailbox == "carol@example.com"


# -- 6. paths -----------------------------------------------------------------


BAD_LOCAL_PARTS = [
    "../x", "a/b", ".hidden", "x%y", "x!y", "..", "a/../../b",
    '"../x"', '"a/b"', '".hidden"', '"x%y"', '"x@y"', '"a\\\\b"', '"a\\/b"', '"."',
    '"../../../../tmp/x"', '"x/"', '"/etc"',
]


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_path_like_local_parts_are_refused_and_create_nothing(start_server):
    # Every refusal counts as an error; all of them fit in one session here.
    server = start_server(config={"limits": {"max_errors": 1000}})
    root = server.workdir.parent          # the parent of the server's work dir
    assert server.data_dir.parent == server.workdir
    before = tree(root)
    with SmtpConn(server.port) as c:
        expect(c.reply(), 220)
        expect(c.cmd("EHLO client.test"), 250)
        expect(c.cmd("MAIL FROM:<s@remote.test>"), 250)
        for local in BAD_LOCAL_PARTS:
            for domain in ("example.com", "other.test"):
                r = c.cmd(f"RCPT TO:<{local}@{domain}>")
                assert r.code in (501, 553) and r.enhanced == "5.1.3", (local, str(r))
        expect(c.cmd("RCPT TO:<dave@example.com>"), 250)
        expect(c.cmd("DATA"), 354)
        c.send(dot_stuff(wire("paths")) + b".\r\n")
        expect(c.reply(), 250, "2.0.0")
    got = server.settle(1)
    assert [d.mailbox for d in got] == ["dave@example.com"]

    data = server.data_dir.relative_to(root)
    new = sorted(tree(root) - before)
    allowed = (f"{data}/spool/", f"{data}/mail/example.com/dave/")
    allowed_dirs = {f"{data}/mail", f"{data}/mail/example.com",
                    f"{data}/mail/example.com/dave"}
    stray = [p for p in new if p not in allowed_dirs and not p.startswith(allowed)]
    assert not stray, f"created outside the one Maildir: {stray}"
    assert sorted(p.name for p in server.mail_root.iterdir()) == ["example.com"]
    assert [p.name for p in (server.mail_root / "example.com").iterdir()] == ["dave"]


# -- 7. SIGHUP reloads the certificate -------------------------------------------


def install(pair: tuple[Path, Path], cert: Path, key: Path):
    """Replace the live files as an operator (or certbot) would: new file, rename."""
    for src, dst in zip(pair, (cert, key)):
        tmp = dst.with_suffix(".new")
        shutil.copyfile(src, tmp)
        tmp.replace(dst)


def test_sighup_reloads_the_certificate(start_server, tmp_path):
    certs = tmp_path / "certs"
    one, two = make_cert(certs, "one", "one.test"), make_cert(certs, "two", "two.test")
    live_cert, live_key = certs / "live.crt", certs / "live.key"
    install(one, live_cert, live_key)
    s = start_secure(start_server, users=False, config={
        "tls": {"cert": str(live_cert), "key": str(live_key)}})
    fp_one, fp_two = pem_sha256(one[0]), pem_sha256(two[0])
    assert fp_one != fp_two
    assert served_certificate(s.smtp) == fp_one
    assert served_certificate(s.tls, implicit=True) == fp_one

    # A session encrypted before the reload carries on.
    old, _ = session(s.smtp, starttls=True)
    with old:
        install(two, live_cert, live_key)
        s.server.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: served_certificate(s.smtp) == fp_two, 5,
                   "the new certificate after SIGHUP")
        assert served_certificate(s.tls, implicit=True) == fp_two
        assert old.cert_sha256() == fp_one
        transaction(old, "s@remote.test", ["carol@example.com"], wire("old session"))
    assert "TLS certificate reloaded" in s.server.log_text()

    # A broken key is refused at reload; the running certificate stays.
    live_key.write_text("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
    s.server.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "TLS reload failed" in s.server.log_text(), 5, "'TLS reload failed'")
    assert s.server.running
    assert served_certificate(s.smtp) == fp_two
    assert len(s.server.settle(1)) == 1


@pytest.mark.timeout(60)
def test_sighup_at_startup_is_handled_not_fatal(tmp_path):
    """From the moment the port is open the server must catch SIGHUP (and
    SIGTERM): an operator's `kill -HUP` or a logrotate hook at that moment
    must not kill it (SIGHUP's default action). The mask is read from
    /proc/<pid>/status as soon as the port listens, over many starts,
    because the window, if there is one, is short."""
    hup, term = 1 << (signal.SIGHUP - 1), 1 << (signal.SIGTERM - 1)
    s = Server(tmp_path / "hup")
    missing = []
    try:
        for i in range(60):
            s.spawn()
            deadline = time.monotonic() + 10
            while not is_listening(s.port):
                assert s.running and time.monotonic() < deadline, s.log_tail()
            with open(f"/proc/{s.proc.pid}/status") as f:
                caught = next(int(l.split()[1], 16) for l in f if l.startswith("SigCgt:"))
            if caught & (hup | term) != hup | term:
                # Show what that means: the same signal an operator would send.
                s.proc.send_signal(signal.SIGHUP)
                try:
                    rc = s.proc.wait(2)
                except subprocess.TimeoutExpired:
                    rc = None
                missing.append((i, hex(caught), rc))
            s.kill()
    finally:
        if s.running:
            s.kill()
    assert not missing, (
        "SIGHUP not yet handled while the port was already open, in "
        f"{len(missing)} of 60 starts: (start, SigCgt, exit code after SIGHUP) {missing}")


# -- 8. bad TLS configuration -----------------------------------------------------


def _exits_naming(tmp_path, tls: dict, *words: str):
    s = Server(tmp_path / "bad", config={"tls": tls})
    s.spawn()
    try:
        deadline = time.monotonic() + 10
        while s.running and time.monotonic() < deadline:
            assert not is_listening(s.port), "listened despite a bad TLS config"
            time.sleep(0.02)
        assert not s.running, "still running 10s after a bad TLS config"
        rc = s.wait_exit(1)
    finally:
        if s.running:
            s.kill()
    out = s.log_text()
    assert rc != 0, out
    for word in words:
        assert word in out, f"the error does not name {word!r}:\n{out}"


def test_cert_without_key_stops_the_start(tmp_path):
    cert, _ = make_cert(tmp_path / "certs", "c")
    _exits_naming(tmp_path, {"cert": str(cert)}, "tls.cert", "tls.key")


def test_key_without_cert_stops_the_start(tmp_path):
    _, key = make_cert(tmp_path / "certs", "c")
    _exits_naming(tmp_path, {"key": str(key)}, "tls.cert", "tls.key")


def test_missing_cert_file_stops_the_start(tmp_path):
    _, key = make_cert(tmp_path / "certs", "c")
    _exits_naming(tmp_path, {"cert": str(tmp_path / "nope.crt"), "key": str(key)},
                  "tls.cert", "nope.crt")


def test_mismatched_pair_stops_the_start(tmp_path):
    (cert, _), (_, key) = make_cert(tmp_path / "a", "a"), make_cert(tmp_path / "b", "b")
    _exits_naming(tmp_path, {"cert": str(cert), "key": str(key)}, "tls.cert", "tls.key")
