//! bounce: the delivery status notification (RFC 3464) a sender gets when mail to some
//! of its recipients failed for good or is late.
//!
//! [`report`] is a pure function of its [`Report`]: the same input gives the same bytes,
//! and it does no I/O, reads no clock and cannot fail. Its result is a whole message,
//! every line ending in CRLF, to be queued with the null sender `<>`, so that a report
//! that cannot be delivered is never reported on in turn (RFC 5321 §4.5.5), and with
//! the original's envelope sender as its one recipient.
//!
//! The message is a `multipart/report; report-type=delivery-status` (RFC 6522) of three
//! parts: a short `text/plain` note for people naming each recipient, the reason and the
//! queue ID; the `message/delivery-status` fields for programs, one group per recipient;
//! and the original's header section, never its body (see [`headers`]).
//!
//! # Hostile input
//!
//! Recipients, remote replies, host names and the original's headers all come from
//! outside. Control characters never reach a header field or a line of text, so none of
//! it can add a header line; long fields are folded at white space near 78 columns and
//! no line passes 998 octets; and the MIME boundary is checked against every part and
//! drawn again until it occurs in none, so no part can hold a boundary line. A status
//! that is not an enhanced code (RFC 3463) is replaced by `5.0.0` or `4.0.0`.
//!
//! # 8-bit content
//!
//! The delivery-status part is always ASCII: a non-ASCII recipient is written in
//! RFC 6533's 7-bit `utf-8;` form, and non-ASCII in a remote reply becomes `?` there.
//! The text part keeps UTF-8 as it is; the headers part is `message/global-headers` when
//! the original's headers have 8-bit octets; `To:` holds the sender as given (RFC 6532).
//! So the report is 7-bit exactly when its bytes are all ASCII; when they are not, it
//! needs a path offering SMTPUTF8 (RFC 6531), and the caller can tell with `is_ascii`.
//!
//! # Limits
//!
//! TODO: the DSN parameters of RFC 3461 (NOTIFY, RET, ENVID, ORCPT) are not kept with a
//! message yet, so every failure is reported, and Original-Envelope-Id and
//! Original-Recipient are never given.

mod headers;
mod text;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use self::headers::HeaderCopy;
use self::text::{ascii, fold, host, one_line, typed_address};

/// What happened to one recipient (RFC 3464 §2.3.3); the two a bounce reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Given up: the reply was permanent, or the message stayed queued too long.
    Failed,
    /// Still being retried; this report is a warning.
    Delayed,
}

/// One recipient to report on.
#[derive(Debug, Clone)]
pub struct Failure<'a> {
    /// The forward path as given in RCPT, in SMTP form; may be UTF-8.
    pub recipient: &'a str,
    pub action: Action,
    /// The enhanced status code (RFC 3463), such as `5.1.1` or `4.4.7`.
    pub status: &'a str,
    /// The server that answered, when one did.
    pub remote_mta: Option<&'a str>,
    /// That server's reply, such as `550 5.1.1 No such user`.
    pub diagnostic: Option<&'a str>,
}

/// Everything a report says. `failures` must not be empty.
#[derive(Debug, Clone)]
pub struct Report<'a> {
    /// Our host name.
    pub reporting_mta: &'a str,
    /// The original message's queue ID.
    pub queue_id: &'a str,
    /// The original's envelope sender; never empty, as `<>` is never reported to.
    pub original_sender: &'a str,
    pub arrival: DateTime<Utc>,
    pub failures: &'a [Failure<'a>],
    /// The original message as received: header section, empty line, body.
    pub original: &'a [u8],
    pub now: DateTime<Utc>,
}

/// The date format of RFC 5322 §3.3, always in UTC.
const DATE: &str = "%a, %d %b %Y %H:%M:%S +0000";

/// One body part: its media type, a description, and content lines ending in CRLF.
struct Part {
    media_type: &'static str,
    description: &'static str,
    body: String,
}

/// The whole report message, CRLF line endings, ready to be queued with envelope
/// sender `<>` and the original sender as its one recipient.
pub fn report(r: &Report) -> Vec<u8> {
    debug_assert!(!r.failures.is_empty(), "a report needs at least one recipient");
    let reporter = host_or_localhost(r.reporting_mta);

    let HeaderCopy { media_type, text } = headers::copy(r.original);
    let parts = [
        Part {
            media_type: "text/plain; charset=utf-8",
            description: "Notification",
            body: explanation(r, &reporter),
        },
        Part {
            media_type: "message/delivery-status",
            description: "Delivery report",
            body: delivery_status(r, &reporter),
        },
        Part { media_type, description: "Headers of the undelivered message", body: text },
    ];

    let boundary = boundary(r, &parts);
    let mut out = top_header(r, &reporter, &boundary, &parts);
    out.push_str("\r\nThis is a delivery status notification in MIME format.\r\n");
    for part in &parts {
        push_part(part, &boundary, &mut out);
    }
    out.push_str(&format!("\r\n--{boundary}--\r\n"));
    out.into_bytes()
}

fn top_header(r: &Report, reporter: &str, boundary: &str, parts: &[Part]) -> String {
    let mut out = String::new();
    out.push_str(&format!("From: Mail Delivery System <MAILER-DAEMON@{reporter}>\r\n"));
    fold("To: ", &format!("<{}>", one_line(r.original_sender)), " ", &mut out);
    out.push_str(&format!("Subject: {}\r\n", subject(r.failures)));
    out.push_str(&format!("Date: {}\r\n", r.now.format(DATE)));
    out.push_str(&format!("Message-ID: {}\r\n", message_id(r, reporter)));
    out.push_str("Auto-Submitted: auto-replied\r\n");
    out.push_str("MIME-Version: 1.0\r\n");
    out.push_str("Content-Type: multipart/report; report-type=delivery-status;\r\n");
    out.push_str(&format!("\tboundary=\"{boundary}\"\r\n"));

    // A multipart's encoding must cover its parts' (RFC 2045 §6.4).
    if parts.iter().any(|p| !p.body.is_ascii()) {
        out.push_str("Content-Transfer-Encoding: 8bit\r\n");
    }
    out
}

fn push_part(part: &Part, boundary: &str, out: &mut String) {
    out.push_str(&format!("\r\n--{boundary}\r\n"));
    out.push_str(&format!("Content-Type: {}\r\n", part.media_type));
    out.push_str(&format!("Content-Description: {}\r\n", part.description));
    if !part.body.is_ascii() {
        out.push_str("Content-Transfer-Encoding: 8bit\r\n");
    }
    out.push_str("\r\n");
    out.push_str(&part.body);
}

/// Names what happened in a few fixed words: nothing from outside goes into it.
fn subject(failures: &[Failure]) -> &'static str {
    let failed = failures.iter().any(|f| f.action == Action::Failed);
    let delayed = failures.iter().any(|f| f.action == Action::Delayed);
    match (failed, delayed) {
        (true, false) => "Undeliverable Mail",
        (true, true) => "Undeliverable Mail (some recipients still being retried)",
        (false, _) => "Delayed Mail (still being retried)",
    }
}

/// `<qid.time.hash@reporter>`. The hash covers the queue ID, the time to the nanosecond
/// and the recipients with their actions, so two reports on one message differ even
/// when made in the same second, and the same report made twice is the same bytes.
fn message_id(r: &Report, reporter: &str) -> String {
    let qid: String = r.queue_id.chars().filter(char::is_ascii_alphanumeric).take(64).collect();
    let stamp = r.now.format("%Y%m%d%H%M%S");
    format!("<{qid}.{stamp}.{}@{reporter}>", digest(b"message-id", r, 0))
}

/// A boundary found in no part. Each try hashes a new counter, so content that holds
/// one candidate cannot hold the next, and the loop ends after at most as many tries
/// as the parts have boundary-sized stretches.
fn boundary(r: &Report, parts: &[Part]) -> String {
    let mut attempt = 0;
    loop {
        let candidate = format!("=_oncemail_{}", digest(b"boundary", r, attempt));
        if !parts.iter().any(|p| p.body.contains(&candidate)) {
            return candidate;
        }
        attempt += 1;
    }
}

/// 24 hex digits of SHA-256 over what tells this report apart from others.
fn digest(label: &[u8], r: &Report, attempt: u32) -> String {
    let mut hash = Sha256::new();

    // Length prefixes keep ("ab", "c") and ("a", "bc") from hashing alike.
    let mut field = |bytes: &[u8]| {
        hash.update((bytes.len() as u64).to_be_bytes());
        hash.update(bytes);
    };
    field(label);
    field(r.queue_id.as_bytes());
    field(&r.now.timestamp().to_be_bytes());
    field(&r.now.timestamp_subsec_nanos().to_be_bytes());
    for f in r.failures {
        field(f.recipient.as_bytes());
        field(f.status.as_bytes());
        field(&[f.action as u8]);
    }
    field(&attempt.to_be_bytes());

    hash.finalize()[..12].iter().map(|b| format!("{b:02x}")).collect()
}

/// The text part: what happened, to whom, and why, in a form a person can act on.
fn explanation(r: &Report, reporter: &str) -> String {
    let mut out = String::new();
    let about = format!(
        "This is the mail delivery system at {reporter}, about your message with \
        queue ID {}, received {}.",
        host(r.queue_id),
        r.arrival.format(DATE)
    );
    paragraph(&about, &mut out);

    let failed = by_action(r.failures, Action::Failed);
    if !failed.is_empty() {
        let what = "It could not be delivered to the recipients below. \
            Delivery has been given up; the message will not be tried again.";
        paragraph(what, &mut out);
        recipients(&failed, &mut out);
    }
    let delayed = by_action(r.failures, Action::Delayed);
    if !delayed.is_empty() {
        let what = "It has not yet been delivered to the recipients below. \
            Delivery is still being retried; you do not need to send it again.";
        paragraph(what, &mut out);
        recipients(&delayed, &mut out);
    }

    // No empty line after the last: the delimiter's leading CRLF already shows as one.
    fold("", "The headers of your message are attached; its body is not.", "", &mut out);
    out
}

fn by_action<'r, 'a>(failures: &'r [Failure<'a>], action: Action) -> Vec<&'r Failure<'a>> {
    failures.iter().filter(|f| f.action == action).collect()
}

fn paragraph(words: &str, out: &mut String) {
    fold("", words, "", out);
    out.push_str("\r\n");
}

fn recipients(failures: &[&Failure], out: &mut String) {
    for f in failures {
        fold("  ", &format!("<{}>", one_line(f.recipient)), "  ", out);
        fold("      ", &reason(f), "      ", out);
        out.push_str("\r\n");
    }
}

/// The remote reply when there is one, as it is the most telling; else the meaning
/// of the status code.
fn reason(f: &Failure) -> String {
    let diagnostic = f.diagnostic.map(one_line).filter(|d| !d.is_empty());
    let remote = f.remote_mta.map(host).filter(|h| !h.is_empty());
    let status = status(f);
    match (diagnostic, remote) {
        (Some(reply), Some(host)) => format!("{host} said: {reply}"),
        (Some(reply), None) => reply,
        (None, Some(host)) => format!("{status}: {} (at {host})", meaning(status)),
        (None, None) => format!("{status}: {}", meaning(status)),
    }
}

/// The machine-readable part (RFC 3464 §2.1): the per-message fields, then one group
/// of fields for each recipient, each group after an empty line. All ASCII.
fn delivery_status(r: &Report, reporter: &str) -> String {
    let mut out = String::new();
    out.push_str(&format!("Reporting-MTA: dns; {reporter}\r\n"));
    out.push_str(&format!("Arrival-Date: {}\r\n", r.arrival.format(DATE)));

    for f in r.failures {
        out.push_str("\r\n");
        fold("Final-Recipient: ", &typed_address(f.recipient), " ", &mut out);
        let action = match f.action {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
        };
        out.push_str(&format!("Action: {action}\r\n"));
        out.push_str(&format!("Status: {}\r\n", status(f)));
        if let Some(remote) = f.remote_mta.map(host).filter(|h| !h.is_empty()) {
            out.push_str(&format!("Remote-MTA: dns; {remote}\r\n"));
        }
        if let Some(reply) = f.diagnostic.map(one_line).filter(|d| !d.is_empty()) {
            fold("Diagnostic-Code: smtp; ", &ascii(&reply), " ", &mut out);
        }
    }
    out
}

/// The failure's status if it is an enhanced code of class 4 or 5 (RFC 3463 §2),
/// else the unspecific code of its action's class.
fn status<'a>(f: &Failure<'a>) -> &'a str {
    let mut fields = f.status.split('.');
    let class = matches!(fields.next(), Some("4" | "5"));
    let number = |n: Option<&str>| {
        n.is_some_and(|n| (1..=3).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_digit()))
    };
    if class && number(fields.next()) && number(fields.next()) && fields.next().is_none() {
        return f.status;
    }
    match f.action {
        Action::Failed => "5.0.0",
        Action::Delayed => "4.0.0",
    }
}

/// What the common subject and detail codes of RFC 3463 mean, in plain words.
fn meaning(status: &str) -> &'static str {
    let detail = status.split_once('.').map_or("", |(_, rest)| rest);
    match detail {
        "1.1" => "the mailbox does not exist",
        "1.2" => "the destination domain does not exist or takes no mail",
        "1.3" => "the address is not valid",
        "2.1" => "the mailbox is disabled",
        "2.2" => "the mailbox is full",
        "2.3" | "3.4" => "the message is too large for the destination",
        "4.1" => "the destination server did not answer",
        "4.2" => "the connection to the destination server was lost",
        "4.3" => "the destination could not be looked up",
        "4.4" => "no way to reach the destination was found",
        "4.7" => "the message was undeliverable for too long",
        "6.7" => "the destination does not accept non-ASCII addresses",
        "7.1" => "the destination refused the message by policy",
        _ => "delivery did not succeed",
    }
}

fn host_or_localhost(name: &str) -> String {
    let name = host(name);
    if name.is_empty() { "localhost".into() } else { name }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const ORIGINAL: &[u8] = b"From: alice@example.com\r\nTo: bob@example.net\r\n\
        Subject: lunch\r\nMessage-ID: <1@example.com>\r\n\r\nsecret body line\r\n";

    fn at(hour: u32, nanos: u32) -> DateTime<Utc> {
        let second = Utc.with_ymd_and_hms(2026, 12, 3, hour, 22, 35).unwrap();
        second + chrono::Duration::nanoseconds(nanos.into())
    }

    fn failure<'a>(recipient: &'a str, action: Action, status: &'a str) -> Failure<'a> {
        Failure { recipient, action, status, remote_mta: None, diagnostic: None }
    }

    fn bob_550() -> Failure<'static> {
        Failure {
            remote_mta: Some("mx.example.net"),
            diagnostic: Some("550 5.1.1 No such user"),
            ..failure("bob@example.net", Action::Failed, "5.1.1")
        }
    }

    fn report_of<'a>(failures: &'a [Failure<'a>], original: &'a [u8]) -> Report<'a> {
        Report {
            reporting_mta: "mail.example.com",
            queue_id: "0ABCDEFGHJKMN",
            original_sender: "alice@example.com",
            arrival: at(17, 0),
            failures,
            original,
            now: at(18, 0),
        }
    }

    /// The report as text, after the checks every report must pass: CRLF only, no
    /// line past 998 octets, valid UTF-8.
    fn render(r: &Report) -> String {
        let bytes = report(r);
        for (i, &b) in bytes.iter().enumerate() {
            if b == b'\r' {
                assert_eq!(bytes.get(i + 1), Some(&b'\n'), "bare CR at {i}");
            }
            if b == b'\n' {
                assert!(i > 0 && bytes[i - 1] == b'\r', "bare LF at {i}");
            }
        }
        let text = String::from_utf8(bytes).expect("the report is UTF-8");
        assert!(text.ends_with("\r\n"));
        assert!(text.split("\r\n").all(|line| line.len() <= 998));
        text
    }

    /// A message split the way a MIME reader would: its header section, the boundary,
    /// and each part's header section and body.
    struct Mime {
        header: String,
        boundary: String,
        parts: Vec<(String, String)>,
    }

    fn split(message: &str) -> Mime {
        let (header, body) = message.split_once("\r\n\r\n").expect("a header section");
        let boundary =
            header.split("boundary=\"").nth(1).and_then(|b| b.split('"').next()).unwrap();
        let body = format!("\r\n{body}");
        let (inner, epilogue) = body.split_once(&format!("\r\n--{boundary}--\r\n")).unwrap();
        assert_eq!(epilogue, "");
        let delimiter = format!("\r\n--{boundary}\r\n");
        let mut sections = inner.split(&delimiter);
        sections.next(); // the preamble
        let parts = sections
            .map(|s| {
                let (h, b) = s.split_once("\r\n\r\n").unwrap_or((s.trim_end(), ""));
                (h.to_string(), b.to_string())
            })
            .collect();
        Mime { header: header.to_string(), boundary: boundary.to_string(), parts }
    }

    fn field<'m>(header: &'m str, name: &str) -> Option<&'m str> {
        let prefix = format!("{name}: ");
        header.split("\r\n").find_map(|line| line.strip_prefix(prefix.as_str()))
    }

    /// The delivery-status part as groups of (name, value), unfolded.
    fn groups(body: &str) -> Vec<Vec<(String, String)>> {
        let unfolded = body.replace("\r\n ", " ");
        let groups = unfolded.trim_end_matches("\r\n").split("\r\n\r\n");
        let parse = |line: &str| {
            let (name, value) = line.split_once(": ").expect("a field");
            (name.to_string(), value.to_string())
        };
        groups.map(|g| g.split("\r\n").map(parse).collect()).collect()
    }

    fn value<'g>(group: &'g [(String, String)], name: &str) -> Option<&'g str> {
        group.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn a_report_has_the_rfc_3464_structure() {
        let failures = [bob_550()];
        let text = render(&report_of(&failures, ORIGINAL));
        let mime = split(&text);

        let h = &mime.header;
        let from = "Mail Delivery System <MAILER-DAEMON@mail.example.com>";
        assert_eq!(field(h, "From"), Some(from));
        assert_eq!(field(h, "To"), Some("<alice@example.com>"));
        assert_eq!(field(h, "Subject"), Some("Undeliverable Mail"));
        assert_eq!(field(h, "Date"), Some("Thu, 03 Dec 2026 18:22:35 +0000"));
        assert_eq!(field(h, "Auto-Submitted"), Some("auto-replied"));
        assert_eq!(field(h, "MIME-Version"), Some("1.0"));
        assert!(h.contains("Content-Type: multipart/report; report-type=delivery-status;"));
        assert!(field(h, "Message-ID").unwrap().ends_with("@mail.example.com>"));
        assert_eq!(field(h, "Content-Transfer-Encoding"), None);

        let types: Vec<_> = mime.parts.iter().map(|(h, _)| field(h, "Content-Type")).collect();
        assert_eq!(
            types,
            [
                Some("text/plain; charset=utf-8"),
                Some("message/delivery-status"),
                Some("text/rfc822-headers")
            ]
        );

        let notice = &mime.parts[0].1;
        assert!(notice.contains("<bob@example.net>"));
        assert!(notice.contains("mx.example.net said: 550 5.1.1 No such user"));
        assert!(notice.replace("\r\n", " ").contains("queue ID 0ABCDEFGHJKMN"));

        let groups = groups(&mime.parts[1].1);
        assert_eq!(groups.len(), 2);
        assert_eq!(value(&groups[0], "Reporting-MTA"), Some("dns; mail.example.com"));
        assert_eq!(value(&groups[0], "Arrival-Date"), Some("Thu, 03 Dec 2026 17:22:35 +0000"));
        let expected = [
            ("Final-Recipient", "rfc822; bob@example.net"),
            ("Action", "failed"),
            ("Status", "5.1.1"),
            ("Remote-MTA", "dns; mx.example.net"),
            ("Diagnostic-Code", "smtp; 550 5.1.1 No such user"),
        ];
        let expected: Vec<_> =
            expected.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
        assert_eq!(groups[1], expected);

        let headers = &mime.parts[2].1;
        assert!(headers.starts_with("From: alice@example.com\r\n"));
        assert!(headers.ends_with("Message-ID: <1@example.com>\r\n"));
        assert!(!text.contains("secret body"));
    }

    #[test]
    fn several_recipients_get_a_group_each() {
        let failures = [
            bob_550(),
            failure("carol@example.org", Action::Failed, "5.4.4"),
            Failure {
                remote_mta: Some("mx.example.org"),
                ..failure("dave@example.org", Action::Delayed, "4.4.1")
            },
        ];
        let mime = split(&render(&report_of(&failures, ORIGINAL)));

        let expected = "Undeliverable Mail (some recipients still being retried)";
        assert_eq!(field(&mime.header, "Subject"), Some(expected));

        let groups = groups(&mime.parts[1].1);
        assert_eq!(groups.len(), 4);
        let rows: Vec<_> = groups[1..]
            .iter()
            .map(|g| (value(g, "Final-Recipient"), value(g, "Action"), value(g, "Status")))
            .collect();
        assert_eq!(
            rows,
            [
                (Some("rfc822; bob@example.net"), Some("failed"), Some("5.1.1")),
                (Some("rfc822; carol@example.org"), Some("failed"), Some("5.4.4")),
                (Some("rfc822; dave@example.org"), Some("delayed"), Some("4.4.1")),
            ]
        );
        assert_eq!(value(&groups[2], "Remote-MTA"), None);
        assert_eq!(value(&groups[2], "Diagnostic-Code"), None);
        assert_eq!(value(&groups[3], "Remote-MTA"), Some("dns; mx.example.org"));

        let notice = &mime.parts[0].1;
        assert!(notice.contains("5.4.4: no way to reach the destination was found"));
        assert!(notice.contains("4.4.1: the destination server did not answer"));
        assert!(notice.replace("\r\n", " ").contains("still being retried"));
    }

    #[test]
    fn a_delay_only_report_says_so() {
        let failures = [failure("dave@example.org", Action::Delayed, "4.4.7")];
        let mime = split(&render(&report_of(&failures, ORIGINAL)));
        assert_eq!(field(&mime.header, "Subject"), Some("Delayed Mail (still being retried)"));
        assert!(!mime.parts[0].1.contains("given up"));
    }

    #[test]
    fn a_non_ascii_recipient_is_typed_utf_8() {
        let failures = [Failure {
            diagnostic: Some("550 5.1.1 Ünbekannt"),
            ..failure("jörg@bücher.example", Action::Failed, "5.1.1")
        }];
        let text = render(&report_of(&failures, ORIGINAL));
        let mime = split(&text);

        let (dsn_header, dsn) = &mime.parts[1];
        assert!(dsn.is_ascii());
        assert!(!dsn_header.contains("8bit"));
        let groups = groups(dsn);
        let expected = "utf-8; j\\x{F6}rg@b\\x{FC}cher.example";
        assert_eq!(value(&groups[1], "Final-Recipient"), Some(expected));
        assert_eq!(value(&groups[1], "Diagnostic-Code"), Some("smtp; 550 5.1.1 ?nbekannt"));

        let (notice_header, notice) = &mime.parts[0];
        assert!(notice.contains("<jörg@bücher.example>"));
        assert!(notice.contains("550 5.1.1 Ünbekannt"));
        assert_eq!(field(notice_header, "Content-Transfer-Encoding"), Some("8bit"));
        assert_eq!(field(&mime.header, "Content-Transfer-Encoding"), Some("8bit"));
    }

    #[test]
    fn eight_bit_original_headers_are_global_headers() {
        let original = "Subject: grüße\r\n\r\nbody\r\n".as_bytes();
        let failures = [bob_550()];
        let mime = split(&render(&report_of(&failures, original)));
        let (part_header, body) = &mime.parts[2];
        assert_eq!(field(part_header, "Content-Type"), Some("message/global-headers"));
        assert_eq!(body, "Subject: grüße\r\n");
    }

    #[test]
    fn line_breaks_in_outside_text_cannot_add_fields() {
        let failures = [Failure {
            recipient: "eve@example.net\r\nX-Injected: recipient",
            remote_mta: Some("mx.example.net\r\nX-Injected: mta"),
            diagnostic: Some("550 no\r\nX-Injected: reply\r\n\r\n--=_oncemail_\r\n."),
            ..bob_550()
        }];
        let r =
            Report { original_sender: "a@x\r\nX-Injected: to", ..report_of(&failures, ORIGINAL) };
        let text = render(&r);

        assert!(!text.split("\r\n").any(|line| line.starts_with("X-Injected")));
        let mime = split(&text);
        assert_eq!(mime.parts.len(), 3);
        let groups = groups(&mime.parts[1].1);
        assert_eq!(groups.len(), 2);
        let expected = "smtp; 550 no X-Injected: reply --=_oncemail_ .";
        assert_eq!(value(&groups[1], "Diagnostic-Code"), Some(expected));
        assert_eq!(value(&groups[1], "Remote-MTA"), Some("dns; mx.example.net??X-Injected:?mta"));
    }

    #[test]
    fn long_replies_are_folded_at_white_space() {
        let reply = format!("550 5.7.1 {}", "blocked because reasons ".repeat(40));
        let word = "x".repeat(3000);
        let failures = [
            Failure { diagnostic: Some(&reply), ..bob_550() },
            Failure { diagnostic: Some(&word), ..bob_550() },
        ];
        let mime = split(&render(&report_of(&failures, ORIGINAL)));

        let dsn = &mime.parts[1].1;
        let start = dsn.find("Diagnostic-Code").unwrap();
        let folded: Vec<&str> = dsn[start..].split("\r\n").take_while(|l| !l.is_empty()).collect();
        assert!(folded.len() > 5);
        assert!(folded.iter().all(|l| l.len() <= 78));
        assert!(folded[1..].iter().all(|l| l.starts_with(' ')));
        assert_eq!(
            value(&groups(dsn)[1], "Diagnostic-Code"),
            Some(&*format!("smtp; {}", reply.trim_end()))
        );
    }

    #[test]
    fn a_boundary_line_in_the_original_forces_another_boundary() {
        let failures = [bob_550()];
        let first = split(&render(&report_of(&failures, ORIGINAL))).boundary;

        let original = format!("Subject: x\r\n--{first}\r\n--{first}--\r\n\r\nbody\r\n");
        let text = render(&report_of(&failures, original.as_bytes()));
        let mime = split(&text);
        assert_ne!(mime.boundary, first);
        assert_eq!(mime.parts.len(), 3);
        assert_eq!(mime.parts[2].1, format!("Subject: x\r\n--{first}\r\n--{first}--\r\n"));
    }

    #[test]
    fn an_original_without_an_empty_line_is_all_header() {
        let failures = [bob_550()];
        let original = b"From: alice@example.com\r\nSubject: no body\nX-Bare: cr\rX-Last: 1";
        let mime = split(&render(&report_of(&failures, original)));
        let expected = "From: alice@example.com\r\nSubject: no body\r\n\
            X-Bare: cr\r\nX-Last: 1\r\n";
        assert_eq!(mime.parts[2].1, expected);
    }

    #[test]
    fn an_original_without_headers_gives_an_empty_part() {
        let failures = [bob_550()];
        let mime = split(&render(&report_of(&failures, b"\r\nbody\r\n")));
        assert_eq!(mime.parts.len(), 3);
        assert_eq!(mime.parts[2].1, "");
    }

    #[test]
    fn a_malformed_status_is_replaced() {
        let failures = [
            failure("a@x", Action::Failed, "550\r\nX: y"),
            failure("b@x", Action::Delayed, "4.4"),
            failure("c@x", Action::Failed, "2.0.0"),
            failure("d@x", Action::Failed, "5.1234.1"),
        ];
        let mime = split(&render(&report_of(&failures, ORIGINAL)));
        let groups = groups(&mime.parts[1].1);
        let statuses: Vec<_> = groups[1..].iter().map(|g| value(g, "Status")).collect();
        assert_eq!(statuses, [Some("5.0.0"), Some("4.0.0"), Some("5.0.0"), Some("5.0.0")]);
    }

    #[test]
    fn message_ids_are_deterministic_and_unique_per_report() {
        let failures = [bob_550()];
        let once = report_of(&failures, ORIGINAL);
        let later = Report { now: at(19, 0), ..once.clone() };
        let a_nanosecond_later = Report { now: at(18, 1), ..once.clone() };

        let id = |r: &Report| {
            let text = render(r);
            field(&split(&text).header, "Message-ID").unwrap().to_string()
        };
        assert_eq!(report(&once), report(&once));
        assert!(id(&once).starts_with("<0ABCDEFGHJKMN.20261203182235."));
        assert_ne!(id(&once), id(&later));
        assert_ne!(id(&once), id(&a_nanosecond_later));

        let delayed = [failure("bob@example.net", Action::Delayed, "4.4.1")];
        assert_ne!(id(&once), id(&report_of(&delayed, ORIGINAL)));
    }
}
