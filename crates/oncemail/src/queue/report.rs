//! Reports to the sender: failures, expiry, and an operator's "bounce now".

use std::str::FromStr;

use chrono::{DateTime, Utc};
use smtp_wire::address::{ForwardPath, Mailbox};
use spool::{Body, QueueId, Spool, Stored};
use tracing::error;

use super::task::record;
use super::{Message, Shared};
use crate::bounce::{self, Action, Failure};
use crate::config::Local;
use crate::envelope::{Envelope, Outcome, Recipient, Route};
use crate::{maillog, routing};

/// How much of the original a bounce may quote (its header section is cut from this).
const BOUNCE_QUOTE: u64 = 64 * 1024;

/// A recipient that failed for good in this attempt.
pub(super) struct Failed {
    pub index: usize,
    pub relay: String,
    pub status: String,
    pub diagnostic: String,
}

pub(super) fn expired(shared: &Shared, message: &Message) -> bool {
    let age = Utc::now().timestamp() - message.envelope.arrival;
    age >= shared.config.queue.max_lifetime.as_secs() as i64
}

/// The message has been in the queue too long: every pending recipient fails (4.4.7).
pub(super) async fn expire(shared: &Shared, message: &mut Message) {
    let qid = message.stored.qid;
    let pending: Vec<usize> = (0..message.done.len()).filter(|&i| !message.done[i]).collect();
    maillog::expired(qid, pending.len());

    let lifetime = humantime::format_duration(shared.config.queue.max_lifetime);
    let diagnostic = format!("delivery not possible within {lifetime}; giving up");
    let failures: Vec<Failed> = pending
        .iter()
        .map(|&index| Failed {
            index,
            relay: String::new(),
            status: "4.4.7".into(),
            diagnostic: diagnostic.clone(),
        })
        .collect();
    if bounce_for(shared, message, &failures).await {
        record(shared, message, pending, Outcome::Failed { detail: diagnostic }).await;
    }
}

/// Tells the sender about `failures`: true once the report is durably queued, or when no
/// report is due (the sender is `<>`).
pub(super) async fn bounce_for(shared: &Shared, message: &Message, failures: &[Failed]) -> bool {
    let qid = message.stored.qid;
    let sender = &message.envelope.sender;
    if sender.is_empty() {
        for failure in failures {
            let to = &message.envelope.recipients[failure.index].address;
            maillog::double_bounce(qid, to);
        }
        return true;
    }

    let original = match read_quote(&shared.spool, &message.stored) {
        Ok(original) => original,
        Err(e) => {
            error!(queue_id = %qid, error = %e, "cannot read the message to bounce it");
            return false;
        }
    };
    let now = Utc::now();
    let report_failures: Vec<Failure> = failures
        .iter()
        .map(|f| Failure {
            recipient: &message.envelope.recipients[f.index].address,
            action: Action::Failed,
            status: &f.status,
            remote_mta: remote_mta(&f.relay),
            diagnostic: Some(&f.diagnostic),
        })
        .collect();
    let qid_text = qid.to_string();
    let report = bounce::Report {
        reporting_mta: &shared.config.hostname,
        queue_id: &qid_text,
        original_sender: sender,
        arrival: DateTime::from_timestamp(message.envelope.arrival, 0).unwrap_or(now),
        failures: &report_failures,
        original: &original,
        now,
    };
    let body = bounce::report(&report);
    queue_report(shared, qid, sender, body).await
}

/// Commits a report to `sender` from `<>` and queues it.
async fn queue_report(shared: &Shared, original: QueueId, sender: &str, body: Vec<u8>) -> bool {
    let Some(route) = sender_route(&shared.config.local, sender) else {
        maillog::double_bounce(original, sender);
        return true;
    };
    let qid = QueueId::generate();
    let now = Utc::now();
    let received = crate::receive::received::local(&shared.config.hostname, None, qid, now);
    let envelope = Envelope {
        arrival: now.timestamp(),
        sender: String::new(),
        recipients: vec![Recipient { address: sender.to_string(), route }],
        received,
        size: body.len() as u64,
        smtputf8: !sender.is_ascii(),
        eight_bit: body.iter().any(|&b| b >= 0x80),
        content_sha256: String::new(),
    };

    let committed = shared.spool.commit(qid, envelope.encode(), Body::Inline(body), None).await;
    match committed {
        Ok(stored) => {
            maillog::bounced(original, qid, sender);
            shared.queue.submit(stored, envelope);
            true
        }
        Err(e) => {
            error!(queue_id = %original, error = %e, "cannot queue the bounce; will retry");
            false
        }
    }
}

/// Where a report to `sender` goes: like any recipient, relaying allowed.
fn sender_route(local: &Local, sender: &str) -> Option<Route> {
    let mailbox = Mailbox::from_str(sender).ok()?;
    routing::route(local, true, &ForwardPath::Mailbox(mailbox)).ok()
}

fn read_quote(spool: &Spool, stored: &Stored) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut quote = Vec::new();
    spool.open_body(&stored.body)?.take(BOUNCE_QUOTE).read_to_end(&mut quote)?;
    Ok(quote)
}

/// "mx.example.net[192.0.2.1]:25" -> "mx.example.net"; nothing for local or no relay.
fn remote_mta(relay: &str) -> Option<&str> {
    let host = relay.split('[').next().unwrap_or("");
    (!host.is_empty() && relay != "local").then_some(host)
}

/// An operator's order: every pending recipient fails now, with a report.
pub(super) async fn bounce_now(shared: &Shared, message: &mut Message) {
    let pending: Vec<usize> = (0..message.done.len()).filter(|&i| !message.done[i]).collect();
    let diagnostic = "returned to the sender by the postmaster".to_string();
    let failures: Vec<Failed> = pending
        .iter()
        .map(|&index| Failed {
            index,
            relay: String::new(),
            status: "5.0.0".into(),
            diagnostic: diagnostic.clone(),
        })
        .collect();
    if bounce_for(shared, message, &failures).await {
        record(shared, message, pending, Outcome::Failed { detail: diagnostic }).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_mta_is_the_host_name() {
        assert_eq!(remote_mta("mx.example.net[192.0.2.1]:25"), Some("mx.example.net"));
        assert_eq!(remote_mta("local"), None);
        assert_eq!(remote_mta(""), None);
    }
}
