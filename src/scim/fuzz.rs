//! Bounded fuzzing (proptest, a fixed number of cases: fast in CI) of what SCIM servers
//! and users hand us: response bodies of every kind, attribute paths and their filters,
//! `Retry-After` values. Whatever the input: no panic, an error at worst.

use std::time::SystemTime;

use proptest::prelude::*;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::model::{ErrorResponse, Group, ListResponse, ServiceProviderConfig, User};
use super::path::AttrPath;
use super::retry::parse_retry_after;
use super::transport::error_from;

/// Names SCIM bodies and paths use, so that random input reaches past the first check.
const WORDS: &[&str] = &[
    "schemas",
    "Resources",
    "totalResults",
    "itemsPerPage",
    "startIndex",
    "nextCursor",
    "id",
    "userName",
    "emails",
    "value",
    "primary",
    "type",
    "work",
    "members",
    "display",
    "active",
    "meta",
    "version",
    "patch",
    "bulk",
    "filter",
    "maxResults",
    "maxOperations",
    "supported",
    "pagination",
    "cursor",
    "detail",
    "scimType",
    "status",
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
    "employeeNumber",
];

fn word() -> impl Strategy<Value = String> {
    prop::sample::select(WORDS).prop_map(str::to_string)
}

/// Arbitrary JSON, shallow and small (bounded memory), with SCIM's names as keys.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any::<String>().prop_map(Value::String),
        word().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(prop_oneof![word(), any::<String>()], inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Text made of JSON's punctuation and SCIM's names: mostly almost-JSON.
fn almost_json() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        prop::sample::select(
            &[
                "{", "}", "[", "]", ":", ",", "\"", "1", "-0", "1e999", "true", "null", "\\u0000",
                "\\"
            ][..]
        )
        .prop_map(str::to_string),
        word().prop_map(|w| format!("\"{w}\"")),
    ];
    prop::collection::vec(piece, 0..64).prop_map(|p| p.concat().into_bytes())
}

/// Attribute paths and filters: SCIM's grammar pieces in any order, or any text.
fn path_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        word(),
        prop::sample::select(
            &[
                ".", "[", "]", " ", " eq ", " ne ", " co ", " sw ", " gt ", " pr", " and ", " or ",
                "not ", "(", ")", "\"", "\"work\"", "\\\"", "true", "false", "null", "42", "1.5e3",
                ":", "urn:", "$ref",
            ][..]
        )
        .prop_map(str::to_string),
    ];
    prop_oneof![
        prop::collection::vec(piece, 0..24).prop_map(|p| p.concat()),
        any::<String>(),
    ]
}

fn parse_everything(body: &[u8]) {
    let _ = serde_json::from_slice::<ListResponse>(body);
    let _ = serde_json::from_slice::<ErrorResponse>(body);
    let _ = serde_json::from_slice::<User>(body);
    let _ = serde_json::from_slice::<Group>(body);
    if let Ok(spc) = serde_json::from_slice::<ServiceProviderConfig>(body) {
        let _ = (
            spc.capabilities(),
            spc.supports_cursor(),
            spc.max_page_size(),
        );
    }
    for status in [
        StatusCode::BAD_REQUEST,
        StatusCode::CONFLICT,
        StatusCode::FOUND,
    ] {
        let e = error_from(&Method::GET, "/Users", status, body);
        // The detail is bounded however large the body.
        assert!(e.to_string().len() < 2048, "{}", e.to_string().len());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn response_bodies_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        parse_everything(&bytes);
    }

    #[test]
    fn almost_json_bodies_never_panic(body in almost_json()) {
        parse_everything(&body);
    }

    #[test]
    fn json_of_any_shape_never_panics(value in json()) {
        let body = serde_json::to_vec(&value).unwrap();
        parse_everything(&body);
    }

    #[test]
    fn attribute_paths_never_panic(text in path_text(), resource in json()) {
        if let Ok(path) = text.parse::<AttrPath>() {
            let _ = path.values(&resource);
            let _ = path.request_attribute();
        }
    }

    #[test]
    fn retry_after_never_panics(text in any::<String>(), secs in any::<u64>()) {
        let _ = parse_retry_after(&text, SystemTime::UNIX_EPOCH);
        let _ = parse_retry_after(&secs.to_string(), SystemTime::now());
    }
}
