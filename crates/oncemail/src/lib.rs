//! oncemail: a mail transfer agent that acknowledges fast, loses nothing and delivers once.
//!
//! The pipeline, one module per stage: [`receive`] (SMTP sessions) commits each message to
//! the spool (the `spool` crate) and hands it to the [`queue`], which drives [`deliver`]
//! until every recipient is final. [`config`], [`maillog`] and [`replies`] are leaves any
//! stage may use. The invariants every change keeps are in `docs/DESIGN.md`.

pub mod admin;
pub mod auth;
pub mod bounce;
pub mod config;
pub mod dedupe;
pub mod deliver;
pub mod dns;
pub mod envelope;
pub mod http;
pub mod maillog;
pub mod metrics;
pub mod pickup;
pub mod queue;
pub mod receive;
pub mod replies;
pub mod routing;
pub mod schedule;
pub mod sendmail;
pub mod tls;

use tokio_util::sync::CancellationToken;

/// What every session and task shares.
pub struct Context {
    pub config: config::Config,
    pub spool: spool::Spool,
    pub queue: queue::Queue,
    pub dedupe: dedupe::Index,
    /// Cancelled when the server starts shutting down.
    pub shutdown: CancellationToken,
    /// Test hook (`ONCEMAIL_TEST_HOLD_REPLY_MS`): wait this long between a commit and its
    /// `250`, so a test can kill the process inside the gap. Never set in production.
    pub hold_reply: Option<std::time::Duration>,
    pub tls: tls::Tls,
}
