//! The client against a scripted server on loopback.

mod fake;

use std::time::{Duration, Instant};

use smtp_wire::data::dot_stuff;

use super::*;
use fake::{Fake, Step, expect, say};

const GREETING: &str = "220 mx.test ESMTP\r\n";

fn settings() -> Settings {
    let second = Duration::from_secs(1);
    let timeouts = Timeouts {
        connect: second,
        greeting: second,
        ehlo: second,
        mail: second,
        rcpt: second,
        data_init: second,
        data_block: second,
        data_term: second,
    };
    Settings { helo: "relay.test".into(), timeouts, starttls: false }
}

/// The greeting and an EHLO reply offering `keywords`.
fn hello(keywords: &[&str]) -> Vec<Step> {
    let mut ehlo = vec!["mx.test"];
    ehlo.extend_from_slice(keywords);
    let mut reply = Vec::new();
    smtp_wire::reply::format_reply(250, None, &ehlo, &mut reply);
    let reply = String::from_utf8(reply).expect("ASCII");
    vec![say(GREETING), expect("EHLO relay.test"), say(reply)]
}

fn quit() -> [Step; 2] {
    [expect("QUIT"), say("221 2.0.0 bye\r\n")]
}

fn recipients(list: &[&str]) -> Vec<String> {
    list.iter().map(|r| r.to_string()).collect()
}

/// A message from a@x.test with default flags; `change` adjusts it.
async fn send(
    conn: &mut Connection,
    to: &[&str],
    mut body: &[u8],
    change: impl FnOnce(&mut Message<'_>),
) -> Vec<Outcome> {
    let to = recipients(to);
    let mut message = Message {
        sender: "a@x.test",
        recipients: &to,
        size: body.len() as u64,
        eight_bit: false,
        smtputf8: false,
        transid: None,
        body: &mut body,
    };
    change(&mut message);
    conn.send(message).await.outcomes
}

async fn open(fake: &Fake) -> Connection {
    match Connection::open(fake.addr, "mx.test", &settings()).await {
        Ok(conn) => conn,
        Err(error) => panic!("open: {error}"),
    }
}

fn reply(wire: &str) -> Reply {
    let (code, text) = wire.split_at(3);
    Reply::new(code.parse().expect("code"), text.trim_start())
}

#[tokio::test]
async fn pipelined_transaction_with_mixed_recipients() {
    let mut script = hello(&["PIPELINING", "SIZE 1000000", "8BITMIME"]);
    script.extend([
        // One write: a client that waits after MAIL stalls here.
        expect("MAIL FROM:<a@x.test> SIZE=7 BODY=8BITMIME"),
        expect("RCPT TO:<b1@y.test>"),
        expect("RCPT TO:<b2@y.test>"),
        expect("RCPT TO:<b3@y.test>"),
        expect("DATA"),
        say("250 2.1.0 ok\r\n250 2.1.5 ok\r\n550 5.1.1 no such user\r\n"),
        say("451 4.3.0 try later\r\n354 go on\r\n"),
        Step::Content,
        say("250 2.0.0 queued as Q1\r\n"),
    ]);
    script.extend(quit());
    let fake = Fake::start(script).await;

    let mut conn = open(&fake).await;
    assert!(conn.offers().pipelining && conn.offers().size_limit() == Some(1_000_000));
    let rcpts = ["b1@y.test", "b2@y.test", "b3@y.test"];
    let outcomes = send(&mut conn, &rcpts, b"H\xe9llo\r\n", |m| m.eight_bit = true).await;
    conn.quit().await;

    let want = [
        Outcome::Delivered(reply("250 2.0.0 queued as Q1")),
        Outcome::Failed(reply("550 5.1.1 no such user")),
        Outcome::Deferred("451 4.3.0 try later".into()),
    ];
    assert_eq!(outcomes, want);
    assert_eq!(fake.finish().await, vec![b"H\xe9llo\r\n.\r\n".to_vec()]);
}

#[tokio::test]
async fn one_command_at_a_time_without_pipelining() {
    let mut script = hello(&["8BITMIME"]);
    script.extend([
        expect("MAIL FROM:<a@x.test>"),
        say("250 ok\r\n"),
        expect("RCPT TO:<b1@y.test>"),
        say("250 ok\r\n"),
        expect("RCPT TO:<b2@y.test>"),
        say("550 5.1.1 no\r\n"),
        expect("DATA"),
        say("354 go on\r\n"),
        Step::Content,
        say("250 queued\r\n"),
    ]);
    script.extend(quit());
    let fake = Fake::start(script).await;

    let mut conn = open(&fake).await;
    let outcomes = send(&mut conn, &["b1@y.test", "b2@y.test"], b"Hi\r\n", |_| {}).await;
    conn.quit().await;

    let want = [Outcome::Delivered(reply("250 queued")), Outcome::Failed(reply("550 5.1.1 no"))];
    assert_eq!(outcomes, want);
    assert_eq!(fake.finish().await, vec![b"Hi\r\n.\r\n".to_vec()]);
}

#[tokio::test]
async fn no_data_and_a_reset_when_every_recipient_is_refused() {
    let mut script = hello(&[]);
    script.extend([
        expect("MAIL FROM:<>"),
        say("250 ok\r\n"),
        expect("RCPT TO:<b@y.test>"),
        say("450 4.2.0 mailbox busy\r\n"),
        expect("RSET"),
        say("250 ok\r\n"),
    ]);
    script.extend(quit());
    let fake = Fake::start(script).await;

    let mut conn = open(&fake).await;
    let outcomes = send(&mut conn, &["b@y.test"], b"x\r\n", |m| m.sender = "").await;
    assert_eq!(outcomes, [Outcome::Deferred("450 4.2.0 mailbox busy".into())]);
    assert!(conn.usable());
    conn.quit().await;
    fake.finish().await;
}

#[tokio::test]
async fn refusing_greetings() {
    for (greeting, quits) in [("421 4.3.2 busy\r\n", false), ("554 5.7.1 go away\r\n", true)] {
        let mut script = vec![say(greeting)];
        if quits {
            script.extend(quit());
        }
        let fake = Fake::start(script).await;

        let opened = Connection::open(fake.addr, "mx.test", &settings()).await;
        let Err(ConnectError::Refused(got)) = opened else {
            panic!("{greeting:?} did not refuse");
        };
        assert_eq!(got, reply(greeting.trim_end()));
        fake.finish().await;
    }
}

#[tokio::test]
async fn helo_when_ehlo_is_refused() {
    let script = vec![
        say(GREETING),
        expect("EHLO relay.test"),
        say("502 5.5.1 EHLO not implemented\r\n"),
        expect("HELO relay.test"),
        say("250 mx.test\r\n"),
        // Nothing offered: no SIZE parameter, no pipelining.
        expect("MAIL FROM:<a@x.test>"),
        say("250 ok\r\n"),
        expect("RCPT TO:<b@y.test>"),
        say("250 ok\r\n"),
        expect("DATA"),
        say("354 go on\r\n"),
        Step::Content,
        say("250 ok\r\n"),
    ];
    let fake = Fake::start(script).await;

    let mut conn = open(&fake).await;
    assert_eq!(conn.offers(), &Extensions::default());
    let outcomes = send(&mut conn, &["b@y.test"], b"x\r\n", |_| {}).await;
    assert_eq!(outcomes, [Outcome::Delivered(reply("250 ok"))]);
    fake.finish().await;
}

#[tokio::test]
async fn refused_ehlo_and_helo() {
    let script = vec![
        say(GREETING),
        expect("EHLO relay.test"),
        say("500 what\r\n"),
        expect("HELO relay.test"),
        say("550 5.7.1 not you\r\n"),
        expect("QUIT"),
    ];
    let fake = Fake::start(script).await;

    let opened = Connection::open(fake.addr, "mx.test", &settings()).await;
    assert!(matches!(opened, Err(ConnectError::Refused(r)) if r.code == 550));
    fake.finish().await;
}

#[tokio::test]
async fn too_big_for_the_server_is_failed_without_sending() {
    let mut script = hello(&["SIZE 10"]);
    script.extend(quit());
    let fake = Fake::start(script).await;

    let mut conn = open(&fake).await;
    let outcomes = send(&mut conn, &["b@y.test", "c@y.test"], &[b'x'; 20], |_| {}).await;
    for outcome in &outcomes {
        let Outcome::Failed(reply) = outcome else { panic!("{outcome:?}") };
        assert_eq!((reply.code, reply.enhanced()), (552, Some("5.3.4")));
    }
    assert_eq!(outcomes.len(), 2);
    conn.quit().await;
    fake.finish().await;
}

#[tokio::test]
async fn smtputf8_needed_but_not_offered() {
    let mut script = hello(&["PIPELINING"]);
    script.extend(quit());
    let fake = Fake::start(script).await;

    let mut conn = open(&fake).await;
    let flagged = send(&mut conn, &["b@y.test"], b"x\r\n", |m| m.smtputf8 = true).await;
    let utf8_address = send(&mut conn, &["jos\u{e9}@y.test"], b"x\r\n", |_| {}).await;
    for outcome in flagged.iter().chain(&utf8_address) {
        let Outcome::Failed(reply) = outcome else { panic!("{outcome:?}") };
        assert_eq!((reply.code, reply.enhanced()), (553, Some("5.6.7")));
    }
    conn.quit().await;
    fake.finish().await;
}

/// MAIL, one RCPT and DATA, pipelined and accepted, then the content.
fn accepted_up_to_content(size: usize) -> Vec<Step> {
    let mut script = hello(&["PIPELINING", "SIZE"]);
    script.extend([
        expect(format!("MAIL FROM:<a@x.test> SIZE={size}")),
        expect("RCPT TO:<b@y.test>"),
        expect("DATA"),
        say("250 ok\r\n250 ok\r\n354 go on\r\n"),
        Step::Content,
    ]);
    script
}

#[tokio::test]
async fn closed_after_our_dot_is_possibly_delivered() {
    let fake = Fake::start(accepted_up_to_content(3)).await;

    let mut conn = open(&fake).await;
    let outcomes = send(&mut conn, &["b@y.test"], b"x\r\n", |_| {}).await;
    assert!(matches!(&outcomes[..], [Outcome::PossiblyDelivered(_)]), "{outcomes:?}");
    assert!(!conn.usable());

    // A connection that is not usable defers without a word on the wire.
    let again = send(&mut conn, &["b@y.test"], b"x\r\n", |_| {}).await;
    assert!(matches!(&again[..], [Outcome::Deferred(_)]), "{again:?}");
    fake.finish().await;
}

#[tokio::test]
async fn slow_reply_to_our_dot_is_possibly_delivered() {
    let mut script = accepted_up_to_content(3);
    script.extend([Step::Pause(1500), say("250 ok, but too late\r\n")]);
    let fake = Fake::start(script).await;

    let mut settings = settings();
    settings.timeouts.data_term = Duration::from_millis(150);
    let mut conn = Connection::open(fake.addr, "mx.test", &settings).await.expect("open");

    let started = Instant::now();
    let outcomes = send(&mut conn, &["b@y.test"], b"x\r\n", |_| {}).await;
    assert!(started.elapsed() < Duration::from_secs(1));
    let [Outcome::PossiblyDelivered(why)] = &outcomes[..] else { panic!("{outcomes:?}") };
    assert!(why.contains("timed out"), "{why}");
    assert!(!conn.usable());
}

#[tokio::test]
async fn idle_connection_is_checked_before_reuse() {
    let mut script = hello(&[]);
    script.extend([expect("RSET"), say("250 ok\r\n")]);
    let fake = Fake::start(script).await;

    let mut conn = open(&fake).await;
    assert!(conn.still_usable().await);
    fake.finish().await;
    assert!(!conn.still_usable().await, "the server has closed the connection");
}

#[tokio::test]
async fn temporary_failure_at_our_dot_is_deferred() {
    let mut script = accepted_up_to_content(3);
    script.push(say("451 4.3.0 queue full\r\n"));
    script.extend(quit());
    let fake = Fake::start(script).await;

    let mut conn = open(&fake).await;
    let outcomes = send(&mut conn, &["b@y.test"], b"x\r\n", |_| {}).await;
    assert_eq!(outcomes, [Outcome::Deferred("451 4.3.0 queue full".into())]);
    assert!(conn.usable());
    conn.quit().await;
    fake.finish().await;
}

#[tokio::test]
async fn content_is_dot_stuffed_on_the_wire() {
    // Lines that start with dots, a bare LF, no final CRLF, and enough
    // lines to cross the 32 KiB reads.
    let mut body = b".hidden\r\n..two\r\nbare\nend".to_vec();
    for i in 0..20_000 {
        body.extend_from_slice(format!("\r\n.{i}").as_bytes());
    }
    let mut want = Vec::new();
    dot_stuff(&body, &mut want);
    assert!(want.starts_with(b"..hidden\r\n...two\r\nbare\r\nend\r\n..0\r\n"));

    let mut script = accepted_up_to_content(body.len());
    script.push(say("250 ok\r\n"));
    let fake = Fake::start(script).await;

    let mut conn = open(&fake).await;
    let outcomes = send(&mut conn, &["b@y.test"], &body, |_| {}).await;
    assert_eq!(outcomes, [Outcome::Delivered(reply("250 ok"))]);
    assert_eq!(fake.finish().await, vec![want]);
}

#[tokio::test]
async fn two_messages_on_one_connection() {
    let mut script = hello(&["PIPELINING"]);
    script.extend([
        // The first: its only recipient refused, the pipelined DATA too.
        expect("MAIL FROM:<a@x.test>"),
        expect("RCPT TO:<nobody@y.test>"),
        expect("DATA"),
        say("250 ok\r\n550 5.1.1 no such user\r\n554 5.5.1 no valid recipients\r\n"),
        expect("RSET"),
        say("250 ok\r\n"),
        // The second goes through.
        expect("MAIL FROM:<a@x.test>"),
        expect("RCPT TO:<b@y.test>"),
        expect("DATA"),
        say("250 ok\r\n250 ok\r\n354 go on\r\n"),
        Step::Content,
        say("250 queued\r\n"),
    ]);
    script.extend(quit());
    let fake = Fake::start(script).await;

    let mut conn = open(&fake).await;
    let first = send(&mut conn, &["nobody@y.test"], b"one\r\n", |_| {}).await;
    assert_eq!(first, [Outcome::Failed(reply("550 5.1.1 no such user"))]);
    let second = send(&mut conn, &["b@y.test"], b"two\r\n", |_| {}).await;
    assert_eq!(second, [Outcome::Delivered(reply("250 queued"))]);
    conn.quit().await;
    assert_eq!(fake.finish().await, vec![b"two\r\n.\r\n".to_vec()]);
}

#[tokio::test]
async fn empty_content_when_data_is_accepted_for_nobody() {
    let mut script = hello(&["PIPELINING"]);
    script.extend([
        expect("MAIL FROM:<a@x.test>"),
        expect("RCPT TO:<nobody@y.test>"),
        expect("DATA"),
        say("250 ok\r\n550 5.1.1 no such user\r\n354 go on\r\n"),
        Step::Content,
        say("554 5.5.1 no recipients\r\n"),
        expect("RSET"),
        say("250 ok\r\n"),
    ]);
    let fake = Fake::start(script).await;

    let mut conn = open(&fake).await;
    let outcomes = send(&mut conn, &["nobody@y.test"], b"x\r\n", |_| {}).await;
    assert_eq!(outcomes, [Outcome::Failed(reply("550 5.1.1 no such user"))]);
    assert_eq!(fake.finish().await, vec![b".\r\n".to_vec()]);
}

#[tokio::test]
async fn closing_421_defers_the_rest() {
    let mut script = hello(&["PIPELINING"]);
    script.extend([
        expect("MAIL FROM:<a@x.test>"),
        expect("RCPT TO:<b1@y.test>"),
        expect("RCPT TO:<b2@y.test>"),
        expect("RCPT TO:<b3@y.test>"),
        expect("DATA"),
        say("250 ok\r\n550 5.1.1 no\r\n421 4.3.2 shutting down\r\n"),
    ]);
    let fake = Fake::start(script).await;

    let mut conn = open(&fake).await;
    let rcpts = ["b1@y.test", "b2@y.test", "b3@y.test"];
    let outcomes = send(&mut conn, &rcpts, b"x\r\n", |_| {}).await;
    let closing = "server closing the connection: 421 4.3.2 shutting down";
    let want = [
        Outcome::Failed(reply("550 5.1.1 no")),
        Outcome::Deferred(closing.into()),
        Outcome::Deferred(closing.into()),
    ];
    assert_eq!(outcomes, want);
    assert!(!conn.usable());
    fake.finish().await;
}

#[tokio::test]
async fn transid_replay_sends_only_the_dot() {
    let mut script = hello(&["PIPELINING", "SIZE", "CHECKPOINT"]);
    script.extend([
        // MAIL with TRANSID goes alone: pipelined RCPTs would not match.
        expect("MAIL FROM:<a@x.test> SIZE=3 TRANSID=<t1@relay.test>"),
        say("355 3 is the transaction offset\r\n"),
        expect("DATA"),
        say("354 go on\r\n"),
        Step::Content,
        say("250 2.0.0 Ok: queued as Q1\r\n"),
    ]);
    let fake = Fake::start(script).await;

    let mut conn = open(&fake).await;
    let rcpts = ["b1@y.test", "b2@y.test"];
    let outcomes = send(&mut conn, &rcpts, b"x\r\n", |m| m.transid = Some("t1@relay.test")).await;
    let delivered = Outcome::Delivered(reply("250 2.0.0 Ok: queued as Q1"));
    assert_eq!(outcomes, [delivered.clone(), delivered]);
    assert_eq!(fake.finish().await, vec![b".\r\n".to_vec()]);
}

#[tokio::test]
async fn transid_with_another_offset_sends_everything() {
    let mut script = hello(&["PIPELINING", "CHECKPOINT"]);
    script.extend([
        expect("MAIL FROM:<a@x.test> TRANSID=<t1@relay.test>"),
        say("355 0 is the transaction offset\r\n"),
        expect("RCPT TO:<b@y.test>"),
        expect("DATA"),
        say("250 ok\r\n354 go on\r\n"),
        Step::Content,
        say("250 queued\r\n"),
    ]);
    let fake = Fake::start(script).await;

    let mut conn = open(&fake).await;
    let outcomes =
        send(&mut conn, &["b@y.test"], b"x\r\n", |m| m.transid = Some("t1@relay.test")).await;
    assert_eq!(outcomes, [Outcome::Delivered(reply("250 queued"))]);
    assert_eq!(fake.finish().await, vec![b"x\r\n.\r\n".to_vec()]);
}

#[tokio::test]
async fn transid_is_not_sent_without_checkpoint() {
    let mut script = hello(&[]);
    script.extend([expect("MAIL FROM:<a@x.test>"), say("451 4.3.0 later\r\n")]);
    script.extend(quit());
    let fake = Fake::start(script).await;

    let mut conn = open(&fake).await;
    let with_transid = |m: &mut Message<'_>| m.transid = Some("t@r.test");
    let outcomes = send(&mut conn, &["b@y.test"], b"x\r\n", with_transid).await;
    assert_eq!(outcomes, [Outcome::Deferred("451 4.3.0 later".into())]);
    conn.quit().await;
    fake.finish().await;
}

#[tokio::test]
async fn starttls_then_mail() {
    let mut script = hello(&["PIPELINING", "STARTTLS"]);
    script.extend([expect("STARTTLS"), say("220 2.0.0 go ahead\r\n"), Step::Tls]);
    script.extend([
        expect("EHLO relay.test"),
        say("250-mx.test\r\n250 PIPELINING\r\n"),
        expect("MAIL FROM:<a@x.test>"),
        expect("RCPT TO:<b@y.test>"),
        expect("DATA"),
        say("250 ok\r\n250 ok\r\n354 go on\r\n"),
        Step::Content,
        say("250 queued\r\n"),
    ]);
    script.extend(quit());
    let fake = Fake::start(script).await;

    let mut settings = settings();
    settings.starttls = true;
    let opened = Connection::open(fake.addr, "mx.test", &settings).await;
    let mut conn = opened.expect("open with STARTTLS");
    assert!(!conn.offers().starttls, "the EHLO after TLS counts");

    let to = recipients(&["b@y.test"]);
    let mut body: &[u8] = b"secret\r\n";
    let message = Message {
        sender: "a@x.test",
        recipients: &to,
        size: 8,
        eight_bit: false,
        smtputf8: false,
        transid: None,
        body: &mut body,
    };
    let delivery = conn.send(message).await;
    conn.quit().await;

    assert_eq!(delivery.outcomes, [Outcome::Delivered(reply("250 queued"))]);
    let tls = delivery.tls.expect("TLS recorded");
    assert!(tls.starts_with("TLSv1.3 TLS13_"), "{tls}");
    assert_eq!(fake.finish().await, vec![b"secret\r\n.\r\n".to_vec()]);
}

#[tokio::test]
async fn injected_bytes_after_starttls_reply_are_refused() {
    let mut script = hello(&["STARTTLS"]);
    script.extend([expect("STARTTLS"), say("220 go ahead\r\n250 injected\r\n")]);
    let fake = Fake::start(script).await;

    let mut settings = settings();
    settings.starttls = true;
    let opened = Connection::open(fake.addr, "mx.test", &settings).await;
    assert!(matches!(opened, Err(ConnectError::Protocol(_))));
}

#[tokio::test]
async fn replies_with_bare_lf_and_multiline_greeting() {
    let script = vec![
        say("220-mx.test ESMTP\n220 welcome\n"),
        expect("EHLO relay.test"),
        say("250-mx.test\n250-PIPELINING\n250 SIZE 100\n"),
    ];
    let fake = Fake::start(script).await;

    let conn = open(&fake).await;
    assert!(conn.offers().pipelining);
    assert_eq!(conn.offers().size_limit(), Some(100));
    fake.finish().await;
}

#[tokio::test]
async fn endless_reply_is_a_protocol_error() {
    let flood = "250-more\r\n".repeat(smtp_wire::reply::parse::MAX_REPLY_LINES + 1);
    let script = vec![say(GREETING), expect("EHLO relay.test"), say(flood)];
    let fake = Fake::start(script).await;

    let opened = Connection::open(fake.addr, "mx.test", &settings()).await;
    assert!(matches!(opened, Err(ConnectError::Protocol(why)) if why.contains("too long")));
}

#[tokio::test]
async fn nobody_listening_is_unreachable() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    drop(listener);

    let opened = Connection::open(addr, "mx.test", &settings()).await;
    assert!(matches!(opened, Err(ConnectError::Unreachable(_))));
}

#[test]
fn default_timeouts_are_rfc_5321() {
    let t = Timeouts::default();
    let minutes = |d: Duration| d.as_secs() / 60;
    let got = [t.greeting, t.ehlo, t.mail, t.rcpt, t.data_init, t.data_block, t.data_term];
    assert_eq!(got.map(minutes), [5, 5, 5, 5, 2, 3, 10]);
    assert_eq!(t.connect, Duration::from_secs(30));
}

/// The queue runs deliveries on tokio's pool, so the futures must be Send.
#[allow(dead_code)]
fn futures_are_send(addr: std::net::SocketAddr, settings: &Settings, conn: &mut Connection) {
    fn send_future<F: std::future::Future + Send>(_: F) {}
    send_future(Connection::open(addr, "mx.test", settings));
    let mut body: &[u8] = b"";
    let message = Message {
        sender: "",
        recipients: &[],
        size: 0,
        eight_bit: false,
        smtputf8: false,
        transid: None,
        body: &mut body,
    };
    send_future(conn.send(message));
}
