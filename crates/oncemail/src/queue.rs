//! queue: drives every accepted message to a final outcome for each recipient.
//!
//! Messages arrive from receive (after their `250`) and from the spool at start. Each
//! message gets a task that, per attempt, delivers its pending recipients (local ones to
//! Maildirs, remote ones grouped by domain through [`deliver::remote`]), then records what
//! became final before it counts (I3, I4):
//!
//! - delivered: an update record, flushed;
//! - failed for good: first a bounce (RFC 3464) to the sender, committed to the spool and
//!   queued like any message, then the update record. A message from `<>` is never
//!   bounced; its failure is logged as a double bounce;
//! - deferred or possibly delivered: nothing durable; retried on the
//!   [`schedule`](crate::schedule) until `queue.max_lifetime`, then bounced as expired.
//!
//! The message leaves the spool when every recipient is final.
//!
//! [`deliver::remote`]: crate::deliver::remote

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use smtp_wire::address::{ForwardPath, Mailbox};
use spool::{Body, QueueId, Spool, Stored};
use tokio::sync::{Semaphore, mpsc};
use tracing::error;

use crate::bounce::{self, Action, Failure};
use crate::config::{Config, Local};
use crate::deliver::maildir::{self, Delivery};
use crate::deliver::remote::{Group, RcptResult, Remote};
use crate::envelope::{Envelope, Outcome, Recipient, Route, Update};
use crate::{maillog, routing, schedule};

/// Local deliveries running at once: they are disk-bound.
const LOCAL_CONCURRENCY: usize = 8;

/// How much of the original a bounce may quote (its header section is cut from this).
const BOUNCE_QUOTE: u64 = 64 * 1024;

/// Where accepted messages are handed over; cheap to clone.
#[derive(Clone)]
pub struct Queue {
    tx: mpsc::UnboundedSender<Message>,
}

struct Message {
    stored: Stored,
    envelope: Envelope,
    /// Per recipient: true once its outcome is final and durable.
    done: Vec<bool>,
    recovered: bool,
}

struct Shared {
    spool: Spool,
    config: Arc<Config>,
    mail_root: PathBuf,
    local_slots: Semaphore,
    remote: Remote,
    queue: Queue,
}

impl Queue {
    /// Hands a freshly committed message over for delivery.
    pub fn submit(&self, stored: Stored, envelope: Envelope) {
        let done = vec![false; envelope.recipients.len()];
        let message = Message { stored, envelope, done, recovered: false };
        // Only fails when the runtime is shutting down; the spool has the message.
        let _ = self.tx.send(message);
    }
}

/// Starts the queue with the messages recovered from the spool.
pub fn start(spool: Spool, config: Arc<Config>, recovered: Vec<Stored>) -> Queue {
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    let queue = Queue { tx };
    let remote = Remote::new(config.relay.clone(), config.hostname.clone(), spool.clone());
    let shared = Arc::new(Shared {
        mail_root: config.data_dir.join("mail"),
        local_slots: Semaphore::new(LOCAL_CONCURRENCY),
        spool,
        config,
        remote,
        queue: queue.clone(),
    });

    for stored in recovered {
        if let Some(message) = restore(stored) {
            tokio::spawn(run(shared.clone(), message));
        }
    }
    tokio::spawn(async move {
        while let Some(message) = rx.recv().await {
            tokio::spawn(run(shared.clone(), message));
        }
    });
    queue
}

/// Rebuilds a message's state from its envelope and recorded outcomes.
fn restore(stored: Stored) -> Option<Message> {
    let envelope = match Envelope::decode(&stored.envelope) {
        Ok(envelope) => envelope,
        Err(e) => {
            // TODO: move unreadable entries to a quarantine the operator can inspect.
            error!(queue_id = %stored.qid, error = %e, "unreadable envelope; left in the spool");
            return None;
        }
    };
    let mut done = vec![false; envelope.recipients.len()];
    for update in &stored.updates {
        let Ok(update) = Update::decode(update) else {
            error!(queue_id = %stored.qid, "unreadable update record; ignored");
            continue;
        };
        for index in update.recipients {
            if let Some(slot) = done.get_mut(index) {
                *slot = true;
            }
        }
    }
    let pending = done.iter().filter(|d| !**d).count();
    maillog::recovered(stored.qid, pending);
    Some(Message { stored, envelope, done, recovered: true })
}

async fn run(shared: Arc<Shared>, mut message: Message) {
    let mut attempt = 0;
    while message.done.iter().any(|d| !d) {
        attempt += 1;
        let results = attempt_delivery(&shared, &message).await;
        let retry =
            schedule::delay_for(attempt, &shared.config.queue.retry_delays, schedule::jitter());
        settle(&shared, &mut message, results, retry).await;

        if message.done.iter().all(|d| *d) {
            break;
        }
        if expired(&shared, &message) {
            expire(&shared, &mut message).await;
            continue;
        }
        tokio::time::sleep(retry).await;
        message.recovered = true;
    }

    match shared.spool.remove(&message.stored) {
        Ok(()) => maillog::removed(message.stored.qid),
        Err(e) => error!(queue_id = %message.stored.qid, error = %e, "cannot remove message"),
    }
}

/// One attempt for every pending recipient: local ones together, remote ones by domain.
async fn attempt_delivery(shared: &Arc<Shared>, message: &Message) -> Vec<(usize, RcptResult)> {
    let pending = (0..message.done.len()).filter(|&i| !message.done[i]);
    let (local, remote): (Vec<usize>, Vec<usize>) =
        pending.partition(|&i| matches!(message.envelope.recipients[i].route, Route::Local { .. }));

    let mut results = Vec::new();
    if !local.is_empty() {
        results.extend(deliver_local(shared, message, local).await);
    }
    for (domain, indexes) in by_domain(&message.envelope.recipients, &remote) {
        let recipients =
            indexes.iter().map(|&i| (i, message.envelope.recipients[i].address.clone()));
        let group = Group {
            domain: &domain,
            recipients: recipients.collect(),
            envelope: &message.envelope,
            stored: &message.stored,
        };
        results.extend(shared.remote.deliver(&group).await);
    }
    results
}

fn by_domain(recipients: &[Recipient], indexes: &[usize]) -> Vec<(String, Vec<usize>)> {
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    for &i in indexes {
        let Route::Remote { domain } = &recipients[i].route else {
            continue;
        };
        match groups.iter_mut().find(|(d, _)| d == domain) {
            Some((_, members)) => members.push(i),
            None => groups.push((domain.clone(), vec![i])),
        }
    }
    groups
}

async fn deliver_local(
    shared: &Arc<Shared>,
    message: &Message,
    pending: Vec<usize>,
) -> Vec<(usize, RcptResult)> {
    let Ok(_slot) = shared.local_slots.acquire().await else {
        return Vec::new();
    };
    let shared = shared.clone();
    let stored = message.stored.clone();
    let envelope = message.envelope.clone();
    let recovered = message.recovered;

    let result = tokio::task::spawn_blocking(move || {
        let job = maildir::Job {
            mail_root: &shared.mail_root,
            hostname: &shared.config.hostname,
            spool: &shared.spool,
            stored: &stored,
            envelope: &envelope,
            recovered,
        };
        pending.iter().map(|&i| (i, local_result(maildir::deliver(&job, i)))).collect()
    })
    .await;
    result.unwrap_or_default()
}

fn local_result(delivery: std::io::Result<Delivery>) -> RcptResult {
    let relay = "local".to_string();
    match delivery {
        Ok(Delivery::Written) => RcptResult::Delivered { relay, reply: "maildir".into() },
        Ok(Delivery::AlreadyThere) => {
            RcptResult::Delivered { relay, reply: "already in maildir".into() }
        }
        Err(e) => RcptResult::Deferred { relay, reason: format!("maildir: {e}") },
    }
}

/// Makes final what became final in this attempt, and logs the rest.
async fn settle(
    shared: &Shared,
    message: &mut Message,
    results: Vec<(usize, RcptResult)>,
    retry: std::time::Duration,
) {
    let qid = message.stored.qid;
    let (mut delivered, mut delivered_here) = (Vec::new(), Vec::new());
    let mut failures = Vec::new();
    for (index, result) in results {
        let to = message.envelope.recipients[index].address.clone();
        match result {
            RcptResult::Delivered { relay, reply } => {
                maillog::delivered(qid, &to, &relay, &reply);
                match relay == "local" {
                    true => delivered_here.push(index),
                    false => delivered.push(index),
                }
            }
            RcptResult::Deferred { relay, reason } => {
                maillog::deferred(qid, &to, &relay, &reason, retry.as_secs());
            }
            RcptResult::PossiblyDelivered { relay, reason } => {
                maillog::possibly_delivered(qid, &to, &relay, &reason, retry.as_secs());
            }
            RcptResult::Failed { relay, status, diagnostic } => {
                maillog::failed(qid, &to, &relay, &status, &diagnostic);
                failures.push(Failed { index, relay, status, diagnostic });
            }
        }
    }

    // A Maildir delivery is found again by its file name after a crash, so its record
    // need not be flushed before it counts; a remote one cannot be found again.
    record_lazily(shared, message, delivered_here, Outcome::Delivered { detail: "local".into() });
    record(shared, message, delivered, Outcome::Delivered { detail: "relayed".into() }).await;
    if !failures.is_empty() && bounce_for(shared, message, &failures).await {
        let indexes = failures.iter().map(|f| f.index).collect();
        let detail = failures.iter().map(|f| f.diagnostic.as_str()).collect::<Vec<_>>();
        record(shared, message, indexes, Outcome::Failed { detail: detail.join("; ") }).await;
    }
}

/// A recipient that failed for good in this attempt.
struct Failed {
    index: usize,
    relay: String,
    status: String,
    diagnostic: String,
}

/// Records `indexes` durably, then marks them done.
async fn record(shared: &Shared, message: &mut Message, indexes: Vec<usize>, outcome: Outcome) {
    if indexes.is_empty() {
        return;
    }
    let at = Utc::now().timestamp();
    let update = Update { recipients: indexes.clone(), outcome, at };
    // If this fails the recipients stay pending; the retry finds local files in place.
    match shared.spool.update(&message.stored, update.encode()).await {
        Ok(()) => indexes.iter().for_each(|&i| message.done[i] = true),
        Err(e) => error!(queue_id = %message.stored.qid, error = %e, "cannot record outcome"),
    }
}

fn record_lazily(shared: &Shared, message: &mut Message, indexes: Vec<usize>, outcome: Outcome) {
    if indexes.is_empty() {
        return;
    }
    let update = Update { recipients: indexes.clone(), outcome, at: Utc::now().timestamp() };
    match shared.spool.update_lazily(&message.stored, update.encode()) {
        Ok(()) => indexes.iter().for_each(|&i| message.done[i] = true),
        Err(e) => error!(queue_id = %message.stored.qid, error = %e, "cannot record outcome"),
    }
}

fn expired(shared: &Shared, message: &Message) -> bool {
    let age = Utc::now().timestamp() - message.envelope.arrival;
    age >= shared.config.queue.max_lifetime.as_secs() as i64
}

/// The message has been in the queue too long: every pending recipient fails (4.4.7).
async fn expire(shared: &Shared, message: &mut Message) {
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
async fn bounce_for(shared: &Shared, message: &Message, failures: &[Failed]) -> bool {
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
    let received = format!(
        "Received: by {} (oncemail) id {qid};\r\n\t{}\r\n",
        shared.config.hostname,
        now.format("%a, %d %b %Y %H:%M:%S +0000")
    );
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_mta_is_the_host_name() {
        assert_eq!(remote_mta("mx.example.net[192.0.2.1]:25"), Some("mx.example.net"));
        assert_eq!(remote_mta("local"), None);
        assert_eq!(remote_mta(""), None);
    }

    #[test]
    fn recipients_group_by_domain_in_order() {
        let r = |domain: &str| Recipient {
            address: format!("x@{domain}"),
            route: Route::Remote { domain: domain.into() },
        };
        let recipients = vec![r("a.test"), r("b.test"), r("a.test")];
        let groups = by_domain(&recipients, &[0, 1, 2]);
        assert_eq!(groups, vec![("a.test".into(), vec![0, 2]), ("b.test".into(), vec![1])]);
    }
}
