//! `runner/schema/results.schema.json`, the shape of `--json`: every test
//! that reads the runner's real `--json` output holds it to the schema
//! first, so a field the writer drops, renames or retypes fails them.

use serde_json::Value;
use std::sync::OnceLock;

const SCHEMA: &str = include_str!("../runner/schema/results.schema.json");

fn validator() -> &'static jsonschema::Validator {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        let schema: Value = serde_json::from_str(SCHEMA).expect("the schema is JSON");
        jsonschema::draft202012::new(&schema).expect("the schema is a valid 2020-12 schema")
    })
}

/// Panics with every violation (where in the document, and what) unless
/// `document` is a results document as the schema describes it.
pub fn check(document: &Value) {
    let errors: Vec<String> = validator()
        .iter_errors(document)
        .map(|e| format!("  at {}: {e}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "--json does not hold to runner/schema/results.schema.json:\n{}",
        errors.join("\n")
    );
}
