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
    fn protocol_words_follow_rfc_3848() {
        assert_eq!(protocol(false, false, true, true), "SMTP");
        assert_eq!(protocol(true, false, true, false), "ESMTPS");
        assert_eq!(protocol(true, false, true, true), "ESMTPSA");
        assert_eq!(protocol(true, true, false, true), "UTF8SMTPA");
    }
}
