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
