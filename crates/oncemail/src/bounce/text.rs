//! Outside text made safe for one header field or one line of a text part.
//!
//! Every input here is taken to be hostile. What comes out holds no control character
//! (CR and LF above all), and [`fold`] makes lines of at most [`MAX_LINE`] octets, so
//! nothing passed through can end a field early, start one of its own, or stand alone
//! on a line where a MIME boundary could be read.

/// Octets a line may hold before its CRLF (RFC 5322 §2.1.1).
pub const MAX_LINE: usize = 998;

/// The width folded lines keep to when their words allow it (RFC 5322 §2.1.1).
const WIDTH: usize = 78;

/// The longest run of a word without a space that one line takes. With the longest
/// field name we put before it, a line still fits in [`MAX_LINE`].
const MAX_PIECE: usize = 900;

/// `text` as one line of words: each control character becomes a space, then every run
/// of white space, line breaks included, one space.
pub fn one_line(text: &str) -> String {
    let spaced: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    spaced.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `text` with each non-ASCII character as `?`, for the parts that must stay 7-bit.
pub fn ascii(text: &str) -> String {
    text.chars().map(|c| if c.is_ascii() { c } else { '?' }).collect()
}

/// A host name for a `dns;` field or a Message-ID: letters, digits and the few
/// characters of names and address literals; anything else becomes `?`.
pub fn host(name: &str) -> String {
    let keep = |c: char| c.is_ascii_alphanumeric() || "-._:[]".contains(c);
    name.chars().take(255).map(|c| if keep(c) { c } else { '?' }).collect()
}

/// A recipient as a delivery-status address (RFC 3464 §2.3.2): `rfc822;` when it is
/// ASCII; otherwise RFC 6533's `utf-8;` type in its 7-bit form (utf-8-addr-xtext), each
/// character outside printable ASCII, and `\`, `+` and `=`, written `\x{HEX}`. The
/// xtext form keeps message/delivery-status all ASCII, as RFC 6533 asks of it.
pub fn typed_address(address: &str) -> String {
    if address.is_ascii() {
        let shown = address.chars().map(|c| if c.is_ascii_control() { '?' } else { c });
        return format!("rfc822; {}", shown.collect::<String>());
    }

    let mut out = String::from("utf-8; ");
    for c in address.chars() {
        if c.is_ascii_graphic() && !matches!(c, '\\' | '+' | '=') {
            out.push(c);
        } else {
            out.push_str(&format!("\\x{{{:02X}}}", u32::from(c)));
        }
    }
    out
}

/// Appends `head` and the words of `text` as lines of about [`WIDTH`] columns, each
/// ending in CRLF, each continuation line starting with `indent`. A word too long for
/// a line is cut into pieces of [`MAX_PIECE`] octets, so no line exceeds [`MAX_LINE`].
///
/// `head` and `indent` carry their own trailing space if words should be set apart;
/// for a header field `indent` must start with white space, which makes the
/// continuation lines part of the field (RFC 5322 §2.2.3). `text` is expected to have
/// been through [`one_line`].
pub fn fold(head: &str, text: &str, indent: &str, out: &mut String) {
    let mut line = String::from(head);
    let mut words = 0;
    for piece in text.split(' ').flat_map(|word| pieces(word, MAX_PIECE)) {
        // A line always takes one word, however long, so that every word is placed.
        if words > 0 && columns(&line) + 1 + columns(piece) > WIDTH {
            out.push_str(&line);
            out.push_str("\r\n");
            line = String::from(indent);
            words = 0;
        }

        if words > 0 {
            line.push(' ');
        }
        line.push_str(piece);
        words += 1;
    }
    out.push_str(&line);
    out.push_str("\r\n");
}

/// `word` cut into runs of at most `max` octets, each ending on a character boundary.
/// An empty word gives none.
pub fn pieces(word: &str, max: usize) -> impl Iterator<Item = &str> {
    let mut rest = word;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }

        // A UTF-8 character is at most 4 octets, so with `max` of 4 or more this stops
        // above 0 and every call takes something.
        let mut end = rest.len().min(max.max(4));
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (piece, tail) = rest.split_at(end);
        rest = tail;
        Some(piece)
    })
}

fn columns(text: &str) -> usize {
    text.chars().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_removes_line_breaks_and_controls() {
        assert_eq!(one_line("550 no\r\nX-Bad: yes\t\0 end "), "550 no X-Bad: yes end");
        assert_eq!(one_line("a\u{2028}b\u{85}c"), "a b c");
        assert_eq!(one_line("\r\n"), "");
    }

    #[test]
    fn host_keeps_only_name_characters() {
        assert_eq!(host("mx.example.net"), "mx.example.net");
        assert_eq!(host("[IPv6:2001:db8::1]"), "[IPv6:2001:db8::1]");
        assert_eq!(host("a b>\r\n"), "a?b???");
    }

    #[test]
    fn addresses_are_typed_and_kept_seven_bit() {
        assert_eq!(typed_address("user@example.net"), "rfc822; user@example.net");
        assert_eq!(typed_address("a\r\nb@x"), "rfc822; a??b@x");
        assert_eq!(
            typed_address("jörg+x=y@bücher.example"),
            "utf-8; j\\x{F6}rg\\x{2B}x\\x{3D}y@b\\x{FC}cher.example"
        );
        assert_eq!(typed_address("δ\\ 😀@x"), "utf-8; \\x{3B4}\\x{5C}\\x{20}\\x{1F600}@x");
    }

    #[test]
    fn fold_keeps_lines_narrow_and_marks_continuations() {
        let text = one_line(&"word ".repeat(60));
        let mut out = String::new();
        fold("Diagnostic-Code: smtp; ", &text, " ", &mut out);

        let lines: Vec<&str> = out.split_terminator("\r\n").collect();
        assert!(lines.len() > 3);
        assert!(lines[0].starts_with("Diagnostic-Code: smtp; word word"));
        assert!(lines[1..].iter().all(|l| l.starts_with(" word")));
        assert!(lines.iter().all(|l| l.len() <= WIDTH));
        assert_eq!(out.matches("word").count(), 60);
    }

    #[test]
    fn fold_cuts_a_word_longer_than_a_line() {
        let word = "é".repeat(2000);
        let mut out = String::new();
        fold("Final-Recipient: ", &word, " ", &mut out);

        let lines: Vec<&str> = out.split_terminator("\r\n").collect();
        assert!(lines.len() >= 5);
        assert!(lines.iter().all(|l| l.len() <= MAX_LINE));
        assert_eq!(out.matches('é').count(), 2000);
    }

    #[test]
    fn fold_of_nothing_is_the_head_alone() {
        let mut out = String::new();
        fold("Head: ", "", " ", &mut out);
        assert_eq!(out, "Head: \r\n");
    }
}
