//! dedupe: recognise a sender's retry of a message already accepted, and deliver it once.
//!
//! # What is compared
//!
//! A fingerprint per recipient: SHA-256 over the envelope sender, the recipient address
//! (lowercased) and the SHA-256 of the content exactly as received (before the fields we
//! add), truncated to 128 bits. A retry after a broken final-dot gap carries the same
//! three; a different message, the same message to someone else, or the same message to
//! the same person after the window all differ in at least one.
//!
//! # Where it lives
//!
//! In memory for the lookup (a mutex-guarded map, no I/O at end of data). Durably inside
//! the commit record of the message that introduced it (a `spool::Keep`), so it costs no
//! flush of its own, and it is rebuilt from the spool's kept facts after a restart.
//! Entries expire after the window; a window of zero turns the feature off.
//!
//! # Transaction IDs (RFC 1845)
//!
//! A client that names its transaction with `TRANSID` gets certainty instead of a guess:
//! the ID (scoped by the client's EHLO name) is kept with the fingerprints, and a later
//! `MAIL ... TRANSID=` with the same ID finds the original queue ID and size.
//!
//! # Concurrency
//!
//! A fingerprint is claimed (pending) before the commit and confirmed after it. A second
//! session that meets a pending fingerprint waits for the first commit to settle: if it
//! succeeded the second is a duplicate; if it failed, the second claims it. So two
//! sessions never both queue the same recipient, and a failed commit never causes a
//! retry to be wrongly suppressed.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use sha2::{Digest, Sha256};
use spool::{Keep, Kept, QueueId};
use tokio::sync::watch;

pub type Fingerprint = [u8; 16];

const FINGERPRINT_LEN: usize = 16;

/// The fingerprint of one recipient of one message.
pub fn fingerprint(sender: &str, recipient: &str, content_sha256: &str) -> Fingerprint {
    let mut hasher = Sha256::new();
    for part in ["msg", sender, &recipient.to_lowercase(), content_sha256] {
        hasher.update((part.len() as u32).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    truncate(&hasher.finalize())
}

/// The key of a client's transaction ID: RFC 1845 scopes IDs by the EHLO name.
pub fn transid_key(helo: &str, transid: &str) -> Fingerprint {
    let mut hasher = Sha256::new();
    for part in ["transid", &helo.to_lowercase(), transid] {
        hasher.update((part.len() as u32).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    truncate(&hasher.finalize())
}

/// Tags of the entries in a kept fact: a fingerprint, or a transaction ID with a size.
const TAG_FINGERPRINT: u8 = b'F';
const TAG_TRANSID: u8 = b'T';

fn truncate(digest: &[u8]) -> Fingerprint {
    let mut out = [0u8; FINGERPRINT_LEN];
    out.copy_from_slice(&digest[..FINGERPRINT_LEN]);
    out
}

#[derive(Clone)]
enum Entry {
    Committed { qid: QueueId, expires: i64 },
    Pending { qid: QueueId, settled: watch::Receiver<bool> },
}

/// A committed transaction ID: the message it named and that message's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completed {
    pub qid: QueueId,
    pub size: u64,
    expires: i64,
}

#[derive(Default)]
struct Inner {
    map: HashMap<Fingerprint, Entry>,
    transids: HashMap<Fingerprint, Completed>,
    /// Committed fingerprints in expiry order (the window is constant, so commit order).
    expiry: VecDeque<(i64, Fingerprint)>,
}

pub struct Index {
    window_s: i64,
    inner: Mutex<Inner>,
}

/// What a claim found, per fingerprint in the order given.
pub struct Claim {
    /// `Some(original)` for fingerprints already accepted within the window.
    pub duplicates: Vec<Option<QueueId>>,
    /// The fingerprints now pending for the claimant; settle with `confirm` or `release`.
    pub claimed: Vec<Fingerprint>,
    settled: Option<watch::Sender<bool>>,
}

impl Claim {
    pub fn all_duplicates(&self) -> bool {
        self.duplicates.iter().all(Option::is_some)
    }

    /// The original queue ID of the first duplicate, for the reply and the log.
    pub fn original(&self) -> Option<QueueId> {
        self.duplicates.iter().flatten().next().copied()
    }
}

impl Index {
    /// `window_s` of 0 turns suppression off.
    pub fn new(window_s: i64) -> Index {
        Index { window_s, inner: Mutex::new(Inner::default()) }
    }

    pub fn enabled(&self) -> bool {
        self.window_s > 0
    }

    /// What a commit must carry to make its claimed fingerprints (and the transaction
    /// ID, with the message size) durable.
    pub fn keep_for(
        &self,
        claim: &Claim,
        transid: Option<(Fingerprint, u64)>,
        now: i64,
    ) -> Option<Keep> {
        if !self.enabled() || (claim.claimed.is_empty() && transid.is_none()) {
            return None;
        }
        let mut data = Vec::with_capacity(claim.claimed.len() * 17 + 25);
        for fp in &claim.claimed {
            data.push(TAG_FINGERPRINT);
            data.extend_from_slice(fp);
        }
        if let Some((key, size)) = transid {
            data.push(TAG_TRANSID);
            data.extend_from_slice(&key);
            data.extend_from_slice(&size.to_le_bytes());
        }
        Some(Keep { expires: now + self.window_s, data })
    }

    /// Rebuilds the index from the spool's kept facts.
    pub fn restore(&self, kept: &[Kept]) {
        let mut inner = self.lock();
        for fact in kept {
            let (qid, expires) = (fact.qid, fact.keep.expires);
            let mut data = &fact.keep.data[..];
            while let Some((&tag, rest)) = data.split_first() {
                match (tag, rest.len()) {
                    (TAG_FINGERPRINT, 16..) => {
                        let fp = truncate(&rest[..16]);
                        inner.map.insert(fp, Entry::Committed { qid, expires });
                        inner.expiry.push_back((expires, fp));
                        data = &rest[16..];
                    }
                    (TAG_TRANSID, 24..) => {
                        let size = u64::from_le_bytes(rest[16..24].try_into().unwrap_or_default());
                        let completed = Completed { qid, size, expires };
                        inner.transids.insert(truncate(&rest[..16]), completed);
                        data = &rest[24..];
                    }
                    _ => break,
                }
            }
        }
        inner.expiry.make_contiguous().sort_unstable_by_key(|(expires, _)| *expires);
    }

    /// The message a transaction ID named, if it was committed within the window.
    pub fn completed(&self, key: &Fingerprint, now: i64) -> Option<Completed> {
        let mut inner = self.lock();
        match inner.transids.get(key) {
            Some(found) if found.expires > now => Some(*found),
            Some(_) => {
                inner.transids.remove(key);
                None
            }
            None => None,
        }
    }

    /// Claims the fingerprints not yet accepted, waiting out other sessions' pending
    /// commits of the same fingerprints.
    pub async fn claim(&self, qid: QueueId, fingerprints: &[Fingerprint], now: i64) -> Claim {
        loop {
            match self.try_claim(qid, fingerprints, now) {
                Ok(claim) => return claim,
                Err(mut settled) => {
                    // The other session's commit settles one way or the other.
                    let _ = settled.wait_for(|done| *done).await;
                }
            }
        }
    }

    fn try_claim(
        &self,
        qid: QueueId,
        fingerprints: &[Fingerprint],
        now: i64,
    ) -> Result<Claim, watch::Receiver<bool>> {
        let mut inner = self.lock();
        inner.expire(now);

        let mut duplicates = Vec::with_capacity(fingerprints.len());
        for fp in fingerprints {
            match inner.map.get(fp) {
                Some(Entry::Committed { qid, .. }) => duplicates.push(Some(*qid)),
                Some(Entry::Pending { qid: other, settled }) if *other != qid => {
                    return Err(settled.clone());
                }
                _ => duplicates.push(None),
            }
        }

        let (tx, rx) = watch::channel(false);
        let mut claimed = Vec::new();
        for (fp, dup) in fingerprints.iter().zip(&duplicates) {
            if dup.is_none() && !claimed.contains(fp) {
                inner.map.insert(*fp, Entry::Pending { qid, settled: rx.clone() });
                claimed.push(*fp);
            }
        }
        Ok(Claim { duplicates, claimed, settled: Some(tx) })
    }

    /// The commit succeeded: the claimed fingerprints (and transaction ID) are accepted
    /// until the window ends.
    pub fn confirm(
        &self,
        mut claim: Claim,
        transid: Option<(Fingerprint, u64)>,
        qid: QueueId,
        now: i64,
    ) {
        let expires = now + self.window_s;
        let mut inner = self.lock();
        for fp in &claim.claimed {
            inner.map.insert(*fp, Entry::Committed { qid, expires });
            inner.expiry.push_back((expires, *fp));
        }
        if let Some((key, size)) = transid {
            inner.transids.insert(key, Completed { qid, size, expires });
        }
        drop(inner);
        claim.settle();
    }

    /// The commit failed or was refused: forget the claim.
    pub fn release(&self, mut claim: Claim) {
        let mut inner = self.lock();
        for fp in &claim.claimed {
            if matches!(inner.map.get(fp), Some(Entry::Pending { .. })) {
                inner.map.remove(fp);
            }
        }
        drop(inner);
        claim.settle();
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the map half-updated in a way
        // that matters (every step is a single insert or remove), so poison is ignored.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Number of fingerprints and transaction IDs in the index (for tests and metrics).
    pub fn len(&self) -> usize {
        let inner = self.lock();
        inner.map.len() + inner.transids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Claim {
    fn settle(&mut self) {
        if let Some(tx) = self.settled.take() {
            let _ = tx.send(true);
        }
    }
}

impl Drop for Claim {
    /// A claim dropped without confirm or release (a session that vanished) still wakes
    /// the waiters; they find the fingerprints pending under a dead claim and retry.
    fn drop(&mut self) {
        self.settle();
    }
}

impl Inner {
    fn expire(&mut self, now: i64) {
        while let Some(&(expires, fp)) = self.expiry.front() {
            if expires > now {
                break;
            }
            self.expiry.pop_front();
            if matches!(self.map.get(&fp), Some(Entry::Committed { expires: e, .. }) if *e <= now) {
                self.map.remove(&fp);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn fp(n: u8) -> Fingerprint {
        [n; FINGERPRINT_LEN]
    }

    #[test]
    fn fingerprints_separate_what_must_not_merge() {
        let base = fingerprint("a@x", "b@y", "hash");
        assert_eq!(base, fingerprint("a@x", "B@Y", "hash"), "recipient case is ignored");
        assert_ne!(base, fingerprint("a@x", "c@y", "hash"));
        assert_ne!(base, fingerprint("", "b@y", "hash"));
        assert_ne!(base, fingerprint("a@x", "b@y", "other"));
        // Field boundaries are length-prefixed, so shifting text between fields differs.
        assert_ne!(fingerprint("ab", "c", "h"), fingerprint("a", "bc", "h"));
    }

    #[tokio::test]
    async fn confirmed_fingerprints_are_duplicates_until_the_window_ends() {
        let index = Index::new(100);
        let (q1, q2) = (QueueId::generate(), QueueId::generate());

        let claim = index.claim(q1, &[fp(1), fp(2)], 1000).await;
        assert_eq!(claim.duplicates, vec![None, None]);
        assert_eq!(index.keep_for(&claim, None, 1000).unwrap().data.len(), 34);
        index.confirm(claim, None, q1, 1000);

        let claim = index.claim(q2, &[fp(2), fp(3)], 1050).await;
        assert_eq!(claim.duplicates, vec![Some(q1), None]);
        assert_eq!(claim.claimed, vec![fp(3)]);
        index.release(claim);

        let claim = index.claim(q2, &[fp(1), fp(2)], 1050).await;
        assert!(claim.all_duplicates());
        index.release(claim);

        let claim = index.claim(q2, &[fp(1)], 1100).await;
        assert_eq!(claim.duplicates, vec![None], "expired at the end of the window");
    }

    #[tokio::test]
    async fn a_released_claim_lets_the_next_session_claim() {
        let index = Index::new(100);
        let claim = index.claim(QueueId::generate(), &[fp(1)], 0).await;
        index.release(claim);
        let claim = index.claim(QueueId::generate(), &[fp(1)], 0).await;
        assert_eq!(claim.duplicates, vec![None]);
    }

    #[tokio::test]
    async fn a_pending_claim_makes_others_wait_for_its_outcome() {
        let index = Arc::new(Index::new(100));
        let first = QueueId::generate();
        let claim = index.claim(first, &[fp(7)], 0).await;

        let waiter = {
            let index = index.clone();
            tokio::spawn(async move { index.claim(QueueId::generate(), &[fp(7)], 0).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "the second session waits");

        index.confirm(claim, None, first, 0);
        let second = waiter.await.unwrap();
        assert_eq!(second.duplicates, vec![Some(first)]);
    }

    #[tokio::test]
    async fn restore_rebuilds_what_keep_for_wrote() {
        let written = Index::new(100);
        let qid = QueueId::generate();
        let claim = written.claim(qid, &[fp(4), fp(5)], 0).await;
        let transid = Some((transid_key("Client.Example", "t1@client.example"), 4321));
        let keep = written.keep_for(&claim, transid, 0).unwrap();

        let index = Index::new(100);
        index.restore(&[Kept { qid, keep }]);
        assert_eq!(index.len(), 3);
        let claim = index.try_claim(QueueId::generate(), &[fp(5)], 10).ok().unwrap();
        assert_eq!(claim.duplicates, vec![Some(qid)]);
        let key = transid_key("client.example", "t1@client.example");
        let found = index.completed(&key, 10).unwrap();
        assert_eq!((found.qid, found.size), (qid, 4321));
        assert_eq!(index.completed(&key, 100), None, "expired");
        assert_eq!(index.completed(&transid_key("other", "t1@client.example"), 10), None);
    }

    #[test]
    fn window_zero_is_off() {
        let index = Index::new(0);
        assert!(!index.enabled());
    }
}
