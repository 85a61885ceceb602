//! The API reference (`docs/api.md`), generated from the CRD schemas so that it can never
//! drift from what the API server validates. A unit test fails when the file is stale.

use std::fmt::Write;

use serde_json::Value;

use crate::api::crdgen;

/// Renders the reference for every kind.
pub fn render() -> String {
    let mut out = String::from(
        "# API reference (catalogsync.io/v1alpha1)\n\n\
         Generated from the CRD schemas by `cargo run -- api-docs > docs/api.md`; do not edit by hand.\n\
         Every field is also shown by `kubectl explain <kind>.<field>`.\n",
    );
    for crd in crdgen::all() {
        let kind = &crd.spec.names.kind;
        let version = &crd.spec.versions[0];
        let schema = serde_json::to_value(
            version
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .expect("every CRD has a schema"),
        )
        .expect("schemas serialize");
        let _ = write!(
            out,
            "\n## {kind}\n\n{}\n\nShort names: {}. Category: `catalogsync`.\n",
            schema["description"].as_str().unwrap_or_default(),
            crd.spec
                .names
                .short_names
                .as_deref()
                .unwrap_or_default()
                .iter()
                .map(|s| format!("`{s}`"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        for part in ["spec", "status"] {
            let _ = write!(
                out,
                "\n### {kind}.{part}\n\n| field | type | default | description |\n| --- | --- | --- | --- |\n"
            );
            fields(&mut out, &schema["properties"][part], part);
            let rules = rules_of(&schema["properties"][part], part);
            if !rules.is_empty() {
                let _ = write!(out, "\nAdmission rules:\n\n");
                for (path, msg) in rules {
                    let _ = writeln!(out, "- `{path}`: {msg}");
                }
            }
        }
    }
    out
}

fn type_of(s: &Value) -> String {
    match s["type"].as_str() {
        Some("array") => format!("[]{}", type_of(&s["items"])),
        Some("integer") => "integer".into(),
        Some(t) => match s["enum"].as_array() {
            Some(e) => e
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" \\| "),
            None => t.into(),
        },
        None => "any".into(),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

fn fields(out: &mut String, schema: &Value, path: &str) {
    let Some(props) = schema["properties"].as_object() else {
        return;
    };
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for (name, s) in props {
        // Undocumented: the fields of Kubernetes' own types (Pod settings), which
        // `kubectl explain pod.spec` documents.
        if s["description"].is_null() {
            continue;
        }
        let p = format!("{path}.{name}");
        let default = if s["default"].is_null() {
            if required.contains(&name.as_str()) {
                "required".into()
            } else {
                String::new()
            }
        } else {
            format!("`{}`", s["default"])
        };
        let mut range = String::new();
        if let Some(min) = s["minimum"].as_f64() {
            let _ = write!(range, " Minimum {min}.");
        }
        if let Some(max) = s["maximum"].as_f64() {
            let _ = write!(range, " Maximum {max}.");
        }
        let _ = writeln!(
            out,
            "| `{p}` | {} | {default} | {}{range} |",
            type_of(s),
            one_line(s["description"].as_str().unwrap_or_default())
        );
        // Conditions are the standard metav1.Condition: not expanded.
        if name != "conditions" {
            let child = if s["type"] == "array" { &s["items"] } else { s };
            let child_path = if s["type"] == "array" {
                format!("{p}[]")
            } else {
                p
            };
            fields(out, child, &child_path);
        }
    }
}

fn rules_of(schema: &Value, path: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(rules) = schema["x-kubernetes-validations"].as_array() {
        for r in rules {
            out.push((
                path.to_string(),
                r["message"].as_str().unwrap_or_default().to_string(),
            ));
        }
    }
    if let Some(props) = schema["properties"].as_object() {
        for (name, s) in props {
            let child = if s["type"] == "array" { &s["items"] } else { s };
            out.extend(rules_of(child, &format!("{path}.{name}")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn checked_in_reference_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/api.md");
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == super::render(),
            "docs/api.md is stale; run `cargo run -- api-docs > docs/api.md`"
        );
    }

    #[test]
    fn reference_documents_every_kind_and_the_admission_rules() {
        let doc = super::render();
        for kind in ["IdentityDomain", "CatalogApp", "SyncPolicy", "SyncRun"] {
            assert!(doc.contains(&format!("## {kind}\n")), "{kind} missing");
        }
        assert!(doc.contains("synchronization can only be enabled after provisioning is enabled"));
        assert!(doc.contains("`spec.limits.maxCreates`"));
    }
}
