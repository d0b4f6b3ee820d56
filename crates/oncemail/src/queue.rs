//! queue: drives every accepted message to a final outcome for each recipient.
//!
//! Messages arrive from receive (after their `250`) and from the spool at start. Each
//! message gets a task that delivers its pending recipients, records each outcome in the
//! spool before it counts (I3, I4), retries what failed on the [`schedule`] and removes the
//! message from the spool once every recipient is final. A bounded number of deliveries run
//! at once; the others wait their turn.
//!
//! [`schedule`]: crate::schedule

use std::path::PathBuf;
use std::sync::Arc;

use spool::{Spool, Stored};
use tokio::sync::{Semaphore, mpsc};
use tracing::error;

use crate::deliver::maildir::{self, Delivery};
use crate::envelope::{Envelope, Outcome, Update};
use crate::{maillog, schedule};

/// Deliveries running at once. Local delivery is disk-bound; more would only queue in
/// the kernel.
const CONCURRENCY: usize = 8;

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
    retry_delays: Vec<std::time::Duration>,
    mail_root: PathBuf,
    hostname: String,
    slots: Semaphore,
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
pub fn start(
    spool: Spool,
    mail_root: PathBuf,
    hostname: String,
    retry_delays: Vec<std::time::Duration>,
    recovered: Vec<Stored>,
) -> Queue {
    let slots = Semaphore::new(CONCURRENCY);
    let shared = Arc::new(Shared { spool, retry_delays, mail_root, hostname, slots });
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();

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
    Queue { tx }
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
        let delivered = attempt_delivery(&shared, &message).await;
        record(&shared, &mut message, delivered).await;

        if message.done.iter().any(|d| !d) {
            let delay = schedule::delay_for(attempt, &shared.retry_delays, schedule::jitter());
            for (index, _) in message.done.iter().enumerate().filter(|(_, d)| !**d) {
                let to = &message.envelope.recipients[index].address;
                let qid = message.stored.qid;
                maillog::deferred(qid, to, "local", "delivery failed", delay.as_secs());
            }
            tokio::time::sleep(delay).await;
            message.recovered = true;
        }
    }

    match shared.spool.remove(&message.stored) {
        Ok(()) => maillog::removed(message.stored.qid),
        Err(e) => error!(queue_id = %message.stored.qid, error = %e, "cannot remove message"),
    }
}

/// Delivers every pending recipient; returns those now in their mailbox.
async fn attempt_delivery(shared: &Arc<Shared>, message: &Message) -> Vec<usize> {
    let Ok(_slot) = shared.slots.acquire().await else {
        return Vec::new();
    };
    let pending: Vec<usize> = (0..message.done.len()).filter(|&i| !message.done[i]).collect();
    let shared = shared.clone();
    let stored = message.stored.clone();
    let envelope = message.envelope.clone();
    let recovered = message.recovered;

    let result = tokio::task::spawn_blocking(move || {
        let job = maildir::Job {
            mail_root: &shared.mail_root,
            hostname: &shared.hostname,
            spool: &shared.spool,
            stored: &stored,
            envelope: &envelope,
            recovered,
        };
        deliver_each(&job, &pending)
    })
    .await;
    result.unwrap_or_default()
}

fn deliver_each(job: &maildir::Job, pending: &[usize]) -> Vec<usize> {
    let mut delivered = Vec::new();
    for &index in pending {
        let to = &job.envelope.recipients[index].address;
        match maildir::deliver(job, index) {
            Ok(Delivery::Written) => {
                maillog::delivered(job.stored.qid, to, "local", "maildir");
                delivered.push(index);
            }
            Ok(Delivery::AlreadyThere) => {
                maillog::delivered(job.stored.qid, to, "local", "already in maildir");
                delivered.push(index);
            }
            Err(e) => {
                tracing::warn!(queue_id = %job.stored.qid, to, error = %e, "maildir delivery failed");
            }
        }
    }
    delivered
}

/// Records the delivered recipients durably, then marks them done.
async fn record(shared: &Shared, message: &mut Message, delivered: Vec<usize>) {
    if delivered.is_empty() {
        return;
    }
    let update = Update {
        recipients: delivered.clone(),
        outcome: Outcome::Delivered { detail: "maildir".into() },
        at: chrono::Utc::now().timestamp(),
    };
    // If this fails the recipients stay pending; the retry finds their files in place.
    match shared.spool.update(&message.stored, update.encode()).await {
        Ok(()) => delivered.iter().for_each(|&i| message.done[i] = true),
        Err(e) => error!(queue_id = %message.stored.qid, error = %e, "cannot record delivery"),
    }
}
