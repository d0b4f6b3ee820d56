//! Sans-IO SMTP: bytes in, commands and events out.
//!
//! Nothing here reads a socket, starts a timer or allocates without bound. The
//! server session feeds it the bytes it has read and acts on what comes back;
//! the relay client uses the same types to write commands and DATA content.
//!
//! - [`line`](mod@line) cuts command lines out of a read buffer, with a length limit that
//!   bounds the caller's buffer.
//! - [`command`] parses one command line into a [`command::Command`].
//! - [`address`] holds RFC 5321 / RFC 6531 paths and mailboxes.
//! - [`data`] decodes DATA content (the end-of-data sequence, dot-unstuffing,
//!   bare line endings) and dot-stuffs it for sending.
//! - [`reply`] formats replies, and parses them for the relay client.
//! - [`ehlo`] reads the extensions a server offers in its EHLO reply.
//!
//! No function in this crate panics on peer input; the command parser and the
//! DATA decoder are property-tested on arbitrary bytes and have fuzz targets.

pub mod address;
pub mod command;
pub mod data;
pub mod ehlo;
pub mod line;
pub mod reply;
