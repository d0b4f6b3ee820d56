//! queue: drives every accepted message to a final outcome for each recipient, and lets
//! an operator see and steer it.
//!
//! Messages arrive from receive (after their `250`) and from the spool at start. Each
//! message gets a task ([`task`]) that, per attempt, delivers its pending recipients
//! (local ones to Maildirs, remote ones grouped by domain through
//! [`deliver::remote`](crate::deliver::remote)), then records what became final before it
//! counts (I3, I4):
//!
//! - delivered: an update record (flushed for remote deliveries; local ones are found
//!   again by their Maildir file name, so their record rides on the next flush);
//! - failed for good: first a bounce (RFC 3464) to the sender, committed to the spool and
//!   queued like any message, then the update record ([`report`]). A message from `<>` is
//!   never bounced; its failure is logged as a double bounce;
//! - deferred or possibly delivered: nothing durable; retried on the
//!   [`schedule`](crate::schedule) until `queue.max_lifetime`, then bounced as expired.
//!
//! The message leaves the spool when every recipient is final.
//!
//! # Operator control
//!
//! The queue keeps a registry of what each message is doing ([`Info`]) for `queue list`,
//! and a control channel per message task for flush, hold, release, delete and bounce.
//! A hold is recorded in the spool, so it survives a restart.

mod report;
mod task;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use spool::{QueueId, Spool, Stored};
use tokio::sync::{Semaphore, mpsc};
use tracing::error;

use crate::config::Config;
use crate::deliver::remote::Remote;
use crate::envelope::{Envelope, Outcome, Update};
use crate::maillog;
use crate::metrics;

/// Local deliveries running at once: they are disk-bound.
const LOCAL_CONCURRENCY: usize = 8;

/// Where accepted messages are handed over, and where operators look; cheap to clone.
#[derive(Clone)]
pub struct Queue {
    inner: Arc<Inner>,
}

struct Inner {
    tx: mpsc::UnboundedSender<Message>,
    registry: Mutex<HashMap<QueueId, Entry>>,
}

struct Entry {
    info: Info,
    stored: Stored,
    control: mpsc::UnboundedSender<Control>,
}

/// What `queue list` shows of a message.
#[derive(Debug, Clone, Serialize)]
pub struct Info {
    pub queue_id: String,
    /// Unix seconds.
    pub arrival: i64,
    pub size: u64,
    pub sender: String,
    /// "active" (being delivered or about to be), "deferred" (waiting to retry), "held".
    pub state: &'static str,
    pub attempts: u32,
    /// Unix seconds of the next attempt, when deferred.
    pub next_attempt: Option<i64>,
    pub recipients: Vec<RecipientInfo>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RecipientInfo {
    pub address: String,
    /// "pending", "deferred", "delivered", "failed", or "done" (final before a restart).
    pub state: &'static str,
    /// The last reply or reason, for deferred and failed recipients.
    pub last_reply: Option<String>,
}

/// What an operator can ask of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Flush,
    Hold,
    Release,
    Delete,
    Bounce,
}

impl Control {
    pub fn name(self) -> &'static str {
        match self {
            Control::Flush => "flush",
            Control::Hold => "hold",
            Control::Release => "release",
            Control::Delete => "delete",
            Control::Bounce => "bounce",
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("no message {0} in the queue")]
pub struct NotFound(pub String);

/// A message being driven by its task.
struct Message {
    stored: Stored,
    envelope: Envelope,
    /// Per recipient: true once its outcome is final and durable.
    done: Vec<bool>,
    held: bool,
    recovered: bool,
}

/// What every message task shares.
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
        let message = Message { stored, envelope, done, held: false, recovered: false };
        // Only fails when the runtime is shutting down; the spool has the message.
        let _ = self.inner.tx.send(message);
    }

    /// Every message in the queue, oldest first.
    pub fn list(&self) -> Vec<Info> {
        let mut list: Vec<Info> = self.registry().values().map(|e| e.info.clone()).collect();
        list.sort_by(|a, b| a.queue_id.cmp(&b.queue_id));
        list
    }

    /// One message's state and where its body is.
    pub fn get(&self, qid: &str) -> Option<(Info, Stored)> {
        let qid = QueueId::parse(qid)?;
        self.registry().get(&qid).map(|e| (e.info.clone(), e.stored.clone()))
    }

    /// Sends `control` to one message, on behalf of `who` (for the log).
    pub fn control(&self, qid: &str, control: Control, who: &str) -> Result<(), NotFound> {
        let missing = || NotFound(qid.to_string());
        let id = QueueId::parse(qid).ok_or_else(missing)?;
        let registry = self.registry();
        let entry = registry.get(&id).ok_or_else(missing)?;
        entry.control.send(control).map_err(|_| missing())?;
        maillog::operator(id, control.name(), who);
        Ok(())
    }

    /// Asks every message that waits to retry now; returns how many were asked.
    pub fn flush_all(&self, who: &str) -> usize {
        let registry = self.registry();
        let mut asked = 0;
        for (qid, entry) in registry.iter() {
            if entry.control.send(Control::Flush).is_ok() {
                maillog::operator(*qid, "flush", who);
                asked += 1;
            }
        }
        asked
    }

    fn registry(&self) -> MutexGuard<'_, HashMap<QueueId, Entry>> {
        // Every change under this lock is a single insert, remove or field update.
        self.inner.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a message; returns the receiving end of its control channel.
    fn register(&self, message: &Message) -> mpsc::UnboundedReceiver<Control> {
        let (control, rx) = mpsc::unbounded_channel();
        let info = Info::of(message);
        metrics::get().queue_gauge(info.state).inc();
        let stored = message.stored.clone();
        self.registry().insert(message.stored.qid, Entry { info, stored, control });
        rx
    }

    /// Updates what `queue list` shows of a message.
    fn update(&self, qid: QueueId, change: impl FnOnce(&mut Info)) {
        let mut registry = self.registry();
        let Some(entry) = registry.get_mut(&qid) else {
            return;
        };
        let before = entry.info.state;
        change(&mut entry.info);
        if entry.info.state != before {
            metrics::get().queue_gauge(before).dec();
            metrics::get().queue_gauge(entry.info.state).inc();
        }
    }

    fn unregister(&self, qid: QueueId) {
        if let Some(entry) = self.registry().remove(&qid) {
            metrics::get().queue_gauge(entry.info.state).dec();
        }
    }
}

impl Info {
    fn of(message: &Message) -> Info {
        let recipients = message
            .envelope
            .recipients
            .iter()
            .zip(&message.done)
            .map(|(r, done)| RecipientInfo {
                address: r.address.clone(),
                state: if *done { "done" } else { "pending" },
                last_reply: None,
            })
            .collect();
        Info {
            queue_id: message.stored.qid.to_string(),
            arrival: message.envelope.arrival,
            size: message.envelope.size,
            sender: message.envelope.sender.clone(),
            state: if message.held { "held" } else { "active" },
            attempts: 0,
            next_attempt: None,
            recipients,
        }
    }
}

/// Starts the queue with the messages recovered from the spool.
pub fn start(spool: Spool, config: Arc<Config>, recovered: Vec<Stored>) -> Queue {
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    let queue = Queue { inner: Arc::new(Inner { tx, registry: Mutex::new(HashMap::new()) }) };
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
            let control = queue.register(&message);
            tokio::spawn(task::run(shared.clone(), message, control));
        }
    }
    tokio::spawn(async move {
        while let Some(message) = rx.recv().await {
            let control = shared.queue.register(&message);
            tokio::spawn(task::run(shared.clone(), message, control));
        }
    });
    queue
}

/// Rebuilds a message's state from its envelope and recorded updates.
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
    let mut held = false;
    for update in &stored.updates {
        let Ok(update) = Update::decode(update) else {
            error!(queue_id = %stored.qid, "unreadable update record; ignored");
            continue;
        };
        match update.outcome {
            Outcome::Held => held = true,
            Outcome::Released => held = false,
            _ => {}
        }
        if update.outcome.is_final() {
            for index in update.recipients {
                if let Some(slot) = done.get_mut(index) {
                    *slot = true;
                }
            }
        }
    }
    let pending = done.iter().filter(|d| !**d).count();
    maillog::recovered(stored.qid, pending);
    Some(Message { stored, envelope, done, held, recovered: true })
}
