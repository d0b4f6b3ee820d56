//! The byte stream under a connection: command lines and content out,
//! replies in, each under a time limit.
//!
//! Every read and write is given its limit and the name of its step, which
//! errors carry for the log. Any [`WireError`] is final: the caller must
//! treat the connection as gone. Memory is bounded: the read buffer holds at
//! most one reply line ([`MAX_LINE`]) plus one read, and replies are bounded
//! by [`smtp_wire::reply::parse`].

use std::fmt;
use std::io;
use std::time::Duration;

use smtp_wire::line::{Line, LineReader};
use smtp_wire::reply::{Reply, ReplyParser};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::timeout;

/// Longest reply line we accept, ending included. RFC 5321 §4.5.3.1.5
/// allows 512 octets; servers that ignore it exist and are harmless.
pub(super) const MAX_LINE: usize = 8 * 1024;

/// How much to ask the socket for at a time.
const READ_SIZE: usize = 8 * 1024;

/// Plain TCP, TLS, or a test's stream.
pub(super) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

#[derive(Debug)]
pub(super) enum WireError {
    Timeout {
        step: &'static str,
        after: Duration,
    },
    Closed {
        step: &'static str,
    },
    Io {
        step: &'static str,
        error: io::Error,
    },
    /// The server's bytes are not replies we can read.
    Protocol {
        step: &'static str,
        why: String,
    },
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout { step, after } => write!(f, "{step}: timed out after {after:?}"),
            Self::Closed { step } => write!(f, "{step}: connection closed by the server"),
            Self::Io { step, error } => write!(f, "{step}: {error}"),
            Self::Protocol { step, why } => write!(f, "{step}: {why}"),
        }
    }
}

pub(super) struct Wire {
    io: Box<dyn Io>,
    /// Bytes read and not yet parsed.
    buf: Vec<u8>,
    lines: LineReader,
    parser: ReplyParser,
}

impl Wire {
    pub(super) fn new(io: Box<dyn Io>) -> Wire {
        Wire {
            io,
            buf: Vec::with_capacity(READ_SIZE),
            lines: LineReader::new(MAX_LINE),
            parser: ReplyParser::new(),
        }
    }

    /// Writes one command line; `line` has no CRLF.
    pub(super) async fn command(
        &mut self,
        line: &str,
        limit: Duration,
        step: &'static str,
    ) -> Result<(), WireError> {
        tracing::debug!(command = line, "relay client sends");
        let bytes = [line.as_bytes(), b"\r\n"].concat();
        self.write(&bytes, limit, step).await
    }

    /// Writes and flushes `bytes` within `limit`.
    pub(super) async fn write(
        &mut self,
        bytes: &[u8],
        limit: Duration,
        step: &'static str,
    ) -> Result<(), WireError> {
        let io = &mut self.io;
        let written = timeout(limit, async {
            io.write_all(bytes).await?;
            io.flush().await
        });
        match written.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(WireError::Io { step, error }),
            Err(_) => Err(WireError::Timeout { step, after: limit }),
        }
    }

    /// Reads the next reply, all its lines within `limit`.
    pub(super) async fn reply(
        &mut self,
        limit: Duration,
        step: &'static str,
    ) -> Result<Reply, WireError> {
        let reply = match timeout(limit, self.read_reply(step)).await {
            Ok(reply) => reply?,
            Err(_) => return Err(WireError::Timeout { step, after: limit }),
        };
        tracing::debug!(code = reply.code, text = reply.text(), "relay client reads");
        Ok(reply)
    }

    /// True when the server sent bytes we have not read as replies yet.
    pub(super) fn has_unread(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Hands the stream over to be wrapped (STARTTLS). The wire is left
    /// with a stream that reads nothing and swallows writes until
    /// [`Wire::put_stream`] gives it a new one.
    pub(super) fn take_stream(&mut self) -> Box<dyn Io> {
        std::mem::replace(&mut self.io, Box::new(tokio::io::empty()))
    }

    pub(super) fn put_stream(&mut self, io: Box<dyn Io>) {
        self.io = io;
    }

    /// Closes our side (for TLS, with close_notify), within `limit`.
    pub(super) async fn shutdown(&mut self, limit: Duration) {
        let _ = timeout(limit, self.io.shutdown()).await;
    }

    async fn read_reply(&mut self, step: &'static str) -> Result<Reply, WireError> {
        loop {
            if let Some(reply) = self.parse_buffered(step)? {
                return Ok(reply);
            }
            self.fill(step).await?;
        }
    }

    /// Feeds the complete lines in the buffer to the parser until a reply
    /// is complete or the buffer holds no complete line.
    fn parse_buffered(&mut self, step: &'static str) -> Result<Option<Reply>, WireError> {
        let protocol = |why: String| WireError::Protocol { step, why };
        let too_long = || protocol(format!("reply line over {MAX_LINE} octets"));
        loop {
            let (line, used) = self.lines.next(&self.buf);
            let parsed = match line {
                Some(Line::Complete(line)) => self.parser.push(line),
                Some(Line::TooLong) => return Err(too_long()),
                // Bytes used without a line: the reader has begun skipping
                // an overlong line. No need to wait for its end.
                None if used > 0 => return Err(too_long()),
                None => return Ok(None),
            };
            self.buf.drain(..used);

            match parsed {
                Ok(Some(reply)) => return Ok(Some(reply)),
                Ok(None) => continue,
                Err(error) => return Err(protocol(error.to_string())),
            }
        }
    }

    async fn fill(&mut self, step: &'static str) -> Result<(), WireError> {
        self.buf.reserve(READ_SIZE);
        match self.io.read_buf(&mut self.buf).await {
            Ok(0) => Err(WireError::Closed { step }),
            Ok(_) => Ok(()),
            Err(error) => Err(WireError::Io { step, error }),
        }
    }
}
