//! The layering of the crate's modules (see the crate docs), checked on the sources: every
//! `crate::<module>` a layer names must be one it may import.

use std::path::Path;

/// Each layer and the modules it may name besides itself.
const RULES: &[(&str, &[&str])] = &[
    ("scim", &[]),
    ("api", &["scim"]),
    ("telemetry", &[]),
    ("cluster", &["api", "scim"]),
    ("engine", &["api", "cluster", "scim", "telemetry"]),
    ("controller", &["api", "cluster", "scim", "telemetry"]),
];

/// The `crate::<module>` names in a source text.
fn named_modules(source: &str) -> Vec<String> {
    source
        .match_indices("crate::")
        .filter(|(at, _)| {
            // `catalogsync::crate::` cannot occur; skip identifiers ending in "crate".
            !source[..*at].ends_with(|c: char| c.is_alphanumeric() || c == '_')
        })
        .map(|(at, m)| {
            source[at + m.len()..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn layers_import_downward() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut wrong = Vec::new();
    for (layer, allowed) in RULES {
        let mut files = Vec::new();
        sources(&src.join(layer), &mut files);
        files.push(src.join(format!("{layer}.rs")));
        for file in files.iter().filter(|f| f.exists()) {
            let text = std::fs::read_to_string(file).unwrap();
            for module in named_modules(&text) {
                if module != *layer && !allowed.contains(&module.as_str()) {
                    wrong.push(format!("{} names crate::{module}", file.display()));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layering:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn named_modules_reads_paths() {
    let text = "use crate::api::X;\nfn f() { crate::scim::y(); }\n// my_crate::no\n";
    assert_eq!(named_modules(text), vec!["api", "scim"]);
}
