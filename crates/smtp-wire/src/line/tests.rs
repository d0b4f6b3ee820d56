use proptest::prelude::*;

use super::*;

/// An owned `Line`, to collect events across buffer changes.
#[derive(Debug, PartialEq, Eq)]
enum Event {
    Complete(Vec<u8>),
    TooLong,
}

/// Feeds `input` in pieces of the given sizes through a buffer that the
/// caller drains as told, as a session would. Returns the events and the
/// largest the buffer ever grew.
fn read_split(max_len: usize, input: &[u8], sizes: &[usize]) -> (Vec<Event>, usize) {
    let mut reader = LineReader::new(max_len);
    let mut buf = Vec::new();
    let mut events = Vec::new();
    let mut peak = 0;
    let mut rest = input;

    for &size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (piece, after) = rest.split_at(size.clamp(1, rest.len()));
        rest = after;
        buf.extend_from_slice(piece);
        peak = peak.max(buf.len());
        drain(&mut reader, &mut buf, &mut events);
    }
    (events, peak)
}

fn drain(reader: &mut LineReader, buf: &mut Vec<u8>, events: &mut Vec<Event>) {
    loop {
        let (line, used) = reader.next(buf);
        let event = line.map(|line| match line {
            Line::Complete(bytes) => Event::Complete(bytes.to_vec()),
            Line::TooLong => Event::TooLong,
        });
        buf.drain(..used);
        match event {
            Some(event) => events.push(event),
            None if used == 0 => return,
            None => {}
        }
    }
}

/// The reference: split at every LF; a line with its ending longer than
/// `max_len` is TooLong; an unfinished last line gives nothing.
fn reference(max_len: usize, input: &[u8]) -> Vec<Event> {
    let mut lines: Vec<&[u8]> = input.split_inclusive(|&b| b == b'\n').collect();
    if !input.ends_with(b"\n") {
        lines.pop();
    }

    let event = |line: &[u8]| match line.len() > max_len {
        true => Event::TooLong,
        false => {
            let line = &line[..line.len() - 1];
            Event::Complete(line.strip_suffix(b"\r").unwrap_or(line).to_vec())
        }
    };
    lines.into_iter().map(event).collect()
}

#[test]
fn reads_lines() {
    let input = b"EHLO x\r\nMAIL FROM:<a@b>\nNOOP\r\r\n\r\nQUI";
    let want = [
        Event::Complete(b"EHLO x".to_vec()),
        Event::Complete(b"MAIL FROM:<a@b>".to_vec()),
        Event::Complete(b"NOOP\r".to_vec()),
        Event::Complete(b"".to_vec()),
    ];
    assert_eq!(read_split(100, input, &[1000]).0, want);
}

#[test]
fn limit_counts_the_line_ending() {
    let mut reader = LineReader::new(6);
    assert_eq!(reader.next(b"ABCD\r\n"), (Some(Line::Complete(b"ABCD")), 6));
    assert_eq!(reader.next(b"ABCDE\r"), (None, 6));
    assert_eq!(reader.next(b""), (None, 0));
    assert_eq!(reader.next(b"\n"), (Some(Line::TooLong), 1));
    assert_eq!(reader.next(b"AB\n"), (Some(Line::Complete(b"AB")), 3));
}

#[test]
fn overlong_line_is_discarded_as_it_comes() {
    let mut reader = LineReader::new(4);
    assert_eq!(reader.next(b"abc"), (None, 0));
    assert_eq!(reader.next(b"abcd"), (None, 4));
    assert_eq!(reader.next(b"efgh"), (None, 4));
    assert_eq!(reader.next(b"ij\r\nNOOP"), (Some(Line::TooLong), 4));
    assert_eq!(reader.next(b"NOO"), (None, 0));
    // Four bytes without an LF can only become a five-byte line.
    assert_eq!(reader.next(b"NOOP"), (None, 4));
}

#[test]
fn overlong_line_with_its_end_in_the_buffer() {
    let mut reader = LineReader::new(4);
    assert_eq!(reader.next(b"abcdef\nX\n"), (Some(Line::TooLong), 7));
    assert_eq!(reader.next(b"X\n"), (Some(Line::Complete(b"X")), 2));
}

fn line_bytes() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![3 => Just(b'\n'), 2 => Just(b'\r'), 6 => Just(b'a'), 1 => any::<u8>()];
    prop::collection::vec(byte, 0..300)
}

proptest! {
    #[test]
    fn splits_do_not_matter(
        max_len in 1usize..40,
        input in line_bytes(),
        sizes in prop::collection::vec(1usize..50, 1..10),
    ) {
        let (events, peak) = read_split(max_len, &input, &sizes);
        prop_assert_eq!(events, reference(max_len, &input));

        // What stays in the buffer is under the limit, so it grows by one
        // read at most.
        let largest_read = sizes.iter().max().copied().unwrap_or(0);
        prop_assert!(peak < max_len + largest_read, "peak {}", peak);
    }
}
