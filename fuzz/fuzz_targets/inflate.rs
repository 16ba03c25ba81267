//! gzip and zstd bodies: inflated step by step under a cap; the output never passes it and
//! the buffer never holds more than it said it would.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sluice::event::body::{BodyError, Encoding, Inflater};

const LIMIT: usize = 256 * 1024;

fuzz_target!(|data: &[u8]| {
    for encoding in [Encoding::Gzip, Encoding::Zstd] {
        let Ok(mut inflater) = Inflater::new(encoding, Bytes::copy_from_slice(data), LIMIT) else {
            continue;
        };
        let step = 1 + data.first().copied().unwrap_or(0) as usize * 512;
        loop {
            let bound = inflater.next_capacity(step);
            match inflater.step(step) {
                Ok(done) => {
                    assert!(inflater.len() <= LIMIT);
                    assert!(inflater.len() <= bound);
                    if done {
                        break;
                    }
                }
                Err(BodyError::TooLarge { .. }) | Err(BodyError::Corrupt { .. }) => break,
                Err(e) => panic!("{e}"),
            }
        }
    }
});
