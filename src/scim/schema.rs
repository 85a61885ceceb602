//! The User attributes of the core schema (RFC 7643 §4.1) and the enterprise extension
//! (§4.3): which attribute is multi-valued, which is complex and with which sub-attributes.
//! Documents are built from it (a multi-valued attribute is always an array, §2.4) and
//! attribute paths are checked against it, so that an impossible path is refused before
//! any request is sent.

use crate::scim::model::{ENTERPRISE_USER_SCHEMA, USER_SCHEMA};
use crate::scim::path::AttrPath;

mod patterns;
pub use patterns::{PathPatterns, attribute_hints, path_patterns};

/// One attribute of a schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attribute {
    pub name: &'static str,
    pub multi_valued: bool,
    /// Sub-attributes of a complex attribute; empty for a simple one.
    pub sub_attributes: &'static [&'static str],
}

const fn simple(name: &'static str) -> Attribute {
    Attribute {
        name,
        multi_valued: false,
        sub_attributes: &[],
    }
}

const fn complex(name: &'static str, sub_attributes: &'static [&'static str]) -> Attribute {
    Attribute {
        name,
        multi_valued: false,
        sub_attributes,
    }
}

const fn multi(name: &'static str, sub_attributes: &'static [&'static str]) -> Attribute {
    Attribute {
        name,
        multi_valued: true,
        sub_attributes,
    }
}

/// The sub-attributes of the usual multi-valued attributes (RFC 7643 §2.4).
const MULTI: &[&str] = &["value", "display", "type", "primary", "$ref"];

/// RFC 7643 §3.1 (common attributes) and §4.1 (User).
const CORE_USER: &[Attribute] = &[
    simple("id"),
    simple("externalId"),
    complex(
        "meta",
        &[
            "resourceType",
            "created",
            "lastModified",
            "location",
            "version",
        ],
    ),
    simple("userName"),
    complex(
        "name",
        &[
            "formatted",
            "familyName",
            "givenName",
            "middleName",
            "honorificPrefix",
            "honorificSuffix",
        ],
    ),
    simple("displayName"),
    simple("nickName"),
    simple("profileUrl"),
    simple("title"),
    simple("userType"),
    simple("preferredLanguage"),
    simple("locale"),
    simple("timezone"),
    simple("active"),
    simple("password"),
    multi("emails", MULTI),
    multi("phoneNumbers", MULTI),
    multi("ims", MULTI),
    multi("photos", MULTI),
    multi(
        "addresses",
        &[
            "formatted",
            "streetAddress",
            "locality",
            "region",
            "postalCode",
            "country",
            "type",
            "primary",
        ],
    ),
    multi("groups", MULTI),
    multi("entitlements", MULTI),
    multi("roles", MULTI),
    multi("x509Certificates", MULTI),
];

/// RFC 7643 §4.3.
const ENTERPRISE_USER: &[Attribute] = &[
    simple("employeeNumber"),
    simple("costCenter"),
    simple("organization"),
    simple("division"),
    simple("department"),
    complex("manager", &["value", "$ref", "displayName"]),
];

/// The attributes of a schema this module knows, by URN (`None`: the core User schema).
fn known_schema(urn: Option<&str>) -> Option<&'static [Attribute]> {
    match urn {
        None => Some(CORE_USER),
        Some(u) if u.eq_ignore_ascii_case(USER_SCHEMA) => Some(CORE_USER),
        Some(u) if u.eq_ignore_ascii_case(ENTERPRISE_USER_SCHEMA) => Some(ENTERPRISE_USER),
        Some(_) => None,
    }
}

/// The User attribute at a path's head, when its schema is one this module knows.
pub fn user_attribute(path: &AttrPath) -> Option<&'static Attribute> {
    known_schema(path.urn.as_deref())?
        .iter()
        .find(|a| a.name.eq_ignore_ascii_case(&path.attr))
}

/// Whether the path's attribute is multi-valued: its value is an array (RFC 7643 §2.4).
pub fn is_multi_valued(path: &AttrPath) -> bool {
    user_attribute(path).is_some_and(|a| a.multi_valued)
}

/// Parses a User attribute path and checks it against the schema: the attribute exists,
/// a sub-attribute is one of its own, a complex attribute names a sub-attribute, a value
/// filter is only on a multi-valued one. Attributes of other extension schemas (a URN this
/// module does not know) are the app's own and pass unchecked.
pub fn check_user_path(path: &str) -> Result<AttrPath, String> {
    let p: AttrPath = path.parse().map_err(|e| format!("{e}"))?;
    let Some(attrs) = known_schema(p.urn.as_deref()) else {
        return Ok(p);
    };
    let schema = if attrs == ENTERPRISE_USER {
        "the enterprise User extension (RFC 7643 section 4.3)"
    } else {
        "the core User schema (RFC 7643 section 4.1)"
    };
    let Some(a) = user_attribute(&p) else {
        return Err(format!(
            "{path:?}: {schema} has no attribute {:?} (an app's own attribute needs its \
             extension schema's URN as prefix)",
            p.attr
        ));
    };
    if p.filter.is_some() && !a.multi_valued {
        return Err(format!(
            "{path:?}: a value filter [...] selects an element of a multi-valued attribute; \
             {} is single-valued",
            a.name
        ));
    }
    match &p.sub_attr {
        Some(sub) if a.sub_attributes.is_empty() => Err(format!(
            "{path:?}: {} is a simple attribute, it has no sub-attribute {sub:?}",
            a.name
        )),
        Some(sub) if !a.sub_attributes.iter().any(|s| s.eq_ignore_ascii_case(sub)) => Err(format!(
            "{path:?}: {} has no sub-attribute {sub:?} (its sub-attributes: {})",
            a.name,
            a.sub_attributes.join(", ")
        )),
        // `emails[primary eq true]` stands for its `value` (RFC 7644 §3.10).
        None if !a.sub_attributes.is_empty() && p.filter.is_none() => Err(format!(
            "{path:?}: {} is complex; name one of its sub-attributes, e.g. {}.{}",
            a.name, a.name, a.sub_attributes[0]
        )),
        _ => Ok(p),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Paths `check_user_path` accepts (the admission patterns are run on them too).
    pub(super) const POSSIBLE: &[&str] = &[
        "userName",
        " userName ",
        "emails.value",
        "emails[primary eq true].value",
        "emails[type eq \"work\"]",
        "emails[type eq \"work\"].value",
        "emails[type eq \"a]b\" and primary eq true].value",
        "emails[type eq\"work\"or value pr].display",
        "phoneNumbers[primary eq false or value sw \"+33\"].value",
        "addresses[type EQ \"home\"].postalCode",
        "x509Certificates.value",
        "groups.$ref",
        "name.formatted",
        "NAME.GIVENNAME",
        "meta.lastModified",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value",
        "URN:IETF:PARAMS:SCIM:SCHEMAS:EXTENSION:ENTERPRISE:2.0:USER:department",
        "urn:ietf:params:scim:schemas:core:2.0:User:userName",
        "urn:ietf:params:scim:schemas:core:2.0:User:emails[value co \"a:b\"].value",
        "urn:example:params:scim:schemas:extension:acme:2.0:User:badge",
        "urn:acme:User:badges[level gt 2.5e1].name",
        "urn:badge",
    ];

    /// Paths `check_user_path` refuses, with a part of its reason.
    pub(super) const IMPOSSIBLE: &[(&str, &str)] = &[
        ("name.value", "name has no sub-attribute \"value\""),
        ("userName.value", "userName is a simple attribute"),
        ("userName.x", "userName is a simple attribute"),
        (
            "emails",
            "emails is complex; name one of its sub-attributes",
        ),
        ("name", "e.g. name.formatted"),
        ("mail", "has no attribute \"mail\""),
        (
            "displayName[primary eq true]",
            "displayName is single-valued",
        ),
        (
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:badge",
            "enterprise User extension",
        ),
        (
            "urn:ietf:params:scim:schemas:core:2.0:User:mail",
            "core User schema",
        ),
        ("emails[", "unclosed"),
        ("emails[].value", "expected attribute name"),
        ("emails[type eq].value", "missing comparison value"),
        ("emails[type is \"work\"].value", "unknown operator"),
        ("emails[primary eq TRUE].value", "bad comparison value"),
        (
            "emails[primary eq trueand type pr].value",
            "bad comparison value",
        ),
        (
            "emails[type eq \"work\"].value.x",
            "expected '.subAttribute'",
        ),
        ("name.givenName.x", "expected '.subAttribute'"),
        ("emails.value[type pr]", "bad attribute name"),
        ("user name", "bad attribute name"),
        ("", "empty path"),
    ];

    #[test]
    fn possible_paths_pass() {
        for p in POSSIBLE {
            assert!(check_user_path(p).is_ok(), "{p}: {:?}", check_user_path(p));
        }
    }

    #[test]
    fn impossible_paths_say_why() {
        for (p, why) in IMPOSSIBLE {
            let e = check_user_path(p).unwrap_err();
            assert!(e.contains(why), "{p}: {e}");
        }
    }

    #[test]
    fn multi_valued_attributes_are_known() {
        let mv = |p: &str| is_multi_valued(&p.parse().unwrap());
        assert!(mv("emails.value"));
        assert!(mv("phoneNumbers[type eq \"work\"].value"));
        assert!(!mv("name.givenName"));
        assert!(!mv("urn:x:y:User:emails"), "an unknown schema's attribute");
    }
}
