//! Attribute mappings: builds a SCIM resource document from (source path → target path)
//! mappings. Target paths are `attr`, `attr.sub` or `attr[key eq value].sub` — the last
//! writes one element of a multi-valued attribute, e.g. `emails[primary eq true].value`.

use serde_json::{Map, Value};

use crate::api::{AttributeMapping, Direction};
use crate::scim::model::USER_SCHEMA;
use crate::scim::path::{AttrPath, CompareOp, Literal, ValueFilter};
use crate::scim::schema;

mod provision;

pub use provision::{Mappings, default_import_mappings, default_mappings};

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

/// Writes `value` at `path` into `doc`, as the schema shapes it: a multi-valued attribute is
/// an array (RFC 7643 §2.4) whatever the path says — `emails.value` writes
/// `"emails": [{"value": …}]`, `emails[type eq "work"].value` the element whose `type` is
/// `work` — and an extension attribute goes under its schema's URN. Paths are checked at
/// admission; one that does not parse writes nothing.
pub fn set(doc: &mut Map<String, Value>, path: &str, value: Value) {
    let Ok(p) = path.parse::<AttrPath>() else {
        return;
    };
    let multi_valued = schema::is_multi_valued(&p) || p.filter.is_some();
    let target = match &p.urn {
        Some(urn) if !urn.eq_ignore_ascii_case(USER_SCHEMA) => {
            match doc
                .entry(urn.clone())
                .or_insert_with(|| Value::Object(Map::new()))
            {
                Value::Object(m) => m,
                _ => return,
            }
        }
        _ => doc,
    };
    if !multi_valued {
        match &p.sub_attr {
            Some(sub) => {
                if let Value::Object(m) = target
                    .entry(p.attr.clone())
                    .or_insert_with(|| Value::Object(Map::new()))
                {
                    m.insert(sub.clone(), value);
                }
            }
            None => {
                target.insert(p.attr.clone(), value);
            }
        }
        return;
    }
    let Value::Array(items) = target
        .entry(p.attr.clone())
        .or_insert_with(|| Value::Array(Vec::new()))
    else {
        return;
    };
    // The element the filter selects (its `eq` terms make a new one), else the first.
    let keys = p.filter.as_ref().map(eq_terms).unwrap_or_default();
    let pos = items
        .iter()
        .position(|i| keys.iter().all(|(k, v)| i.get(k.as_str()) == Some(v)));
    let item = match pos {
        Some(p) => &mut items[p],
        None => {
            items.push(Value::Object(keys.into_iter().collect()));
            items.last_mut().expect("just pushed")
        }
    };
    if let Value::Object(m) = item {
        m.insert(p.sub_attr.unwrap_or_else(|| "value".into()), value);
    }
}

/// The `attr eq literal` terms of a value filter joined by `and`: what a new element of
/// the filtered attribute carries.
fn eq_terms(f: &ValueFilter) -> Vec<(String, Value)> {
    match f {
        ValueFilter::And(a, b) => {
            let mut t = eq_terms(a);
            t.extend(eq_terms(b));
            t
        }
        ValueFilter::Compare {
            attr,
            op: CompareOp::Eq,
            value,
        } => {
            let v = match value {
                Literal::Str(s) => Value::String(s.clone()),
                Literal::Bool(b) => Value::Bool(*b),
                Literal::Num(n) => {
                    serde_json::Number::from_f64(*n).map_or(Value::Null, Value::Number)
                }
                Literal::Null => Value::Null,
            };
            vec![(attr.clone(), v)]
        }
        _ => Vec::new(),
    }
}

pub use crate::cluster::mappings::check;

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
    fn multi_valued_attributes_are_always_arrays() {
        let mut doc = Map::new();
        set(&mut doc, "emails.value", json!("a@b.c"));
        set(&mut doc, "emails.type", json!("work"));
        set(
            &mut doc,
            "phoneNumbers[type eq \"work\" and primary eq true].value",
            json!("1"),
        );
        set(&mut doc, "name.formatted", json!("Ada L"));
        set(
            &mut doc,
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber",
            json!("42"),
        );
        assert_eq!(
            Value::Object(doc),
            json!({
                "emails": [{"value": "a@b.c", "type": "work"}],
                "phoneNumbers": [{"type": "work", "primary": true, "value": "1"}],
                "name": {"formatted": "Ada L"},
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"employeeNumber": "42"}
            })
        );
    }

    #[test]
    fn impossible_mappings_are_named() {
        assert!(check(&[m("userName", "emails.value")], "x").is_ok());
        let e = check(
            &[m("userName", "userName"), m("name.value", "displayName")],
            "spec.provisioning.attributeMappings",
        )
        .unwrap_err();
        assert!(
            e.starts_with(
                "spec.provisioning.attributeMappings[1].domainAttribute: impossible path"
            ),
            "{e}"
        );
        assert!(e.contains("name has no sub-attribute"), "{e}");
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
