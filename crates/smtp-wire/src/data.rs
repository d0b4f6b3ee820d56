//! Message content on the wire: DATA decoding, BDAT line-ending checks and
//! dot-stuffing for sending.
//!
//! Contract of [`DataDecoder`]:
//! - Data ends at `<CRLF>.<CRLF>` and at nothing else; right after the 354
//!   the decoder stands at a line start, so `.<CRLF>` there ends an empty
//!   message. `<LF>.<LF>`, `<LF>.<CRLF>`, `<CR>.<CR>`, `<CRLF>.<LF>` and the
//!   like are content (SMTP smuggling, CVE-2023-51764/5/6): they never end
//!   data, and they make [`DataDecoder::bare_line_ending`] true so the server
//!   can refuse the message after the real end.
//! - The output is the content up to and including the CRLF of its last line,
//!   with the transparency of RFC 5321 §4.5.2 undone: the first `.` of a line
//!   is dropped.
//! - Only CRLF ends a line. A bare LF or CR is content in the middle of a
//!   line, so a dot after it is kept. (Such a message is refused anyway; this
//!   choice keeps the rule to one sentence and its content as sent.)
//! - The result does not depend on how the input is split across calls. The
//!   decoder keeps only a state byte between calls, never content: runs
//!   between CRs and LFs are found with memchr and copied in bulk.
//!
//! [`BareEolScanner`] checks BDAT chunks, which are taken verbatim, for the
//! same bare line endings. [`dot_stuff`] prepares content for DATA, and
//! [`DotStuffer`] does the same for content that arrives in pieces.

mod scan;
mod stuff;
#[cfg(test)]
mod tests;

use memchr::memchr2;

pub use scan::BareEolScanner;
pub use stuff::{DotStuffer, dot_stuff};

/// Where the decoder stands after the bytes it has seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// After a CRLF, or at the very start.
    LineStart,
    /// Inside a line.
    Text,
    /// After a CR inside a line.
    Cr,
    /// After a `.` at a line start; the dot is dropped whatever follows.
    Dot,
    /// After `.` and CR at a line start; the CR is held back, since it is
    /// content unless an LF follows and ends the data.
    DotCr,
    /// The end-of-data sequence has been read.
    Done,
}

/// What one call of [`DataDecoder::decode`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    /// Bytes of the input used; those after the end of data are not.
    pub consumed: usize,
    /// The end-of-data sequence has been read, in this call or before.
    pub end: bool,
}

/// Decodes the content of one DATA command; make a new one per message.
#[derive(Debug, Clone)]
pub struct DataDecoder {
    state: State,
    bare: bool,
}

impl Default for DataDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl DataDecoder {
    pub fn new() -> Self {
        DataDecoder { state: State::LineStart, bare: false }
    }

    /// Decodes DATA content (the bytes after the 354 reply), writing dot-unstuffed content to
    /// `out`. Stops right after the end-of-data sequence; bytes after it are not consumed.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Decoded {
        let mut pos = 0;
        // Start of the bytes read but not yet copied to `out`.
        let mut run = 0;

        while pos < input.len() && self.state != State::Done {
            match self.step(&input[pos..]) {
                Skip::Keep(len) => pos += len,
                Skip::Drop(len) => {
                    out.extend_from_slice(&input[run..pos]);
                    pos += len;
                    run = pos;
                }
                Skip::HeldCr => {
                    out.extend_from_slice(&input[run..pos]);
                    run = pos;
                    out.push(b'\r');
                }
            }
        }

        out.extend_from_slice(&input[run..pos]);
        let end = self.state == State::Done;
        Decoded { consumed: pos, end }
    }

    /// True when the content so far had a bare CR (not followed by LF) or bare LF (not after CR).
    pub fn bare_line_ending(&self) -> bool {
        self.bare
    }

    /// Reads the bytes at the start of `rest` that the state decides on.
    /// `rest` is never empty.
    fn step(&mut self, rest: &[u8]) -> Skip {
        match self.state {
            State::Text => self.text(rest),
            State::Cr => self.after_cr(rest[0]),
            State::LineStart => self.line_start(rest[0]),
            State::Dot => self.after_dot(rest[0]),
            State::DotCr => self.after_dot_cr(rest[0]),
            // Not reached: `decode` stops at `Done`.
            State::Done => Skip::Keep(0),
        }
    }

    /// Skips to just past the next CR or LF of a line.
    fn text(&mut self, rest: &[u8]) -> Skip {
        let Some(at) = memchr2(b'\r', b'\n', rest) else {
            return Skip::Keep(rest.len());
        };

        match rest[at] {
            b'\r' => self.state = State::Cr,
            _ => self.bare = true,
        }
        Skip::Keep(at + 1)
    }

    fn after_cr(&mut self, byte: u8) -> Skip {
        if byte == b'\n' {
            self.state = State::LineStart;
            return Skip::Keep(1);
        }

        // The byte is looked at again as text: it may be another CR.
        self.bare = true;
        self.state = State::Text;
        Skip::Keep(0)
    }

    fn line_start(&mut self, byte: u8) -> Skip {
        if byte == b'.' {
            self.state = State::Dot;
            return Skip::Drop(1);
        }
        self.state = State::Text;
        Skip::Keep(0)
    }

    fn after_dot(&mut self, byte: u8) -> Skip {
        if byte == b'\r' {
            self.state = State::DotCr;
            return Skip::Drop(1);
        }
        self.state = State::Text;
        Skip::Keep(0)
    }

    fn after_dot_cr(&mut self, byte: u8) -> Skip {
        if byte == b'\n' {
            self.state = State::Done;
            return Skip::Drop(1);
        }

        // `.<CR>` then anything but LF: the CR is a bare one.
        self.bare = true;
        self.state = State::Text;
        Skip::HeldCr
    }
}

/// How `step` moved through the input.
enum Skip {
    /// Over this many bytes, which are content.
    Keep(usize),
    /// Over this many bytes, which are not content.
    Drop(usize),
    /// Over nothing, but the CR held back in `DotCr` is content after all.
    /// It may have come in an earlier call, so it is written as a byte.
    HeldCr,
}
