//! Recovery from a damaged spool: any bytes as a segment file (and as the cursor) are opened
//! and replayed to the end without a panic; damage is counted, never trusted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::spool::Spool;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    let (segment, cursor) = match data.len() {
        n if n > 20 => (&data[20..], &data[..20]),
        _ => (data, &[][..]),
    };
    std::fs::write(dir.path().join("1.seg"), segment).unwrap();
    if !cursor.is_empty() {
        std::fs::write(dir.path().join("cursor"), cursor).unwrap();
    }
    let Ok((spool, recovery)) = Spool::open(dir.path(), 1 << 30, 1 << 20) else {
        return;
    };
    assert_eq!(recovery.segments, 1);
    let mut chunks = 0;
    while let Ok(Some(chunk)) = spool.read_next(64) {
        spool.commit(&chunk).unwrap();
        chunks += 1;
        assert!(chunks <= segment.len() + 1, "replay does not end");
    }
});
