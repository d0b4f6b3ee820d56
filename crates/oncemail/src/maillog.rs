//! The mail log: one `info` line per event in a message's life, queue ID first.
//!
//! These functions are the whole list of events a message can go through, with fixed
//! field names, so `grep queue_id=<ID>` tells a message's story and a log shipper can rely
//! on the fields. Developer detail goes to `debug!`/`trace!` elsewhere, never here.
//! Message bodies and passwords never appear in the log.
//!
//! Each event also moves its [`metrics`](crate::metrics) counter here, so the log and the
//! metrics cannot disagree about what happened.

use std::net::SocketAddr;

use spool::QueueId;
use tracing::{info, warn};

use crate::metrics::{self, Relay, Scope};

fn relay_kind(relay: &str) -> Relay {
    Relay { relay: if relay == "local" { "local" } else { "remote" } }
}

pub fn connected(session: u64, peer: SocketAddr) {
    let m = metrics::get();
    m.connections.inc();
    m.connections_total.inc();
    info!(session, client = %peer, "connect");
}

pub fn disconnected(session: u64, peer: SocketAddr, reason: &str) {
    metrics::get().connections.dec();
    info!(session, client = %peer, reason, "disconnect");
}

/// Logged once the `250` is written, with the final-dot gap: end of data to reply sent.
pub fn accepted(qid: QueueId, session: u64, from: &str, recipients: usize, size: u64, gap_us: u64) {
    let m = metrics::get();
    m.accepted.inc();
    m.final_dot_gap.observe(gap_us as f64 / 1e6);
    let from = format_args!("<{from}>");
    info!(queue_id = %qid, session, from = %from, recipients, size, gap_us, "accepted");
}

/// A message left in the maildrop by `sendmail` was committed and queued; `uid` owns the
/// maildrop file. No final-dot gap: nobody waits on a reply.
pub fn picked_up(qid: QueueId, uid: u32, from: &str, recipients: usize, size: u64, file: &str) {
    metrics::get().picked_up.inc();
    let from = format_args!("<{from}>");
    info!(queue_id = %qid, uid, from = %from, recipients, size, file, "picked up");
}

/// A retry of an accepted message (or some of its recipients) that was not queued again.
pub fn suppressed(original: QueueId, session: u64, recipients: usize, scope: &'static str) {
    let label = match scope {
        "transid" => "transid",
        "some recipients" => "recipients",
        _ => "message",
    };
    metrics::inc(&metrics::get().suppressed, Scope { scope: label });
    info!(queue_id = %original, session, recipients, scope, "suppressed duplicate");
}

/// A session ended without QUIT right after a `250` it may never have received.
pub fn ended_in_gap(qid: QueueId, session: u64, reason: &str) {
    metrics::get().ended_in_gap.inc();
    info!(queue_id = %qid, session, reason, "session ended in the gap");
}

/// An error reply; `qid` is set when it refuses a message whose data was received.
pub fn rejected(
    session: u64,
    qid: Option<QueueId>,
    command: &str,
    code: u16,
    status: &str,
    text: &str,
) {
    metrics::get().rejected.inc();
    let reply = format_args!("{code} {status} {text}");
    match qid {
        Some(qid) => info!(queue_id = %qid, session, command, reply = %reply, "rejected"),
        None => info!(session, command, reply = %reply, "rejected"),
    }
}

pub fn delivered(qid: QueueId, to: &str, relay: &str, detail: &str) {
    metrics::inc(&metrics::get().delivered, relay_kind(relay));
    info!(queue_id = %qid, to = %format_args!("<{to}>"), relay, detail, "delivered");
}

pub fn deferred(qid: QueueId, to: &str, relay: &str, reason: &str, retry_in_s: u64) {
    metrics::inc(&metrics::get().deferred, relay_kind(relay));
    info!(queue_id = %qid, to = %format_args!("<{to}>"), relay, reason, retry_in_s,
        "deferred");
}

/// Lost after our final dot, before the reply: the next hop may have delivered it. Counted
/// apart from plain deferrals: these are the attempts that can make duplicates downstream.
pub fn possibly_delivered(qid: QueueId, to: &str, relay: &str, reason: &str, retry_in_s: u64) {
    metrics::get().possibly_delivered.inc();
    info!(queue_id = %qid, to = %format_args!("<{to}>"), relay, reason, retry_in_s,
        "possibly delivered");
}

pub fn failed(qid: QueueId, to: &str, relay: &str, status: &str, diagnostic: &str) {
    metrics::get().failed.inc();
    info!(queue_id = %qid, to = %format_args!("<{to}>"), relay, status, diagnostic, "failed");
}

/// A delivery status notification for `original` was queued as `report` to `sender`.
pub fn bounced(original: QueueId, report: QueueId, sender: &str) {
    metrics::get().bounces.inc();
    info!(queue_id = %original, report = %report, to = %format_args!("<{sender}>"), "bounced");
}

/// A failure no report can be sent about: the sender is `<>` (or unroutable).
pub fn double_bounce(qid: QueueId, to: &str) {
    metrics::get().double_bounces.inc();
    warn!(queue_id = %qid, to = %format_args!("<{to}>"), "double bounce; no report sent");
}

pub fn expired(qid: QueueId, pending: usize) {
    info!(queue_id = %qid, pending, "expired");
}

/// An operator's order for a message (`flush`, `hold`, `release`, `delete`, `bounce`).
pub fn operator(qid: QueueId, action: &str, who: &str) {
    info!(queue_id = %qid, action, by = who, "operator");
}

pub fn removed(qid: QueueId) {
    info!(queue_id = %qid, "removed");
}

pub fn recovered(qid: QueueId, pending: usize) {
    info!(queue_id = %qid, pending, "recovered");
}
