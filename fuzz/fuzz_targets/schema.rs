//! Schemas as a client registers them: the validation-cost bound, compilation and the
//! compatibility checker, on pairs cut from the input. Each must answer (within its budget),
//! never panic or run away.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use sluice::registry::compat::{check_within, Level};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (a, b) = text.split_once('\u{0}').unwrap_or((&text, "{}"));
    let (Ok(a), Ok(b)) = (
        serde_json::from_str::<Value>(a),
        serde_json::from_str::<Value>(b),
    ) else {
        return;
    };
    let _ = sluice::registry::cost::fanout(&a, 16, 1000);
    if sluice::registry::cost::fanout(&a, 64, 1000).is_ok() {
        let _ = sluice::registry::compile_schema(&a);
    }
    for level in Level::ALL {
        let _ = check_within(level, &a, &[&b], 20_000);
    }
});
