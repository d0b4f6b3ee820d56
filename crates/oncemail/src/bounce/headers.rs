//! The copy of the original message's header section that a report returns.
//!
//! Only the header section goes back, never the body: the sender has the body, and
//! returning it would repeat its size and hand its content to whoever forged the
//! envelope sender (RFC 6522 allows a report to carry the headers alone). The section
//! ends at the first empty line; an original without one is all header, and either way
//! the copy stops at [`HEADER_CAP`] octets, on a line end.
//!
//! The copy is for people and programs matching a report to their message, not a
//! faithful archive, so it is made safe rather than kept byte for byte: CRLF, a bare CR
//! and a bare LF all end a line and come out as CRLF; control characters other than TAB
//! become `?`; a line over 998 octets is folded with a space after each break.
//!
//! Headers that are all ASCII go out as `text/rfc822-headers` (RFC 6522). Headers with
//! 8-bit octets go out as `message/global-headers` (RFC 6533), decoded as UTF-8 with
//! invalid sequences as U+FFFD. We chose that over leaving raw 8-bit octets in a
//! `text/rfc822-headers` part, which that type does not allow: UTF-8 headers (RFC 6532)
//! then arrive under the type made for them, and a reader that checks UTF-8 still
//! accepts the report when the original had stray Latin-1.

use super::text::{MAX_LINE, pieces};

/// The most of the original that the copy is taken from.
pub const HEADER_CAP: usize = 64 * 1024;

/// The header section ready for the report's third part.
pub struct HeaderCopy {
    pub media_type: &'static str,
    /// Lines ending in CRLF; empty when the original had no header.
    pub text: String,
}

/// The safe copy of `original`'s header section.
pub fn copy(original: &[u8]) -> HeaderCopy {
    let lines = section(original);
    let eight_bit = lines.iter().any(|line| !line.is_ascii());

    let mut text = String::new();
    for line in lines {
        push_line(&String::from_utf8_lossy(line), &mut text);
    }

    let media_type = if eight_bit { "message/global-headers" } else { "text/rfc822-headers" };
    HeaderCopy { media_type, text }
}

/// The lines of the header section, without their endings.
fn section(original: &[u8]) -> Vec<&[u8]> {
    let mut lines = Vec::new();
    let mut rest = original;
    let mut taken = 0;
    while !rest.is_empty() {
        let (line, next) = next_line(rest);
        if line.is_empty() {
            break;
        }

        // Cutting at a line end keeps a half header line out of the copy.
        taken += line.len() + 2;
        if taken > HEADER_CAP {
            break;
        }
        lines.push(line);
        rest = next;
    }
    lines
}

/// The first line of `bytes` without its ending, and what follows that ending. CRLF,
/// a bare CR and a bare LF each end a line.
fn next_line(bytes: &[u8]) -> (&[u8], &[u8]) {
    let Some(end) = bytes.iter().position(|&b| b == b'\r' || b == b'\n') else {
        return (bytes, &[]);
    };
    let ending = if bytes[end..].starts_with(b"\r\n") { 2 } else { 1 };
    (&bytes[..end], &bytes[end + ending..])
}

fn push_line(line: &str, out: &mut String) {
    let clean: String =
        line.chars().map(|c| if c.is_ascii_control() && c != '\t' { '?' } else { c }).collect();

    // XXX: folding inside a run without white space adds a space where the line is cut
    // when it is unfolded. Only lines past 998 octets, which no valid header has, pay.
    for (i, piece) in pieces(&clean, MAX_LINE - 1).enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(piece);
        out.push_str("\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_at_the_first_empty_line() {
        let copy = copy(b"From: a@x\r\nSubject: hi\r\n\r\nsecret body\r\n");
        assert_eq!(copy.text, "From: a@x\r\nSubject: hi\r\n");
        assert_eq!(copy.media_type, "text/rfc822-headers");
    }

    #[test]
    fn without_an_empty_line_takes_all_it_may() {
        assert_eq!(copy(b"From: a@x\r\nSubject: hi").text, "From: a@x\r\nSubject: hi\r\n");

        let big = "X-Filler: 0123456789\r\n".repeat(10_000);
        let copied = copy(big.as_bytes()).text;
        assert!(copied.len() <= HEADER_CAP);
        assert!(copied.len() > HEADER_CAP - 30);
        assert!(copied.split_terminator("\r\n").all(|l| l == "X-Filler: 0123456789"));
    }

    #[test]
    fn no_header_gives_an_empty_copy() {
        assert_eq!(copy(b"\r\nbody only\r\n").text, "");
        assert_eq!(copy(b"").text, "");
    }

    #[test]
    fn bare_line_ends_and_controls_are_made_safe() {
        let copy = copy(b"A: 1\rB: 2\nC: \x00\x1b\t3\r\r\nbody");
        assert_eq!(copy.text, "A: 1\r\nB: 2\r\nC: ??\t3\r\n");
    }

    #[test]
    fn long_lines_are_folded() {
        let line = format!("X-Long: {}\r\n\r\n", "y".repeat(3000));
        let copied = copy(line.as_bytes()).text;
        let lines: Vec<&str> = copied.split_terminator("\r\n").collect();
        assert_eq!(lines.len(), 4);
        assert!(lines.iter().all(|l| l.len() <= MAX_LINE));
        assert!(lines[1..].iter().all(|l| l.starts_with(" y")));
    }

    #[test]
    fn eight_bit_headers_are_global_headers() {
        let copy = copy(b"Subject: gr\xc3\xbc\xc3\x9fe\r\nX-Latin1: \xe9t\xe9\r\n\r\n");
        assert_eq!(copy.media_type, "message/global-headers");
        assert_eq!(copy.text, "Subject: grüße\r\nX-Latin1: \u{FFFD}t\u{FFFD}\r\n");
    }
}
