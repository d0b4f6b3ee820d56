use proptest::prelude::*;

use super::*;

/// Feeds `input` in the pieces that `cuts` marks, as a session would, and
/// returns the output, the bytes consumed and whether data ended.
fn decode_split(input: &[u8], cuts: &[usize]) -> (Vec<u8>, usize, bool, bool) {
    let mut decoder = DataDecoder::new();
    let mut out = Vec::new();
    let mut consumed = 0;

    for piece in pieces(input, cuts) {
        let decoded = decoder.decode(piece, &mut out);
        consumed += decoded.consumed;
        if decoded.end {
            return (out, consumed, true, decoder.bare_line_ending());
        }
        assert_eq!(decoded.consumed, piece.len(), "stopped early without an end");
    }
    (out, consumed, false, decoder.bare_line_ending())
}

/// Cuts `input` at the given offsets (taken modulo its length, in any order).
fn pieces<'a>(input: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    at.push(0);
    at.push(input.len());
    at.sort_unstable();
    at.windows(2).map(|w| &input[w[0]..w[1]]).collect()
}

fn decode_whole(input: &[u8]) -> (Vec<u8>, usize, bool, bool) {
    decode_split(input, &[])
}

/// The reference: where data ends, by the plainest reading of RFC 5321.
fn reference_end(input: &[u8]) -> Option<usize> {
    if input.starts_with(b".\r\n") {
        return Some(3);
    }
    let at = input.windows(5).position(|w| w == b"\r\n.\r\n")?;
    Some(at + 5)
}

/// The reference output: the content with the dot dropped at each line start.
/// A CR held after `.` at the end of unfinished input is not output yet.
fn reference_output(input: &[u8], end: Option<usize>) -> Vec<u8> {
    let content = match end {
        Some(end) => &input[..end - 3],
        None => input,
    };
    let line_start = |i: usize| i == 0 || content[..i].ends_with(b"\r\n");
    let keep = |&(i, &b): &(usize, &u8)| !(b == b'.' && line_start(i));
    let mut out: Vec<u8> = content.iter().enumerate().filter(keep).map(|(_, &b)| b).collect();

    let held = content.len() >= 2 && content.ends_with(b".\r") && line_start(content.len() - 2);
    if end.is_none() && held {
        out.pop();
    }
    out
}

/// Bare CR or LF among `bytes`; a final CR is not judged yet.
fn reference_bare(bytes: &[u8]) -> bool {
    let bare_cr = bytes.windows(2).any(|w| w[0] == b'\r' && w[1] != b'\n');
    let bare_lf = bytes.iter().enumerate().any(|(i, &b)| {
        let after_cr = i > 0 && bytes[i - 1] == b'\r';
        b == b'\n' && !after_cr
    });
    bare_cr || bare_lf
}

#[test]
fn decodes_simple_messages() {
    let cases: [(&[u8], &[u8], usize); 7] = [
        (b"Hello\r\n.\r\n", b"Hello\r\n", 10),
        (b".\r\n", b"", 3),
        (b".\r\nQUIT\r\n", b"", 3),
        (b"\r\n.\r\n", b"\r\n", 5),
        (b"..x\r\n...\r\n.\r\n", b".x\r\n..\r\n", 13),
        (b"a\r\n.b\r\n.\r\nQUIT\r\n", b"a\r\nb\r\n", 10),
        (b"a.\r\n.\r\n", b"a.\r\n", 7),
    ];
    for (input, want, consumed) in cases {
        let got = decode_whole(input);
        assert_eq!(got, (want.to_vec(), consumed, true, false), "{input:?}");
    }
}

#[test]
fn unfinished_input_is_all_consumed() {
    let (out, consumed, end, _) = decode_whole(b"abc\r\n.");
    assert_eq!((out, consumed, end), (b"abc\r\n".to_vec(), 6, false));

    let (out, consumed, end, _) = decode_whole(b"abc\r\n.\r");
    assert_eq!((out, consumed, end), (b"abc\r\n".to_vec(), 7, false));
}

#[test]
fn decoder_after_end_consumes_nothing() {
    let mut decoder = DataDecoder::new();
    let mut out = Vec::new();
    decoder.decode(b".\r\n", &mut out);
    let again = decoder.decode(b"more\r\n", &mut out);
    assert_eq!(again, Decoded { consumed: 0, end: true });
    assert!(out.is_empty());
}

/// The SMTP smuggling family: none of these ends data, all are bare endings.
const SMUGGLING: [&[u8]; 11] = [
    b"\n.\n",
    b"\n.\r\n",
    b"\r.\r",
    b"\r.\r\n",
    b"\r\n.\n",
    b"\r\n.\rx",
    b"\r\n.\r\r\n",
    b"\n.\r",
    b"\r\r\n.\r\r\n",
    b"\r\n\n.\r\n",
    b"\r\n.\n\r\n",
];

#[test]
fn smuggling_sequences_do_not_end_data() {
    for sequence in SMUGGLING {
        let input = [b"a", sequence, b"x"].concat();
        let (_, consumed, end, bare) = decode_whole(&input);
        assert!(!end && bare, "{sequence:?}");
        assert_eq!(consumed, input.len());
    }
}

#[test]
fn smuggling_at_the_start_does_not_end_data() {
    for start in [&b".\n"[..], b".\rx", b".\r\r\n", b"\n.\r\n"] {
        let (_, _, end, bare) = decode_whole(start);
        assert!(!end && bare, "{start:?}");
    }
}

#[test]
fn dot_after_bare_lf_is_kept() {
    let (out, _, end, bare) = decode_whole(b"a\n.b\r\n.\r\n");
    assert_eq!(out, b"a\n.b\r\n");
    assert!(end && bare);
}

#[test]
fn dot_before_bare_ending_is_dropped() {
    let (out, _, end, bare) = decode_whole(b"a\r\n.\rb\r\n.\nc\r\n.\r\n");
    assert_eq!(out, b"a\r\n\rb\r\n\nc\r\n");
    assert!(end && bare);
}

#[test]
fn held_cr_across_calls() {
    let input = b"a\r\n.\rb\r\n.\r\n";
    for cut in 0..=input.len() {
        assert_eq!(decode_split(input, &[cut]), decode_whole(input), "cut {cut}");
    }
}

#[test]
fn dot_stuff_cases() {
    let cases: [(&[u8], &[u8]); 10] = [
        (b"", b".\r\n"),
        (b"a", b"a\r\n.\r\n"),
        (b"a\r\n", b"a\r\n.\r\n"),
        (b".", b"..\r\n.\r\n"),
        (b".a\r\n", b"..a\r\n.\r\n"),
        (b"a\r\n.\r\n", b"a\r\n..\r\n.\r\n"),
        (b"a.b\r\n..\r\n", b"a.b\r\n...\r\n.\r\n"),
        (b"a\nb", b"a\r\nb\r\n.\r\n"),
        (b"a\n.\n", b"a\r\n..\r\n.\r\n"),
        (b"\r.\r", b"\r\n..\r\n.\r\n"),
    ];
    for (content, want) in cases {
        let mut out = Vec::new();
        dot_stuff(content, &mut out);
        assert_eq!(out, want, "{content:?}");
    }
}

#[test]
fn bare_eol_scanner_cases() {
    let cases: [(&[&[u8]], bool); 11] = [
        (&[], false),
        (&[b"a\r\nb\r\n"], false),
        (&[b"a\r", b"\nb"], false),
        (&[b"", b"\r", b"", b"\n"], false),
        (&[b"a\r", b"b"], true),
        (&[b"a\r"], true),
        (&[b"\n"], true),
        (&[b"a\r\n", b"\n"], true),
        (&[b"a\rb\r\n"], true),
        (&[b"\r\r\n"], true),
        (&[b"a\r", b"\r\n"], true),
    ];
    for (chunks, want) in cases {
        let mut scanner = BareEolScanner::new();
        chunks.iter().for_each(|chunk| scanner.scan(chunk));
        assert_eq!(scanner.finish(), want, "{chunks:?}");
    }
}

/// Bytes biased towards the ones the decoder cares about.
fn wire_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        4 => Just(b'\r'),
        4 => Just(b'\n'),
        4 => Just(b'.'),
        2 => Just(b'a'),
        1 => any::<u8>(),
    ];
    prop::collection::vec(byte, 0..max)
}

/// Content lines without CR or LF, many of them starting with dots.
fn clean_content() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![3 => Just(b'.'), 2 => Just(b'a'), 1 => any::<u8>()];
    let line = prop::collection::vec(byte, 0..12)
        .prop_map(|line| line.into_iter().filter(|&b| b != b'\r' && b != b'\n').collect());
    let lines = prop::collection::vec(line, 0..10);
    (lines, any::<bool>()).prop_map(|(lines, crlf_at_end): (Vec<Vec<u8>>, bool)| {
        let mut content = lines.join(&b"\r\n"[..]);
        if crlf_at_end && !content.is_empty() {
            content.extend_from_slice(b"\r\n");
        }
        content
    })
}

fn cuts() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(any::<usize>(), 0..8)
}

proptest! {
    #[test]
    fn stuffed_content_decodes_back(content in clean_content(), cuts in cuts()) {
        let mut wire = Vec::new();
        dot_stuff(&content, &mut wire);

        let mut want = content.clone();
        if !want.is_empty() && !want.ends_with(b"\r\n") {
            want.extend_from_slice(b"\r\n");
        }
        let got = decode_split(&wire, &cuts);
        prop_assert_eq!(got, (want, wire.len(), true, false));
    }

    #[test]
    fn finds_the_reference_end(input in wire_bytes(200), cuts in cuts()) {
        let end = reference_end(&input);
        let (out, consumed, ended, bare) = decode_split(&input, &cuts);

        prop_assert_eq!(ended, end.is_some());
        prop_assert_eq!(consumed, end.unwrap_or(input.len()));
        prop_assert_eq!(&out, &reference_output(&input, end));
        prop_assert_eq!(bare, reference_bare(&input[..consumed]));
        prop_assert_eq!((out, consumed, ended, bare), decode_whole(&input));
    }

    #[test]
    fn smuggling_never_ends_data(
        which in 0..SMUGGLING.len(),
        before in "[a-z. ]{0,10}",
        after in "[a-z. ]{0,10}",
        cuts in cuts(),
    ) {
        // The leading `a` keeps `before` from making a `.<CRLF>` at offset 0.
        let parts = [b"a", before.as_bytes(), SMUGGLING[which], b"x", after.as_bytes()];
        let input = parts.concat();
        let (_, consumed, end, bare) = decode_split(&input, &cuts);
        prop_assert!(!end && bare);
        prop_assert_eq!(consumed, input.len());

        // The real end after it still ends data, right there.
        let input = [&input[..], b"\r\n.\r\n", b"NOOP\r\n"].concat();
        let (_, consumed, end, bare) = decode_split(&input, &cuts);
        prop_assert!(end && bare);
        prop_assert_eq!(consumed, input.len() - 6);
    }

    #[test]
    fn bare_eol_scanner_matches_reference(input in wire_bytes(100), cuts in cuts()) {
        let mut scanner = BareEolScanner::new();
        pieces(&input, &cuts).into_iter().for_each(|piece| scanner.scan(piece));
        let trailing_cr = input.last() == Some(&b'\r');
        prop_assert_eq!(scanner.finish(), reference_bare(&input) || trailing_cr);
    }
}

/// The content through a [`DotStuffer`], in the pieces that `cuts` marks.
fn stuff_split(content: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut stuffer = DotStuffer::new();
    let mut out = Vec::new();
    for piece in pieces(content, cuts) {
        stuffer.stuff(piece, &mut out);
    }
    stuffer.finish(&mut out);
    out
}

#[test]
fn dot_stuffer_across_awkward_cuts() {
    // A CRLF cut between its CR and LF, and a dot alone in a piece.
    let cases: [(&[&[u8]], &[u8]); 6] = [
        (&[], b".\r\n"),
        (&[b"a\r", b"\n.b"], b"a\r\n..b\r\n.\r\n"),
        (&[b"a\r", b"", b"\n", b".", b"\r\n"], b"a\r\n..\r\n.\r\n"),
        (&[b"a\r", b"\r\n"], b"a\r\n\r\n.\r\n"),
        (&[b"a\r", b".\n"], b"a\r\n..\r\n.\r\n"),
        (&[b"x", b".", b"y"], b"x.y\r\n.\r\n"),
    ];
    for (chunks, want) in cases {
        let mut stuffer = DotStuffer::new();
        let mut out = Vec::new();
        chunks.iter().for_each(|chunk| stuffer.stuff(chunk, &mut out));
        stuffer.finish(&mut out);
        assert_eq!(out, want, "{chunks:?}");
    }
}

proptest! {
    #[test]
    fn dot_stuffer_equals_dot_stuff(content in wire_bytes(200), cuts in cuts()) {
        let mut want = Vec::new();
        dot_stuff(&content, &mut want);
        prop_assert_eq!(stuff_split(&content, &cuts), want);
    }

    #[test]
    fn dot_stuffer_output_is_at_most_twice_the_input(content in wire_bytes(200)) {
        let mut stuffer = DotStuffer::new();
        let mut out = Vec::new();
        stuffer.stuff(&content, &mut out);
        prop_assert!(out.len() <= 2 * content.len());
    }
}
