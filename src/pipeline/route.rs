//! Routing: which topic an event goes to, from its type and its sender's tenant. Rules are
//! checked in order, first match wins; the default template applies otherwise.

use crate::config::{Ack, RoutesConfig};
use crate::event::TypePattern;

/// Kafka's limit on topic name length.
const MAX_TOPIC_LEN: usize = 249;

/// Stands in for `{tenant}` when a request has no tenant (authentication disabled); config
/// validation refuses `{tenant}` templates in that mode, so this is a last resort.
const NO_TENANT: &str = "anonymous";

/// A topic name with `{type}` and `{tenant}` placeholders.
#[derive(Debug, Clone)]
struct TopicTemplate {
    parts: Vec<Part>,
}

#[derive(Debug, Clone)]
enum Part {
    Literal(String),
    Type,
    Tenant,
}

impl TopicTemplate {
    fn parse(s: &str) -> Result<TopicTemplate, String> {
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(start) = rest.find('{') {
            let (lit, tail) = rest.split_at(start);
            if !lit.is_empty() {
                parts.push(Part::Literal(lit.to_string()));
            }
            let end = tail
                .find('}')
                .ok_or_else(|| format!("`{s}` has an unclosed `{{`"))?;
            match &tail[1..end] {
                "type" => parts.push(Part::Type),
                "tenant" => parts.push(Part::Tenant),
                other => {
                    return Err(format!(
                        "`{s}`: unknown placeholder `{{{other}}}` (known: {{type}}, {{tenant}})"
                    ))
                }
            }
            rest = &tail[end + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_string()));
        }
        for p in &parts {
            if let Part::Literal(l) = p {
                if !l.bytes().all(legal_topic_byte) {
                    return Err(format!(
                        "`{s}`: topic names may only hold letters, digits, `.`, `_` and `-`"
                    ));
                }
            }
        }
        if parts.is_empty() || s == "." || s == ".." {
            return Err(format!("`{s}` is not a usable topic name"));
        }
        Ok(TopicTemplate { parts })
    }

    fn render(&self, ty: &str, tenant: Option<&str>) -> String {
        let mut out = String::with_capacity(64);
        let sanitised = |out: &mut String, v: &str| {
            out.extend(v.chars().map(|c| {
                if c.is_ascii() && legal_topic_byte(c as u8) {
                    c
                } else {
                    '_'
                }
            }))
        };
        for p in &self.parts {
            match p {
                Part::Literal(l) => out.push_str(l),
                Part::Type => sanitised(&mut out, ty),
                Part::Tenant => sanitised(&mut out, tenant.unwrap_or(NO_TENANT)),
            }
        }
        out.truncate(MAX_TOPIC_LEN);
        out
    }

    fn uses_tenant(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Tenant))
    }
}

/// The longest tenant that may go into a topic name.
pub const MAX_TENANT_LEN: usize = 64;

/// Whether `tenant` can be put into topic names without meeting another tenant's: no `.` (the
/// separator templates use), nothing that would be replaced by `_` (so `a/b` and `a_b` stay
/// apart), and short enough that names are never cut at Kafka's 249 characters for it.
pub fn routable_tenant(tenant: &str) -> bool {
    !tenant.is_empty()
        && tenant.len() <= MAX_TENANT_LEN
        && tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

fn legal_topic_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

#[derive(Debug, Clone)]
pub struct TopicRouter {
    rules: Vec<Rule>,
    default: TopicTemplate,
    default_confluent: bool,
    default_dead_letter: Option<TopicTemplate>,
    default_ack: Ack,
    /// Whether any template has `{tenant}`: asked on every request, so worked out once.
    uses_tenant: bool,
}

/// Where one event goes and how its value is framed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub topic: String,
    /// Where events of this route that are refused (validation, authorization) also go.
    pub dead_letter: Option<String>,
    /// Prefix the value with Confluent's wire format (magic byte 0, 4-byte schema id), so
    /// Confluent deserializers read it.
    pub confluent_wire_format: bool,
    /// When its events are answered 2xx.
    pub ack: Ack,
}

#[derive(Debug, Clone)]
struct Rule {
    types: TypePattern,
    /// `None`: any tenant, including none.
    tenants: Option<TypePattern>,
    topic: TopicTemplate,
    confluent: bool,
    dead_letter: Option<TopicTemplate>,
    ack: Ack,
}

impl TopicRouter {
    /// Errors carry the config field they came from.
    pub fn from_config(config: &RoutesConfig) -> Result<TopicRouter, (String, String)> {
        let default = TopicTemplate::parse(&config.default_topic)
            .map_err(|m| ("routes.default_topic".to_string(), m))?;
        let rules: Vec<Rule> = config
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let types = TypePattern::parse(&r.type_pattern)
                    .map_err(|m| (format!("routes.rules[{i}].type"), m))?;
                let tenants = r
                    .tenant
                    .as_deref()
                    .map(TypePattern::parse)
                    .transpose()
                    .map_err(|m| (format!("routes.rules[{i}].tenant"), m))?;
                let topic = TopicTemplate::parse(&r.topic)
                    .map_err(|m| (format!("routes.rules[{i}].topic"), m))?;
                let dead_letter = r
                    .dead_letter_topic
                    .as_deref()
                    .map(TopicTemplate::parse)
                    .transpose()
                    .map_err(|m| (format!("routes.rules[{i}].dead_letter_topic"), m))?;
                Ok(Rule {
                    types,
                    tenants,
                    topic,
                    confluent: r.confluent_wire_format,
                    dead_letter,
                    ack: r.ack.unwrap_or(config.ack),
                })
            })
            .collect::<Result<_, (String, String)>>()?;
        let default_dead_letter = config
            .dead_letter_topic
            .as_deref()
            .map(TopicTemplate::parse)
            .transpose()
            .map_err(|m| ("routes.dead_letter_topic".to_string(), m))?;
        let dl = |t: &Option<TopicTemplate>| t.as_ref().is_some_and(TopicTemplate::uses_tenant);
        let uses_tenant = default.uses_tenant()
            || dl(&default_dead_letter)
            || rules
                .iter()
                .any(|r| r.topic.uses_tenant() || dl(&r.dead_letter));
        Ok(TopicRouter {
            rules,
            default,
            default_confluent: config.confluent_wire_format,
            default_dead_letter,
            default_ack: config.ack,
            uses_tenant,
        })
    }

    pub fn topic_for(&self, ty: &str, tenant: Option<&str>) -> String {
        self.route(ty, tenant).topic
    }

    pub fn route(&self, ty: &str, tenant: Option<&str>) -> Route {
        let rule = self.rules.iter().find(|r| {
            r.types.matches(ty)
                && match (&r.tenants, tenant) {
                    (None, _) => true,
                    (Some(p), Some(t)) => p.matches(t),
                    (Some(_), None) => false,
                }
        });
        match rule {
            Some(r) => Route {
                topic: r.topic.render(ty, tenant),
                dead_letter: r.dead_letter.as_ref().map(|t| t.render(ty, tenant)),
                confluent_wire_format: r.confluent,
                ack: r.ack,
            },
            None => Route {
                topic: self.default.render(ty, tenant),
                dead_letter: self
                    .default_dead_letter
                    .as_ref()
                    .map(|t| t.render(ty, tenant)),
                confluent_wire_format: self.default_confluent,
                ack: self.default_ack,
            },
        }
    }

    /// The topics (and dead-letter topics) events of type `ty` from a request without a tenant
    /// go to, leaving out templates that need one. For `sluice kafka check`.
    pub fn tenant_free_topics(&self, ty: &str) -> Vec<String> {
        let rule = self
            .rules
            .iter()
            .find(|r| r.types.matches(ty) && r.tenants.is_none());
        let (topic, dead_letter) = match rule {
            Some(r) => (&r.topic, r.dead_letter.as_ref()),
            None => (&self.default, self.default_dead_letter.as_ref()),
        };
        [Some(topic), dead_letter]
            .into_iter()
            .flatten()
            .filter(|t| !t.uses_tenant())
            .map(|t| t.render(ty, None))
            .collect()
    }

    /// Whether any topic depends on the tenant, which only authenticated requests have.
    pub fn uses_tenant(&self) -> bool {
        self.uses_tenant
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RouteRule;

    #[test]
    fn tenants_that_could_spell_another_tenants_topic_are_not_routable() {
        for ok in ["acme", "acme-eu_1", "A9"] {
            assert!(routable_tenant(ok), "{ok}");
        }
        let long = "a".repeat(MAX_TENANT_LEN + 1);
        for bad in ["", "a.b", "a/b", "a b", "é", long.as_str()] {
            assert!(!routable_tenant(bad), "{bad}");
        }
    }

    #[test]
    fn first_matching_rule_wins_and_types_are_sanitised() {
        let r = TopicRouter::from_config(&RoutesConfig {
            default_topic: "events.{type}".into(),
            confluent_wire_format: false,
            dead_letter_topic: None,
            dead_letter_rate: 100,
            ack: Ack::Broker,
            rules: vec![
                RouteRule {
                    type_pattern: "checkout.*".into(),
                    tenant: Some("acme".into()),
                    topic: "acme-checkout".into(),
                    confluent_wire_format: true,
                    dead_letter_topic: None,
                    ack: None,
                },
                RouteRule {
                    type_pattern: "checkout.*".into(),
                    tenant: None,
                    topic: "checkout.{tenant}".into(),
                    confluent_wire_format: false,
                    dead_letter_topic: None,
                    ack: None,
                },
                RouteRule {
                    type_pattern: "audit.login".into(),
                    tenant: None,
                    topic: "audit-{type}".into(),
                    confluent_wire_format: false,
                    dead_letter_topic: None,
                    ack: Some(Ack::Spool),
                },
            ],
        })
        .unwrap();
        assert_eq!(r.route("audit.login", None).ack, Ack::Spool);
        assert_eq!(r.route("other", None).ack, Ack::Broker);
        assert!(r.uses_tenant());
        assert!(r.route("checkout.paid", Some("acme")).confluent_wire_format);
        assert!(!r.route("checkout.paid", Some("x")).confluent_wire_format);
        assert_eq!(r.topic_for("checkout.paid", Some("acme")), "acme-checkout");
        assert_eq!(
            r.topic_for("checkout.paid", Some("glo/bex")),
            "checkout.glo_bex"
        );
        assert_eq!(r.topic_for("checkout.paid", None), "checkout.anonymous");
        assert_eq!(r.topic_for("audit.login", None), "audit-audit.login");
        assert_eq!(r.topic_for("com.x/y z:é", None), "events.com.x_y_z__");
        assert_eq!(r.topic_for(&"a".repeat(400), None).len(), MAX_TOPIC_LEN);
    }

    #[test]
    fn bad_templates_name_their_field() {
        let bad = |default: &str, rule_topic: &str| {
            TopicRouter::from_config(&RoutesConfig {
                default_topic: default.into(),
                confluent_wire_format: false,
                dead_letter_topic: None,
                dead_letter_rate: 100,
                ack: Ack::Broker,
                rules: vec![RouteRule {
                    type_pattern: "a".into(),
                    tenant: None,
                    topic: rule_topic.into(),
                    confluent_wire_format: false,
                    dead_letter_topic: None,
                    ack: None,
                }],
            })
            .unwrap_err()
            .0
        };
        assert_eq!(bad("events/{type}", "ok"), "routes.default_topic");
        assert_eq!(bad("x", "{tenants}"), "routes.rules[0].topic");
        assert_eq!(bad("x", ".."), "routes.rules[0].topic");
    }
}
