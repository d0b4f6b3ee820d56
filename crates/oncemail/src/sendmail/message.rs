//! The message on `sendmail`'s standard input, made into what the spool stores.
//!
//! - Line endings: LF, CRLF and a bare CR all end a line, and every line is written with
//!   CRLF (the SMTP path refuses bare line endings; local submission repairs them, since
//!   scripts write LF). The message always ends with a line break.
//! - Without `-i`, a line holding only `.` ends the input, as classic sendmail does; the
//!   rest of the input is not read.
//! - Header section: `Bcc:` and `Resent-Bcc:` fields are removed (they exist only to
//!   carry hidden recipients to the submission agent), `To:`, `Cc:` and `Bcc:` give the
//!   recipients with `-t`, and `From:`, `Date:` and `Message-ID:` are added when missing.
//!   A first line that is not a header field starts the body: the added fields and an
//!   empty line go before it.

use super::address;

/// Longest header section accepted; real ones are a few KiB.
pub const MAX_HEADER_SECTION: usize = 1024 * 1024;

/// Rewrites line endings to CRLF and finds the lone-dot end of input, a chunk at a time.
#[derive(Debug)]
pub struct Normalizer {
    dot_ends: bool,
    /// The previous byte was a CR (already written as CRLF): an LF now is its pair.
    after_cr: bool,
    line_start: bool,
    /// A `.` at the start of a line, held back until we know whether it is alone.
    held_dot: bool,
    ended: bool,
}

impl Normalizer {
    pub fn new(dot_ends: bool) -> Normalizer {
        Normalizer { dot_ends, after_cr: false, line_start: true, held_dot: false, ended: false }
    }

    /// True once a lone dot ended the input.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Appends the normalised form of `input` to `out`; ignores input after the end.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        for &byte in input {
            if self.ended {
                return;
            }
            if std::mem::take(&mut self.after_cr) && byte == b'\n' {
                continue;
            }
            match byte {
                b'\r' | b'\n' => {
                    self.end_line(out);
                    self.after_cr = byte == b'\r';
                }
                b'.' if self.line_start && self.dot_ends => {
                    self.held_dot = true;
                    self.line_start = false;
                }
                _ => {
                    if std::mem::take(&mut self.held_dot) {
                        out.push(b'.');
                    }
                    out.push(byte);
                    self.line_start = false;
                }
            }
        }
    }

    /// The end of input: completes a last line that has no line break.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        if self.held_dot {
            // A lone dot on the last line, without a line break, ends the input too.
            self.ended = true;
            return;
        }
        if !self.line_start {
            out.extend_from_slice(b"\r\n");
            self.line_start = true;
        }
    }

    fn end_line(&mut self, out: &mut Vec<u8>) {
        if std::mem::take(&mut self.held_dot) {
            self.ended = true;
            return;
        }
        out.extend_from_slice(b"\r\n");
        self.line_start = true;
    }
}

/// Where the header section of normalised text ends, if that can be told yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    /// Bytes of header fields.
    pub headers: usize,
    /// Where the body starts: after the empty line, or at the first line that is not
    /// a header field.
    pub body: usize,
}

/// Finds the end of the header section in `text` (CRLF lines). With `complete`, the text is
/// the whole message, and a message of header fields only is all header section.
pub fn split(text: &[u8], complete: bool) -> Option<Split> {
    let mut at = 0;
    while let Some(len) = text[at..].windows(2).position(|w| w == b"\r\n") {
        let line = &text[at..at + len];
        if line.is_empty() {
            return Some(Split { headers: at, body: at + 2 });
        }
        let continuation = at > 0 && matches!(line[0], b' ' | b'\t');
        if !continuation && field_name(line).is_none() {
            return Some(Split { headers: at, body: at });
        }
        at += len + 2;
    }
    complete.then_some(Split { headers: at, body: at })
}

/// The name of a header field line (`Name: value`), if it is one.
fn field_name(line: &[u8]) -> Option<&[u8]> {
    let colon = line.iter().position(|&b| b == b':')?;
    let name = &line[..colon];
    let printable = name.iter().all(|&b| (33..=126).contains(&b));
    (!name.is_empty() && printable).then_some(name)
}

/// What the header section says, and the section as it will be stored.
#[derive(Debug, Default)]
pub struct Headers {
    /// The fields kept, CRLF after each line, plus the fields added.
    pub text: Vec<u8>,
    /// Addresses in `To:`, `Cc:` and `Bcc:`, as written (not yet qualified).
    pub recipients: Vec<String>,
}

/// Fields `sendmail` adds to a message that lacks them.
pub struct Additions<'a> {
    /// The whole `From:` value to use when there is none.
    pub from: &'a str,
    /// `Date:` value.
    pub date: &'a str,
    /// `Message-ID:` value, with its angle brackets.
    pub message_id: &'a str,
}

/// Rewrites a header section (`text`, CRLF lines) per the module contract.
pub fn headers(text: &[u8], additions: &Additions) -> Headers {
    let mut out = Headers::default();
    let (mut has_from, mut has_date, mut has_id) = (false, false, false);
    for field in fields(text) {
        let name = field_name(field).unwrap_or_default().to_ascii_lowercase();
        match name.as_slice() {
            b"to" | b"cc" | b"bcc" => {
                let value = String::from_utf8_lossy(&field[name.len() + 1..]).replace("\r\n", "");
                out.recipients.extend(address::addr_specs(&value));
            }
            b"from" => has_from = true,
            b"date" => has_date = true,
            b"message-id" => has_id = true,
            _ => {}
        }
        if name != b"bcc" && name != b"resent-bcc" {
            out.text.extend_from_slice(field);
        }
    }

    let mut add = |name: &str, value: &str| {
        out.text.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    };
    if !has_from {
        add("From", additions.from);
    }
    if !has_date {
        add("Date", additions.date);
    }
    if !has_id {
        add("Message-ID", additions.message_id);
    }
    out
}

/// Each field with its continuation lines, CRLFs included.
fn fields(text: &[u8]) -> Vec<&[u8]> {
    let mut fields = Vec::new();
    let mut start = 0;
    let mut at = 0;
    while let Some(len) = text[at..].windows(2).position(|w| w == b"\r\n") {
        let next = at + len + 2;
        let continued = text.get(next).is_some_and(|&b| b == b' ' || b == b'\t');
        if !continued {
            fields.push(&text[start..next]);
            start = next;
        }
        at = next;
    }
    if start < text.len() {
        fields.push(&text[start..]);
    }
    fields
}

/// A display name fit for a `From:` field: a quoted string, or RFC 2047 encoded words
/// when it is not ASCII.
pub fn display_name(name: &str) -> String {
    let name: String = name.chars().filter(|c| !c.is_control()).collect();
    if name.is_ascii() {
        let escaped = name.replace('\\', "\\\\").replace('"', "\\\"");
        return format!("\"{escaped}\"");
    }
    // Encoded words hold at most 75 characters: 45 octets of text each.
    let mut words = Vec::new();
    let mut chunk = String::new();
    for c in name.chars() {
        if chunk.len() + c.len_utf8() > 45 {
            words.push(encoded_word(&chunk));
            chunk.clear();
        }
        chunk.push(c);
    }
    words.push(encoded_word(&chunk));
    words.join(" ")
}

fn encoded_word(text: &str) -> String {
    format!("=?UTF-8?B?{}?=", base64(text.as_bytes()))
}

fn base64(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for group in bytes.chunks(3) {
        let b = [group[0], *group.get(1).unwrap_or(&0), *group.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            match i <= group.len() {
                true => out.push(DIGITS[(n >> (18 - 6 * i)) as usize & 63] as char),
                false => out.push('='),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normalise(input: &[u8], dot_ends: bool) -> (Vec<u8>, bool) {
        let mut n = Normalizer::new(dot_ends);
        let mut out = Vec::new();
        // Byte by byte: every split point must give the same result.
        for byte in input {
            n.feed(std::slice::from_ref(byte), &mut out);
        }
        n.finish(&mut out);
        (out, n.ended())
    }

    #[test]
    fn every_line_ending_becomes_crlf() {
        let (out, _) = normalise(b"a\nb\r\nc\rd\r\r\ne", true);
        assert_eq!(out, b"a\r\nb\r\nc\r\nd\r\n\r\ne\r\n");
        assert_eq!(normalise(b"", true).0, b"");
        assert_eq!(normalise(b"x\n", true).0, b"x\r\n");
    }

    #[test]
    fn a_lone_dot_ends_the_input_unless_told_otherwise() {
        let input = b"a\n..b\n.c\n.\nafter\n";
        assert_eq!(normalise(input, true), (b"a\r\n..b\r\n.c\r\n".to_vec(), true));
        let (all, ended) = normalise(input, false);
        assert_eq!(all, b"a\r\n..b\r\n.c\r\n.\r\nafter\r\n");
        assert!(!ended);
        assert_eq!(normalise(b"a\r\n.\r\n", true).0, b"a\r\n");
        assert_eq!(normalise(b"a\n.", true), (b"a\r\n".to_vec(), true));
    }

    #[test]
    fn the_header_section_ends_at_an_empty_or_non_header_line() {
        let s = |t: &[u8], complete| split(t, complete);
        assert_eq!(s(b"A: 1\r\n b\r\n\r\nbody\r\n", false), Some(Split { headers: 10, body: 12 }));
        assert_eq!(s(b"A: 1\r\nnot a header\r\n", false), Some(Split { headers: 6, body: 6 }));
        assert_eq!(s(b"\r\nbody\r\n", false), Some(Split { headers: 0, body: 2 }));
        assert_eq!(s(b"A: 1\r\nB: 2", false), None);
        assert_eq!(s(b"A: 1\r\n", true), Some(Split { headers: 6, body: 6 }));
        assert_eq!(s(b"From user Mon Jan\r\n", false), Some(Split { headers: 0, body: 0 }));
    }

    #[test]
    fn headers_lose_bcc_give_recipients_and_gain_what_is_missing() {
        let text = b"To: a@x.test,\r\n\tB <b@x.test>\r\nBcc: c@x.test\r\nCC: d\r\nSubject: hi\r\n";
        let additions = Additions { from: "root@x.test", date: "D", message_id: "<m@x>" };
        let out = headers(text, &additions);
        assert_eq!(out.recipients, ["a@x.test", "b@x.test", "c@x.test", "d"]);
        let expected = "To: a@x.test,\r\n\tB <b@x.test>\r\nCC: d\r\nSubject: hi\r\n\
            From: root@x.test\r\nDate: D\r\nMessage-ID: <m@x>\r\n";
        assert_eq!(String::from_utf8(out.text).unwrap(), expected);

        let complete = b"From: me\r\ndate: x\r\nMessage-Id: <y>\r\n";
        assert_eq!(headers(complete, &additions).text, complete);
    }

    #[test]
    fn display_names_are_quoted_or_encoded() {
        assert_eq!(display_name("Cron Daemon"), "\"Cron Daemon\"");
        assert_eq!(display_name("A \"B\" \\C"), "\"A \\\"B\\\" \\\\C\"");
        assert_eq!(display_name("Zoë"), "=?UTF-8?B?Wm/Dqw==?=");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
        let long = display_name(&"é".repeat(40));
        assert_eq!(long.split(' ').count(), 2);
        assert!(long.split(' ').all(|w| w.len() <= 75));
    }
}
