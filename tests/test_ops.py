"""The operator's tools against a running server: `oncemail queue ...`,
`sendmail`, the /metrics and /healthz endpoint, `check-config`, JSON logs.

Messages are kept in the queue by a route to an aiosmtpd peer that answers
451 to every end of data, with a one-hour retry delay, so each stays
deferred until a test flushes, holds, releases, deletes or bounces it; each
test then checks that the order changed what it should and nothing else.

sendmail is the same binary (`oncemail sendmail`, or a link named
`sendmail`); it reads the server's config file for the data directory and
the local domains, so these servers name their domains in the file too.
"""

import email
import json
import os
import re
import subprocess
import time
import tomllib
import urllib.error
import urllib.request

import pytest

from harness import paths
from harness.peers import ScriptedSink
from harness.smtp import SmtpConn, expect, send_message
from harness.wait import free_port, wait_until

DOMAINS = ["example.com", "other.test"]
REMOTE = "remote.test"
SENDER = "sender@example.com"   # local: reports to it land in its Maildir
DEFER = "451 4.3.0 not now"


# -- helpers -----------------------------------------------------------------


def ops_config(sink=None, metrics_port=None, **sections) -> dict:
    config = {"local": {"domains": DOMAINS}, "queue": {"retry_delays": ["1h"]}}
    if sink is not None:
        config["relay"] = {"trusted_networks": ["127.0.0.0/8"],
                           "routes": {REMOTE: f"127.0.0.1:{sink.port}"}}
    if metrics_port is not None:
        config["metrics"] = {"listen": f"127.0.0.1:{metrics_port}"}
    for name, values in sections.items():
        config.setdefault(name, {}).update(values)
    return config


def run(argv, stdin: bytes = b"", env=None, timeout=30) -> subprocess.CompletedProcess:
    return subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def queue(server, *args) -> subprocess.CompletedProcess:
    return run([str(paths.oncemail_bin()), "queue", *args,
                "--config", str(server.config_path), "--data-dir", str(server.data_dir)])


def queue_ok(server, *args) -> str:
    done = queue(server, *args)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


def listing(server) -> dict[str, dict]:
    """{queue id: message} from `queue list --json`."""
    data = json.loads(queue_ok(server, "list", "--json"))
    return {m["queue_id"]: m for m in data["messages"]}


def sendmail(server, *args, stdin: bytes, argv0=None) -> subprocess.CompletedProcess:
    program = [argv0] if argv0 else [str(paths.oncemail_bin()), "sendmail"]
    where = ["-C", str(server.config_path), "--data-dir", str(server.data_dir)]
    return run(program + where + list(args), stdin)


def maildrop(server) -> list[str]:
    drop = server.data_dir / "maildrop"
    return sorted(p.name for p in drop.iterdir() if p.is_file()) if drop.is_dir() else []


def remote_message(tag: str) -> bytes:
    return (f"From: <{SENDER}>\r\nTo: <x@{REMOTE}>\r\nSubject: {tag}\r\n"
            f"Message-ID: <{tag}@ops.test>\r\n\r\nbody of {tag}\r\n").encode()


def deferring_sink():
    """A next hop that refuses every message with a 451, counting attempts."""
    return ScriptedSink(data_script=lambda captured, n: DEFER)


def attempts(sink, tag: str) -> int:
    subject = f"Subject: {tag}\r\n".encode()
    return sum(1 for captured, _ in sink.refused if subject in captured.data)


def queue_deferred(server, sink, tags) -> dict[str, str]:
    """Send one message per tag to the refusing peer; wait until all are
    deferred; {tag: queue id}."""
    qids = {tag: send_message(server.port, SENDER, [f"x@{REMOTE}"], remote_message(tag))
            for tag in tags}

    def all_deferred():
        listed = listing(server)
        return all(listed.get(q, {}).get("state") == "deferred" for q in qids.values())

    wait_until(all_deferred, 20, lambda: f"deferred messages:\n{queue_ok(server, 'list')}")
    return qids


def log_lines(server, event: str) -> list[str]:
    return [line for line in server.log_text().splitlines()
            if re.search(rf"\s(INFO|WARN|ERROR)\s+{re.escape(event)}(\s|$)", line)]


def reports(server) -> list:
    return [d for d in server.deliveries() if d.mailbox == SENDER]


# -- queue commands ----------------------------------------------------------


def test_queue_commands_say_when_no_server_runs(tmp_path):
    config = tmp_path / "oncemail.toml"
    config.write_text(f'[server]\ndata_dir = "{tmp_path / "data"}"\n')
    done = run([str(paths.oncemail_bin()), "queue", "list", "--config", str(config)])
    assert done.returncode == 1
    assert "not running" in done.stderr.decode()


def test_list_and_show_describe_each_message(start_server):
    with deferring_sink() as sink:
        server = start_server(config=ops_config(sink))
        qids = queue_deferred(server, sink, ["first", "second"])
        listed = listing(server)

        assert set(listed) == set(qids.values())
        first = listed[qids["first"]]
        assert first["sender"] == SENDER
        assert first["size"] == len(remote_message("first"))
        assert first["attempts"] == 1 and first["next_attempt"] > time.time() + 3000
        [rcpt] = first["recipients"]
        assert rcpt["address"] == f"x@{REMOTE}" and rcpt["state"] == "deferred"
        assert DEFER in rcpt["last_reply"]

        text = queue_ok(server, "list")
        for qid in qids.values():
            assert re.search(rf"^{qid}\s+\d+\s+\S+ \S+\s+<{SENDER}>\s+\(deferred", text, re.M)
        assert text.count(f"deferred   <x@{REMOTE}>  next try ") == 2, text
        total = sum(len(remote_message(t)) for t in qids)
        assert text.rstrip().endswith(f"-- 2 messages, 2 recipients, {total} bytes"), text

        shown = queue_ok(server, "show", qids["first"])
        assert f"Queue ID:  {qids['first']}" in shown and f"Sender:    <{SENDER}>" in shown
        assert f"[remote {REMOTE}]" in shown and DEFER in shown
        assert "Subject: first\n" in shown and "body of first" not in shown
        whole = queue_ok(server, "show", qids["first"], "--body")
        assert whole.endswith("Subject: first\nMessage-ID: <first@ops.test>\n\nbody of first\n")

        missing = queue(server, "show", "0AAAAAAAAAAAA")
        assert missing.returncode == 1 and "no message" in missing.stderr.decode()
        assert queue(server, "hold", "nonsense").returncode == 1


def test_flush_retries_one_message_or_all(start_server):
    with deferring_sink() as sink:
        server = start_server(config=ops_config(sink))
        qids = queue_deferred(server, sink, ["one", "two"])
        assert (attempts(sink, "one"), attempts(sink, "two")) == (1, 1)

        queue_ok(server, "flush", qids["one"])
        wait_until(lambda: attempts(sink, "one") == 2, 20, "a second attempt of 'one'")
        time.sleep(0.5)
        assert attempts(sink, "two") == 1

        out = queue_ok(server, "flush")
        assert "asked 2 message(s)" in out
        wait_until(lambda: attempts(sink, "one") == 3 and attempts(sink, "two") == 2, 20,
                   "one more attempt of each")
        assert set(listing(server)) == set(qids.values())


def test_hold_stops_attempts_until_release_even_across_a_restart(start_server):
    with deferring_sink() as sink:
        server = start_server(config=ops_config(sink))
        qids = queue_deferred(server, sink, ["held", "free"])

        assert "is on hold" in queue_ok(server, "hold", qids["held"])
        listed = listing(server)
        assert listed[qids["held"]]["state"] == "held"
        assert listed[qids["free"]]["state"] == "deferred"
        assert f"held       <x@{REMOTE}>" in queue_ok(server, "list")
        assert "already on hold" in queue_ok(server, "hold", qids["held"])

        server.stop()
        server.restart()
        # Recovered messages are tried at once, except the held one.
        wait_until(lambda: attempts(sink, "free") == 2, 20, "the free message retried")
        assert listing(server)[qids["held"]]["state"] == "held"
        assert "release it" in queue_ok(server, "flush", qids["held"])
        queue_ok(server, "flush")
        wait_until(lambda: attempts(sink, "free") == 3, 20, "the free message flushed")
        time.sleep(0.5)
        assert attempts(sink, "held") == 1

        assert "released" in queue_ok(server, "release", qids["held"])
        wait_until(lambda: attempts(sink, "held") == 2, 20, "an attempt after the release")
        assert "not on hold" in queue_ok(server, "release", qids["free"])
        lines = [line for line in log_lines(server, "operator") if qids["held"] in line]
        assert any(re.search(r'action="?hold"? by="?uid=0 pid=\d+', line)
                   for line in lines), lines


def test_delete_removes_without_a_report(start_server):
    with deferring_sink() as sink:
        server = start_server(config=ops_config(sink))
        qids = queue_deferred(server, sink, ["doomed", "kept"])

        assert "deleted" in queue_ok(server, "delete", qids["doomed"])
        assert set(listing(server)) == {qids["kept"]}
        time.sleep(1)
        assert reports(server) == []
        assert queue(server, "delete", qids["doomed"]).returncode == 1

        server.stop()
        server.restart()
        assert set(listing(server)) == {qids["kept"]}


def test_bounce_returns_the_message_with_a_report(start_server):
    with deferring_sink() as sink:
        server = start_server(config=ops_config(sink))
        qids = queue_deferred(server, sink, ["returned", "kept"])

        assert "returned to its sender" in queue_ok(server, "bounce", qids["returned"])
        [report] = wait_until(lambda: reports(server), 20, "the report")
        assert set(listing(server)) == {qids["kept"]}

        assert report.return_path == ""
        msg = email.message_from_bytes(report.body)
        assert msg.get_content_type() == "multipart/report"
        status = msg.get_payload()[1].get_payload()[1]
        assert status["Final-Recipient"].endswith(f"x@{REMOTE}")
        assert status["Action"] == "failed" and status["Status"].startswith("5.")
        assert "Subject: returned" in msg.get_payload()[2].get_payload(decode=True).decode()


# -- sendmail ----------------------------------------------------------------


def delivered(server, mailbox: str, count: int = 1):
    server.wait_deliveries(count)
    return [d for d in server.deliveries() if d.mailbox == mailbox]


def test_sendmail_with_arguments_delivers_and_completes_the_header(start_server):
    server = start_server(config=ops_config())
    done = sendmail(server, "-f", "cron@example.com", "-F", "Cron Daemon", "alice",
                    stdin=b"Subject: nightly\nTo: alice@example.com\n\nall\rfine\n")
    assert done.returncode == 0, done.stderr.decode()
    assert done.stderr == b""

    [mail] = delivered(server, "alice@example.com")
    assert mail.return_path == "cron@example.com"
    assert b"(oncemail, from userid 0)" in mail.received and b"with local id" in mail.received
    head, _, body = mail.body.partition(b"\n\n")
    assert body == b"all\nfine\n", "bare CR and LF become line breaks"
    fields = dict(line.split(": ", 1) for line in head.decode().splitlines())
    assert fields["From"] == '"Cron Daemon" <cron@example.com>'
    assert fields["Subject"] == "nightly"
    assert re.fullmatch(r"\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4}", fields["Date"])
    assert re.fullmatch(r"<[\w.]+@[\w.-]+>", fields["Message-ID"])
    assert maildrop(server) == []
    [line] = log_lines(server, "picked up")
    assert "queue_id=" in line


def test_sendmail_t_takes_recipients_from_the_header_and_drops_bcc(start_server):
    server = start_server(config=ops_config())
    message = (b"From: App <app@example.com>\r\nTo: Ann <ann@example.com>, bob\r\n"
               b"Cc: carol@other.test\r\nBcc: dave@example.com\r\nSubject: t\r\n\r\nhi\r\n")
    done = sendmail(server, "-t", "-i", stdin=message)
    assert done.returncode == 0, done.stderr.decode()

    server.settle(4)
    got = {d.mailbox: d for d in server.deliveries()}
    assert set(got) == {"ann@example.com", "bob@example.com", "carol@other.test",
                        "dave@example.com"}
    for d in got.values():
        assert b"Bcc:" not in d.body and b"dave" not in d.body
        assert d.body.startswith(b"From: App <app@example.com>\nTo: Ann")
        assert d.return_path == "root@example.com"   # the invoking user (tests run as root)


@pytest.mark.parametrize("flags, kept", [((), False), (("-i",), True), (("-oi",), True)])
def test_a_lone_dot_ends_the_message_unless_i(start_server, flags, kept):
    server = start_server(config=ops_config())
    text = b"Subject: dots\n\nbefore\n..two\n.\nafter\n"
    done = sendmail(server, *flags, "dot@example.com", stdin=text)
    assert done.returncode == 0, done.stderr.decode()
    [mail] = delivered(server, "dot@example.com")
    body = mail.body.partition(b"\n\n")[2]
    assert body == (b"before\n..two\n.\nafter\n" if kept else b"before\n..two\n")


def test_a_link_named_sendmail_is_sendmail(start_server, tmp_path):
    server = start_server(config=ops_config())
    link = tmp_path / "sendmail"
    link.symlink_to(paths.oncemail_bin())
    done = sendmail(server, "-oi", "-fweb@example.com", "linked@example.com",
                    stdin=b"Subject: link\n\nvia the link\n", argv0=str(link))
    assert done.returncode == 0, done.stderr.decode()
    [mail] = delivered(server, "linked@example.com")
    assert mail.return_path == "web@example.com"

    refused = run([str(link), "-C", str(server.config_path), "-bs"])
    assert refused.returncode == 64 and b"-bs" in refused.stderr
    mailq = tmp_path / "mailq"
    mailq.symlink_to(paths.oncemail_bin())
    listed = run([str(mailq), "--data-dir", str(server.data_dir)],
                 env={"ONCEMAIL_CONFIG": str(server.config_path)})
    assert listed.returncode == 0 and b"Mail queue is empty" in listed.stdout


def test_sendmail_refuses_bad_addresses_and_leaves_nothing(start_server):
    server = start_server(config=ops_config(local={"users": ["alice"]}))
    cases = [
        (["a b@example.com"], 65),
        (["-f", "not an address", "alice"], 65),
        (["nobody@example.com"], 67),
        ([], 64),
        (["-t"], 64),
    ]
    for args, code in cases:
        done = sendmail(server, *args, stdin=b"Subject: bad\n\nx\n")
        assert done.returncode == code, (args, done.returncode, done.stderr)
        assert done.stderr.startswith(b"sendmail: ")
    bad_header = b"To: ok@example.com, <broken@>\nSubject: x\n\nx\n"
    assert sendmail(server, "-t", stdin=bad_header).returncode == 65
    assert maildrop(server) == []
    time.sleep(0.5)
    assert server.count_delivered() == 0 and listing(server) == {}


def test_sendmail_fails_when_the_maildrop_cannot_be_written(start_server):
    server = start_server(config=ops_config())
    drop = server.data_dir / "maildrop"
    drop.rmdir()
    drop.write_text("in the way\n")
    done = sendmail(server, "alice@example.com", stdin=b"Subject: x\n\nx\n")
    assert done.returncode == 73, done.stderr
    assert b"maildrop" in done.stderr
    time.sleep(0.5)
    assert server.count_delivered() == 0 and listing(server) == {}


def test_sendmail_while_the_server_is_down_is_delivered_at_start(start_server):
    server = start_server(config=ops_config())
    server.stop()
    started = time.monotonic()
    done = sendmail(server, "late@example.com", stdin=b"Subject: waited\n\nx\n")
    assert done.returncode == 0 and done.stderr == b""
    assert time.monotonic() - started < 5
    assert [n for n in maildrop(server) if n.endswith(".msg")], maildrop(server)

    server.restart()
    [mail] = delivered(server, "late@example.com")
    assert b"Subject: waited" in mail.body
    wait_until(lambda: maildrop(server) == [], 10, "an empty maildrop")


def test_a_maildrop_file_queued_before_a_crash_is_not_queued_again(start_server, tmp_path):
    # The crash between the commit and the removal of the maildrop file, replayed:
    # the file comes back after its message was committed and delivered.
    server = start_server(config=ops_config())
    server.stop()
    assert sendmail(server, "once@example.com", stdin=b"Subject: once\n\nx\n").returncode == 0
    [name] = maildrop(server)
    saved = (server.data_dir / "maildrop" / name).read_bytes()

    server.restart()
    server.settle(1)
    server.stop()
    (server.data_dir / "maildrop" / name).write_bytes(saved)
    server.restart()
    wait_until(lambda: maildrop(server) == [], 10, "the file removed")
    assert len(server.settle(1)) == 1
    assert any("already queued" in line for line in server.log_text().splitlines())


def test_pickup_sets_aside_what_sendmail_did_not_write(start_server):
    server = start_server(config=ops_config())
    drop = server.data_dir / "maildrop"
    (drop / "1.garbage.msg").write_bytes(b"root:x:0:0::/root:/bin/sh\n")
    secret = server.workdir / "secret"
    secret.write_text("do not mail me\n")
    (drop / "2.link.msg").symlink_to(secret)
    queue_ok(server, "list")  # the server answers; pickup runs every few seconds
    wait_until(lambda: maildrop(server) == [] and not (drop / "2.link.msg").is_symlink(), 15,
               "both files moved aside")
    assert sorted(p.name for p in (drop / "quarantine").iterdir()) == ["1.garbage.msg",
                                                                       "2.link.msg"]
    assert server.count_delivered() == 0 and server.running


# -- metrics and health ------------------------------------------------------


def scrape(port: int, path: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.headers["Content-Type"], r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read().decode()


def samples(text: str) -> dict[tuple, float]:
    """{(name, sorted labels): value} through the Prometheus text parser."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_parse_and_count_what_happened(start_server):
    port = free_port()
    server = start_server(config=ops_config(metrics_port=port))
    wire = b"Subject: counted\r\n\r\nsame bytes\r\n"
    for i in range(3):
        send_message(server.port, SENDER, [f"user{i}@example.com"], wire)
    send_message(server.port, SENDER, ["user0@example.com"], wire)   # a duplicate
    with SmtpConn(server.port) as c:
        expect(c.reply(), 220)
        expect(c.cmd("EHLO client.test"), 250)
        expect(c.cmd(f"MAIL FROM:<{SENDER}>"), 250)
        expect(c.cmd("RCPT TO:<someone@elsewhere.test>"), 550, "5.7.1")
        c.cmd("QUIT")
    server.settle(3)

    status, content_type, text = scrape(port, "/metrics")
    assert status == 200
    assert content_type.startswith("application/openmetrics-text; version=1.0.0")
    got = samples(text)
    assert got[("oncemail_messages_accepted_total", ())] == 3
    assert got[("oncemail_recipients_delivered_total", (("relay", "local"),))] == 3
    assert got[("oncemail_duplicates_suppressed_total", (("scope", "message"),))] == 1
    assert got[("oncemail_replies_rejected_total", ())] == 1
    assert got[("oncemail_final_dot_gap_seconds_count", ())] == 3
    assert got[("oncemail_messages_picked_up_total", ())] == 0

    # The same text is valid OpenMetrics, as its content type says.
    from prometheus_client.openmetrics.parser import text_string_to_metric_families
    names = {f.name for f in text_string_to_metric_families(text)}
    assert "oncemail_messages_accepted" in names

    assert scrape(port, "/healthz")[0::2] == (200, "ok\n")
    assert scrape(port, "/nothing")[0] == 404


def test_health_is_503_when_the_spool_cannot_be_written(start_server):
    port = free_port()
    server = start_server(config=ops_config(metrics_port=port))
    assert scrape(port, "/healthz")[0] == 200
    # Root ignores permissions; a spool directory that is gone is unwritable for anyone.
    spool = server.data_dir / "spool"
    spool.rename(server.data_dir / "spool.away")
    try:
        status, _, text = scrape(port, "/healthz")
        assert status == 503 and text.startswith("spool not writable"), text
    finally:
        (server.data_dir / "spool.away").rename(spool)
    assert scrape(port, "/healthz")[0] == 200


# -- check-config and log format ----------------------------------------------


def check_config(path) -> subprocess.CompletedProcess:
    return run([str(paths.oncemail_bin()), "check-config", "--config", str(path)],
               env={"ONCEMAIL_CONFIG": ""})


def test_check_config_prints_every_setting_and_names_errors(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text('[server]\nlisten = ["127.0.0.1:2600"]\n\n[metrics]\n'
                    'listen = "127.0.0.1:9125"\n')
    done = check_config(good)
    assert done.returncode == 0, done.stderr.decode()
    dump = done.stdout.decode()
    settings = tomllib.loads(dump)
    assert settings["server"]["listen"] == ["127.0.0.1:2600"]
    assert settings["metrics"]["listen"] == "127.0.0.1:9125"
    assert settings["limits"]["max_message_size"] == 26214400      # a default
    assert settings["queue"]["retry_delays"][0] == "1m"
    assert settings["admin"]["socket"].endswith("admin.sock")

    again = tmp_path / "again.toml"
    again.write_text(dump)
    redone = check_config(again)
    assert redone.returncode == 0
    assert redone.stdout.decode().split("\n", 1)[1] == dump.split("\n", 1)[1]

    bad = [
        ("[limits]\nmax_recipients = 1\n\nmax_errors = 0\n", ["limits.max_errors", "line 4"]),
        ("[server]\nlisten = [\"nowhere\"]\n", ["server.listen", "line 2"]),
        ("[queue]\nmax_hops = \"many\"\n", ["line 2", "max_hops"]),
        ("[limits]\nbogus = 1\n", ["line 2", "bogus"]),
        ("[metrics]\nlisten = \"localhost\"\n", ["metrics.listen", "line 2"]),
    ]
    for text, words in bad:
        path = tmp_path / "bad.toml"
        path.write_text(text)
        done = check_config(path)
        assert done.returncode == 1, text
        assert done.stdout == b""
        for word in words:
            assert word in done.stderr.decode(), (text, done.stderr.decode())


def test_json_logs_carry_the_queue_id(start_server):
    server = start_server(config=ops_config(), extra_args=["--log-format", "json"])
    qid = send_message(server.port, SENDER, ["json@example.com"], b"Subject: j\r\n\r\nx\r\n")
    server.settle(1)
    server.stop()
    events = [json.loads(line) for line in server.log_text().splitlines()
              if line.startswith("{")]
    assert events and len(events) == len(server.log_text().splitlines()) - 1  # the "---" title
    [accepted] = [e for e in events if e.get("message") == "accepted"]
    assert accepted["queue_id"] == qid and accepted["level"] == "INFO"
    assert {e["queue_id"] for e in events if e.get("message") == "delivered"} == {qid}
