//! SMTP command lines (RFC 5321 §4.1.1, with the ESMTP extensions SIZE,
//! 8BITMIME, BINARYMIME, CHUNKING, SMTPUTF8, STARTTLS and AUTH).
//!
//! Contract:
//! - [`parse_command`] takes one line without its ending and returns a
//!   [`Command`] or a [`CommandError`] that names the reply to send. It never
//!   panics, whatever the bytes.
//! - Verbs, `FROM:`/`TO:`, parameter keywords and the BODY and LAST values are
//!   case-insensitive. Trailing spaces and tabs are ignored, and so are extra
//!   spaces between arguments and after `FROM:`/`TO:`, which common clients
//!   send.
//! - A line that is not UTF-8 or holds a control character other than HTAB
//!   is a syntax error before anything else is looked at: a CR inside a line
//!   is how command injection through bare line endings starts.
//! - `AUTH` mechanism names are returned uppercased (SASL names are
//!   case-insensitive; RFC 4422 §3.1).
//! - `Command`'s `Display` writes the canonical command line without its CRLF,
//!   for the relay client; parsing it gives the same command back.
//!
//! Limits: `SIZE` values beyond `u64::MAX` read as `u64::MAX` (the size check
//! then refuses them); a `BDAT` size beyond `u64::MAX` is a syntax error, since
//! no one could send that chunk. RCPT takes no parameters yet.

mod display;
mod params;
#[cfg(test)]
mod tests;

use std::fmt;

use crate::address::{self, ForwardPath, ReversePath};

/// The BODY parameter of MAIL (RFC 6152, RFC 3030).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Body {
    SevenBit,
    EightBitMime,
    BinaryMime,
}

/// The ESMTP parameters of MAIL that we know.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct MailParams {
    /// RFC 1870 declared message size.
    pub size: Option<u64>,
    pub body: Option<Body>,
    /// RFC 6531: the envelope or headers may hold UTF-8.
    pub smtputf8: bool,
    /// RFC 1845: the client's name for this transaction, without the angle brackets.
    pub transid: Option<String>,
}

/// The ESMTP parameters of RCPT: none supported yet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct RcptParams {}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Command {
    Ehlo(String),
    Helo(String),
    Mail { from: ReversePath, params: MailParams },
    Rcpt { to: ForwardPath, params: RcptParams },
    Data,
    Bdat { size: u64, last: bool },
    Rset,
    Noop,
    Quit,
    Vrfy(String),
    Expn(String),
    Help(Option<String>),
    StartTls,
    Auth { mechanism: String, initial: Option<String> },
}

/// Why a line is not a command we can act on. Each variant maps to one reply
/// code, given by [`CommandError::code`] and [`CommandError::enhanced`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CommandError {
    /// Unknown verb.
    Unrecognized,
    /// Malformed arguments; the text says what.
    Syntax(&'static str),
    /// The MAIL FROM path is malformed.
    BadSender(&'static str),
    /// The RCPT TO path is malformed.
    BadRecipient(&'static str),
    /// An ESMTP parameter keyword we do not know, as the client spelled it.
    UnknownParameter(String),
}

impl CommandError {
    pub fn code(&self) -> u16 {
        match self {
            Self::Unrecognized => 500,
            Self::Syntax(_) | Self::BadSender(_) | Self::BadRecipient(_) => 501,
            Self::UnknownParameter(_) => 555,
        }
    }

    /// The RFC 3463 enhanced status code.
    pub fn enhanced(&self) -> &'static str {
        match self {
            Self::Unrecognized => "5.5.1",
            Self::Syntax(_) => "5.5.2",
            Self::BadSender(_) => "5.1.7",
            Self::BadRecipient(_) => "5.1.3",
            Self::UnknownParameter(_) => "5.5.4",
        }
    }
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unrecognized => f.write_str("command not recognized"),
            Self::Syntax(why) => f.write_str(why),
            Self::BadSender(why) => write!(f, "bad sender address: {why}"),
            Self::BadRecipient(why) => write!(f, "bad recipient address: {why}"),
            Self::UnknownParameter(key) => write!(f, "unsupported parameter {key}"),
        }
    }
}

impl std::error::Error for CommandError {}

#[derive(Clone, Copy)]
enum Verb {
    Ehlo,
    Helo,
    Mail,
    Rcpt,
    Data,
    Bdat,
    Rset,
    Noop,
    Quit,
    Vrfy,
    Expn,
    Help,
    StartTls,
    Auth,
}

const VERBS: [(&str, Verb); 14] = [
    ("EHLO", Verb::Ehlo),
    ("HELO", Verb::Helo),
    ("MAIL", Verb::Mail),
    ("RCPT", Verb::Rcpt),
    ("DATA", Verb::Data),
    ("BDAT", Verb::Bdat),
    ("RSET", Verb::Rset),
    ("NOOP", Verb::Noop),
    ("QUIT", Verb::Quit),
    ("VRFY", Verb::Vrfy),
    ("EXPN", Verb::Expn),
    ("HELP", Verb::Help),
    ("STARTTLS", Verb::StartTls),
    ("AUTH", Verb::Auth),
];

type Parsed = Result<Command, CommandError>;

/// Parses one command line, given without its line ending.
pub fn parse_command(line: &[u8]) -> Parsed {
    let line = std::str::from_utf8(line).map_err(|_| syntax("line is not valid UTF-8"))?;
    if line.chars().any(|c| c.is_control() && c != '\t') {
        return Err(syntax("control character in command line"));
    }

    let line = line.trim_end_matches([' ', '\t']);
    let (word, args) = match line.split_once(' ') {
        Some((word, args)) => (word, args.trim_start_matches(' ')),
        None => (line, ""),
    };

    let verb = VERBS.iter().find(|(name, _)| name.eq_ignore_ascii_case(word));
    let Some(&(_, verb)) = verb else {
        return Err(CommandError::Unrecognized);
    };
    dispatch(verb, args)
}

fn dispatch(verb: Verb, args: &str) -> Parsed {
    match verb {
        Verb::Ehlo => one_word(args, "EHLO needs a domain").map(Command::Ehlo),
        Verb::Helo => one_word(args, "HELO needs a domain").map(Command::Helo),
        Verb::Mail => mail(args),
        Verb::Rcpt => rcpt(args),
        Verb::Data => no_argument(args, Command::Data),
        Verb::Bdat => bdat(args),
        Verb::Rset => no_argument(args, Command::Rset),
        Verb::Noop => Ok(Command::Noop),
        Verb::Quit => no_argument(args, Command::Quit),
        Verb::Vrfy => some_text(args, "VRFY needs an argument").map(Command::Vrfy),
        Verb::Expn => some_text(args, "EXPN needs an argument").map(Command::Expn),
        Verb::Help => Ok(Command::Help(Some(args.to_owned()).filter(|a| !a.is_empty()))),
        Verb::StartTls => no_argument(args, Command::StartTls),
        Verb::Auth => auth(args),
    }
}

fn syntax(why: &'static str) -> CommandError {
    CommandError::Syntax(why)
}

/// Splits arguments at runs of spaces.
fn words(args: &str) -> impl Iterator<Item = &str> {
    args.split(' ').filter(|word| !word.is_empty())
}

fn no_argument(args: &str, command: Command) -> Parsed {
    match args.is_empty() {
        true => Ok(command),
        false => Err(syntax("this command takes no argument")),
    }
}

fn one_word(args: &str, missing: &'static str) -> Result<String, CommandError> {
    let mut words = words(args);
    let word = words.next().ok_or(syntax(missing))?;
    if words.next().is_some() {
        return Err(syntax("expected exactly one argument"));
    }
    Ok(word.to_owned())
}

fn some_text(args: &str, missing: &'static str) -> Result<String, CommandError> {
    match args.is_empty() {
        true => Err(syntax(missing)),
        false => Ok(args.to_owned()),
    }
}

fn mail(args: &str) -> Parsed {
    let path = path_text(args, "FROM:").ok_or(syntax("expected FROM:<address>"))?;

    let bad_sender = |e: address::AddressError| CommandError::BadSender(e.reason());
    let (from, rest) = address::parse_reverse_path(path).map_err(bad_sender)?;

    let params = params::mail(params_text(rest)?)?;
    Ok(Command::Mail { from, params })
}

fn rcpt(args: &str) -> Parsed {
    let path = path_text(args, "TO:").ok_or(syntax("expected TO:<address>"))?;

    let bad_recipient = |e: address::AddressError| CommandError::BadRecipient(e.reason());
    let (to, rest) = address::parse_forward_path(path).map_err(bad_recipient)?;

    let params = params::rcpt(params_text(rest)?)?;
    Ok(Command::Rcpt { to, params })
}

/// The text after `FROM:` or `TO:` and any spaces.
fn path_text<'a>(args: &'a str, prefix: &str) -> Option<&'a str> {
    let path = strip_prefix_ignore_case(args, prefix)?;
    Some(path.trim_start_matches(' '))
}

/// What follows a path must be nothing or a space and the parameters.
fn params_text(rest: &str) -> Result<&str, CommandError> {
    match rest.is_empty() || rest.starts_with(' ') {
        true => Ok(rest),
        false => Err(syntax("expected a space after the address")),
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.as_bytes().get(..prefix.len())?;
    // The prefix is ASCII, so a match ends on a character boundary.
    head.eq_ignore_ascii_case(prefix.as_bytes()).then(|| &s[prefix.len()..])
}

fn bdat(args: &str) -> Parsed {
    let mut words = words(args);
    let size = words.next().ok_or(syntax("BDAT needs a chunk size"))?;
    let size = params::decimal(size).ok_or(syntax("invalid BDAT chunk size"))?;

    let last = match words.next() {
        None => false,
        Some(word) if word.eq_ignore_ascii_case("LAST") => true,
        Some(_) => return Err(syntax("expected LAST after the BDAT chunk size")),
    };
    if words.next().is_some() {
        return Err(syntax("too many BDAT arguments"));
    }
    Ok(Command::Bdat { size, last })
}

/// RFC 4422 §3.1: mechanism names are 1 to 20 of A-Z, 0-9, `-` and `_`.
fn auth(args: &str) -> Parsed {
    let mut words = words(args);
    let mechanism = words.next().ok_or(syntax("AUTH needs a mechanism"))?;
    let name_ok = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
    if mechanism.len() > 20 || !mechanism.bytes().all(name_ok) {
        return Err(syntax("invalid SASL mechanism name"));
    }

    let initial = words.next().map(str::to_owned);
    if words.next().is_some() {
        return Err(syntax("too many AUTH arguments"));
    }
    let mechanism = mechanism.to_ascii_uppercase();
    Ok(Command::Auth { mechanism, initial })
}
