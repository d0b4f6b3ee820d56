//! Replies as a client reads them (RFC 5321 §4.2), for the relay client.
//!
//! Contract:
//! - [`ReplyParser::push`] takes one line without its ending, as
//!   [`crate::line::LineReader`] cuts it (so servers that end lines with a
//!   bare LF are understood), and gives the whole [`Reply`] once its last
//!   line is in.
//! - A line is three digits, the first 2 to 5, then nothing, a space (the
//!   last line) or a hyphen (more follow), then text. Every line of a reply
//!   carries the same code. Anything else is a [`ReplyError`]: the client can
//!   no longer tell which reply answers which command and must drop the
//!   connection.
//! - A reply holds at most [`MAX_REPLY_LINES`] lines and [`MAX_REPLY_TEXT`]
//!   octets of text; past either, an error, so a hostile server cannot make
//!   the client keep an endless reply.
//! - Text that is not UTF-8 is kept with replacement characters, and control
//!   characters other than tab become spaces: reply texts end up in logs and
//!   bounce messages.

use std::fmt;

pub const MAX_REPLY_LINES: usize = 100;
pub const MAX_REPLY_TEXT: usize = 64 * 1024;

/// A reply as the server sent it: the code and the text of each line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// The text of each line, without the code and its separator.
    pub lines: Vec<String>,
}

impl Reply {
    /// A reply of one line, for replies a client makes up itself.
    pub fn new(code: u16, text: &str) -> Reply {
        Reply { code, lines: vec![text.to_owned()] }
    }

    /// All lines joined by spaces, in one line for logs and reports.
    pub fn text(&self) -> String {
        self.lines.join(" ")
    }

    pub fn is_2xx(&self) -> bool {
        self.code / 100 == 2
    }

    pub fn is_3xx(&self) -> bool {
        self.code / 100 == 3
    }

    pub fn is_4xx(&self) -> bool {
        self.code / 100 == 4
    }

    pub fn is_5xx(&self) -> bool {
        self.code / 100 == 5
    }

    /// The RFC 3463 enhanced status code at the start of the first line,
    /// if there is one of the same class as the reply code.
    pub fn enhanced(&self) -> Option<&str> {
        let (enhanced, _) = split_enhanced(self.lines.first()?)?;
        let class = enhanced.bytes().next().map(|digit| u16::from(digit - b'0'));
        (class == Some(self.code / 100)).then_some(enhanced)
    }
}

impl fmt::Display for Reply {
    /// `code text`, all lines joined.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.lines.iter().all(String::is_empty) {
            true => write!(f, "{}", self.code),
            false => write!(f, "{} {}", self.code, self.text()),
        }
    }
}

/// Splits `class.subject.detail` (RFC 3463: class 2, 4 or 5, then one to
/// three digits twice) off the start of a text, with the rest after its
/// space. None when the text does not start with one.
pub fn split_enhanced(text: &str) -> Option<(&str, &str)> {
    let end = text.find(' ').unwrap_or(text.len());
    let (code, rest) = text.split_at(end);

    let mut parts = code.split('.');
    let class_ok = matches!(parts.next(), Some("2" | "4" | "5"));
    let number_ok = |part: Option<&str>| {
        part.is_some_and(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
    };
    let shape_ok = class_ok && number_ok(parts.next()) && number_ok(parts.next());

    (shape_ok && parts.next().is_none()).then(|| (code, rest.strip_prefix(' ').unwrap_or(rest)))
}

/// Why the lines read are not a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyError {
    /// A line that does not start with a reply code and separator.
    Malformed,
    /// A line whose code differs from the first line's.
    MixedCodes,
    /// More lines or text than a reply may have.
    TooLong,
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Malformed => "malformed reply line",
            Self::MixedCodes => "reply lines with different codes",
            Self::TooLong => "reply too long",
        })
    }
}

impl std::error::Error for ReplyError {}

/// Gathers the lines of one reply at a time.
#[derive(Clone, Debug, Default)]
pub struct ReplyParser {
    code: Option<u16>,
    lines: Vec<String>,
    text_len: usize,
}

impl ReplyParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the next line. Returns the reply when this was its last line;
    /// the parser is then ready for the next reply. After an error its
    /// state is unspecified: the connection is beyond saving anyway.
    pub fn push(&mut self, line: &[u8]) -> Result<Option<Reply>, ReplyError> {
        let (code, last, text) = split_line(line)?;
        if self.code.is_some_and(|first| first != code) {
            return Err(ReplyError::MixedCodes);
        }

        self.text_len += text.len();
        if self.lines.len() == MAX_REPLY_LINES || self.text_len > MAX_REPLY_TEXT {
            return Err(ReplyError::TooLong);
        }
        self.code = Some(code);
        self.lines.push(clean_text(text));

        if !last {
            return Ok(None);
        }
        let lines = std::mem::take(&mut self.lines);
        *self = Self::default();
        Ok(Some(Reply { code, lines }))
    }
}

/// Reads `code`, whether this is the last line, and the text.
fn split_line(line: &[u8]) -> Result<(u16, bool, &[u8]), ReplyError> {
    let (digits, rest) = line.split_at_checked(3).ok_or(ReplyError::Malformed)?;
    let code_ok = matches!(digits[0], b'2'..=b'5') && digits.iter().all(u8::is_ascii_digit);
    if !code_ok {
        return Err(ReplyError::Malformed);
    }
    let code = digits.iter().fold(0u16, |acc, &d| acc * 10 + u16::from(d - b'0'));

    match rest.split_first() {
        None => Ok((code, true, rest)),
        Some((b' ', text)) => Ok((code, true, text)),
        Some((b'-', text)) => Ok((code, false, text)),
        Some(_) => Err(ReplyError::Malformed),
    }
}

fn clean_text(text: &[u8]) -> String {
    let text = String::from_utf8_lossy(text);
    let control = |c: char| c.is_control() && c != '\t';
    text.chars().map(|c| if control(c) { ' ' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::line::{Line, LineReader};
    use crate::reply::format_reply;

    fn parse_all(lines: &[&str]) -> Result<Vec<Reply>, ReplyError> {
        let mut parser = ReplyParser::new();
        let mut replies = Vec::new();
        for line in lines {
            replies.extend(parser.push(line.as_bytes())?);
        }
        Ok(replies)
    }

    #[test]
    fn single_and_multiline() {
        let got = parse_all(&["220 mx.example ESMTP", "250-mx.example", "250-SIZE 10", "250 OK"]);
        let want = vec![
            Reply::new(220, "mx.example ESMTP"),
            Reply { code: 250, lines: vec!["mx.example".into(), "SIZE 10".into(), "OK".into()] },
        ];
        assert_eq!(got, Ok(want));
    }

    #[test]
    fn code_alone_ends_a_reply() {
        let got = parse_all(&["250-", "250"]);
        assert_eq!(got, Ok(vec![Reply { code: 250, lines: vec![String::new(), String::new()] }]));
    }

    #[test]
    fn refuses_what_is_not_a_reply() {
        for bad in ["", "25", "250x", "650 no", "150 no", "2a0 no", "hello"] {
            assert_eq!(parse_all(&[bad]), Err(ReplyError::Malformed), "{bad:?}");
        }
        assert_eq!(parse_all(&["250-a", "251 b"]), Err(ReplyError::MixedCodes));
    }

    #[test]
    fn bounded() {
        let many = vec!["250-x"; MAX_REPLY_LINES + 1];
        assert_eq!(parse_all(&many), Err(ReplyError::TooLong));

        let long = format!("250-{}", "x".repeat(MAX_REPLY_TEXT / 2));
        assert_eq!(parse_all(&[&long, &long, &long]), Err(ReplyError::TooLong));
    }

    #[test]
    fn controls_and_bad_utf8_are_cleaned() {
        let mut parser = ReplyParser::new();
        let got = parser.push(b"550 a\rb\x1b[31m\xff\tc");
        assert_eq!(got, Ok(Some(Reply::new(550, "a b [31m\u{fffd}\tc"))));
    }

    #[test]
    fn enhanced_codes() {
        assert_eq!(split_enhanced("5.1.1 no such user"), Some(("5.1.1", "no such user")));
        assert_eq!(split_enhanced("4.7.0"), Some(("4.7.0", "")));
        assert_eq!(split_enhanced("2.100.999 x"), Some(("2.100.999", "x")));
        for text in ["3.1.1 x", "5.1 x", "5.1.1.1 x", "5.1.1000 x", "5..1 x", "ok"] {
            assert_eq!(split_enhanced(text), None, "{text}");
        }

        assert_eq!(Reply::new(550, "5.1.1 unknown").enhanced(), Some("5.1.1"));
        assert_eq!(Reply::new(550, "4.1.1 class differs").enhanced(), None);
        assert_eq!(Reply::new(250, "").enhanced(), None);
    }

    #[test]
    fn display() {
        let reply = Reply { code: 451, lines: vec!["4.3.0 busy".into(), "later".into()] };
        assert_eq!(reply.to_string(), "451 4.3.0 busy later");
        assert_eq!(Reply { code: 250, lines: vec![String::new()] }.to_string(), "250");
        assert!(reply.is_4xx() && !reply.is_5xx() && !reply.is_2xx() && !reply.is_3xx());
    }

    /// Cuts `wire` into lines as the client does and parses them.
    fn read_replies(wire: &[u8]) -> Result<Vec<Reply>, ReplyError> {
        let mut reader = LineReader::new(4096);
        let mut parser = ReplyParser::new();
        let mut replies = Vec::new();
        let mut rest = wire;
        while let (Some(Line::Complete(line)), used) = reader.next(rest) {
            replies.extend(parser.push(line)?);
            rest = &rest[used..];
        }
        Ok(replies)
    }

    proptest! {
        #[test]
        fn reads_back_what_format_reply_writes(
            code in 200u16..600,
            lines in prop::collection::vec("[ -~]{0,20}", 1..5),
        ) {
            let mut wire = Vec::new();
            let texts: Vec<&str> = lines.iter().map(String::as_str).collect();
            format_reply(code, None, &texts, &mut wire);

            let got = read_replies(&wire);
            prop_assert_eq!(got, Ok(vec![Reply { code, lines: lines.clone() }]));

            // A server that ends its lines with a bare LF reads the same.
            let bare: Vec<u8> = wire.into_iter().filter(|&b| b != b'\r').collect();
            prop_assert_eq!(read_replies(&bare), Ok(vec![Reply { code, lines }]));
        }

        #[test]
        fn never_panics(lines in prop::collection::vec(any::<Vec<u8>>(), 0..8)) {
            let mut parser = ReplyParser::new();
            for line in lines {
                let _ = parser.push(&line);
            }
        }
    }
}
