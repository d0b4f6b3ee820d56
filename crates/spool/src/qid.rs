//! Queue IDs: short, unique, time-ordered names for accepted messages.
//!
//! A queue ID is 64 bits, microseconds since the Unix epoch shifted left by 8 bits plus a
//! counter, written as 13 characters of Crockford base32 (digits and capitals without
//! I, L, O, U). IDs from one process are strictly increasing; after a restart the spool
//! raises the floor to the largest ID it recovered, so a clock that went backwards cannot
//! hand out an ID twice.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const LEN: usize = 13;

static LAST: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueId(u64);

impl QueueId {
    /// A fresh ID, larger than every ID handed out or recovered before in this process.
    pub fn generate() -> QueueId {
        let now = now_micros() << 8;
        let mut prev = LAST.load(Ordering::Relaxed);
        loop {
            let next = now.max(prev + 1);
            match LAST.compare_exchange_weak(prev, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return QueueId(next),
                Err(actual) => prev = actual,
            }
        }
    }

    /// Makes sure later [`QueueId::generate`] calls return IDs above `seen`.
    pub fn observe(seen: QueueId) {
        LAST.fetch_max(seen.0, Ordering::Relaxed);
    }

    /// Parses the 13-character form; `None` for anything else.
    pub fn parse(text: &str) -> Option<QueueId> {
        if text.len() != LEN {
            return None;
        }
        let mut value: u64 = 0;
        for byte in text.bytes() {
            let digit = ALPHABET.iter().position(|&c| c == byte.to_ascii_uppercase())?;
            value = value.checked_mul(32)?.checked_add(digit as u64)?;
        }
        Some(QueueId(value))
    }

    /// The ID as stored in spool records.
    pub fn raw(self) -> u64 {
        self.0
    }

    pub(crate) fn from_raw(raw: u64) -> QueueId {
        QueueId(raw)
    }

    /// Microseconds since the Unix epoch when the ID was made.
    pub fn unix_micros(self) -> u64 {
        self.0 >> 8
    }
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = [0u8; LEN];
        let mut value = self.0;
        for slot in out.iter_mut().rev() {
            *slot = ALPHABET[(value % 32) as usize];
            value /= 32;
        }
        // The alphabet is ASCII, so this cannot fail.
        f.write_str(std::str::from_utf8(&out).map_err(|_| fmt::Error)?)
    }
}

fn now_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_increase_and_round_trip() {
        let a = QueueId::generate();
        let b = QueueId::generate();
        assert!(b > a);
        assert_eq!(a.to_string().len(), LEN);
        assert_eq!(QueueId::parse(&a.to_string()), Some(a));
        assert!(a.to_string() < b.to_string(), "text order follows time order");
    }

    #[test]
    fn observe_raises_the_floor() {
        let far = QueueId((now_micros() + 3_600_000_000) << 8);
        QueueId::observe(far);
        assert!(QueueId::generate() > far);
    }

    #[test]
    fn parse_rejects_junk() {
        assert_eq!(QueueId::parse("short"), None);
        assert_eq!(QueueId::parse("0000000000OOO"), None);
        assert_eq!(QueueId::parse("ZZZZZZZZZZZZZ"), None, "overflows 64 bits");
    }
}
