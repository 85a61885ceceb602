//! The admission rule on a mapping's attribute paths: the API server refuses a path the
//! core or enterprise User schema makes impossible (`name.value`, `userName.x`, `emails`,
//! `mail`), as the controller and the engine do. The rule is generated from the patterns
//! of [`crate::scim::schema`], which are checked against `check_user_path` itself, so the
//! two cannot drift apart.

use serde_json::{Value, json};

use crate::scim::model::USER_SCHEMA;
use crate::scim::schema::{self, PathPatterns};

/// Shown where the message expression cannot be (and in the API reference).
const MESSAGE: &str = "impossible attribute path: not a path of the core or enterprise User \
    schema (RFC 7643 sections 4.1, 4.3); an app's own attribute needs its extension \
    schema's URN as prefix";

/// The `x-kubernetes-validations` of an attribute path (a string field).
pub fn rules() -> Value {
    let patterns = schema::path_patterns();
    json!([{
        "rule": rule(&patterns),
        "message": MESSAGE,
        "messageExpression": message_expression(&patterns),
    }])
}

/// `PathPatterns::admits` in CEL.
fn rule(p: &PathPatterns) -> String {
    format!(
        "self.matches({}) || (self.matches({}) && !self.matches({}))",
        raw(&p.user_path),
        raw(&p.extension_path),
        raw(&p.user_schema_urn)
    )
}

/// `impossible path "<path>": <how its attribute is written>`, the attribute found by the
/// path's head (lowercase, the core URN dropped). A chain of comparisons rather than a map
/// lookup: the API server's cost estimate only bounds a concatenation whose parts have a
/// known size, and CEL here has no `cel.bind` to name the key once.
fn message_expression(p: &PathPatterns) -> String {
    let core_urn = format!("{}:", USER_SCHEMA.to_ascii_lowercase());
    let key = format!(
        "self.trim().lowerAscii().replace({}, '').find({})",
        string(&core_urn),
        raw(r"^(?:urn:[^\[]*:)?[^.\[:]*")
    );
    let says = |why: &str| format!("'impossible path \"' + self + '\": ' + {why}");
    let hints: String = schema::attribute_hints()
        .iter()
        .map(|(k, hint)| format!("{key} == {} ? {} :\n", string(k), says(&string(hint))))
        .collect();
    let unknown = format!(
        "'no attribute ' + {key}.substring({key}.lastIndexOf(':') + 1) + {}",
        string(
            " in the core User schema (RFC 7643 section 4.1) or the enterprise User extension \
             (section 4.3); an app's own attribute needs its extension schema's URN as prefix"
        )
    );
    let extension = string(
        "an attribute of another extension is written <its schema's URN>:<attribute>, \
         optionally followed by a value filter [...] and a .sub-attribute",
    );
    format!(
        "{hints}self.trim().lowerAscii().startsWith('urn:') && !self.matches({}) ? {} : {}",
        raw(&p.user_schema_urn),
        says(&extension),
        says(&unknown)
    )
}

/// A CEL raw string literal: the pattern's backslashes stay as they are.
fn raw(pattern: &str) -> String {
    assert!(!pattern.contains('\''), "a pattern fits in r'…'");
    format!("r'{pattern}'")
}

/// A CEL string literal (JSON's escapes are CEL's).
fn string(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admits(path: &str) -> bool {
        let matches = |pattern: &str, p: &str| regex::Regex::new(pattern).unwrap().is_match(p);
        schema::path_patterns().admits(path, matches)
    }

    #[test]
    fn the_catalogs_mappings_pass_admission() {
        for entry in crate::api::catalog::entries() {
            let mappings = entry.provisioning_mappings.iter();
            for m in mappings.chain(&entry.import_mappings) {
                for path in [&m.domain_attribute, &m.app_attribute] {
                    assert!(admits(path), "{}: {path:?} is refused", entry.name);
                }
            }
        }
    }

    #[test]
    fn the_rule_is_the_patterns_logic() {
        let p = schema::path_patterns();
        let rules = rules();
        let rule = rules[0]["rule"].as_str().unwrap();
        assert_eq!(
            rule,
            format!(
                "self.matches(r'{}') || (self.matches(r'{}') && !self.matches(r'{}'))",
                p.user_path, p.extension_path, p.user_schema_urn
            )
        );
        let message = rules[0]["messageExpression"].as_str().unwrap();
        let name = "== \"name\" ? 'impossible path \"' + self + '\": ' + \"name is complex:";
        assert!(message.contains(name), "{message}");
    }

    #[test]
    fn hints_have_one_key_each() {
        let hints = schema::attribute_hints();
        let keys: std::collections::BTreeSet<&str> =
            hints.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys.len(),
            hints.len(),
            "a CEL map literal refuses a repeated key"
        );
    }
}
