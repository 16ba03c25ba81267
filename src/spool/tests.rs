use bytes::Bytes;

use super::*;

fn record(i: usize) -> Record {
    Record {
        topic: format!("events.t{}", i % 3),
        key: Bytes::from(format!("k{i}")),
        value: Bytes::from(format!("{{\"i\":{i}}}")),
        headers: vec![("ce_id", Bytes::from(format!("id-{i}")))],
        extension_headers: vec![("ce_x".into(), Bytes::from_static(b"y"))],
    }
}

fn ids(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .map(|r| {
            let v = &r
                .extension_headers
                .iter()
                .find(|(k, _)| k == "ce_id")
                .unwrap()
                .1;
            String::from_utf8_lossy(v).into_owned()
        })
        .collect()
}

/// Reads and commits everything there is, as replay does.
fn drain(spool: &Spool, max: usize) -> (Vec<String>, usize, usize) {
    let (mut all, mut corrupt, mut torn) = (Vec::new(), 0, 0);
    while let Some(chunk) = spool.read_next(max).unwrap() {
        all.extend(ids(&chunk.frames.records));
        corrupt += chunk.frames.corrupt;
        torn += usize::from(chunk.frames.torn_tail);
        spool.commit(&chunk).unwrap();
    }
    (all, corrupt, torn)
}

fn batch(range: std::ops::Range<usize>) -> Vec<Record> {
    range.map(record).collect()
}

#[tokio::test]
async fn appends_roll_segments_and_replay_in_order_deleting_what_was_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, rec) = Spool::open(dir.path(), 1 << 20, 300).unwrap();
    assert_eq!(rec, Recovery::default());
    for b in 0..5 {
        spool.append(&batch(b * 3..b * 3 + 3)).await.unwrap();
    }
    assert!(spool.segments() > 1, "segments roll at segment_bytes");
    assert!(spool.has_backlog());
    let r0 = spool.read_next(2).unwrap().unwrap();
    assert_eq!(ids(&r0.frames.records), ["id-0", "id-1"]);
    assert_eq!(r0.frames.records[0].topic, "events.t0");
    assert_eq!(&r0.frames.records[0].value[..], b"{\"i\":0}");
    assert_eq!(&r0.frames.records[0].key[..], b"k0");
    // Not committed: read again from the same place.
    let again = spool.read_next(2).unwrap().unwrap();
    assert_eq!(ids(&again.frames.records), ["id-0", "id-1"]);

    let (all, corrupt, torn) = drain(&spool, 4);
    assert_eq!(all, (0..15).map(|i| format!("id-{i}")).collect::<Vec<_>>());
    assert_eq!((corrupt, torn), (0, 0));
    assert!(!spool.has_backlog());
    // Sealed segments went as the cursor passed them; the open one stays until it rolls.
    assert_eq!(spool.segments(), 1);
    assert_eq!(spool.oldest_age(), Duration::ZERO);
}

#[tokio::test]
async fn the_cursor_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path(), 1 << 20, 1 << 20).unwrap();
    spool.append(&batch(0..10)).await.unwrap();
    let c = spool.read_next(4).unwrap().unwrap();
    spool.commit(&c).unwrap();
    drop(spool);

    let (spool, rec) = Spool::open(dir.path(), 1 << 20, 1 << 20).unwrap();
    assert_eq!(rec.segments, 1);
    assert!(rec.backlog_bytes > 0 && rec.backlog_bytes < rec.bytes);
    spool.append(&batch(10..12)).await.unwrap();
    let (all, _, _) = drain(&spool, 100);
    assert_eq!(all, (4..12).map(|i| format!("id-{i}")).collect::<Vec<_>>());
    // The recovered segment was sealed, so it is gone once replayed.
    assert_eq!(spool.segments(), 1);
}

#[tokio::test]
async fn a_full_spool_refuses_whole_batches() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path(), 200, 1 << 20).unwrap();
    spool.append(&[record(1)]).await.unwrap();
    let err = spool.append(&batch(0..10)).await.unwrap_err();
    assert!(matches!(err, SpoolError::Full { .. }), "{err}");
    assert!(!spool.has_room(150));
    assert_eq!(drain(&spool, 100).0, ["id-1"]);
}

#[tokio::test]
async fn concurrent_appends_are_all_durable_in_one_order() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path(), 64 << 20, 1 << 16).unwrap();
    let spool = Arc::new(spool);
    let mut tasks = Vec::new();
    for t in 0..16 {
        let spool = spool.clone();
        tasks.push(tokio::spawn(async move {
            for b in 0..20 {
                let base = t * 1000 + b * 5;
                spool.append(&batch(base..base + 5)).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (all, _, _) = drain(&spool, 64);
    assert_eq!(all.len(), 16 * 20 * 5);
    // Each task's records keep their order.
    for t in 0..16 {
        let mine: Vec<usize> = all
            .iter()
            .map(|id| id[3..].parse::<usize>().unwrap())
            .filter(|i| i / 1000 == t)
            .collect();
        assert!(mine.windows(2).all(|w| w[0] < w[1]), "task {t}: {mine:?}");
    }
}

#[tokio::test]
async fn torn_tails_and_corrupt_frames_are_survived() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path(), 1 << 20, 1 << 20).unwrap();
    spool.append(&batch(0..4)).await.unwrap();
    drop(spool);
    let path = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    // Flip a byte inside the second record's payload, then cut the last record short.
    let h = format::HEADER as usize;
    let first_len = u32::from_le_bytes(bytes[0..4].try_into().unwrap()) as usize;
    bytes[h + first_len + h + 3] ^= 0xff;
    bytes.truncate(bytes.len() - 5);
    std::fs::write(&path, &bytes).unwrap();

    let (spool, rec) = Spool::open(dir.path(), 1 << 20, 1 << 20).unwrap();
    assert_eq!(rec.segments, 1);
    spool.append(&[record(9)]).await.unwrap();
    let (all, corrupt, torn) = drain(&spool, 100);
    assert_eq!(all, ["id-0", "id-2", "id-9"]);
    assert_eq!((corrupt, torn), (1, 1));
    // Garbage where a length should be is a torn tail too, never a panic or a huge read.
    let junk = [0xffu8; 12];
    let f = format::read_frames(&mut &junk[..], 0, 12, 10).unwrap();
    assert!(f.torn_tail && f.records.is_empty() && f.end == 12);
    let f = format::read_frames(&mut &[1u8, 0][..], 0, 2, 10).unwrap();
    assert!(f.torn_tail);
}

#[tokio::test]
async fn two_spools_cannot_share_a_folder() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path(), 1 << 20, 1 << 20).unwrap();
    let err = Spool::open(dir.path(), 1 << 20, 1 << 20).err().unwrap();
    assert!(matches!(err, SpoolError::Locked(_)), "{err}");
    drop(spool);
    // Dropping waits for the writer, so the lock is free at once.
    Spool::open(dir.path(), 1 << 20, 1 << 20).unwrap();
}

#[tokio::test]
async fn rejected_records_count_toward_the_quota_until_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path(), 4096, 1 << 20).unwrap();
    let refused = batch(0..20);
    spool.quarantine(&refused).unwrap();
    let held = spool.bytes();
    assert!(
        held > 0 && spool.inner.state().segments.is_empty(),
        "{held}"
    );
    // What rejected.log holds is not free for new records.
    let room = 4096 - held;
    assert!(!spool.has_room(room + 1));
    let big: Vec<Record> = (0..200).map(record).collect();
    assert!(matches!(
        spool.append(&big).await,
        Err(SpoolError::Full { .. })
    ));
    // Reopened, it is still counted.
    drop(spool);
    let (spool, _) = Spool::open(dir.path(), 4096, 1 << 20).unwrap();
    assert_eq!(spool.bytes(), held);
    // Deleted by an operator: the room is back at the next refresh.
    std::fs::remove_file(dir.path().join("rejected.log")).unwrap();
    spool.report_metrics();
    assert_eq!(spool.bytes(), 0);
    assert!(spool.has_room(4096));
}
