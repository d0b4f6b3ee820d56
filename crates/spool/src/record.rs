//! Self-checking records, the unit of everything written to a segment or its sidecar.
//!
//! Layout, all integers little-endian:
//!
//! ```text
//! magic u8 (0xA7) | kind u8 | payload length u32 | payload | crc32 u32
//! ```
//!
//! The CRC covers kind, length and payload. A reader stops at the first record that is
//! short, has the wrong magic, or fails its CRC: files are only ever appended to and synced,
//! so a bad record can only be the torn tail of a write that was never acknowledged.

use std::fmt;

const MAGIC: u8 = 0xA7;
const HEADER_LEN: usize = 6;
const TRAILER_LEN: usize = 4;

/// Largest payload accepted when reading; anything bigger is treated as corruption.
const MAX_PAYLOAD: usize = 256 * 1024 * 1024;

/// What a record says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A message is accepted: queue ID, envelope, and its body inline or in a file.
    Commit = 1,
    /// Something happened to an accepted message (an opaque update, e.g. a recipient outcome).
    Update = 2,
    /// Every recipient of the message is final; it is gone from the spool.
    Done = 3,
    /// A fact kept after its message is gone (see `keep`).
    Keep = 4,
}

impl Kind {
    fn from_u8(byte: u8) -> Option<Kind> {
        match byte {
            1 => Some(Kind::Commit),
            2 => Some(Kind::Update),
            3 => Some(Kind::Done),
            4 => Some(Kind::Keep),
            _ => None,
        }
    }
}

/// Appends one record to `out`; returns the offset of the payload within `out`.
pub fn encode(kind: Kind, payload_parts: &[&[u8]], out: &mut Vec<u8>) -> usize {
    let len: usize = payload_parts.iter().map(|p| p.len()).sum();
    let start = out.len();

    out.push(MAGIC);
    out.push(kind as u8);
    out.extend_from_slice(&(len as u32).to_le_bytes());
    let payload_at = out.len();
    for part in payload_parts {
        out.extend_from_slice(part);
    }

    let crc = crc32fast::hash(&out[start + 1..]);
    out.extend_from_slice(&crc.to_le_bytes());
    payload_at
}

/// One record read back, borrowing its payload from the buffer.
#[derive(Debug)]
pub struct Decoded<'a> {
    pub kind: Kind,
    pub payload: &'a [u8],
    /// Offset of the payload within the buffer that was decoded.
    pub payload_at: usize,
}

/// Why reading stopped before the end of the buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Torn {
    pub offset: usize,
}

impl fmt::Display for Torn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unreadable record at offset {}", self.offset)
    }
}

/// Decodes every record in `buf`. Returns the records and, if the buffer does not end
/// exactly after the last good record, where the bad part starts.
pub fn decode_all(buf: &[u8]) -> (Vec<Decoded<'_>>, Option<Torn>) {
    let mut records = Vec::new();
    let mut at = 0;

    while at < buf.len() {
        match decode_one(buf, at) {
            Some((record, next)) => {
                records.push(record);
                at = next;
            }
            None => return (records, Some(Torn { offset: at })),
        }
    }
    (records, None)
}

fn decode_one(buf: &[u8], at: usize) -> Option<(Decoded<'_>, usize)> {
    let header = buf.get(at..at + HEADER_LEN)?;
    if header[0] != MAGIC {
        return None;
    }
    let kind = Kind::from_u8(header[1])?;
    let len = u32::from_le_bytes([header[2], header[3], header[4], header[5]]) as usize;
    if len > MAX_PAYLOAD {
        return None;
    }

    let payload_at = at + HEADER_LEN;
    let end = payload_at + len;
    let trailer = buf.get(end..end + TRAILER_LEN)?;
    let stored = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
    if crc32fast::hash(&buf[at + 1..end]) != stored {
        return None;
    }

    let record = Decoded { kind, payload: &buf[payload_at..end], payload_at };
    Some((record, end + TRAILER_LEN))
}

/// Builds and reads the length-prefixed fields inside a payload.
pub struct Fields<'a> {
    buf: &'a [u8],
}

impl<'a> Fields<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Fields { buf }
    }

    pub fn u8(&mut self) -> Option<u8> {
        let (&first, rest) = self.buf.split_first()?;
        self.buf = rest;
        Some(first)
    }

    pub fn u64(&mut self) -> Option<u64> {
        let bytes = self.take(8)?;
        Some(u64::from_le_bytes(bytes.try_into().ok()?))
    }

    /// A field written by [`put_bytes`].
    pub fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = self.take(4)?;
        let len = u32::from_le_bytes(len.try_into().ok()?) as usize;
        self.take(len)
    }

    /// Whatever is left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }
}

/// Writes a length-prefixed field, read back by [`Fields::bytes`].
pub fn put_bytes(out: &mut Vec<u8>, field: &[u8]) {
    out.extend_from_slice(&(field.len() as u32).to_le_bytes());
    out.extend_from_slice(field);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_several_records() {
        let mut buf = Vec::new();
        let at = encode(Kind::Commit, &[b"hello", b" world"], &mut buf);
        encode(Kind::Done, &[b"x"], &mut buf);

        let (records, torn) = decode_all(&buf);
        assert_eq!(torn, None);
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].kind, Kind::Commit);
        assert_eq!(records[0].payload, b"hello world");
        assert_eq!(records[0].payload_at, at);
        assert_eq!(records[1].kind, Kind::Done);
    }

    #[test]
    fn every_truncation_is_detected_and_keeps_the_good_prefix() {
        let mut buf = Vec::new();
        encode(Kind::Update, &[b"first"], &mut buf);
        let first_len = buf.len();
        encode(Kind::Update, &[b"second record"], &mut buf);

        for cut in first_len + 1..buf.len() {
            let (records, torn) = decode_all(&buf[..cut]);
            assert_eq!(records.len(), 1, "cut at {cut}");
            assert_eq!(torn, Some(Torn { offset: first_len }));
        }
    }

    #[test]
    fn a_flipped_bit_is_detected() {
        let mut buf = Vec::new();
        encode(Kind::Commit, &[b"payload bytes"], &mut buf);
        for i in 0..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x10;
            let (records, torn) = decode_all(&bad);
            assert!(records.is_empty(), "flip at {i} went unnoticed");
            assert_eq!(torn, Some(Torn { offset: 0 }));
        }
    }

    #[test]
    fn zero_fill_after_records_is_torn_not_misread() {
        let mut buf = Vec::new();
        encode(Kind::Done, &[b"q"], &mut buf);
        let good = buf.len();
        buf.extend_from_slice(&[0; 64]);
        let (records, torn) = decode_all(&buf);
        assert_eq!(records.len(), 1);
        assert_eq!(torn, Some(Torn { offset: good }));
    }

    #[test]
    fn fields_round_trip() {
        let mut out = Vec::new();
        out.push(7);
        out.extend_from_slice(&42u64.to_le_bytes());
        put_bytes(&mut out, b"abc");
        out.extend_from_slice(b"tail");

        let mut fields = Fields::new(&out);
        assert_eq!(fields.u8(), Some(7));
        assert_eq!(fields.u64(), Some(42));
        assert_eq!(fields.bytes(), Some(&b"abc"[..]));
        assert_eq!(fields.rest(), b"tail");
        assert_eq!(fields.u8(), None);
    }
}
