//! Dot-stuffing for sending DATA (RFC 5321 §4.5.2).
//!
//! XXX: a bare CR or bare LF in the content is written as CRLF. RFC 5321
//! §2.3.8 forbids sending them, and a receiver may take them for line ends:
//! if we passed `<LF>.<LF>` through, a lenient receiver could see the end of
//! data there (SMTP smuggling). Content the server accepted never has them,
//! so this only changes content that came in some other way.

use memchr::memchr2;

/// Writes `content` with a `.` doubled at every line start, a CRLF added if
/// it does not end with one, then `.\r\n`. Empty content gives just `.\r\n`.
pub fn dot_stuff(content: &[u8], out: &mut Vec<u8>) {
    let mut rest = content;

    while !rest.is_empty() {
        if rest[0] == b'.' {
            out.push(b'.');
        }

        let Some(at) = memchr2(b'\r', b'\n', rest) else {
            out.extend_from_slice(rest);
            out.extend_from_slice(b"\r\n");
            break;
        };
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(b"\r\n");
        rest = &rest[at + line_ending_len(&rest[at..])..];
    }

    out.extend_from_slice(b".\r\n");
}

/// 2 for a CRLF, 1 for a bare CR or LF.
fn line_ending_len(ending: &[u8]) -> usize {
    match ending.starts_with(b"\r\n") {
        true => 2,
        false => 1,
    }
}

/// [`dot_stuff`] for content that arrives in pieces, so a message can be
/// sent without holding it whole. Feeding the content in any split, then
/// calling [`DotStuffer::finish`], writes exactly what `dot_stuff` writes
/// for the whole: the same doubled dots, the same CRLF for each bare CR or
/// LF, the same CRLF added at the end if missing, then `.\r\n`.
///
/// Between calls it keeps one state value, never content, so a caller's
/// memory is bounded by its own buffers: a piece of n bytes gives at most
/// 2n bytes (every byte a bare line ending, or a dot starting a line).
#[derive(Debug, Clone)]
pub struct DotStuffer {
    state: StuffState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StuffState {
    /// At the start of the content or after a line ending.
    LineStart,
    /// After a CR, already written as CRLF: an LF here belongs to it.
    AfterCr,
    /// Inside a line.
    Text,
}

impl Default for DotStuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl DotStuffer {
    pub fn new() -> Self {
        DotStuffer { state: StuffState::LineStart }
    }

    /// Writes the dot-stuffed form of the next piece of content to `out`.
    pub fn stuff(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        while let Some(&first) = input.first() {
            if self.state == StuffState::AfterCr && first == b'\n' {
                input = &input[1..];
                self.state = StuffState::LineStart;
                continue;
            }
            if self.state != StuffState::Text && first == b'.' {
                out.push(b'.');
            }

            // The rest of the line, whose ending (whatever it is) goes out as CRLF.
            let Some(at) = memchr2(b'\r', b'\n', input) else {
                out.extend_from_slice(input);
                self.state = StuffState::Text;
                return;
            };
            out.extend_from_slice(&input[..at]);
            out.extend_from_slice(b"\r\n");
            self.state = match input[at] {
                b'\r' => StuffState::AfterCr,
                _ => StuffState::LineStart,
            };
            input = &input[at + 1..];
        }
    }

    /// Ends the content: a CRLF if its last line had none, then `.\r\n`.
    pub fn finish(self, out: &mut Vec<u8>) {
        if self.state == StuffState::Text {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
    }
}
