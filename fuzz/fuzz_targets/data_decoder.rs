//! `DataDecoder` against a plain model of RFC 5321 end of data, with the
//! input cut into chunks chosen by the fuzzer: the decoder must end exactly
//! where the model does, consume nothing past it, and give the same output
//! and bare-line-ending verdict however the input is cut.

#![no_main]

use libfuzzer_sys::fuzz_target;
use smtp_wire::data::DataDecoder;

/// What one run of the decoder gave.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    out: Vec<u8>,
    consumed: usize,
    end: bool,
    bare: bool,
}

fuzz_target!(|input: &[u8]| {
    // The first byte picks the chunk sizes; the rest is the DATA content.
    let Some((&seed, content)) = input.split_first() else {
        return;
    };

    let whole = decode(content, |_| content.len());
    let cut = decode(content, |i| usize::from(seed.rotate_left(i as u32) % 7) + 1);
    assert_eq!(whole, cut, "cutting changed the result");

    let end = model_end(content);
    assert_eq!(whole.end, end.is_some());
    assert_eq!(whole.consumed, end.unwrap_or(content.len()));
});

/// Decodes `content` in chunks whose sizes `size(i)` gives for chunk `i`.
fn decode(content: &[u8], size: impl Fn(usize) -> usize) -> Outcome {
    let mut decoder = DataDecoder::new();
    let mut out = Vec::new();
    let (mut consumed, mut rest, mut i) = (0, content, 0);

    while !rest.is_empty() {
        let (chunk, after) = rest.split_at(size(i).clamp(1, rest.len()));
        let decoded = decoder.decode(chunk, &mut out);
        consumed += decoded.consumed;
        if decoded.end {
            let bare = decoder.bare_line_ending();
            return Outcome { out, consumed, end: true, bare };
        }
        assert_eq!(decoded.consumed, chunk.len(), "stopped without an end");
        (rest, i) = (after, i + 1);
    }
    let bare = decoder.bare_line_ending();
    Outcome { out, consumed, end: false, bare }
}

/// The first `<CRLF>.<CRLF>`, or `.<CRLF>` at the very start.
fn model_end(content: &[u8]) -> Option<usize> {
    if content.starts_with(b".\r\n") {
        return Some(3);
    }
    let at = content.windows(5).position(|w| w == b"\r\n.\r\n")?;
    Some(at + 5)
}
