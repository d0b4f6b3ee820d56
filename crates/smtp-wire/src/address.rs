//! Mail addresses as SMTP carries them: the paths of `MAIL FROM` and `RCPT TO`
//! (RFC 5321 §4.1.2), with UTF-8 allowed in local parts and domain labels
//! (RFC 6531).
//!
//! Contract:
//! - [`parse_reverse_path`] and [`parse_forward_path`] read one `<...>` path at
//!   the start of a string and return what follows it, so the caller can go on
//!   with ESMTP parameters. `Mailbox` and `Domain` also implement `FromStr` for
//!   the bare `local@domain` and `domain` forms (configuration, tests).
//! - `Mailbox::local` holds the local part without its quotes and escapes;
//!   `Display` quotes it again when it is not a dot-string, so displaying and
//!   parsing again gives the same value.
//! - Domain names keep the case they were given in. Compare them with
//!   [`Domain::eq_ignore_ascii_case`] or normalise with
//!   [`Domain::to_ascii_lowercase`].
//! - Parsing accepts UTF-8 whether or not the client said `SMTPUTF8`: the
//!   session decides with [`Mailbox::is_ascii`].
//!
//! Errors: [`AddressError`], whose [`AddressError::reason`] is a short text fit
//! for the reply.
//!
//! Limits:
//! - A path longer than 256 octets, brackets included, is refused
//!   (RFC 5321 §4.5.3.1.3); so is a domain over 255 octets or a label over 63.
//! - XXX: local parts over 64 octets are accepted. The RFC allows refusing them,
//!   but VERP and SRS senders exceed the limit in practice and the path limit
//!   still bounds the size.
//! - U-labels are checked only for shape (no controls, no edge hyphens), not
//!   against IDNA2008.
//! - Source routes (`<@a,@b:user@c>`) are checked and then dropped, as
//!   RFC 5321 §C says a server may do.

mod parse;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

pub use parse::{parse_forward_path, parse_reverse_path};

/// The part of a mailbox after the `@`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Domain {
    /// A domain name, in the case it was given in; may hold U-labels.
    Name(String),
    /// `[192.0.2.1]`
    Ipv4(Ipv4Addr),
    /// `[IPv6:2001:db8::1]`
    Ipv6(Ipv6Addr),
    /// `[tag:content]`, a general address literal (RFC 5321 §4.1.3).
    General { tag: String, content: String },
}

/// `local@domain`, with `local` unquoted.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mailbox {
    pub local: String,
    pub domain: Domain,
}

/// The path of `MAIL FROM`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ReversePath {
    /// `<>`: the sender of bounces, to which nothing may be bounced.
    Null,
    Mailbox(Mailbox),
}

/// The path of `RCPT TO`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ForwardPath {
    /// `<Postmaster>` in any case and without a domain (RFC 5321 §4.5.1).
    Postmaster,
    Mailbox(Mailbox),
}

/// Why a path, mailbox or domain was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressError {
    MissingBrackets,
    EmptyLocalPart,
    BadLocalPart,
    UnbalancedQuote,
    MissingDomain,
    BadDomain,
    LabelTooLong,
    DomainTooLong,
    BadAddressLiteral,
    BadSourceRoute,
    ControlCharacter,
    PathTooLong,
    /// `<>` where a mailbox is required, as in `RCPT TO:<>`.
    EmptyPath,
}

impl AddressError {
    /// A short, fixed text saying what was wrong, for the reply.
    pub fn reason(self) -> &'static str {
        match self {
            Self::MissingBrackets => "address must be enclosed in <>",
            Self::EmptyLocalPart => "empty local part",
            Self::BadLocalPart => "invalid local part",
            Self::UnbalancedQuote => "unbalanced quote in local part",
            Self::MissingDomain => "address has no domain",
            Self::BadDomain => "invalid domain",
            Self::LabelTooLong => "domain label longer than 63 octets",
            Self::DomainTooLong => "domain longer than 255 octets",
            Self::BadAddressLiteral => "invalid address literal",
            Self::BadSourceRoute => "invalid source route",
            Self::ControlCharacter => "control character in address",
            Self::PathTooLong => "path longer than 256 octets",
            Self::EmptyPath => "empty path not allowed here",
        }
    }
}

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for AddressError {}

impl Domain {
    /// True when the domain has no U-label (literals always are ASCII).
    pub fn is_ascii(&self) -> bool {
        match self {
            Self::Name(name) => name.is_ascii(),
            Self::General { tag, content } => tag.is_ascii() && content.is_ascii(),
            Self::Ipv4(_) | Self::Ipv6(_) => true,
        }
    }

    /// Compares as DNS does: ASCII letters without regard to case. Literal tags
    /// compare the same way, their content exactly, addresses by value.
    pub fn eq_ignore_ascii_case(&self, other: &Domain) -> bool {
        match (self, other) {
            (Self::Name(a), Self::Name(b)) => a.eq_ignore_ascii_case(b),
            (
                Self::General { tag, content },
                Self::General { tag: other_tag, content: other_content },
            ) => tag.eq_ignore_ascii_case(other_tag) && content == other_content,
            _ => self == other,
        }
    }

    /// The same domain with ASCII letters lowercased (U-labels left as they are),
    /// for use as a map key.
    pub fn to_ascii_lowercase(&self) -> Domain {
        match self {
            Self::Name(name) => Self::Name(name.to_ascii_lowercase()),
            Self::General { tag, content } => {
                Self::General { tag: tag.to_ascii_lowercase(), content: content.clone() }
            }
            literal => literal.clone(),
        }
    }
}

impl Mailbox {
    /// True when neither part needs SMTPUTF8.
    pub fn is_ascii(&self) -> bool {
        self.local.is_ascii() && self.domain.is_ascii()
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(name) => f.write_str(name),
            Self::Ipv4(addr) => write!(f, "[{addr}]"),
            Self::Ipv6(addr) => write!(f, "[IPv6:{addr}]"),
            Self::General { tag, content } => write!(f, "[{tag}:{content}]"),
        }
    }
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_local_part(&self.local, f)?;
        write!(f, "@{}", self.domain)
    }
}

/// Writes a dot-string as it is and anything else as a quoted string.
fn write_local_part(local: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    if parse::is_dot_string(local) {
        return f.write_str(local);
    }

    f.write_str("\"")?;
    for c in local.chars() {
        if c == '"' || c == '\\' {
            f.write_str("\\")?;
        }
        write!(f, "{c}")?;
    }
    f.write_str("\"")
}

impl fmt::Display for ReversePath {
    /// The path without its brackets: empty for `<>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Null => Ok(()),
            Self::Mailbox(mailbox) => mailbox.fmt(f),
        }
    }
}

impl fmt::Display for ForwardPath {
    /// The path without its brackets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Postmaster => f.write_str("Postmaster"),
            Self::Mailbox(mailbox) => mailbox.fmt(f),
        }
    }
}
