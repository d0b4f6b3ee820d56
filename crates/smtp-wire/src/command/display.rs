//! Commands written back as lines, for the relay client. The form is the
//! canonical one (uppercase verbs and keywords, no space after the colon),
//! without the CRLF, which the caller adds when it sends.

use std::fmt;

use super::{Body, Command, MailParams};

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ehlo(domain) => write!(f, "EHLO {domain}"),
            Self::Helo(domain) => write!(f, "HELO {domain}"),
            Self::Mail { from, params } => write!(f, "MAIL FROM:<{from}>{params}"),
            Self::Rcpt { to, params: _ } => write!(f, "RCPT TO:<{to}>"),
            Self::Data => f.write_str("DATA"),
            Self::Bdat { size, last: false } => write!(f, "BDAT {size}"),
            Self::Bdat { size, last: true } => write!(f, "BDAT {size} LAST"),
            Self::Rset => f.write_str("RSET"),
            Self::Noop => f.write_str("NOOP"),
            Self::Quit => f.write_str("QUIT"),
            Self::Vrfy(arg) => write!(f, "VRFY {arg}"),
            Self::Expn(arg) => write!(f, "EXPN {arg}"),
            Self::Help(None) => f.write_str("HELP"),
            Self::Help(Some(arg)) => write!(f, "HELP {arg}"),
            Self::StartTls => f.write_str("STARTTLS"),
            Self::Auth { mechanism, initial } => {
                write!(f, "AUTH {mechanism}")?;
                initial.as_ref().map_or(Ok(()), |initial| write!(f, " {initial}"))
            }
        }
    }
}

impl fmt::Display for MailParams {
    /// Each parameter with its leading space; nothing when there is none.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(size) = self.size {
            write!(f, " SIZE={size}")?;
        }
        if let Some(body) = self.body {
            write!(f, " BODY={body}")?;
        }
        if self.smtputf8 {
            f.write_str(" SMTPUTF8")?;
        }
        if let Some(transid) = &self.transid {
            write!(f, " TRANSID=<{transid}>")?;
        }
        Ok(())
    }
}

impl fmt::Display for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::SevenBit => "7BIT",
            Self::EightBitMime => "8BITMIME",
            Self::BinaryMime => "BINARYMIME",
        })
    }
}
