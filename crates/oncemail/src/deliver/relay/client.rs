//! The outbound SMTP client: one connection to one server, any number of
//! transactions on it, one outcome per recipient.
//!
//! # Contract
//!
//! - [`Connection::open`] connects, reads the greeting, says EHLO (HELO if
//!   the server refuses EHLO with a 5xx), and upgrades with STARTTLS when
//!   asked to and offered. A 4xx or 5xx greeting, or a refused EHLO and
//!   HELO, is [`ConnectError::Refused`]; no connection is
//!   [`ConnectError::Unreachable`]; anything else that goes wrong, including
//!   a failed TLS handshake, is [`ConnectError::Protocol`].
//! - [`Connection::send`] never fails as a whole: it returns one [`Outcome`]
//!   per recipient, in order. `Delivered` means the server took
//!   responsibility with a 2xx to our final dot. A recipient whose fate is
//!   unknown because the connection broke after that dot is
//!   `PossiblyDelivered`, never `Deferred`: that is the window of RFC 1047,
//!   and the caller counts and logs it apart (DESIGN.md I5).
//! - Every step runs under its own timeout from [`Timeouts`], taken as
//!   given; the floors of I5 (5 minutes for the final dot) are the
//!   configuration's to enforce. A timeout, an I/O error, a malformed reply
//!   or a `421` leaves the connection unusable ([`Connection::usable`]), and
//!   later `send`s defer every recipient without touching the network.
//! - After `send` the connection is ready for the next transaction: one
//!   abandoned half-way (no recipient accepted, DATA refused) is ended with
//!   RSET.
//! - Memory is bounded whatever the server does: replies are limited in
//!   lines and octets ([`smtp_wire::reply::parse`]), and the body is streamed
//!   in chunks of at most 64 KiB.
//!
//! # Security
//!
//! TLS is opportunistic (RFC 3207, RFC 7435): the server's certificate is
//! not checked against any trust anchor or name, because on the public MX
//! network most certificates would fail and refusing them would mean
//! sending in plaintext instead. This protects against passive listeners
//! only. The handshake signatures are still verified, so the session key is
//! bound to the key in the certificate presented. Policies that require
//! authenticated TLS (MTA-STS, DANE) are not implemented.

mod open;
mod send;
#[cfg(test)]
mod tests;
mod tls;
mod wire;

use std::fmt;
use std::time::Duration;

use tokio::io::AsyncRead;

pub use smtp_wire::ehlo::Extensions;
pub use smtp_wire::reply::Reply;

use wire::Wire;

/// How long each step may take. The defaults are those of RFC 5321
/// §4.5.3.2; the connect timeout is ours.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// TCP connection set-up.
    pub connect: Duration,
    /// The 220 greeting.
    pub greeting: Duration,
    /// The reply to EHLO or HELO; also STARTTLS and its handshake, RSET and
    /// QUIT (capped at [`QUIT_TIMEOUT`] for QUIT), which the RFC leaves open.
    pub ehlo: Duration,
    pub mail: Duration,
    pub rcpt: Duration,
    /// The 354 to DATA.
    pub data_init: Duration,
    /// Each write of message content.
    pub data_block: Duration,
    /// The reply to our final dot: the one that matters most (I5).
    pub data_term: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        let minutes = |m: u64| Duration::from_secs(m * 60);
        Timeouts {
            connect: Duration::from_secs(30),
            greeting: minutes(5),
            ehlo: minutes(5),
            mail: minutes(5),
            rcpt: minutes(5),
            data_init: minutes(2),
            data_block: minutes(3),
            data_term: minutes(10),
        }
    }
}

/// QUIT is a courtesy; waiting minutes for its reply helps no one.
pub const QUIT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct Settings {
    /// Our name in EHLO/HELO: a domain or an address literal.
    pub helo: String,
    pub timeouts: Timeouts,
    /// Use STARTTLS when the server offers it.
    pub starttls: bool,
}

/// One message to send.
pub struct Message<'a> {
    /// The reverse path in SMTP form, without brackets; "" for `<>`.
    pub sender: &'a str,
    /// The forward paths in SMTP form, without brackets.
    pub recipients: &'a [String],
    /// Body octets, for SIZE.
    pub size: u64,
    /// The body has octets >= 0x80. BODY=8BITMIME is declared when the
    /// server offers it. XXX: when it does not, the body goes out as it is,
    /// where RFC 6152 would have us convert it to 7 bits or bounce it;
    /// servers without 8BITMIME are rare and nearly all take 8-bit content.
    pub eight_bit: bool,
    /// The envelope or headers need SMTPUTF8. Non-ASCII addresses count
    /// even when this is false.
    pub smtputf8: bool,
    /// RFC 1845 transaction ID, `local@domain` without brackets; sent only
    /// when the server offers CHECKPOINT, ignored when malformed.
    pub transid: Option<&'a str>,
    /// The message as stored: CRLF lines, not dot-stuffed.
    pub body: &'a mut (dyn AsyncRead + Send + Unpin),
}

/// What became of one recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx to the final dot, or to a TRANSID replay.
    Delivered(Reply),
    /// A 4xx at any step, or the connection lost or timed out before our
    /// final dot. The text says which.
    Deferred(String),
    /// A 5xx for this recipient, or a reply we made up for a message this
    /// server cannot take (see [`Connection::send`]).
    Failed(Reply),
    /// The connection was lost or timed out after our final dot, before its
    /// reply: the server may have the message.
    PossiblyDelivered(String),
}

/// What [`Connection::send`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// One per recipient of the message, in order.
    pub outcomes: Vec<Outcome>,
    /// The TLS version and cipher suite, e.g. "TLSv1.3
    /// TLS13_AES_256_GCM_SHA384"; None for plaintext.
    pub tls: Option<String>,
}

#[derive(Debug)]
pub enum ConnectError {
    /// No TCP connection within the connect timeout.
    Unreachable(String),
    /// A 4xx or 5xx greeting, or EHLO and then HELO refused.
    Refused(Reply),
    /// A broken or timed-out dialogue, a malformed reply, a failed TLS
    /// handshake.
    Protocol(String),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unreachable(why) => write!(f, "unreachable: {why}"),
            Self::Refused(reply) => write!(f, "refused: {reply}"),
            Self::Protocol(why) => write!(f, "protocol error: {why}"),
        }
    }
}

impl std::error::Error for ConnectError {}

/// An open SMTP session, greeted and EHLO'd (and with TLS, if it came to
/// that), between transactions.
pub struct Connection {
    wire: Wire,
    offers: Extensions,
    timeouts: Timeouts,
    tls: Option<String>,
    usable: bool,
}

impl Connection {
    /// False after an I/O error, a timeout, a malformed reply or a 421:
    /// the caller should drop this connection and open another.
    pub fn usable(&self) -> bool {
        self.usable
    }

    /// What the server offered in its (last) EHLO reply.
    pub fn offers(&self) -> &Extensions {
        &self.offers
    }

    /// The TLS version and cipher suite, None for plaintext.
    pub fn tls(&self) -> Option<&str> {
        self.tls.as_deref()
    }

    /// Checks that a connection kept idle is still there before it is
    /// reused: servers close idle sessions, and finding out at MAIL would
    /// defer every recipient of the next message. Costs one RSET round
    /// trip; false, and the connection unusable, without a 2xx to it.
    pub async fn still_usable(&mut self) -> bool {
        if self.usable {
            self.reset().await;
        }
        self.usable
    }

    /// Says QUIT and closes, without waiting more than [`QUIT_TIMEOUT`]
    /// for the reply. Errors are ignored: every transaction is over.
    pub async fn quit(mut self) {
        let limit = self.timeouts.ehlo.min(QUIT_TIMEOUT);
        if self.usable && self.wire.command("QUIT", limit, "QUIT").await.is_ok() {
            let _ = self.wire.reply(limit, "QUIT").await;
        }
        self.wire.shutdown(limit).await;
    }
}
