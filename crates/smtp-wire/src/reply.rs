//! SMTP replies (RFC 5321 §4.2) with optional enhanced status codes
//! (RFC 3463).
//!
//! A CR or LF inside a text line is written as a space: a text that echoes
//! peer input must not be able to add reply lines of its own.
//!
//! The client side, reading replies, is in [`parse`](mod@parse).

pub mod parse;

pub use parse::{Reply, ReplyError, ReplyParser, split_enhanced};

/// Formats an SMTP reply: one line `code SP [enhanced SP] text CRLF`, or several with `code-`.
/// No `lines` at all gives one line with the code (and enhanced code) alone.
/// `code` must be a three-digit number.
pub fn format_reply(code: u16, enhanced: Option<&str>, lines: &[&str], out: &mut Vec<u8>) {
    debug_assert!((100..1000).contains(&code), "reply code {code}");
    let last = lines.len().saturating_sub(1);

    for (i, text) in lines.iter().enumerate() {
        write_code(code, out);
        let separator = if i == last { b' ' } else { b'-' };
        write_line_rest(separator, enhanced, text, out);
    }
    if lines.is_empty() {
        write_code(code, out);
        write_line_rest(b' ', enhanced, "", out);
    }
}

/// Writes what follows the code: the separator, unless the line ends there,
/// the enhanced code and the text, spaced, and the CRLF.
fn write_line_rest(separator: u8, enhanced: Option<&str>, text: &str, out: &mut Vec<u8>) {
    let parts = [enhanced.unwrap_or(""), text];
    let mut parts = parts.iter().filter(|part| !part.is_empty()).peekable();
    if parts.peek().is_some() || separator == b'-' {
        out.push(separator);
    }

    while let Some(part) = parts.next() {
        write_text(part, out);
        if parts.peek().is_some() {
            out.push(b' ');
        }
    }
    out.extend_from_slice(b"\r\n");
}

fn write_code(code: u16, out: &mut Vec<u8>) {
    // Three digits, whatever `code` is, so a bad code cannot break framing.
    let digits = [code / 100 % 10, code / 10 % 10, code % 10];
    out.extend(digits.map(|digit| b'0' + digit as u8));
}

fn write_text(text: &str, out: &mut Vec<u8>) {
    let line_break = |b: u8| b == b'\r' || b == b'\n';
    out.extend(text.bytes().map(|b| if line_break(b) { b' ' } else { b }));
}

#[cfg(test)]
mod tests {
    use super::format_reply;

    fn reply(code: u16, enhanced: Option<&str>, lines: &[&str]) -> String {
        let mut out = Vec::new();
        format_reply(code, enhanced, lines, &mut out);
        String::from_utf8(out).expect("replies from str are UTF-8")
    }

    #[test]
    fn single_line() {
        assert_eq!(reply(250, Some("2.1.0"), &["Ok"]), "250 2.1.0 Ok\r\n");
        assert_eq!(reply(354, None, &["Go ahead"]), "354 Go ahead\r\n");
        assert_eq!(reply(250, Some("2.0.0"), &[]), "250 2.0.0\r\n");
        assert_eq!(reply(250, None, &[]), "250\r\n");
    }

    #[test]
    fn ehlo_lines() {
        let lines = ["mx.example", "PIPELINING", "SIZE 1000", "SMTPUTF8"];
        let want = "250-mx.example\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250 SMTPUTF8\r\n";
        assert_eq!(reply(250, None, &lines), want);
    }

    #[test]
    fn multiline_with_enhanced_code() {
        let want = "550-5.7.1 one\r\n550 5.7.1 two\r\n";
        assert_eq!(reply(550, Some("5.7.1"), &["one", "two"]), want);
    }

    #[test]
    fn line_breaks_in_text_cannot_add_lines() {
        let got = reply(501, Some("5.1.7"), &["bad <a\r\n250 ok>"]);
        assert_eq!(got, "501 5.1.7 bad <a  250 ok>\r\n");
    }
}
