//! A look at the header section as it streams in, without parsing MIME (I2).
//!
//! Counts the `Received:` fields, for loop detection at the end of data, and notes whether
//! the message has 8-bit octets anywhere, which the relay client needs for `BODY=8BITMIME`.
//! The header section ends at the first empty line; after it only the 8-bit check runs.

#[derive(Debug, Default)]
pub struct HeaderScan {
    past_headers: bool,
    /// Bytes of the current line's start, lowercased, while they can still be a name.
    name: Vec<u8>,
    mid_line: bool,
    received: usize,
    eight_bit: bool,
}

const RECEIVED: &[u8] = b"received:";

impl HeaderScan {
    pub fn feed(&mut self, bytes: &[u8]) {
        if !self.eight_bit && bytes.iter().any(|&b| b >= 0x80) {
            self.eight_bit = true;
        }
        if self.past_headers {
            return;
        }
        for &byte in bytes {
            self.step(byte);
            if self.past_headers {
                return;
            }
        }
    }

    fn step(&mut self, byte: u8) {
        if byte == b'\n' {
            // A line that was empty (or only CR) ends the header section.
            if !self.mid_line {
                self.past_headers = true;
            }
            self.mid_line = false;
            self.name.clear();
            return;
        }
        if byte == b'\r' && !self.mid_line {
            return;
        }
        self.mid_line = true;
        if self.name.len() < RECEIVED.len() {
            self.name.push(byte.to_ascii_lowercase());
            if self.name.as_slice() == RECEIVED {
                self.received += 1;
            }
        }
    }

    pub fn received(&self) -> usize {
        self.received
    }

    pub fn eight_bit(&self) -> bool {
        self.eight_bit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(pieces: &[&[u8]]) -> HeaderScan {
        let mut scan = HeaderScan::default();
        for piece in pieces {
            scan.feed(piece);
        }
        scan
    }

    #[test]
    fn counts_received_fields_in_the_header_section_only() {
        let message = b"Received: a\r\nRECEIVED: b\r\n\tcontinued\r\nX-Received: no\r\n\
            Subject: hi\r\n\r\nReceived: in the body\r\n";
        assert_eq!(scan(&[message]).received(), 2);
        // The same, split at every position.
        for cut in 0..message.len() {
            let (a, b) = message.split_at(cut);
            assert_eq!(scan(&[a, b]).received(), 2, "cut at {cut}");
        }
    }

    #[test]
    fn notices_eight_bit_octets_anywhere() {
        assert!(!scan(&[b"Subject: x\r\n\r\nplain\r\n"]).eight_bit());
        assert!(scan(&[b"Subject: x\r\n\r\ncaf\xc3\xa9\r\n"]).eight_bit());
    }
}
