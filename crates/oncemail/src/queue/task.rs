//! The task of one message: attempts, their outcomes, the waits between them, and what
//! an operator asks in the meantime.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::mpsc;
use tracing::error;

use super::report::{self, Failed};
use super::{Control, Message, Shared};
use crate::deliver::maildir::{self, Delivery};
use crate::deliver::remote::{Group, RcptResult};
use crate::envelope::{Outcome, Recipient, Route, Update};
use crate::{maillog, schedule};

pub(super) async fn run(
    shared: Arc<Shared>,
    mut message: Message,
    mut control: mpsc::UnboundedReceiver<Control>,
) {
    let qid = message.stored.qid;
    let mut attempt = 0;
    while message.done.iter().any(|d| !d) {
        if message.held {
            match control.recv().await {
                Some(order) => obey(&shared, &mut message, order).await,
                None => return,
            }
            continue;
        }

        attempt += 1;
        shared.queue.update(qid, |info| {
            info.state = "active";
            info.attempts = attempt;
            info.next_attempt = None;
        });
        let results = attempt_delivery(&shared, &message).await;
        let delays = &shared.config.queue.retry_delays;
        let retry = schedule::delay_for(attempt, delays, schedule::jitter());
        settle(&shared, &mut message, results, retry).await;

        if message.done.iter().all(|d| *d) {
            break;
        }
        if report::expired(&shared, &message) {
            report::expire(&shared, &mut message).await;
            continue;
        }
        wait(&shared, &mut message, &mut control, retry).await;
        message.recovered = true;
    }

    finish(&shared, &message);
}

/// Waits out the retry delay, unless an operator says otherwise first.
async fn wait(
    shared: &Shared,
    message: &mut Message,
    control: &mut mpsc::UnboundedReceiver<Control>,
    delay: Duration,
) {
    let qid = message.stored.qid;
    let next = Utc::now().timestamp() + delay.as_secs() as i64;
    shared.queue.update(qid, |info| {
        info.state = "deferred";
        info.next_attempt = Some(next);
    });
    tokio::select! {
        () = tokio::time::sleep(delay) => {}
        order = control.recv() => {
            if let Some(order) = order {
                obey(shared, message, order).await;
            }
        }
    }
}

/// Carries out an operator's order. Flush needs nothing: the wait is over either way.
async fn obey(shared: &Shared, message: &mut Message, order: Control) {
    let qid = message.stored.qid;
    match order {
        Control::Flush => {}
        Control::Hold | Control::Release => {
            let held = order == Control::Hold;
            let outcome = if held { Outcome::Held } else { Outcome::Released };
            let update = Update { recipients: Vec::new(), outcome, at: Utc::now().timestamp() };
            match shared.spool.update(&message.stored, update.encode()).await {
                Ok(()) => message.held = held,
                Err(e) => error!(queue_id = %qid, error = %e, "cannot record hold or release"),
            }
            let state = if message.held { "held" } else { "active" };
            shared.queue.update(qid, |info| info.state = state);
        }
        Control::Delete => {
            // Every recipient counts as done: the message goes without a report.
            message.done.iter_mut().for_each(|d| *d = true);
        }
        Control::Bounce => report::bounce_now(shared, message).await,
    }
}

fn finish(shared: &Shared, message: &Message) {
    let qid = message.stored.qid;
    shared.queue.unregister(qid);
    match shared.spool.remove(&message.stored) {
        Ok(()) => maillog::removed(qid),
        Err(e) => error!(queue_id = %qid, error = %e, "cannot remove message"),
    }
}

/// One attempt for every pending recipient: local ones together, remote ones by domain.
pub(super) async fn attempt_delivery(
    shared: &Arc<Shared>,
    message: &Message,
) -> Vec<(usize, RcptResult)> {
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
    let mut shown: Vec<(usize, &'static str, Option<String>)> = Vec::new();
    for (index, result) in results {
        let to = message.envelope.recipients[index].address.clone();
        shown.push(match &result {
            RcptResult::Delivered { .. } => (index, "delivered", None),
            RcptResult::Deferred { reason, .. } => (index, "deferred", Some(reason.clone())),
            RcptResult::PossiblyDelivered { reason, .. } => {
                (index, "deferred", Some(format!("possibly delivered: {reason}")))
            }
            RcptResult::Failed { diagnostic, .. } => (index, "failed", Some(diagnostic.clone())),
        });
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
    if !failures.is_empty() && report::bounce_for(shared, message, &failures).await {
        let indexes = failures.iter().map(|f| f.index).collect();
        let detail = failures.iter().map(|f| f.diagnostic.as_str()).collect::<Vec<_>>();
        record(shared, message, indexes, Outcome::Failed { detail: detail.join("; ") }).await;
    }
    shared.queue.update(qid, |info| {
        for (index, state, reply) in shown {
            if let Some(rcpt) = info.recipients.get_mut(index) {
                rcpt.state = state;
                rcpt.last_reply = reply;
            }
        }
    });
}

/// Records `indexes` durably, then marks them done.
pub(super) async fn record(
    shared: &Shared,
    message: &mut Message,
    indexes: Vec<usize>,
    outcome: Outcome,
) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
