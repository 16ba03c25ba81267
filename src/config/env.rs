//! The `SLUICE_<SECTION>__<FIELD>` layer: environment variables placed into the TOML tree
//! before it is deserialized.

use serde::{Deserialize, Deserializer};

use super::{field_error, ConfigError};

/// Places one `SLUICE_A__B[__C]` variable into the TOML tree. A value that reads as a TOML
/// integer, float or boolean becomes one; anything else stays a string. librdkafka property
/// names contain dots, which variables cannot: `SLUICE_KAFKA__PROPERTIES__SOCKET_TIMEOUT_MS`
/// sets `socket.timeout.ms`.
pub(super) fn overlay_env(
    root: &mut toml::Table,
    var: &str,
    rest: &str,
    value: &str,
) -> Result<(), ConfigError> {
    let parts: Vec<&str> = rest.split("__").collect();
    if parts.len() < 2 || parts.iter().any(|p| p.is_empty()) {
        return Err(ConfigError::EnvName {
            var: var.to_string(),
        });
    }
    let mut keys: Vec<String> = parts.iter().map(|p| p.to_ascii_lowercase()).collect();
    if keys.len() == 3 && keys[0] == "kafka" && keys[1] == "properties" {
        keys[2] = keys[2].replace('_', ".");
    }
    // Secrets and names stay as written ("0123" is a password, not the number 123).
    let verbatim = ["password", "secret", "username", "client_id"]
        .iter()
        .any(|s| keys.last().is_some_and(|k| k.ends_with(s)));
    let leaf = if verbatim || keys.len() == 3 && keys[1] == "properties" {
        toml::Value::String(value.to_string())
    } else {
        typed_env_value(value)
    };
    let (last, path) = keys.split_last().expect("at least two parts");
    let mut table = root;
    for key in path {
        let entry = table
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = match entry {
            toml::Value::Table(t) => t,
            _ => {
                return Err(field_error(
                    &keys.join("."),
                    format!("{var} names a field inside a value that is not a section"),
                ))
            }
        };
    }
    table.insert(last.clone(), leaf);
    Ok(())
}

fn typed_env_value(value: &str) -> toml::Value {
    let trimmed = value.trim();
    if let Ok(i) = trimmed.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    match trimmed {
        "true" => return toml::Value::Boolean(true),
        "false" => return toml::Value::Boolean(false),
        _ => {}
    }
    if trimmed.contains('.') && !trimmed.contains(':') {
        if let Ok(f) = trimmed.parse::<f64>() {
            return toml::Value::Float(f);
        }
    }
    toml::Value::String(value.to_string())
}

pub(super) fn string_or_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        OneOrMany::Many(v) => v,
    })
}
