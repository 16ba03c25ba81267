//! Routing: which topic an event goes to. Rules are checked in order, first match wins;
//! the default template applies otherwise.

use crate::config::RoutesConfig;

/// Kafka's limit on topic name length.
const MAX_TOPIC_LEN: usize = 249;

#[derive(Debug, Clone)]
enum Pattern {
    Any,
    Exact(String),
    Prefix(String),
}

impl Pattern {
    fn parse(s: &str) -> Result<Pattern, String> {
        match s {
            "*" => Ok(Pattern::Any),
            _ => match s.strip_suffix('*') {
                Some(prefix) if !prefix.contains('*') => Ok(Pattern::Prefix(prefix.to_string())),
                None if !s.is_empty() && !s.contains('*') => Ok(Pattern::Exact(s.to_string())),
                _ => Err(format!("`{s}` is not a type pattern: write an exact type, a prefix ending in `*`, or `*`")),
            },
        }
    }

    fn matches(&self, ty: &str) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Exact(t) => t == ty,
            Pattern::Prefix(p) => ty.starts_with(p.as_str()),
        }
    }
}

/// A topic name with `{type}` placeholders.
#[derive(Debug, Clone)]
struct TopicTemplate {
    parts: Vec<Part>,
}

#[derive(Debug, Clone)]
enum Part {
    Literal(String),
    Type,
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
                other => {
                    return Err(format!(
                        "`{s}`: unknown placeholder `{{{other}}}` (only {{type}} is known)"
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

    fn render(&self, ty: &str) -> String {
        let mut out = String::with_capacity(64);
        for p in &self.parts {
            match p {
                Part::Literal(l) => out.push_str(l),
                Part::Type => out.extend(ty.chars().map(|c| {
                    if c.is_ascii() && legal_topic_byte(c as u8) {
                        c
                    } else {
                        '_'
                    }
                })),
            }
        }
        out.truncate(MAX_TOPIC_LEN);
        out
    }
}

fn legal_topic_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

#[derive(Debug, Clone)]
pub struct Router {
    rules: Vec<(Pattern, TopicTemplate)>,
    default: TopicTemplate,
}

impl Router {
    /// Errors carry the config field they came from.
    pub fn from_config(config: &RoutesConfig) -> Result<Router, (String, String)> {
        let default = TopicTemplate::parse(&config.default_topic)
            .map_err(|m| ("routes.default_topic".to_string(), m))?;
        let rules = config
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let pattern = Pattern::parse(&r.type_pattern)
                    .map_err(|m| (format!("routes.rules[{i}].type"), m))?;
                let topic = TopicTemplate::parse(&r.topic)
                    .map_err(|m| (format!("routes.rules[{i}].topic"), m))?;
                Ok((pattern, topic))
            })
            .collect::<Result<_, (String, String)>>()?;
        Ok(Router { rules, default })
    }

    pub fn topic_for(&self, ty: &str) -> String {
        self.rules
            .iter()
            .find(|(p, _)| p.matches(ty))
            .map(|(_, t)| t)
            .unwrap_or(&self.default)
            .render(ty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RouteRule;

    #[test]
    fn first_matching_rule_wins_and_types_are_sanitised() {
        let r = Router::from_config(&RoutesConfig {
            default_topic: "events.{type}".into(),
            rules: vec![
                RouteRule {
                    type_pattern: "checkout.*".into(),
                    topic: "checkout".into(),
                },
                RouteRule {
                    type_pattern: "audit.login".into(),
                    topic: "audit-{type}".into(),
                },
            ],
        })
        .unwrap();
        assert_eq!(r.topic_for("checkout.paid"), "checkout");
        assert_eq!(r.topic_for("audit.login"), "audit-audit.login");
        assert_eq!(r.topic_for("com.x/y z:é"), "events.com.x_y_z__");
        assert_eq!(r.topic_for(&"a".repeat(400)).len(), MAX_TOPIC_LEN);
    }

    #[test]
    fn bad_templates_name_their_field() {
        let bad = |default: &str, rule_topic: &str| {
            Router::from_config(&RoutesConfig {
                default_topic: default.into(),
                rules: vec![RouteRule {
                    type_pattern: "a".into(),
                    topic: rule_topic.into(),
                }],
            })
            .unwrap_err()
            .0
        };
        assert_eq!(bad("events/{type}", "ok"), "routes.default_topic");
        assert_eq!(bad("x", "{tenant}"), "routes.rules[0].topic");
        assert_eq!(bad("x", ".."), "routes.rules[0].topic");
    }
}
