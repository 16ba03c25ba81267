//! `[routes]`: which topic each event goes to, and when it is acknowledged.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutesConfig {
    /// Topic for events no rule matches; `{type}` is the event type with characters outside
    /// Kafka's topic alphabet replaced by `_`.
    pub default_topic: String,
    /// Confluent wire format (magic byte 0 + 4-byte schema id before the JSON) for events no
    /// rule matches.
    pub confluent_wire_format: bool,
    /// Topic (template) that events no rule matches also go to when refused by validation
    /// or authorization, with the error in headers. Unset: no dead letters.
    pub dead_letter_topic: Option<String>,
    /// Dead letters per second, process-wide, before they are dropped (and counted).
    pub dead_letter_rate: u64,
    /// When events no rule matches are answered 2xx: after the broker acknowledged them
    /// (`broker`, spooling only while the broker is down or slow) or once they are in the
    /// disk spool (`spool`). `spool` needs `spool.enabled`.
    pub ack: Ack,
    /// First match wins.
    pub rules: Vec<RouteRule>,
}

impl Default for RoutesConfig {
    fn default() -> Self {
        Self {
            default_topic: "events.{type}".into(),
            confluent_wire_format: false,
            dead_letter_topic: None,
            dead_letter_rate: 100,
            ack: Ack::Broker,
            rules: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteRule {
    /// Event type pattern: exact, or a prefix ending in `*` (`checkout.*`), or `*`.
    #[serde(rename = "type")]
    pub type_pattern: String,
    /// Tenant pattern, same grammar (`acme`, `eu-*`, `*`); unset matches every request,
    /// authenticated or not.
    #[serde(default)]
    pub tenant: Option<String>,
    pub topic: String,
    /// Frame values in Confluent's wire format so Confluent deserializers read them.
    #[serde(default)]
    pub confluent_wire_format: bool,
    /// This rule's dead-letter topic (template).
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// This rule's acknowledgement mode; unset: `routes.ack`.
    #[serde(default)]
    pub ack: Option<Ack>,
}

/// When a 2xx is sent for an event: see docs/delivery.md.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ack {
    /// After the broker acknowledged it (`acks=all`); into the spool only while the broker is
    /// unreachable or slower than `spool.ack_timeout`, when the spool is enabled.
    #[default]
    Broker,
    /// Once it is fsynced in the local spool; replayed to the broker in the background.
    Spool,
}

impl RoutesConfig {
    /// Whether any route (the default or a rule) frames values in Confluent's wire format.
    pub fn any_confluent_wire_format(&self) -> bool {
        self.confluent_wire_format || self.rules.iter().any(|r| r.confluent_wire_format)
    }

    /// Whether any route acknowledges with `ack`.
    pub fn any_ack(&self, ack: Ack) -> bool {
        self.ack == ack || self.rules.iter().any(|r| r.ack == Some(ack))
    }
}
