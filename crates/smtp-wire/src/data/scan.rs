//! Bare CR and bare LF detection for BDAT chunks, which carry the message
//! verbatim. A CR that ends one chunk is judged by the first byte of the next,
//! and by [`BareEolScanner::finish`] when no chunk follows.

use memchr::memchr2_iter;

#[derive(Debug, Clone, Default)]
pub struct BareEolScanner {
    /// The last chunk ended with a CR whose next byte is not known yet.
    pending_cr: bool,
    bare: bool,
}

impl BareEolScanner {
    pub fn new() -> Self {
        Self::default()
    }

    /// Scans the next chunk of the message; chunks must come in order.
    pub fn scan(&mut self, chunk: &[u8]) {
        let Some(&last) = chunk.last() else {
            return;
        };

        for at in memchr2_iter(b'\r', b'\n', chunk) {
            if !self.paired(chunk, at) {
                self.bare = true;
            }
        }
        if self.pending_cr && chunk[0] != b'\n' {
            self.bare = true;
        }
        self.pending_cr = last == b'\r';
    }

    /// True if the message had any bare CR or LF, counting a CR at its very end.
    pub fn finish(&mut self) -> bool {
        if std::mem::take(&mut self.pending_cr) {
            self.bare = true;
        }
        self.bare
    }

    /// Whether the CR or LF at `at` belongs to a CRLF. A CR at the end of the
    /// chunk counts as paired until the next chunk says otherwise.
    fn paired(&self, chunk: &[u8], at: usize) -> bool {
        if chunk[at] == b'\r' {
            return chunk.get(at + 1).is_none_or(|&next| next == b'\n');
        }
        match at.checked_sub(1) {
            Some(before) => chunk[before] == b'\r',
            None => self.pending_cr,
        }
    }
}
