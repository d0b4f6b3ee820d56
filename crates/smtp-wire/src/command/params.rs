//! ESMTP parameters after a MAIL or RCPT path (RFC 5321 §4.1.2 esmtp-param):
//! space-separated `KEYWORD[=value]`, keyword case-insensitive.
//!
//! Order of errors, first bad parameter first: a malformed keyword or value
//! and a repeated parameter are `Syntax`; a well-formed keyword we do not
//! know is `UnknownParameter`.

use super::{Body, CommandError, MailParams, RcptParams, syntax, words};

/// RFC 1870 and RFC 3030 allow up to 20 digits.
const MAX_DIGITS: usize = 20;

pub(super) fn mail(text: &str) -> Result<MailParams, CommandError> {
    let mut params = MailParams::default();
    for word in words(text) {
        let (keyword, value) = split_param(word)?;
        apply_mail_param(&mut params, keyword, value)?;
    }
    Ok(params)
}

pub(super) fn rcpt(text: &str) -> Result<RcptParams, CommandError> {
    let Some(word) = words(text).next() else {
        return Ok(RcptParams {});
    };
    let (keyword, _) = split_param(word)?;
    Err(CommandError::UnknownParameter(keyword.to_owned()))
}

fn apply_mail_param(
    params: &mut MailParams,
    keyword: &str,
    value: Option<&str>,
) -> Result<(), CommandError> {
    if keyword.eq_ignore_ascii_case("SIZE") {
        let size = size_value(value)?;
        set_once(&mut params.size, size)
    } else if keyword.eq_ignore_ascii_case("BODY") {
        let body = body_value(value)?;
        set_once(&mut params.body, body)
    } else if keyword.eq_ignore_ascii_case("SMTPUTF8") {
        smtputf8(params, value)
    } else if keyword.eq_ignore_ascii_case("TRANSID") {
        let transid = transid_value(value)?;
        set_once(&mut params.transid, transid)
    } else {
        Err(CommandError::UnknownParameter(keyword.to_owned()))
    }
}

fn set_once<T>(slot: &mut Option<T>, value: T) -> Result<(), CommandError> {
    match slot.replace(value) {
        None => Ok(()),
        Some(_) => Err(syntax("repeated parameter")),
    }
}

fn smtputf8(params: &mut MailParams, value: Option<&str>) -> Result<(), CommandError> {
    if value.is_some() {
        return Err(syntax("SMTPUTF8 takes no value"));
    }
    if params.smtputf8 {
        return Err(syntax("repeated parameter"));
    }
    params.smtputf8 = true;
    Ok(())
}

/// RFC 1845 §2: `<local@domain>`, printable ASCII without spaces or angle brackets. The
/// length limit is draft-fanf-smtp-rfc1845bis's 256, more lenient than RFC 1845's 80.
fn transid_value(value: Option<&str>) -> Result<String, CommandError> {
    let value = value.ok_or(syntax("TRANSID needs a value"))?;
    let inner = value
        .strip_prefix('<')
        .and_then(|v| v.strip_suffix('>'))
        .ok_or(syntax("TRANSID must be <local@domain>"))?;
    let valid_char = |c: char| c.is_ascii_graphic() && c != '<' && c != '>';
    let well_formed = match inner.rsplit_once('@') {
        Some((local, domain)) => !local.is_empty() && !domain.is_empty(),
        None => false,
    };
    if inner.len() > 256 || !well_formed || !inner.chars().all(valid_char) {
        return Err(syntax("TRANSID must be <local@domain>"));
    }
    Ok(inner.to_owned())
}

/// A size the client declares is only a hint to refuse early, so one too big
/// for u64 becomes u64::MAX and is refused as too large, not as bad syntax.
fn size_value(value: Option<&str>) -> Result<u64, CommandError> {
    let value = value.ok_or(syntax("SIZE needs a value"))?;
    if !is_digits(value) {
        return Err(syntax("invalid SIZE value"));
    }
    Ok(decimal(value).unwrap_or(u64::MAX))
}

fn body_value(value: Option<&str>) -> Result<Body, CommandError> {
    let value = value.ok_or(syntax("BODY needs a value"))?;
    let known = [
        ("7BIT", Body::SevenBit),
        ("8BITMIME", Body::EightBitMime),
        ("BINARYMIME", Body::BinaryMime),
    ];
    let found = known.iter().find(|(name, _)| name.eq_ignore_ascii_case(value));
    found.map(|&(_, body)| body).ok_or(syntax("invalid BODY value"))
}

/// Splits `KEYWORD[=value]` and checks both against RFC 5321 §4.1.2:
/// esmtp-keyword is a letter or digit, then letters, digits and hyphens;
/// esmtp-value is printable ASCII but `=` (or UTF-8, RFC 6531 §3.3).
fn split_param(word: &str) -> Result<(&str, Option<&str>), CommandError> {
    let (keyword, value) = match word.split_once('=') {
        Some((keyword, value)) => (keyword, Some(value)),
        None => (word, None),
    };

    if !is_keyword(keyword) {
        return Err(syntax("invalid parameter keyword"));
    }
    if value.is_some_and(|value| !is_value(value)) {
        return Err(syntax("invalid parameter value"));
    }
    Ok((keyword, value))
}

fn is_keyword(keyword: &str) -> bool {
    let mut bytes = keyword.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphanumeric());
    first_ok && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn is_value(value: &str) -> bool {
    let char_ok = |c: char| matches!(c, '!'..='<' | '>'..='~') || !c.is_ascii();
    !value.is_empty() && value.chars().all(char_ok)
}

fn is_digits(s: &str) -> bool {
    (1..=MAX_DIGITS).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

/// Reads 1 to 20 ASCII digits; `None` for anything else or past u64::MAX.
pub(super) fn decimal(s: &str) -> Option<u64> {
    if !is_digits(s) {
        return None;
    }
    s.bytes().try_fold(0u64, |acc, b| {
        let digit = u64::from(b - b'0');
        acc.checked_mul(10)?.checked_add(digit)
    })
}
