//! Spool behaviour across reopen: what is committed comes back, what is removed does not.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use super::*;

/// Opens the spool, retrying while the previous instance's writer thread is still exiting.
fn reopen(root: &Path) -> (Spool, Vec<Stored>) {
    let opened = reopen_all(root);
    (opened.spool, opened.messages)
}

fn reopen_all(root: &Path) -> Opened {
    for _ in 0..200 {
        match Spool::open(root) {
            Ok(opened) => return opened,
            Err(SpoolError::Locked(_)) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => panic!("open failed: {e}"),
        }
    }
    panic!("spool stayed locked");
}

async fn commit_file(spool: &Spool, body: &[u8]) -> Stored {
    let qid = QueueId::generate();
    let mut file = spool.create_body_file(qid).unwrap();
    file.write_all(body).unwrap();
    file.sync_data().unwrap();
    let len = body.len() as u64;
    spool.commit(qid, b"env-file".to_vec(), Body::File { len }, None).await.unwrap()
}

#[tokio::test]
async fn committed_messages_come_back_with_their_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let Opened { spool, messages: found, .. } = Spool::open(dir.path()).unwrap();
    assert!(found.is_empty());

    let qid = QueueId::generate();
    let inline = spool.commit(qid, b"env".to_vec(), Body::Inline(b"small".to_vec()), None).await;
    let inline = inline.unwrap();
    let file = commit_file(&spool, b"a bigger body").await;
    assert_eq!(spool.read_body(&inline.body).unwrap(), b"small");
    drop(spool);

    let (spool, found) = reopen(dir.path());
    assert_eq!(found.len(), 2);
    assert_eq!(found[0].qid, inline.qid);
    assert_eq!(found[0].envelope, b"env");
    assert_eq!(spool.read_body(&found[0].body).unwrap(), b"small");
    assert_eq!(found[1].qid, file.qid);
    assert_eq!(spool.read_body(&found[1].body).unwrap(), b"a bigger body");
}

#[tokio::test]
async fn updates_come_back_in_order_and_removed_messages_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap().spool;
    let keep = commit_file(&spool, b"keep").await;
    let gone = commit_file(&spool, b"gone").await;

    spool.update(&keep, b"one".to_vec()).await.unwrap();
    spool.update(&keep, b"two".to_vec()).await.unwrap();
    spool.update(&gone, b"x".to_vec()).await.unwrap();
    spool.remove(&gone).unwrap();
    // A later synced write guarantees the removal was processed before we reopen.
    spool.update(&keep, b"three".to_vec()).await.unwrap();
    drop(spool);

    let (_spool, found) = reopen(dir.path());
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].qid, keep.qid);
    assert_eq!(found[0].updates, vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]);
    assert!(!dir.path().join("data").join(gone.qid.to_string()).exists());
}

#[tokio::test]
async fn leftover_bodies_and_empty_segments_are_cleaned_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap().spool;
    let never = QueueId::generate();
    spool.create_body_file(never).unwrap().write_all(b"partial").unwrap();
    let done = commit_file(&spool, b"done").await;
    spool.remove(&done).unwrap();
    drop(spool);

    let (_spool, found) = reopen(dir.path());
    assert!(found.is_empty());
    assert_eq!(fs::read_dir(dir.path().join("data")).unwrap().count(), 0);
    // Only the fresh active segment and its sidecar remain.
    assert_eq!(fs::read_dir(dir.path().join("log")).unwrap().count(), 2);
}

#[tokio::test]
async fn a_torn_tail_loses_only_the_unacknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap().spool;
    let qid = QueueId::generate();
    let good = spool.commit(qid, b"e".to_vec(), Body::Inline(b"b".to_vec()), None).await.unwrap();
    drop(spool);

    let seg = segment_path(&dir.path().join("log"), good.segment);
    let mut torn = Vec::new();
    record::encode(record::Kind::Commit, &[b"half of a record"], &mut torn);
    torn.truncate(torn.len() - 3);
    fs::OpenOptions::new().append(true).open(&seg).unwrap().write_all(&torn).unwrap();

    let (_spool, found) = reopen(dir.path());
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].qid, good.qid);
}

#[tokio::test]
async fn a_second_process_cannot_open_the_spool() {
    let dir = tempfile::tempdir().unwrap();
    let _spool = Spool::open(dir.path()).unwrap().spool;
    assert!(matches!(Spool::open(dir.path()), Err(SpoolError::Locked(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commits_all_land_across_segment_rotations() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap().spool;

    // Waves of concurrent commits, so that batches end and segments rotate between them.
    let mut stored = Vec::new();
    for wave in 0..10u32 {
        let mut tasks = Vec::new();
        for i in wave * 30..wave * 30 + 30 {
            let spool = spool.clone();
            tasks.push(tokio::spawn(async move {
                let body = vec![b'a' + (i % 26) as u8; 1000 + i as usize];
                let qid = QueueId::generate();
                spool.commit(qid, i.to_le_bytes().to_vec(), Body::Inline(body), None).await.unwrap()
            }));
        }
        for task in tasks {
            stored.push(task.await.unwrap());
        }
    }
    let segments: std::collections::HashSet<u64> = stored.iter().map(|s| s.segment).collect();
    assert!(segments.len() > 1, "300 KB should span several 64 KiB test segments");

    // Remove the first half; their segments may go, the rest must stay readable.
    for s in &stored[..150] {
        spool.remove(s).unwrap();
    }
    let last = stored.last().unwrap();
    spool.update(last, b"sync".to_vec()).await.unwrap();
    drop(spool);

    let (spool, found) = reopen(dir.path());
    assert_eq!(found.len(), 150);
    for message in &found {
        let i = u32::from_le_bytes(message.envelope[..4].try_into().unwrap());
        let body = spool.read_body(&message.body).unwrap();
        assert_eq!(body, vec![b'a' + (i % 26) as u8; 1000 + i as usize]);
        assert!(i >= 150 || !stored[..150].iter().any(|s| s.qid == message.qid));
    }
}

#[tokio::test]
async fn updates_before_and_after_rotation_come_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap().spool;
    let old = commit_file(&spool, b"old").await;
    spool.update(&old, b"in segment".to_vec()).await.unwrap();

    // A body bigger than the test segment target makes the writer rotate after its batch.
    let big = Body::Inline(vec![b'x'; SEGMENT_TARGET as usize + 1]);
    let filler = spool.commit(QueueId::generate(), b"f".to_vec(), big, None).await.unwrap();
    let next = spool.commit(QueueId::generate(), b"n".to_vec(), Body::Inline(b"n".to_vec()), None);
    assert_ne!(next.await.unwrap().segment, old.segment, "the writer moved on");

    spool.update(&old, b"in sidecar".to_vec()).await.unwrap();
    spool.remove(&filler).unwrap();
    drop(spool);

    let (_spool, found) = reopen(dir.path());
    let old_found = found.iter().find(|m| m.qid == old.qid).unwrap();
    assert_eq!(old_found.updates, vec![b"in segment".to_vec(), b"in sidecar".to_vec()]);
    assert!(!found.iter().any(|m| m.qid == filler.qid));
}

#[tokio::test]
async fn kept_facts_outlive_their_message_and_segment_until_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap().spool;
    let now = unix_now();
    let keep = |expires, data: &[u8]| Some(Keep { expires, data: data.to_vec() });

    let body = || Body::Inline(b"b".to_vec());
    let live = spool.commit(QueueId::generate(), b"e".to_vec(), body(), keep(now + 3600, b"L"));
    let live = live.await.unwrap();
    let gone = spool.commit(QueueId::generate(), b"e".to_vec(), body(), keep(now + 3600, b"G"));
    let gone = gone.await.unwrap();
    let stale = spool.commit(QueueId::generate(), b"e".to_vec(), body(), keep(now - 5, b"S"));
    let stale = stale.await.unwrap();

    // Rotate, then remove `gone` and `stale`: their segment still holds `live`.
    let big = Body::Inline(vec![b'x'; SEGMENT_TARGET as usize + 1]);
    let filler = spool.commit(QueueId::generate(), b"f".to_vec(), big, None).await.unwrap();
    spool.remove(&gone).unwrap();
    spool.remove(&stale).unwrap();
    spool.remove(&filler).unwrap();
    drop(spool);

    let opened = reopen_all(dir.path());
    let data: Vec<&[u8]> = opened.kept.iter().map(|k| &k.keep.data[..]).collect();
    assert_eq!(data, vec![&b"L"[..], &b"G"[..]], "expired facts are not returned");
    assert_eq!(opened.kept[1].qid, gone.qid);

    // Now remove `live` too: the first segment goes, the facts stay via the keep files.
    opened.spool.remove(&opened.messages[0]).unwrap();
    let big = Body::Inline(vec![b'x'; SEGMENT_TARGET as usize + 1]);
    let next = opened.spool.commit(QueueId::generate(), b"f".to_vec(), big, None).await.unwrap();
    opened.spool.remove(&next).unwrap();
    let seg = segment_path(&dir.path().join("log"), live.segment);
    drop(opened);

    let opened = reopen_all(dir.path());
    assert!(!seg.exists(), "the first segment was deleted");
    assert!(opened.messages.is_empty());
    let qids: Vec<QueueId> = opened.kept.iter().map(|k| k.qid).collect();
    assert_eq!(qids, vec![live.qid, gone.qid]);
}

#[tokio::test]
async fn lazy_updates_are_written_without_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap().spool;
    let stored = commit_file(&spool, b"x").await;
    spool.update_lazily(&stored, b"lazy".to_vec()).unwrap();
    drop(spool);

    let (_spool, found) = reopen(dir.path());
    assert_eq!(found[0].updates, vec![b"lazy".to_vec()]);
}

#[tokio::test]
async fn a_fact_whose_copy_was_lost_survives_the_deletion_of_its_segment() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap().spool;
    let keep = Some(Keep { expires: unix_now() + 3600, data: b"K".to_vec() });
    let body = Body::Inline(b"b".to_vec());
    let stored = spool.commit(QueueId::generate(), b"e".to_vec(), body, keep).await.unwrap();
    drop(spool);
    // As if the process died after the commit's flush and before the copy to keep/.
    for entry in fs::read_dir(dir.path().join("keep")).unwrap() {
        fs::remove_file(entry.unwrap().path()).unwrap();
    }

    // The next run delivers and removes the message, and its segment goes.
    let opened = reopen_all(dir.path());
    assert_eq!(opened.kept.len(), 1);
    opened.spool.remove(&opened.messages[0]).unwrap();
    let synced =
        opened.spool.commit(QueueId::generate(), b"s".to_vec(), Body::Inline(vec![]), None);
    synced.await.unwrap();
    drop(opened);
    let seg = segment_path(&dir.path().join("log"), stored.segment);
    assert!(!seg.exists(), "the segment was deleted");

    let opened = reopen_all(dir.path());
    let qids: Vec<QueueId> = opened.kept.iter().map(|k| k.qid).collect();
    assert_eq!(qids, vec![stored.qid], "the fact outlived its segment");
}
