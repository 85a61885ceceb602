//! Attribute mappings: builds a SCIM resource document from (source path → target path)
//! mappings. Target paths are `attr`, `attr.sub` or `attr[key eq value].sub` — the last
//! writes one element of a multi-valued attribute, e.g. `emails[primary eq true].value`.

use serde_json::{Map, Value};

use crate::api::{AttributeMapping, Direction};

mod provision;

pub use provision::{Mappings, default_mappings};

/// Builds a document: for each mapping, `lookup(source path)` gives the value to write at
/// the target path. Missing or empty values are skipped.
pub fn build(
    mappings: &[AttributeMapping],
    direction: Direction,
    lookup: impl Fn(&str) -> Option<String>,
) -> Value {
    let mut doc = Map::new();
    for m in mappings {
        let (src, dst) = match direction {
            Direction::Provision => (&m.domain_attribute, &m.app_attribute),
            Direction::Import => (&m.app_attribute, &m.domain_attribute),
        };
        if let Some(v) = lookup(src).filter(|v| !v.is_empty()) {
            set(&mut doc, dst, Value::String(v));
        }
    }
    Value::Object(doc)
}

/// The target paths a set of mappings writes, for comparing an existing resource.
pub fn targets(mappings: &[AttributeMapping], direction: Direction) -> Vec<&str> {
    mappings
        .iter()
        .map(|m| match direction {
            Direction::Provision => m.app_attribute.as_str(),
            Direction::Import => m.domain_attribute.as_str(),
        })
        .collect()
}

/// Writes `value` at `path` into `doc`.
pub fn set(doc: &mut Map<String, Value>, path: &str, value: Value) {
    if let Some((attr, rest)) = path.split_once('[') {
        // attr[key eq literal].sub
        let Some((filter, sub)) = rest.split_once(']') else {
            return;
        };
        let sub = sub.trim_start_matches('.');
        let mut parts = filter.split_whitespace();
        let (Some(key), Some(_op), Some(lit)) = (parts.next(), parts.next(), parts.next()) else {
            return;
        };
        let lit: Value = serde_json::from_str(lit)
            .unwrap_or_else(|_| Value::String(lit.trim_matches('"').into()));
        let list = doc
            .entry(attr.to_string())
            .or_insert_with(|| Value::Array(Vec::new()));
        let Value::Array(items) = list else { return };
        let pos = items.iter().position(|i| i.get(key) == Some(&lit));
        let item = match pos {
            Some(p) => &mut items[p],
            None => {
                let mut m = Map::new();
                m.insert(key.to_string(), lit);
                items.push(Value::Object(m));
                items.last_mut().expect("just pushed")
            }
        };
        if let Value::Object(m) = item {
            if sub.is_empty() {
                m.insert("value".into(), value);
            } else {
                m.insert(sub.to_string(), value);
            }
        }
    } else if let Some((attr, sub)) = path.split_once('.') {
        let inner = doc
            .entry(attr.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(m) = inner {
            set(m, sub, value);
        }
    } else {
        doc.insert(path.to_string(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn m(domain: &str, app: &str) -> AttributeMapping {
        AttributeMapping {
            domain_attribute: domain.into(),
            app_attribute: app.into(),
        }
    }

    #[test]
    fn builds_nested_and_multi_valued_targets() {
        let maps = [
            m("userName", "userName"),
            m("name.givenName", "name.givenName"),
            m("name.familyName", "name.familyName"),
            m(
                "emails[primary eq true].value",
                "emails[primary eq true].value",
            ),
            m("title", "title"),
        ];
        let src = json!({"userName": "ada", "name": {"givenName": "Ada", "familyName": "Lovelace"}, "emails": "ada@example.com"});
        let doc = build(&maps, Direction::Provision, |p| match p {
            "userName" => Some("ada".into()),
            "name.givenName" => src["name"]["givenName"].as_str().map(String::from),
            "name.familyName" => src["name"]["familyName"].as_str().map(String::from),
            "emails[primary eq true].value" => Some("ada@example.com".into()),
            _ => None,
        });
        assert_eq!(
            doc,
            json!({
                "userName": "ada",
                "name": {"givenName": "Ada", "familyName": "Lovelace"},
                "emails": [{"primary": true, "value": "ada@example.com"}]
            })
        );
    }

    #[test]
    fn direction_picks_the_source_side() {
        let maps = [m("userName", "login")];
        let doc = build(&maps, Direction::Import, |p| {
            (p == "login").then(|| "ada".to_string())
        });
        assert_eq!(doc, json!({"userName": "ada"}));
        assert_eq!(targets(&maps, Direction::Provision), vec!["login"]);
    }

    #[test]
    fn string_filter_literals_are_unquoted() {
        let mut doc = Map::new();
        set(&mut doc, "emails[type eq \"work\"].value", json!("a@b.c"));
        assert_eq!(
            Value::Object(doc),
            json!({"emails": [{"type": "work", "value": "a@b.c"}]})
        );
    }
}
