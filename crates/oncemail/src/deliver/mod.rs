//! deliver: the ways a message leaves the queue.
//!
//! - [`maildir`]: local mailboxes, synchronously on the blocking pool;
//! - [`remote`]: another host over SMTP, routed by static route or MX, with the patient
//!   client of [`relay::client`].

pub mod maildir;
pub mod relay;
pub mod remote;
