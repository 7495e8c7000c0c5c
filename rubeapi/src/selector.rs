//! Label selectors and object filters.
//!
//! Label selectors follow Kubernetes: requirements separated by commas, all of which must hold.
//! `k=v` (or `k==v`), `k!=v` (also true when `k` is absent), `k in (a,b)`, `k notin (a,b)` (also
//! true when absent), `k` (present) and `!k` (absent).

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use crate::Error;
use crate::rube::{Object, Selector};
use crate::type_name_of_url;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

impl Requirement {
    pub fn matches(&self, labels: &HashMap<String, String>) -> bool {
        match self {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::NotExists(k) => !labels.contains_key(k),
        }
    }
}

/// All requirements must hold. The empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    pub requirements: Vec<Requirement>,
}

impl LabelSelector {
    pub fn matches(&self, labels: &HashMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
}

impl FromStr for LabelSelector {
    type Err = Error;

    fn from_str(input: &str) -> Result<Self, Error> {
        let fail = |reason: String| Error::Selector {
            input: input.to_owned(),
            reason,
        };
        let mut requirements = Vec::new();
        for part in split_top_level(input).map_err(&fail)? {
            let part = part.trim();
            if part.is_empty() {
                if input.trim().is_empty() {
                    continue;
                }
                return Err(fail("empty requirement".to_owned()));
            }
            requirements.push(parse_requirement(part).map_err(&fail)?);
        }
        Ok(LabelSelector { requirements })
    }
}

/// Splits at commas that are not inside parentheses.
fn split_top_level(input: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in input.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err("unbalanced ')'".to_owned());
                }
            }
            ',' if depth == 0 => {
                parts.push(&input[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("unbalanced '('".to_owned());
    }
    parts.push(&input[start..]);
    Ok(parts)
}

fn parse_requirement(part: &str) -> Result<Requirement, String> {
    if let Some(key) = part.strip_prefix('!') {
        return Ok(Requirement::NotExists(label_key(key.trim())?));
    }
    if let Some((k, v)) = part.split_once("!=") {
        return Ok(Requirement::NotEquals(
            label_key(k.trim())?,
            label_value(v.trim())?,
        ));
    }
    if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
        return Ok(Requirement::Equals(
            label_key(k.trim())?,
            label_value(v.trim())?,
        ));
    }
    let words: Vec<&str> = part.splitn(2, char::is_whitespace).collect();
    if let [key, rest] = words.as_slice() {
        let rest = rest.trim();
        let (negated, list) = if let Some(list) = rest.strip_prefix("notin") {
            (true, list)
        } else if let Some(list) = rest.strip_prefix("in") {
            (false, list)
        } else {
            return Err(format!(
                "expected 'in' or 'notin' after '{key}', found '{rest}'"
            ));
        };
        let list = list.trim();
        let inner = list
            .strip_prefix('(')
            .and_then(|l| l.strip_suffix(')'))
            .ok_or_else(|| format!("expected a list in parentheses after '{key}'"))?;
        let values = inner
            .split(',')
            .map(|v| label_value(v.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        let key = label_key(key)?;
        return Ok(if negated {
            Requirement::NotIn(key, values)
        } else {
            Requirement::In(key, values)
        });
    }
    Ok(Requirement::Exists(label_key(part)?))
}

fn label_key(key: &str) -> Result<String, String> {
    let valid = !key.is_empty()
        && key.len() <= 253
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    if valid {
        Ok(key.to_owned())
    } else {
        Err(format!("invalid label key '{key}'"))
    }
}

fn label_value(value: &str) -> Result<String, String> {
    let valid = value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(value.to_owned())
    } else {
        Err(format!("invalid label value '{value}'"))
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .requirements
            .iter()
            .map(|r| match r {
                Requirement::Equals(k, v) => format!("{k}={v}"),
                Requirement::NotEquals(k, v) => format!("{k}!={v}"),
                Requirement::In(k, vs) => format!("{k} in ({})", vs.join(",")),
                Requirement::NotIn(k, vs) => format!("{k} notin ({})", vs.join(",")),
                Requirement::Exists(k) => k.clone(),
                Requirement::NotExists(k) => format!("!{k}"),
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// A parsed `Selector`: which objects a list or watch wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Empty matches every type.
    pub type_name: String,
    /// Empty matches every namespace.
    pub namespace: String,
    /// Empty matches every name.
    pub name: String,
    pub labels: LabelSelector,
}

impl Filter {
    /// Every object of one type.
    pub fn of_type(type_name: &str) -> Filter {
        Filter {
            type_name: type_name.to_owned(),
            ..Default::default()
        }
    }

    pub fn from_selector(selector: &Selector) -> Result<Filter, Error> {
        Ok(Filter {
            type_name: selector.r#type.clone(),
            namespace: selector.namespace.clone(),
            name: selector.name.clone(),
            labels: selector.labels.parse()?,
        })
    }

    pub fn to_selector(&self) -> Selector {
        Selector {
            r#type: self.type_name.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            labels: self.labels.to_string(),
        }
    }

    /// True when type, namespace and name match; labels are not looked at.
    pub fn matches_key(&self, type_name: &str, namespace: &str, name: &str) -> bool {
        (self.type_name.is_empty() || self.type_name == type_name)
            && (self.namespace.is_empty() || self.namespace == namespace)
            && (self.name.is_empty() || self.name == name)
    }

    pub fn matches(&self, object: &Object) -> bool {
        let type_name = object
            .spec
            .as_ref()
            .map_or("", |s| type_name_of_url(&s.type_url));
        let Some(metadata) = object.metadata.as_ref() else {
            return false;
        };
        self.matches_key(type_name, &metadata.namespace, &metadata.name)
            && self.labels.matches(&metadata.labels)
    }
}

/// Typed construction of the wire `Selector`, so a kind is named by its generated type rather
/// than spelled as a string: `Selector::of::<Slice>().label("node", "worker-1")`.
impl Selector {
    /// Every object of kind `M` (its protobuf full name, from `prost::Name`).
    pub fn of<M: prost::Name>() -> Selector {
        Selector {
            r#type: M::full_name(),
            ..Default::default()
        }
    }

    /// Only objects in `namespace`.
    pub fn in_namespace(mut self, namespace: &str) -> Selector {
        self.namespace = namespace.to_owned();
        self
    }

    /// Only the object called `name`.
    pub fn named(mut self, name: &str) -> Selector {
        self.name = name.to_owned();
        self
    }

    /// Only objects whose label `key` is `value`; requirements add up (all must hold).
    pub fn label(self, key: &str, value: &str) -> Selector {
        self.requiring(&format!("{key}={value}"))
    }

    /// Only objects that carry label `key`, whatever its value.
    pub fn has_label(self, key: &str) -> Selector {
        self.requiring(key)
    }

    fn requiring(mut self, requirement: &str) -> Selector {
        if !self.labels.is_empty() {
            self.labels.push(',');
        }
        self.labels.push_str(requirement);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_typed_selector_names_the_kind_and_adds_up_its_requirements() {
        use crate::runink::Slice;
        let selector = Selector::of::<Slice>()
            .in_namespace("herd")
            .label("node", "worker-1")
            .has_label("runink.pipeline");
        assert_eq!(selector.r#type, "runink.Slice");
        assert_eq!(selector.namespace, "herd");
        assert_eq!(selector.labels, "node=worker-1,runink.pipeline");
        let filter = Filter::from_selector(&selector).unwrap();
        assert_eq!(filter.labels.requirements.len(), 2);
        assert_eq!(Selector::of::<Slice>().named("x").name, "x");
    }

    fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_every_form() {
        let s: LabelSelector =
            "node=worker-1, tier!=db,env in (a, b),zone notin (x),canary,!legacy"
                .parse()
                .unwrap();
        assert_eq!(
            s.requirements,
            vec![
                Requirement::Equals("node".into(), "worker-1".into()),
                Requirement::NotEquals("tier".into(), "db".into()),
                Requirement::In("env".into(), vec!["a".into(), "b".into()]),
                Requirement::NotIn("zone".into(), vec!["x".into()]),
                Requirement::Exists("canary".into()),
                Requirement::NotExists("legacy".into()),
            ]
        );
        assert_eq!(
            s.to_string(),
            "node=worker-1,tier!=db,env in (a,b),zone notin (x),canary,!legacy"
        );
    }

    #[test]
    fn matching_follows_kubernetes() {
        let s: LabelSelector = "node=w1,tier!=db,zone notin (x)".parse().unwrap();
        assert!(s.matches(&labels(&[("node", "w1")])));
        assert!(s.matches(&labels(&[("node", "w1"), ("tier", "web"), ("zone", "y")])));
        assert!(!s.matches(&labels(&[("node", "w1"), ("tier", "db")])));
        assert!(!s.matches(&labels(&[("node", "w2")])));
        assert!(!s.matches(&labels(&[("node", "w1"), ("zone", "x")])));
        assert!(LabelSelector::default().matches(&labels(&[])));
        assert!("".parse::<LabelSelector>().unwrap().is_empty());
    }

    #[test]
    fn rejects_malformed_selectors() {
        for bad in ["a=b,", "a in (b", "a in b", "a b", "=b", "a=b c", "k=v)"] {
            let err = bad.parse::<LabelSelector>().unwrap_err();
            assert!(
                err.to_string()
                    .starts_with(&format!("invalid label selector '{bad}'")),
                "{err}"
            );
        }
    }

    proptest! {
        #[test]
        fn printing_and_parsing_round_trips(
            reqs in proptest::collection::vec((0..6u8, "[a-z][a-z0-9.-]{0,8}", proptest::collection::vec("[a-z0-9]{1,5}", 1..3)), 0..5)
        ) {
            let requirements: Vec<Requirement> = reqs.into_iter().map(|(kind, key, values)| match kind {
                0 => Requirement::Equals(key, values[0].clone()),
                1 => Requirement::NotEquals(key, values[0].clone()),
                2 => Requirement::In(key, values),
                3 => Requirement::NotIn(key, values),
                4 => Requirement::Exists(key),
                _ => Requirement::NotExists(key),
            }).collect();
            let selector = LabelSelector { requirements };
            let again: LabelSelector = selector.to_string().parse().unwrap();
            prop_assert_eq!(selector, again);
        }
    }
}
