//! The path grammar of RFC 5321 §4.1.2 and §4.1.3, with the UTF-8 widening of
//! RFC 6531 §3.3: any non-ASCII character that is not a control may appear in
//! an atom, a quoted string or a domain label.
//!
//! Each reader takes the text at the start of a `&str` and returns its value
//! with the rest, so readers chain without indices. The input is `&str`, so it
//! is valid UTF-8 and slicing at an ASCII delimiter never splits a character.

use std::str::FromStr;

use super::{AddressError, Domain, ForwardPath, Mailbox, ReversePath};

/// RFC 5321 §4.5.3.1.3, counting the brackets.
const MAX_PATH: usize = 256;
/// RFC 5321 §4.5.3.1.2.
const MAX_DOMAIN: usize = 255;
/// RFC 1035 §2.3.4.
const MAX_LABEL: usize = 63;

/// What can stand between `<` and `>` before the caller says which kind of
/// path it wants.
enum Path {
    Null,
    Postmaster,
    Mailbox(Mailbox),
}

/// Reads the reverse-path at the start of `s` (`<>` or `<mailbox>`) and
/// returns it with the text after the closing `>`.
pub fn parse_reverse_path(s: &str) -> Result<(ReversePath, &str), AddressError> {
    let (path, rest) = path(s)?;
    let reverse = match path {
        Path::Null => ReversePath::Null,
        Path::Mailbox(mailbox) => ReversePath::Mailbox(mailbox),
        // `<Postmaster>` has no domain, so it is no sender address.
        Path::Postmaster => return Err(AddressError::MissingDomain),
    };
    Ok((reverse, rest))
}

/// Reads the forward-path at the start of `s` (`<Postmaster>` or
/// `<mailbox>`) and returns it with the text after the closing `>`.
pub fn parse_forward_path(s: &str) -> Result<(ForwardPath, &str), AddressError> {
    let (path, rest) = path(s)?;
    let forward = match path {
        Path::Null => return Err(AddressError::EmptyPath),
        Path::Mailbox(mailbox) => ForwardPath::Mailbox(mailbox),
        Path::Postmaster => ForwardPath::Postmaster,
    };
    Ok((forward, rest))
}

impl FromStr for Mailbox {
    type Err = AddressError;

    /// Parses `local@domain` with nothing around it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() > MAX_PATH - 2 {
            return Err(AddressError::PathTooLong);
        }
        let (mailbox, rest) = mailbox(s)?;
        expect_end(rest)?;
        Ok(mailbox)
    }
}

impl FromStr for Domain {
    type Err = AddressError;

    /// Parses a domain name or an address literal with nothing around it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (domain, rest) = domain(s)?;
        expect_end(rest)?;
        Ok(domain)
    }
}

fn expect_end(rest: &str) -> Result<(), AddressError> {
    match rest.is_empty() {
        true => Ok(()),
        false => Err(bad_char(rest, AddressError::BadDomain)),
    }
}

fn path(s: &str) -> Result<(Path, &str), AddressError> {
    let inner = s.strip_prefix('<').ok_or(AddressError::MissingBrackets)?;
    let (path, inner_rest) = path_content(inner)?;

    let Some(rest) = inner_rest.strip_prefix('>') else {
        return Err(match inner_rest.is_empty() {
            true => AddressError::MissingBrackets,
            false => bad_char(inner_rest, AddressError::BadDomain),
        });
    };

    if s.len() - rest.len() > MAX_PATH {
        return Err(AddressError::PathTooLong);
    }
    Ok((path, rest))
}

fn path_content(inner: &str) -> Result<(Path, &str), AddressError> {
    if inner.starts_with('>') {
        return Ok((Path::Null, inner));
    }

    if is_postmaster(inner) {
        return Ok((Path::Postmaster, &inner["postmaster".len()..]));
    }

    let after_route = match inner.starts_with('@') {
        true => source_route(inner)?,
        false => inner,
    };
    let (mailbox, rest) = mailbox(after_route)?;
    Ok((Path::Mailbox(mailbox), rest))
}

/// `Postmaster>` in any case. The bare `<Postmaster>` is the only path without
/// a domain that RFC 5321 §4.1.1.3 allows.
fn is_postmaster(inner: &str) -> bool {
    let wanted = b"postmaster>";
    let head = inner.as_bytes().get(..wanted.len());
    head.is_some_and(|head| head.eq_ignore_ascii_case(wanted))
}

/// Skips `@a.example,@b.example:`, checking each domain; returns what follows
/// the colon. The route itself is dropped (RFC 5321 §C).
fn source_route(mut s: &str) -> Result<&str, AddressError> {
    loop {
        let after_at = s.strip_prefix('@').ok_or(AddressError::BadSourceRoute)?;
        let (name, rest) = take_domain_name(after_at);
        check_domain_name(name).map_err(|_| AddressError::BadSourceRoute)?;

        match rest.as_bytes().first() {
            Some(b',') => s = &rest[1..],
            Some(b':') => return Ok(&rest[1..]),
            _ => return Err(AddressError::BadSourceRoute),
        }
    }
}

fn mailbox(s: &str) -> Result<(Mailbox, &str), AddressError> {
    let (local, rest) = local_part(s)?;

    let Some(rest) = rest.strip_prefix('@') else {
        return Err(match rest.is_empty() || rest.starts_with('>') {
            true => AddressError::MissingDomain,
            false => bad_char(rest, AddressError::BadLocalPart),
        });
    };

    let (domain, rest) = domain(rest)?;
    Ok((Mailbox { local, domain }, rest))
}

fn local_part(s: &str) -> Result<(String, &str), AddressError> {
    match s.strip_prefix('"') {
        Some(quoted) => quoted_string(quoted),
        None => dot_string(s),
    }
}

fn dot_string(s: &str) -> Result<(String, &str), AddressError> {
    let end = s.find(|c| !is_atext(c) && c != '.').unwrap_or(s.len());
    let (local, rest) = s.split_at(end);

    if local.is_empty() {
        return Err(match rest.starts_with('@') {
            true => AddressError::EmptyLocalPart,
            false => bad_char(rest, AddressError::BadLocalPart),
        });
    }
    if !is_dot_string(local) {
        return Err(AddressError::BadLocalPart);
    }
    Ok((local.to_owned(), rest))
}

/// Reads a quoted string after its opening quote and returns its content
/// with the escapes undone.
fn quoted_string(s: &str) -> Result<(String, &str), AddressError> {
    let mut local = String::new();
    let mut chars = s.char_indices();

    while let Some((i, c)) = chars.next() {
        match c {
            '"' if local.is_empty() => return Err(AddressError::EmptyLocalPart),
            '"' => return Ok((local, &s[i + 1..])),
            '\\' => {
                let (_, escaped) = chars.next().ok_or(AddressError::UnbalancedQuote)?;
                local.push(quoted_pair(escaped)?);
            }
            c if is_qtext(c) => local.push(c),
            c if c.is_control() => return Err(AddressError::ControlCharacter),
            _ => return Err(AddressError::BadLocalPart),
        }
    }
    Err(AddressError::UnbalancedQuote)
}

/// RFC 5321 quoted-pairSMTP: a backslash before a printable ASCII character.
fn quoted_pair(escaped: char) -> Result<char, AddressError> {
    match escaped {
        ' '..='~' => Ok(escaped),
        c if c.is_control() => Err(AddressError::ControlCharacter),
        _ => Err(AddressError::BadLocalPart),
    }
}

fn domain(s: &str) -> Result<(Domain, &str), AddressError> {
    if let Some(literal) = s.strip_prefix('[') {
        return address_literal(literal);
    }

    let (name, rest) = take_domain_name(s);
    check_domain_name(name)?;
    Ok((Domain::Name(name.to_owned()), rest))
}

/// Splits off the longest prefix made of label characters and dots; the
/// caller checks its shape and what follows.
fn take_domain_name(s: &str) -> (&str, &str) {
    let end = s.find(|c| !is_label_char(c) && c != '.');
    s.split_at(end.unwrap_or(s.len()))
}

fn check_domain_name(name: &str) -> Result<(), AddressError> {
    if name.is_empty() {
        return Err(AddressError::MissingDomain);
    }
    if name.len() > MAX_DOMAIN {
        return Err(AddressError::DomainTooLong);
    }
    name.split('.').try_for_each(check_label)
}

fn check_label(label: &str) -> Result<(), AddressError> {
    if label.len() > MAX_LABEL {
        return Err(AddressError::LabelTooLong);
    }
    if label.is_empty() || label.starts_with('-') || label.ends_with('-') {
        return Err(AddressError::BadDomain);
    }
    Ok(())
}

/// Reads `...]` after the opening bracket.
fn address_literal(s: &str) -> Result<(Domain, &str), AddressError> {
    let end = s.find(']').ok_or(AddressError::BadAddressLiteral)?;
    let domain = literal_body(&s[..end])?;
    Ok((domain, &s[end + 1..]))
}

fn literal_body(body: &str) -> Result<Domain, AddressError> {
    let bad = |_| AddressError::BadAddressLiteral;
    let Some((tag, content)) = body.split_once(':') else {
        return body.parse().map(Domain::Ipv4).map_err(bad);
    };

    // The tag is case-insensitive like every ABNF string literal.
    if tag.eq_ignore_ascii_case("IPv6") {
        return content.parse().map(Domain::Ipv6).map_err(bad);
    }

    let content_ok = !content.is_empty() && content.bytes().all(is_dcontent);
    if !is_ldh_str(tag) || !content_ok {
        return Err(AddressError::BadAddressLiteral);
    }
    let (tag, content) = (tag.to_owned(), content.to_owned());
    Ok(Domain::General { tag, content })
}

/// The error for an unexpected character: a control gets its own reason
/// because it usually means a broken or hostile client.
fn bad_char(rest: &str, otherwise: AddressError) -> AddressError {
    match rest.chars().next() {
        Some(c) if c.is_control() => AddressError::ControlCharacter,
        _ => otherwise,
    }
}

/// True when `s` can stand unquoted as a local part.
pub(super) fn is_dot_string(s: &str) -> bool {
    let atom_ok = |atom: &str| !atom.is_empty() && atom.chars().all(is_atext);
    s.split('.').all(atom_ok)
}

fn is_utf8_non_ascii(c: char) -> bool {
    !c.is_ascii() && !c.is_control()
}

/// RFC 5322 atext, widened by RFC 6531.
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || is_utf8_non_ascii(c)
}

/// RFC 5321 qtextSMTP, widened by RFC 6531: printable ASCII but `"` and `\`.
fn is_qtext(c: char) -> bool {
    matches!(c, ' '..='~') && c != '"' && c != '\\' || is_utf8_non_ascii(c)
}

/// Letters, digits and hyphens; any non-ASCII character for U-labels.
fn is_label_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || is_utf8_non_ascii(c)
}

/// RFC 5321 Ldh-str: letters, digits and hyphens, ending in a letter or digit.
fn is_ldh_str(s: &str) -> bool {
    let chars_ok = s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    chars_ok && s.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
}

/// RFC 5321 dcontent: printable ASCII but `[`, `\` and `]`.
fn is_dcontent(b: u8) -> bool {
    matches!(b, 33..=90 | 94..=126)
}
