//! Cuts command lines out of the bytes a session has read.
//!
//! Contract:
//! - A line ends at LF. A CR right before the LF is dropped, so a bare-LF
//!   ending works for commands (only DATA content is strict about CRLF; see
//!   [`crate::data`]). Other CRs stay in the line, where the command parser
//!   refuses them.
//! - `max_len` counts the line with its ending. A longer line is not returned:
//!   its bytes are consumed as they arrive, without waiting for the LF, and
//!   when the LF comes [`Line::TooLong`] is returned once; reading then goes on
//!   with the next line. The caller's buffer therefore never has to hold more
//!   than `max_len` bytes plus one read.
//! - [`LineReader::next`] never keeps bytes itself: it says how many the
//!   caller must drop from the front of its buffer. `(None, 0)` means "read
//!   more".

#[cfg(test)]
mod tests;

/// An event from [`LineReader::next`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line<'a> {
    /// A line, without its CRLF or LF.
    Complete(&'a [u8]),
    /// A line longer than the limit ended; its bytes are gone.
    TooLong,
}

#[derive(Debug, Clone)]
pub struct LineReader {
    max_len: usize,
    /// Inside an overlong line whose LF has not come yet.
    discarding: bool,
}

impl LineReader {
    pub fn new(max_len: usize) -> Self {
        LineReader { max_len, discarding: false }
    }

    /// Looks for the next command line at the start of `buf`. Returns the event (if any) and
    /// how many bytes of `buf` the caller must drop from its buffer.
    pub fn next<'a>(&mut self, buf: &'a [u8]) -> (Option<Line<'a>>, usize) {
        if self.discarding {
            return self.discard(buf);
        }

        // An LF past `max_len - 1` would end a line that is too long, so
        // there is no need to look further for a complete one.
        let window = &buf[..buf.len().min(self.max_len)];
        if let Some(lf) = memchr::memchr(b'\n', window) {
            let line = strip_cr(&buf[..lf]);
            return (Some(Line::Complete(line)), lf + 1);
        }

        if buf.len() < self.max_len {
            return (None, 0);
        }
        self.discarding = true;
        self.discard(buf)
    }

    /// Drops the bytes of an overlong line up to and including its LF.
    fn discard<'a>(&mut self, buf: &'a [u8]) -> (Option<Line<'a>>, usize) {
        match memchr::memchr(b'\n', buf) {
            Some(lf) => {
                self.discarding = false;
                (Some(Line::TooLong), lf + 1)
            }
            None => (None, buf.len()),
        }
    }
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}
