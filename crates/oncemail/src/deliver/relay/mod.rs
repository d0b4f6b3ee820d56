//! deliver::relay: sending messages on to other SMTP servers.
//!
//! [`client`] speaks SMTP to one server over one connection and reports an
//! outcome per recipient; choosing the server (MX lookup), retrying and
//! recording outcomes belong to the caller.

pub mod client;
