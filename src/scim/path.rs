//! SCIM attribute paths (RFC 7644 §3.10) and value extraction from JSON resources.
//!
//! Used by matching: `userName`, `name.givenName`, `emails.value`,
//! `emails[primary eq true].value`, `emails[type eq "work" and primary eq true].value`,
//! `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber`.
//! Attribute names are case-insensitive, as RFC 7643 §2.1 says.

use serde_json::Value;
use std::fmt;
use std::str::FromStr;

/// A parsed attribute path.
#[derive(Debug, Clone, PartialEq)]
pub struct AttrPath {
    /// Extension schema URN holding the attribute, if any.
    pub urn: Option<String>,
    pub attr: String,
    pub filter: Option<ValueFilter>,
    pub sub_attr: Option<String>,
}

/// A value filter inside brackets: comparisons joined by `and` / `or`
/// (`and` binds tighter; parentheses and `not` are not supported).
#[derive(Debug, Clone, PartialEq)]
pub enum ValueFilter {
    Compare {
        attr: String,
        op: CompareOp,
        value: Literal,
    },
    Present(String),
    And(Box<ValueFilter>, Box<ValueFilter>),
    Or(Box<ValueFilter>, Box<ValueFilter>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    Ne,
    Co,
    Sw,
    Ew,
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Str(String),
    Bool(bool),
    Num(f64),
    Null,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid SCIM attribute path {path:?}: {reason}")]
pub struct PathError {
    pub path: String,
    pub reason: String,
}

impl FromStr for AttrPath {
    type Err = PathError;

    fn from_str(s: &str) -> Result<Self, PathError> {
        let err = |reason: &str| PathError {
            path: s.to_string(),
            reason: reason.to_string(),
        };
        let s_trim = s.trim();
        if s_trim.is_empty() {
            return Err(err("empty path"));
        }
        // The URN ends at the last ':' before any filter (filter values may hold ':').
        let head_end = s_trim.find('[').unwrap_or(s_trim.len());
        let (urn, rest) = if s_trim.len() > 4
            && s_trim
                .get(..4)
                .is_some_and(|p| p.eq_ignore_ascii_case("urn:"))
        {
            let colon = s_trim[..head_end]
                .rfind(':')
                .ok_or_else(|| err("URN without attribute"))?;
            (Some(s_trim[..colon].to_string()), &s_trim[colon + 1..])
        } else {
            (None, s_trim)
        };

        let (attr, filter, after) = match rest.find('[') {
            Some(open) => {
                let close = find_closing_bracket(rest, open).ok_or_else(|| err("unclosed '['"))?;
                let filter = parse_filter(&rest[open + 1..close]).map_err(|r| err(&r))?;
                (&rest[..open], Some(filter), &rest[close + 1..])
            }
            None => match rest.find('.') {
                Some(dot) => (&rest[..dot], None, &rest[dot..]),
                None => (rest, None, ""),
            },
        };
        let sub_attr = match after {
            "" => None,
            s if s.starts_with('.') && is_name(&s[1..]) => Some(s[1..].to_string()),
            _ => return Err(err("expected '.subAttribute' after the attribute")),
        };
        if !is_name(attr) {
            return Err(err("bad attribute name"));
        }
        Ok(AttrPath {
            urn,
            attr: attr.to_string(),
            filter,
            sub_attr,
        })
    }
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '$')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '$')
}

fn find_closing_bracket(s: &str, open: usize) -> Option<usize> {
    let mut in_str = false;
    let mut escaped = false;
    for (i, c) in s[open + 1..].char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_str => escaped = true,
            '"' => in_str = !in_str,
            ']' if !in_str => return Some(open + 1 + i),
            _ => {}
        }
    }
    None
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Str(String),
}

fn tokenize(s: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '"' {
            chars.next();
            let mut v = String::new();
            loop {
                match chars.next() {
                    None => return Err("unterminated string".into()),
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some('n') => v.push('\n'),
                        Some('t') => v.push('\t'),
                        Some(e) => v.push(e),
                        None => return Err("unterminated escape".into()),
                    },
                    Some(ch) => v.push(ch),
                }
            }
            out.push(Token::Str(v));
        } else {
            let mut w = String::new();
            while let Some(&ch) = chars.peek() {
                if ch.is_whitespace() || ch == '"' {
                    break;
                }
                w.push(ch);
                chars.next();
            }
            out.push(Token::Word(w));
        }
    }
    Ok(out)
}

fn parse_filter(s: &str) -> Result<ValueFilter, String> {
    parse_filter_with(s, is_name)
}

/// A whole-resource filter (RFC 7644 §3.4.2.2) of comparisons joined by `and` / `or`, whose
/// attributes are paths (`emails.value`, `urn:…:User:employeeNumber`): what the client
/// evaluates itself when a server cannot filter, and checks a server's filtered answer with.
pub fn parse_resource_filter(s: &str) -> Result<ValueFilter, PathError> {
    parse_filter_with(s, |a| {
        a.parse::<AttrPath>().is_ok_and(|p| p.filter.is_none())
    })
    .map_err(|reason| PathError {
        path: s.to_string(),
        reason,
    })
}

fn parse_filter_with(s: &str, attr_ok: fn(&str) -> bool) -> Result<ValueFilter, String> {
    let tokens = tokenize(s)?;
    let mut pos = 0;
    let f = parse_or(&tokens, &mut pos, attr_ok)?;
    if pos != tokens.len() {
        return Err(format!("unexpected token {:?} in filter", tokens[pos]));
    }
    Ok(f)
}

fn is_kw(t: Option<&Token>, kw: &str) -> bool {
    matches!(t, Some(Token::Word(w)) if w.eq_ignore_ascii_case(kw))
}

fn parse_or(
    t: &[Token],
    pos: &mut usize,
    attr_ok: fn(&str) -> bool,
) -> Result<ValueFilter, String> {
    let mut left = parse_and(t, pos, attr_ok)?;
    while is_kw(t.get(*pos), "or") {
        *pos += 1;
        let right = parse_and(t, pos, attr_ok)?;
        left = ValueFilter::Or(Box::new(left), Box::new(right));
    }
    Ok(left)
}

fn parse_and(
    t: &[Token],
    pos: &mut usize,
    attr_ok: fn(&str) -> bool,
) -> Result<ValueFilter, String> {
    let mut left = parse_cmp(t, pos, attr_ok)?;
    while is_kw(t.get(*pos), "and") {
        *pos += 1;
        let right = parse_cmp(t, pos, attr_ok)?;
        left = ValueFilter::And(Box::new(left), Box::new(right));
    }
    Ok(left)
}

fn parse_cmp(
    t: &[Token],
    pos: &mut usize,
    attr_ok: fn(&str) -> bool,
) -> Result<ValueFilter, String> {
    let attr = match t.get(*pos) {
        Some(Token::Word(w)) if attr_ok(w) => w.clone(),
        other => return Err(format!("expected attribute name, found {other:?}")),
    };
    *pos += 1;
    let op = match t.get(*pos) {
        Some(Token::Word(w)) => w.to_ascii_lowercase(),
        other => return Err(format!("expected operator, found {other:?}")),
    };
    *pos += 1;
    let op = match op.as_str() {
        "pr" => return Ok(ValueFilter::Present(attr)),
        "eq" => CompareOp::Eq,
        "ne" => CompareOp::Ne,
        "co" => CompareOp::Co,
        "sw" => CompareOp::Sw,
        "ew" => CompareOp::Ew,
        "gt" => CompareOp::Gt,
        "ge" => CompareOp::Ge,
        "lt" => CompareOp::Lt,
        "le" => CompareOp::Le,
        other => return Err(format!("unknown operator {other:?}")),
    };
    let value = match t.get(*pos) {
        Some(Token::Str(s)) => Literal::Str(s.clone()),
        Some(Token::Word(w)) if w == "true" => Literal::Bool(true),
        Some(Token::Word(w)) if w == "false" => Literal::Bool(false),
        Some(Token::Word(w)) if w == "null" => Literal::Null,
        Some(Token::Word(w)) => Literal::Num(
            w.parse()
                .map_err(|_| format!("bad comparison value {w:?}"))?,
        ),
        None => return Err("missing comparison value".into()),
    };
    *pos += 1;
    Ok(ValueFilter::Compare { attr, op, value })
}

/// Looks a key up case-insensitively (exact match first, the common case).
pub fn get_ci<'a>(obj: &'a Value, name: &str) -> Option<&'a Value> {
    let map = obj.as_object()?;
    map.get(name).or_else(|| {
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

impl ValueFilter {
    /// Evaluates the filter on one element of a multi-valued attribute.
    /// String comparisons are case-insensitive (caseExact is false for the
    /// usual matching attributes such as emails.value and type).
    pub fn matches(&self, element: &Value) -> bool {
        match self {
            ValueFilter::And(a, b) => a.matches(element) && b.matches(element),
            ValueFilter::Or(a, b) => a.matches(element) || b.matches(element),
            ValueFilter::Present(attr) => get_ci(element, attr)
                .is_some_and(|v| !v.is_null() && v != &Value::String(String::new())),
            ValueFilter::Compare { attr, op, value } => {
                let actual = get_ci(element, attr).unwrap_or(&Value::Null);
                compare(actual, *op, value)
            }
        }
    }
}

impl ValueFilter {
    /// Evaluates a filter from [`parse_resource_filter`] on a whole resource: a comparison
    /// holds when any value at its path does (multi-valued attributes), strings compared
    /// case-insensitively — the lenient reading, so a check never drops a resource the
    /// server rightly returned.
    pub fn matches_resource(&self, resource: &Value) -> bool {
        match self {
            ValueFilter::And(a, b) => a.matches_resource(resource) && b.matches_resource(resource),
            ValueFilter::Or(a, b) => a.matches_resource(resource) || b.matches_resource(resource),
            ValueFilter::Present(attr) => present_at(attr, resource),
            ValueFilter::Compare { attr, op, value } => {
                let values = values_at(attr, resource);
                if values.is_empty() {
                    return compare(&Value::Null, *op, value);
                }
                values.iter().any(|v| {
                    // `values` renders booleans and numbers as text: back to their type.
                    let actual = match value {
                        Literal::Bool(_) => v.parse::<bool>().map_or(Value::Null, Value::Bool),
                        Literal::Num(_) => v
                            .parse::<f64>()
                            .ok()
                            .and_then(serde_json::Number::from_f64)
                            .map_or(Value::Null, Value::Number),
                        _ => Value::String(v.clone()),
                    };
                    compare(&actual, *op, value)
                })
            }
        }
    }

    /// The attribute paths the filter reads, to request them with `attributes=`.
    pub fn attributes(&self) -> Vec<String> {
        match self {
            ValueFilter::And(a, b) | ValueFilter::Or(a, b) => {
                let mut v = a.attributes();
                v.extend(b.attributes());
                v.dedup();
                v
            }
            ValueFilter::Present(attr) | ValueFilter::Compare { attr, .. } => vec![attr.clone()],
        }
    }
}

/// `attr pr`: a value that is not null, nor empty (a complex attribute counts as a value).
fn present_at(attr: &str, resource: &Value) -> bool {
    let Ok(p) = attr.parse::<AttrPath>() else {
        return false;
    };
    if p.values(resource).iter().any(|v| !v.is_empty()) {
        return true;
    }
    let root = match &p.urn {
        Some(urn) => get_ci(resource, urn),
        None => Some(resource),
    };
    let v = root.and_then(|r| get_ci(r, &p.attr));
    let v = match (&p.sub_attr, v) {
        (Some(sub), Some(Value::Object(_))) => v.and_then(|o| get_ci(o, sub)),
        (Some(_), _) => None,
        (None, v) => v,
    };
    match v {
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
        Some(Value::Null) | None => false,
        Some(_) => true,
    }
}

fn values_at(attr: &str, resource: &Value) -> Vec<String> {
    attr.parse::<AttrPath>()
        .map(|p| p.values(resource))
        .unwrap_or_default()
}

fn compare(actual: &Value, op: CompareOp, lit: &Literal) -> bool {
    use std::cmp::Ordering;
    let ord: Option<Ordering> = match (actual, lit) {
        (Value::String(a), Literal::Str(b)) => {
            let (a, b) = (a.to_lowercase(), b.to_lowercase());
            match op {
                CompareOp::Co => return a.contains(&b),
                CompareOp::Sw => return a.starts_with(&b),
                CompareOp::Ew => return a.ends_with(&b),
                _ => Some(a.cmp(&b)),
            }
        }
        (Value::Bool(a), Literal::Bool(b)) => Some(a.cmp(b)),
        (Value::Number(a), Literal::Num(b)) => a.as_f64().and_then(|a| a.partial_cmp(b)),
        (Value::Null, Literal::Null) => Some(Ordering::Equal),
        _ => None,
    };
    match (op, ord) {
        (CompareOp::Eq, Some(o)) => o == Ordering::Equal,
        (CompareOp::Ne, Some(o)) => o != Ordering::Equal,
        (CompareOp::Ne, None) => true,
        (CompareOp::Gt, Some(o)) => o == Ordering::Greater,
        (CompareOp::Ge, Some(o)) => o != Ordering::Less,
        (CompareOp::Lt, Some(o)) => o == Ordering::Less,
        (CompareOp::Le, Some(o)) => o != Ordering::Greater,
        _ => false,
    }
}

fn push_leaf(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Number(n) => out.push(n.to_string()),
        Value::Bool(b) => out.push(b.to_string()),
        Value::Array(items) => items.iter().for_each(|i| push_leaf(i, out)),
        Value::Null | Value::Object(_) => {}
    }
}

impl AttrPath {
    /// All string values at this path in a resource, multi-valued aware:
    /// `emails.value` yields every email, `emails[primary eq true].value` the
    /// primary one. Numbers and booleans are rendered as text; missing → empty.
    pub fn values(&self, resource: &Value) -> Vec<String> {
        let root = match &self.urn {
            Some(urn) => match get_ci(resource, urn) {
                Some(ext) => ext,
                None => return Vec::new(),
            },
            None => resource,
        };
        let Some(v) = get_ci(root, &self.attr) else {
            return Vec::new();
        };
        let candidates: Vec<&Value> = match v {
            Value::Array(items) => items.iter().collect(),
            other => vec![other],
        };
        let mut out = Vec::new();
        for c in candidates {
            if let Some(f) = &self.filter
                && !f.matches(c)
            {
                continue;
            }
            match &self.sub_attr {
                Some(sub) => {
                    if let Some(sv) = get_ci(c, sub) {
                        push_leaf(sv, &mut out);
                    }
                }
                None => push_leaf(c, &mut out),
            }
        }
        out
    }

    /// The top-level attribute to request with `attributes=` so that
    /// [`AttrPath::values`] has what it needs (the filter reads sibling
    /// sub-attributes, so the whole complex attribute is asked for).
    pub fn request_attribute(&self) -> String {
        match (&self.urn, &self.filter, &self.sub_attr) {
            (Some(urn), None, Some(sub)) => format!("{urn}:{}.{sub}", self.attr),
            (Some(urn), _, _) => format!("{urn}:{}", self.attr),
            (None, None, Some(sub)) => format!("{}.{sub}", self.attr),
            (None, _, _) => self.attr.clone(),
        }
    }
}

impl fmt::Display for AttrPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(urn) = &self.urn {
            write!(f, "{urn}:")?;
        }
        write!(f, "{}", self.attr)?;
        if let Some(filter) = &self.filter {
            write!(f, "[{filter}]")?;
        }
        if let Some(sub) = &self.sub_attr {
            write!(f, ".{sub}")?;
        }
        Ok(())
    }
}

impl fmt::Display for ValueFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValueFilter::And(a, b) => write!(f, "{a} and {b}"),
            ValueFilter::Or(a, b) => write!(f, "{a} or {b}"),
            ValueFilter::Present(a) => write!(f, "{a} pr"),
            ValueFilter::Compare { attr, op, value } => {
                let op = format!("{op:?}").to_lowercase();
                write!(f, "{attr} {op} {value}")
            }
        }
    }
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Str(s) => write!(f, "{}", quote(s)),
            Literal::Bool(b) => write!(f, "{b}"),
            Literal::Num(n) => write!(f, "{n}"),
            Literal::Null => write!(f, "null"),
        }
    }
}

/// Quotes a string for a SCIM filter (JSON string escaping, as RFC 7644 §3.4.2.2 says).
pub fn quote(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(s: &str) -> AttrPath {
        s.parse().unwrap()
    }

    fn user() -> Value {
        json!({
            "userName": "Alice",
            "name": {"givenName": "Alice", "familyName": "Liddell"},
            "active": true,
            "emails": [
                {"value": "alice@home.example", "type": "home"},
                {"value": "alice@work.example", "type": "work", "primary": true}
            ],
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {
                "employeeNumber": "42", "manager": {"value": "m-1"}
            }
        })
    }

    #[test]
    fn a_multibyte_character_near_the_start_is_an_error_not_a_panic() {
        // Found by the fuzz (`scim::fuzz`): byte 4 fell inside a character.
        assert!("%𑌋dn&".parse::<AttrPath>().is_err());
        assert!("ur𑌋n:x".parse::<AttrPath>().is_err());
    }

    #[test]
    fn parses_shapes() {
        assert_eq!(p("userName").attr, "userName");
        let n = p("name.givenName");
        assert_eq!(
            (n.attr.as_str(), n.sub_attr.as_deref()),
            ("name", Some("givenName"))
        );
        let e = p("emails[primary eq true].value");
        assert_eq!(e.attr, "emails");
        assert_eq!(e.sub_attr.as_deref(), Some("value"));
        assert_eq!(
            e.filter,
            Some(ValueFilter::Compare {
                attr: "primary".into(),
                op: CompareOp::Eq,
                value: Literal::Bool(true)
            })
        );
        let x = p("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value");
        assert_eq!(
            x.urn.as_deref(),
            Some("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User")
        );
        assert_eq!(
            (x.attr.as_str(), x.sub_attr.as_deref()),
            ("manager", Some("value"))
        );
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "emails[",
            "emails[type eq]",
            "emails[type zz \"a\"]",
            "a.b.c",
            "emails[type eq \"w\"]x",
            "1abc",
            "urn:",
        ] {
            assert!(bad.parse::<AttrPath>().is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn extracts_values() {
        let u = user();
        assert_eq!(p("userName").values(&u), vec!["Alice"]);
        assert_eq!(
            p("USERNAME").values(&u),
            vec!["Alice"],
            "names are case-insensitive"
        );
        assert_eq!(p("name.givenName").values(&u), vec!["Alice"]);
        assert_eq!(
            p("emails.value").values(&u),
            vec!["alice@home.example", "alice@work.example"]
        );
        assert_eq!(
            p("emails[primary eq true].value").values(&u),
            vec!["alice@work.example"]
        );
        assert_eq!(
            p("emails[type eq \"HOME\"].value").values(&u),
            vec!["alice@home.example"]
        );
        assert_eq!(
            p("emails[type eq \"home\" or primary eq true].value")
                .values(&u)
                .len(),
            2
        );
        assert!(
            p("emails[type eq \"home\" and primary eq true].value")
                .values(&u)
                .is_empty()
        );
        assert_eq!(
            p("emails[value ew \"work.example\"].type").values(&u),
            vec!["work"]
        );
        assert_eq!(p("active").values(&u), vec!["true"]);
        assert_eq!(
            p("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber")
                .values(&u),
            vec!["42"]
        );
        assert!(p("nickName").values(&u).is_empty());
        assert!(p("name.middleName").values(&u).is_empty());
    }

    #[test]
    fn roundtrips_and_requests() {
        for s in [
            "userName",
            "emails[primary eq true].value",
            "emails[type eq \"a\\\"b\" or type pr].value",
        ] {
            assert_eq!(p(&p(s).to_string()), p(s));
        }
        assert_eq!(
            p("emails[primary eq true].value").request_attribute(),
            "emails"
        );
        assert_eq!(p("name.givenName").request_attribute(), "name.givenName");
        assert_eq!(quote("a\"b"), "\"a\\\"b\"");
    }
}

#[cfg(test)]
mod resource_filter_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn resource_filters_are_evaluated_on_our_side() {
        let r = json!({"id": "1", "userName": "Alice", "active": true, "externalId": "u-1",
            "emails": [{"value": "a@x", "primary": true}, {"value": "alias@x"}],
            ENTERPRISE: {"employeeNumber": "42"}});
        let yes = [
            r#"userName eq "alice""#,
            r#"externalId eq "zzz" or emails.value eq "ALIAS@x""#,
            r#"userName eq "alice" and active eq true"#,
            "emails pr",
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber eq "42""#,
        ];
        for f in yes {
            assert!(
                parse_resource_filter(f).unwrap().matches_resource(&r),
                "{f}"
            );
        }
        let no = [
            r#"userName eq "bob""#,
            r#"externalId eq "u-2" or emails.value eq "b@x""#,
            r#"userName eq "alice" and active eq false"#,
            "nickName pr",
            r#"displayName eq "Alice""#,
        ];
        for f in no {
            assert!(
                !parse_resource_filter(f).unwrap().matches_resource(&r),
                "{f}"
            );
        }
        assert!(parse_resource_filter("userName eq").is_err());
        assert!(parse_resource_filter(r#"emails[type eq "work"].value eq "a""#).is_err());
        let f = parse_resource_filter(r#"externalId eq "1" or emails.value eq "a""#).unwrap();
        assert_eq!(f.attributes(), ["externalId", "emails.value"]);
    }

    const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
}
