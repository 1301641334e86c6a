//! Schema evolution guard: every schema in `schemas/` must stay BACKWARD
//! compatible with the version released before it (kept under
//! `crates/events/released/<version>/`), i.e. a consumer built against the
//! current schema can read every event written with the released one.
//! Changing a schema incompatibly fails `make test` here, before any
//! registry refuses it at run time.

use std::path::{Path, PathBuf};

use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::Schema;

fn released_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("released")
}

fn schemas_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas")
}

/// `(relative path, released text)` of every released schema.
fn released() -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for version in std::fs::read_dir(released_root()).expect("released/") {
        let version = version.unwrap().path();
        for topic in std::fs::read_dir(&version).unwrap() {
            let topic = topic.unwrap().path();
            for file in std::fs::read_dir(&topic).unwrap() {
                let file = file.unwrap().path();
                if file.extension().is_some_and(|e| e == "avsc") {
                    let relative = file.strip_prefix(&version).unwrap().to_owned();
                    out.push((relative, std::fs::read_to_string(&file).unwrap()));
                }
            }
        }
    }
    out
}

fn backward_compatible(released: &str, current: &str) -> Result<(), String> {
    let writer = Schema::parse_str(released).map_err(|e| e.to_string())?;
    let reader = Schema::parse_str(current).map_err(|e| e.to_string())?;
    SchemaCompatibility::can_read(&writer, &reader)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[test]
fn every_schema_is_backward_compatible_with_its_released_version() {
    let released = released();
    assert!(
        released.len() >= 15,
        "released schemas found: {}",
        released.len()
    );
    let mut broken = Vec::new();
    for (relative, old) in &released {
        let current_path = schemas_root().join(relative);
        let current = std::fs::read_to_string(&current_path).unwrap_or_else(|_| {
            panic!(
                "{} was released but is gone from schemas/: removing a schema breaks its consumers",
                relative.display()
            )
        });
        if let Err(e) = backward_compatible(old, &current) {
            broken.push(format!("{}: {e}", relative.display()));
        }
    }
    assert!(
        broken.is_empty(),
        "BACKWARD-incompatible changes:\n{}",
        broken.join("\n")
    );
}

#[test]
fn the_check_refuses_an_incompatible_change() {
    let (_, old) = released()
        .into_iter()
        .find(|(p, _)| p.ends_with("orders/OrderPlaced.avsc"))
        .expect("OrderPlaced released");
    let mut schema: serde_json::Value = serde_json::from_str(&old).unwrap();
    // A new field without a default: old events cannot fill it.
    schema["fields"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "name": "loyalty_tier", "type": "string", "doc": "required, no default"
        }));
    assert!(backward_compatible(&old, &schema.to_string()).is_err());

    // The same field with a default is a compatible evolution.
    let last = schema["fields"].as_array_mut().unwrap().last_mut().unwrap();
    last["type"] = serde_json::json!(["null", "string"]);
    last["default"] = serde_json::Value::Null;
    assert!(backward_compatible(&old, &schema.to_string()).is_ok());
}
