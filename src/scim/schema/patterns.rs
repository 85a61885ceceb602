//! The paths [`check_user_path`](super::check_user_path) accepts, as regular expressions in
//! the RE2 syntax of CEL's `matches()` (which the `regex` crate reads the same way), and a
//! hint per attribute saying how it is written. Both are generated from the schema tables,
//! so that the API server's admission rules (the CRD) refuse exactly what the controller
//! and the engine refuse. Two differences stay, both outside ASCII: `(?i)` folds Unicode
//! case (`ſ` for `s`, the Kelvin sign for `k`) where the parser folds ASCII only, so such a
//! path passes admission and the controller refuses it; and the patterns know only ASCII
//! whitespace (RE2's `\s`), so admission refuses a path padded with a no-break space that
//! the parser would trim.

use super::{Attribute, CORE_USER, ENTERPRISE_USER};
use crate::scim::model::{ENTERPRISE_USER_SCHEMA, USER_SCHEMA};

/// A path is possible when it matches `user_path`, or matches `extension_path` but not
/// `user_schema_urn` (RE2 has no negation, hence three patterns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPatterns {
    /// A path of the core or the enterprise User schema, with or without its URN.
    pub user_path: String,
    /// An attribute under any URN: an extension's attributes are the app's own, unchecked.
    pub extension_path: String,
    /// A path under the core or the enterprise User schema's URN.
    pub user_schema_urn: String,
}

impl PathPatterns {
    /// What the patterns say of `path`, given a `matches(pattern, path)`: the CEL rule's
    /// logic, for the tests that run the patterns with another engine.
    pub fn admits(&self, path: &str, matches: impl Fn(&str, &str) -> bool) -> bool {
        matches(&self.user_path, path)
            || (matches(&self.extension_path, path) && !matches(&self.user_schema_urn, path))
    }
}

/// Whitespace the path is trimmed of, and that separates a filter's words: the ASCII set,
/// which RE2 and Rust agree on.
const WS: &str = r"[\t\n\v\f\r ]";
/// An attribute name (RFC 7643 §2.1, with `$ref`).
const NAME: &str = r"[A-Za-z$][A-Za-z0-9_$-]*";
/// A filter's string literal, with its escapes (`]` inside does not close the filter).
const STRING: &str = r#""(?:[^"\\]|\\(?s:.))*""#;
/// The comparison operators, `pr` aside.
const OPERATOR: &str = "(?:eq|ne|co|sw|ew|gt|ge|lt|le)";
/// A comparison value written as a word: the literals (case-sensitive, as the parser
/// reads them) or a number as Rust's `f64` parser reads it.
const WORD_VALUE: &str = r"(?:(?-i:true|false|null)|[+-]?(?:inf(?:inity)?|nan|(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:e[+-]?[0-9]+)?))";

/// The patterns for the schema tables.
pub fn path_patterns() -> PathPatterns {
    let core = alternatives(CORE_USER);
    let enterprise = alternatives(ENTERPRISE_USER);
    let (core_urn, enterprise_urn) = (escape(USER_SCHEMA), escape(ENTERPRISE_USER_SCHEMA));
    PathPatterns {
        user_path: format!(
            "^(?i){WS}*(?:(?:{core_urn}:)?{core}|{enterprise_urn}:{enterprise}){WS}*$"
        ),
        extension_path: format!(
            r"^(?i){WS}*urn(?::[^\[]*)?:{NAME}(?:{filter})?(?:\.{NAME})?{WS}*$",
            filter = filter()
        ),
        user_schema_urn: format!(r"^(?i){WS}*(?:{core_urn}|{enterprise_urn}):[^:\[]*(?:\[|$)"),
    }
}

/// A value filter `[...]`: comparisons joined by `and` / `or`, as `path::parse_filter`
/// tokenizes them (a word ends at whitespace or `"`, so only a string needs no space
/// before `and`).
fn filter() -> String {
    let comparison = |then: &str| {
        format!(
            "{NAME}{WS}+(?:(?:pr|{OPERATOR}{WS}+{WORD_VALUE}){then}|{OPERATOR}{WS}*{STRING}{WS}*)"
        )
    };
    let joined = comparison(&format!("{WS}+"));
    let last = comparison(&format!("{WS}*"));
    format!(r"\[{WS}*(?:{joined}(?:and|or){WS}+)*{last}\]")
}

/// One alternative per shape of attribute (multi-valued or not, with which
/// sub-attributes), naming the attributes of that shape.
fn alternatives(attributes: &[Attribute]) -> String {
    let mut shapes: Vec<(Vec<&str>, &Attribute)> = Vec::new();
    for a in attributes {
        match shapes.iter_mut().find(|(_, s)| same_shape(s, a)) {
            Some((names, _)) => names.push(a.name),
            None => shapes.push((vec![a.name], a)),
        }
    }
    let alts: Vec<String> = shapes
        .iter()
        .map(|(names, a)| format!("{}{}", group(names), forms(a)))
        .collect();
    format!("(?:{})", alts.join("|"))
}

fn same_shape(a: &Attribute, b: &Attribute) -> bool {
    a.multi_valued == b.multi_valued && a.sub_attributes == b.sub_attributes
}

/// What may follow the attribute's name, as `check_user_path` allows: a sub-attribute for
/// a complex one (required unless a filter selects the element), a filter for a
/// multi-valued one.
fn forms(a: &Attribute) -> String {
    let sub = format!(r"\.{}", group(a.sub_attributes));
    match (a.multi_valued, a.sub_attributes.is_empty()) {
        (false, true) => String::new(),
        (false, false) => sub,
        (true, true) => format!("(?:{})?", filter()),
        (true, false) => format!("(?:{}(?:{sub})?|{sub})", filter()),
    }
}

/// Any one of the names: a non-capturing group of several.
fn group(names: &[&str]) -> String {
    let names: Vec<String> = names.iter().map(|n| escape(n)).collect();
    match names.as_slice() {
        [one] => one.clone(),
        _ => format!("(?:{})", names.join("|")),
    }
}

/// Escapes the characters of names and URNs that mean something in a pattern.
fn escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let meta = r"\.+*?()|[]{}^$".contains(c);
            meta.then_some('\\').into_iter().chain([c])
        })
        .collect()
}

/// How each attribute is written, by the lowercase key an admission message looks it up
/// with: its name for the core schema, `<enterprise URN>:<name>` for the enterprise one.
pub fn attribute_hints() -> Vec<(String, String)> {
    let enterprise = ENTERPRISE_USER_SCHEMA.to_ascii_lowercase();
    let core = CORE_USER.iter().map(|a| (a.name.to_ascii_lowercase(), a));
    let ext = ENTERPRISE_USER
        .iter()
        .map(|a| (format!("{enterprise}:{}", a.name.to_ascii_lowercase()), a));
    core.chain(ext).map(|(key, a)| (key, hint(a))).collect()
}

/// A value filter's grammar, as `path::parse_filter` reads it.
const FILTER_HINT: &str = "a value filter is comparisons (eq, ne, co, sw, ew, gt, ge, lt, le \
    with a \"string\", number, true, false or null; or pr) joined by and / or";

fn hint(a: &Attribute) -> String {
    let (name, subs) = (a.name, a.sub_attributes.join(", "));
    let example_filter = if a.sub_attributes.contains(&"type") {
        "[type eq \"work\"]".to_string()
    } else {
        format!("[{} pr]", a.sub_attributes.first().unwrap_or(&"value"))
    };
    match (a.multi_valued, a.sub_attributes.first()) {
        (false, None) => format!("{name} is a simple attribute: no sub-attribute, no value filter"),
        (false, Some(first)) => format!(
            "{name} is complex: name one of its sub-attributes ({subs}), e.g. {name}.{first}; \
             single-valued, it takes no value filter"
        ),
        (true, None) => format!(
            "{name} is multi-valued: {name}, or {name}{example_filter} for one element; \
             {FILTER_HINT}"
        ),
        (true, Some(first)) => format!(
            "{name} is multi-valued and complex: name one of its sub-attributes ({subs}), \
             e.g. {name}.{first} or {name}{example_filter}.{first}; {FILTER_HINT}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::super::check_user_path;
    use super::super::tests::{IMPOSSIBLE, POSSIBLE};
    use super::*;
    use proptest::prelude::*;

    /// The patterns compiled once: `(pattern, regex)` for the three of them.
    static COMPILED: std::sync::LazyLock<(PathPatterns, Vec<(String, regex::Regex)>)> =
        std::sync::LazyLock::new(|| {
            let p = path_patterns();
            let compiled = [&p.user_path, &p.extension_path, &p.user_schema_urn]
                .map(|s| (s.clone(), regex::Regex::new(s).expect("a valid pattern")));
            (p, compiled.into())
        });

    fn admits(path: &str) -> bool {
        let (patterns, compiled) = &*COMPILED;
        let matches = |pattern: &str, p: &str| {
            compiled
                .iter()
                .any(|(s, re)| s == pattern && re.is_match(p))
        };
        patterns.admits(path, matches)
    }

    #[test]
    fn the_patterns_refuse_what_check_user_path_refuses() {
        for p in POSSIBLE {
            assert!(admits(p), "{p:?} is possible but the patterns refuse it");
        }
        for (p, _) in IMPOSSIBLE {
            assert!(!admits(p), "{p:?} is impossible but the patterns admit it");
        }
    }

    /// Paths built like real ones from right and wrong pieces: mostly near misses.
    fn paths() -> impl Strategy<Value = String> {
        let prefix = prop::sample::select(
            &[
                "",
                " ",
                "urn:ietf:params:scim:schemas:core:2.0:User:",
                "URN:IETF:PARAMS:SCIM:SCHEMAS:EXTENSION:ENTERPRISE:2.0:USER:",
                "urn:acme:User:",
                "urn:",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:x:",
            ][..],
        );
        let attribute = prop::sample::select(
            &[
                "userName",
                "name",
                "emails",
                "addresses",
                "manager",
                "employeeNumber",
                "mail",
                "displayName",
                "meta",
                "x509Certificates",
                "$ref",
                "user name",
                "groups",
                "",
            ][..],
        );
        let filter_piece = prop::sample::select(
            &[
                "type",
                "primary",
                "value",
                " ",
                " eq ",
                "eq",
                " pr",
                " and ",
                "and ",
                " or ",
                "\"work\"",
                "\"a]b\"",
                "\"x\\\"y\"",
                "true",
                "TRUE",
                "1.5e3",
                "-inf",
                "nan",
                "x",
                "[",
            ][..],
        );
        let filter = prop::option::of(prop::collection::vec(filter_piece, 0..6));
        let sub = prop::option::of(prop::sample::select(
            &[
                "value",
                "formatted",
                "givenName",
                "type",
                "$ref",
                "displayName",
                "x",
                "value.x",
                "",
                "value ",
            ][..],
        ));
        (prefix, attribute, filter, sub).prop_map(|(prefix, attribute, filter, sub)| {
            let filter = filter
                .map(|f| format!("[{}]", f.concat()))
                .unwrap_or_default();
            let sub = sub.map(|s| format!(".{s}")).unwrap_or_default();
            format!("{prefix}{attribute}{filter}{sub}")
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// Whatever the path, the patterns and `check_user_path` agree: admission refuses
        /// nothing the engine runs, and nothing the engine refuses gets past it.
        #[test]
        fn the_patterns_agree_with_check_user_path(path in paths()) {
            prop_assert_eq!(admits(&path), check_user_path(&path).is_ok(), "{:?}", path);
        }
    }

    #[test]
    fn the_differences_are_outside_ascii() {
        let folded = "u\u{17f}erName";
        assert!(admits(folded) && check_user_path(folded).is_err());
        let padded = "userName\u{a0}";
        assert!(!admits(padded) && check_user_path(padded).is_ok());
    }

    #[test]
    fn every_attribute_has_a_hint() {
        let hints = attribute_hints();
        assert_eq!(hints.len(), CORE_USER.len() + ENTERPRISE_USER.len());
        let hint = |k: &str| &hints.iter().find(|(key, _)| key == k).unwrap().1;
        assert!(
            hint("name").starts_with("name is complex: name one of its sub-attributes (formatted,")
        );
        assert!(hint("username").contains("simple attribute"));
        assert!(hint("emails").contains("e.g. emails.value or emails[type eq \"work\"].value"));
        let manager = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:user:manager";
        assert!(hint(manager).contains("manager.value"));
    }
}
