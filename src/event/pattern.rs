//! Event type patterns, shared by routing rules and write scopes: an exact type
//! (`audit.login`), a prefix ending in `*` (`checkout.*`), or `*` for every type.

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypePattern {
    Any,
    Exact(String),
    Prefix(String),
}

impl TypePattern {
    pub fn parse(s: &str) -> Result<TypePattern, String> {
        match s {
            "*" => Ok(TypePattern::Any),
            _ => match s.strip_suffix('*') {
                Some(prefix) if !prefix.contains('*') => Ok(TypePattern::Prefix(prefix.to_string())),
                None if !s.is_empty() && !s.contains('*') => Ok(TypePattern::Exact(s.to_string())),
                _ => Err(format!(
                    "`{s}` is not a type pattern: write an exact type, a prefix ending in `*`, or `*`"
                )),
            },
        }
    }

    pub fn matches(&self, ty: &str) -> bool {
        match self {
            TypePattern::Any => true,
            TypePattern::Exact(t) => t == ty,
            TypePattern::Prefix(p) => ty.starts_with(p.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_exact_prefix_and_any() {
        let p = |s| TypePattern::parse(s).unwrap();
        assert!(p("*").matches("anything"));
        assert!(p("checkout.*").matches("checkout.paid"));
        assert!(!p("checkout.*").matches("checkouts"));
        assert!(p("audit.login").matches("audit.login"));
        assert!(!p("audit.login").matches("audit.login2"));
        for bad in ["", "a*b*", "*a", "a**"] {
            assert!(TypePattern::parse(bad).is_err(), "{bad}");
        }
    }
}
