//! `GET /openapi.json`: the API described in OpenAPI 3.1. The document is kept by hand in
//! `openapi.yaml` next to the handlers, because it says what a client may rely on (bounds,
//! error codes, which credential each route takes) rather than what the Rust types happen to
//! be; the tests check that it names every route the router serves, and CI runs a
//! property-based contract tester (schemathesis) against a running server with it.
//!
//! The delivery record is described once, by the JSON Schema in `schemas/json/` that also
//! describes `herald.deliveries`; it is merged into the document's components here.

use std::sync::LazyLock;

use axum::http::header;
use axum::response::IntoResponse;
use serde_json::Value;

/// The document as YAML, as kept in the repository.
pub const SOURCE: &str = include_str!("openapi.yaml");

/// The JSON Schemas merged into `components.schemas`, by name.
const RECORD_SCHEMAS: [(&str, &str); 1] = [(
    "DeliveryRecord",
    include_str!("../../schemas/json/DeliveryRecord.schema.json"),
)];

/// The document as JSON, converted once.
static JSON: LazyLock<String> = LazyLock::new(|| document().to_string());

/// The whole document: `openapi.yaml` with the record schemas merged in. A JSON Schema's own
/// definitions (`$defs`) become components too, its references rewritten to point there.
pub fn document() -> Value {
    let mut document: Value =
        serde_yaml_ng::from_str(SOURCE).expect("openapi.yaml is valid YAML (checked by a test)");
    let components = &mut document["components"]["schemas"];
    for (name, text) in RECORD_SCHEMAS {
        let mut schema: Value =
            serde_json::from_str(text).expect("the record schemas are JSON (checked by a test)");
        rewrite_refs(&mut schema);
        if let Some(object) = schema.as_object_mut() {
            object.remove("$schema");
            object.remove("$id");
            if let Some(Value::Object(defs)) = object.remove("$defs") {
                for (def, body) in defs {
                    components[def] = body;
                }
            }
        }
        components[name] = schema;
    }
    document
}

/// `#/$defs/X` → `#/components/schemas/X`, everywhere in `value`.
fn rewrite_refs(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                match v {
                    Value::String(target) if key == "$ref" => {
                        if let Some(name) = target.strip_prefix("#/$defs/") {
                            *target = format!("#/components/schemas/{name}");
                        }
                    }
                    _ => rewrite_refs(v),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(rewrite_refs),
        _ => {}
    }
}

pub async fn serve() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], JSON.as_str())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Path templates with their parameter names blanked: `/v1/workspaces/{}`.
    fn shape(path: &str) -> String {
        let mut out = String::new();
        let mut in_param = false;
        for c in path.chars() {
            match c {
                '{' => {
                    in_param = true;
                    out.push('{');
                }
                '}' => {
                    in_param = false;
                    out.push('}');
                }
                _ if in_param => {}
                c => out.push(c),
            }
        }
        out
    }

    /// Every path given to `.route(` in the API's sources.
    fn served_paths() -> BTreeSet<String> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api");
        let mut paths = BTreeSet::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for piece in text.split(".route(").skip(1) {
                let piece = piece.trim_start();
                if let Some(rest) = piece.strip_prefix('"') {
                    let route = &rest[..rest.find('"').unwrap_or(0)];
                    // This file's own `.route("` text is not a route.
                    if route.starts_with('/') {
                        paths.insert(shape(route));
                    }
                }
            }
        }
        paths
    }

    /// Every `$ref` in `value`.
    fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                for (key, v) in map {
                    match v {
                        Value::String(target) if key == "$ref" => out.push(target),
                        _ => refs(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_reference_resolves_in_the_served_document() {
        let document = document();
        let mut targets = Vec::new();
        refs(&document, &mut targets);
        assert!(targets.contains(&"#/components/schemas/DeliveryRecord"));
        for target in targets {
            let pointer = target.strip_prefix('#').expect("local references only");
            assert!(
                document.pointer(pointer).is_some(),
                "{target} resolves in the document"
            );
        }
        let served: Value = serde_json::from_str(&JSON).unwrap();
        assert_eq!(served, document);
    }

    #[test]
    fn the_document_names_every_served_route_and_no_other() {
        let document = document();
        assert_eq!(document["openapi"], "3.1.0");
        let documented: BTreeSet<String> = document["paths"]
            .as_object()
            .unwrap()
            .keys()
            .map(|p| shape(p))
            .collect();
        let served = served_paths();
        assert!(served.contains("/v1/events"), "the scan finds routes");
        assert_eq!(documented, served, "documented paths against served ones");
    }
}
