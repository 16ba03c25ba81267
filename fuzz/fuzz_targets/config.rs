//! Config parsing: any TOML (and `SLUICE_*` variables, one per line starting `SLUICE_`) gives
//! a config or an error naming the field, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::config::Config;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut toml = String::new();
    let mut env = Vec::new();
    for line in text.lines() {
        match line.strip_prefix("SLUICE_").and_then(|l| l.split_once('=')) {
            Some((k, v)) => env.push((format!("SLUICE_{k}"), v.to_string())),
            None => {
                toml.push_str(line);
                toml.push('\n');
            }
        }
    }
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), toml).unwrap();
    if let Ok(config) = Config::load(Some(file.path()), env) {
        let _ = sluice::check(&config);
    }
});
