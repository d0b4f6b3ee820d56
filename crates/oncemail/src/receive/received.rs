//! The `Received:` trace field (RFC 5321 §4.4) that every accepted message gets.
//!
//! ```text
//! Received: from client.example ([192.0.2.1])
//!         by mx.example.com (oncemail) with ESMTP id 0ABCDEFGHJKMN
//!         for <user@example.com>; Thu, 03 Dec 2026 17:22:35 +0000
//! ```
//!
//! The `for` clause is given only for a single recipient, so that the field does not
//! disclose the other recipients of a message. The client's HELO name is attacker-chosen
//! text: anything but printable ASCII is replaced before it goes into a header.

use std::net::SocketAddr;

use chrono::{DateTime, Utc};
use spool::QueueId;

pub struct Hop<'a> {
    pub helo: &'a str,
    pub peer: SocketAddr,
    pub hostname: &'a str,
    pub protocol: &'static str,
    /// "TLSv1.3 with cipher ..." when the session was encrypted.
    pub tls: Option<&'a str>,
    pub qid: QueueId,
    pub single_recipient: Option<&'a str>,
    pub when: DateTime<Utc>,
}

/// The protocol word of the `with` clause (RFC 3848, RFC 6531).
pub fn protocol(esmtp: bool, smtputf8: bool, tls: bool, auth: bool) -> &'static str {
    if !esmtp {
        return "SMTP";
    }
    match (smtputf8, tls, auth) {
        (false, false, false) => "ESMTP",
        (false, true, false) => "ESMTPS",
        (false, false, true) => "ESMTPA",
        (false, true, true) => "ESMTPSA",
        (true, false, false) => "UTF8SMTP",
        (true, true, false) => "UTF8SMTPS",
        (true, false, true) => "UTF8SMTPA",
        (true, true, true) => "UTF8SMTPSA",
    }
}

/// The whole field, each line ending in CRLF.
pub fn field(hop: &Hop) -> String {
    let helo = printable(hop.helo);
    let ip = match hop.peer {
        SocketAddr::V4(v4) => v4.ip().to_string(),
        SocketAddr::V6(v6) => format!("IPv6:{}", v6.ip()),
    };
    let mut out = format!("Received: from {helo} ([{ip}])\r\n");
    if let Some(tls) = hop.tls {
        out.push_str(&format!("\t(using {})\r\n", printable(tls).replace('?', " ")));
    }
    out.push_str(&format!("\tby {} (oncemail) with {} id {}", hop.hostname, hop.protocol, hop.qid));
    if let Some(to) = hop.single_recipient {
        out.push_str(&format!("\r\n\tfor <{}>", printable(to)));
    }
    out.push_str(&format!(";\r\n\t{}\r\n", hop.when.format("%a, %d %b %Y %H:%M:%S +0000")));
    out
}

/// The trace field of a message that did not come in over SMTP: a report oncemail made
/// (`uid` None) or a message `sendmail` left in the maildrop (`uid` its owner).
pub fn local(hostname: &str, uid: Option<u32>, qid: QueueId, when: DateTime<Utc>) -> String {
    let date = when.format("%a, %d %b %Y %H:%M:%S +0000");
    match uid {
        None => format!("Received: by {hostname} (oncemail) id {qid};\r\n\t{date}\r\n"),
        Some(uid) => format!(
            "Received: by {hostname} (oncemail, from userid {uid})\r\n\
             \twith local id {qid};\r\n\t{date}\r\n"
        ),
    }
}

fn printable(text: &str) -> String {
    let cleaned: String =
        text.chars().take(255).map(|c| if c.is_ascii_graphic() { c } else { '?' }).collect();
    if cleaned.is_empty() { "unknown".into() } else { cleaned }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn field_has_the_rfc_5321_clauses() {
        let hop = Hop {
            helo: "client\r\nX-Injected: yes",
            peer: "192.0.2.1:4000".parse().unwrap(),
            hostname: "mx.example.com",
            protocol: protocol(true, false, false, false),
            tls: None,
            qid: QueueId::parse("0ABCDEFGHJKMN").unwrap(),
            single_recipient: Some("user@example.com"),
            when: Utc.with_ymd_and_hms(2026, 12, 3, 17, 22, 35).unwrap(),
        };
        let expected = "Received: from client??X-Injected:?yes ([192.0.2.1])\r\n\
            \tby mx.example.com (oncemail) with ESMTP id 0ABCDEFGHJKMN\r\n\
            \tfor <user@example.com>;\r\n\tThu, 03 Dec 2026 17:22:35 +0000\r\n";
        assert_eq!(field(&hop), expected);
    }

    #[test]
    fn local_fields_for_reports_and_pickups() {
        let qid = QueueId::parse("0ABCDEFGHJKMN").unwrap();
        let when = Utc.with_ymd_and_hms(2026, 12, 3, 17, 22, 35).unwrap();
        let date = "Thu, 03 Dec 2026 17:22:35 +0000";
        let report = format!("Received: by mx.test (oncemail) id 0ABCDEFGHJKMN;\r\n\t{date}\r\n");
        assert_eq!(local("mx.test", None, qid, when), report);
        let pickup = format!(
            "Received: by mx.test (oncemail, from userid 0)\r\n\
             \twith local id 0ABCDEFGHJKMN;\r\n\t{date}\r\n"
        );
        assert_eq!(local("mx.test", Some(0), qid, when), pickup);
    }

    #[test]
    fn protocol_words_follow_rfc_3848() {
        assert_eq!(protocol(false, false, true, true), "SMTP");
        assert_eq!(protocol(true, false, true, false), "ESMTPS");
        assert_eq!(protocol(true, false, true, true), "ESMTPSA");
        assert_eq!(protocol(true, true, false, true), "UTF8SMTPA");
    }
}
