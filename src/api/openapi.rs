//! `GET /openapi.json`: the API described in OpenAPI 3.1. The document is kept by hand in
//! `openapi.yaml` next to the handlers, because it says what a client may rely on (bounds,
//! error codes, which credential each route takes) rather than what the Rust types happen to
//! be; the tests check that it names every route the router serves, and CI runs a
//! property-based contract tester (schemathesis) against a running server with it.

use std::sync::LazyLock;

use axum::http::header;
use axum::response::IntoResponse;

/// The document as YAML, as kept in the repository.
pub const SOURCE: &str = include_str!("openapi.yaml");

/// The document as JSON, converted once.
static JSON: LazyLock<String> = LazyLock::new(|| {
    let document: serde_json::Value =
        serde_yaml_ng::from_str(SOURCE).expect("openapi.yaml is valid YAML (checked by a test)");
    document.to_string()
});

pub async fn document() -> impl IntoResponse {
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

    #[test]
    fn the_document_names_every_served_route_and_no_other() {
        let document: serde_json::Value = serde_yaml_ng::from_str(SOURCE).unwrap();
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
