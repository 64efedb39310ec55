//! A Confluent Schema Registry simulator, under `/registry`: the subset producers and Herald
//! use. Ids are global and start at 1; registering a schema already known (under any subject)
//! answers its id. Errors carry the registry's `error_code` (40401 subject not found, 40403
//! schema not found, 42201 invalid schema, 40101 unauthorized once a test requires basic auth).

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::{self, Path};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Sandbox;

/// The registry's schemas and subjects.
#[derive(Debug, Default)]
pub struct State {
    /// Schema text by id (id − 1 is the index).
    schemas: Vec<String>,
    /// Per subject, the ids of its versions in order (version n is index n − 1).
    subjects: BTreeMap<String, Vec<u32>>,
    /// The `Authorization` header every request must carry, when set.
    basic_auth: Option<String>,
}

impl State {
    /// Registers `schema` under `subject`; its id, the same for an identical schema.
    pub fn register(&mut self, subject: &str, schema: &str) -> Result<u32, String> {
        let parsed: Value =
            serde_json::from_str(schema).map_err(|e| format!("invalid schema: {e}"))?;
        let id = match self
            .schemas
            .iter()
            .position(|s| serde_json::from_str::<Value>(s).ok().as_ref() == Some(&parsed))
        {
            Some(i) => i as u32 + 1,
            None => {
                self.schemas.push(schema.to_owned());
                self.schemas.len() as u32
            }
        };
        let versions = self.subjects.entry(subject.to_owned()).or_default();
        if !versions.contains(&id) {
            versions.push(id);
        }
        Ok(id)
    }

    /// From now on, every request must authenticate with HTTP basic auth as `user`.
    pub fn require_basic_auth(&mut self, user: &str, password: &str) {
        use base64::Engine;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        self.basic_auth = Some(format!("Basic {token}"));
    }

    /// A 401 answer unless `headers` carry the required credentials.
    fn refuse(&self, headers: &HeaderMap) -> Option<Response> {
        let expected = self.basic_auth.as_deref()?;
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        (given != Some(expected))
            .then(|| error(StatusCode::UNAUTHORIZED, 40101, "Unauthorized".into()))
    }

    /// The schema text with this id.
    pub fn schema(&self, id: u32) -> Option<&str> {
        let index = usize::try_from(id).ok()?.checked_sub(1)?;
        self.schemas.get(index).map(String::as_str)
    }

    pub(crate) fn snapshot(&self) -> Value {
        json!({ "subjects": self.subjects, "schemas": self.schemas.len() })
    }
}

pub(crate) fn router() -> Router<Sandbox> {
    Router::new()
        .route("/registry/schemas/ids/{id}", get(schema_by_id))
        .route("/registry/subjects", get(subjects))
        .route(
            "/registry/subjects/{subject}/versions",
            get(versions).post(register),
        )
}

fn answer(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            "application/vnd.schemaregistry.v1+json",
        )],
        body.to_string(),
    )
        .into_response()
}

fn error(status: StatusCode, code: u32, message: String) -> Response {
    answer(status, json!({ "error_code": code, "message": message }))
}

async fn schema_by_id(
    extract::State(sandbox): extract::State<Sandbox>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let state = sandbox.registry();
    if let Some(refused) = state.refuse(&headers) {
        return refused;
    }
    match id.parse().ok().and_then(|id| state.schema(id)) {
        Some(schema) => answer(StatusCode::OK, json!({ "schema": schema })),
        None => error(
            StatusCode::NOT_FOUND,
            40403,
            format!("Schema {id} not found"),
        ),
    }
}

async fn subjects(
    extract::State(sandbox): extract::State<Sandbox>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = sandbox.registry().refuse(&headers) {
        return refused;
    }
    let names: Vec<_> = sandbox.registry().subjects.keys().cloned().collect();
    answer(StatusCode::OK, json!(names))
}

async fn versions(
    extract::State(sandbox): extract::State<Sandbox>,
    headers: HeaderMap,
    Path(subject): Path<String>,
) -> Response {
    if let Some(refused) = sandbox.registry().refuse(&headers) {
        return refused;
    }
    match sandbox.registry().subjects.get(&subject) {
        Some(ids) => answer(StatusCode::OK, json!((1..=ids.len()).collect::<Vec<_>>())),
        None => error(
            StatusCode::NOT_FOUND,
            40401,
            format!("Subject '{subject}' not found."),
        ),
    }
}

#[derive(Deserialize)]
struct Registration {
    schema: String,
    #[serde(default, rename = "schemaType")]
    schema_type: Option<String>,
}

async fn register(
    extract::State(sandbox): extract::State<Sandbox>,
    headers: HeaderMap,
    Path(subject): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    if let Some(refused) = sandbox.registry().refuse(&headers) {
        return refused;
    }
    let registration: Registration = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::UNPROCESSABLE_ENTITY, 42201, e.to_string()),
    };
    if registration
        .schema_type
        .as_deref()
        .is_some_and(|t| t != "AVRO")
    {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            42201,
            "only AVRO schemas are simulated".into(),
        );
    }
    match sandbox.registry().register(&subject, &registration.schema) {
        Ok(id) => answer(StatusCode::OK, json!({ "id": id })),
        Err(e) => error(StatusCode::UNPROCESSABLE_ENTITY, 42201, e),
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use crate::Sandbox;

    async fn call(sandbox: &Sandbox, method: &str, path: &str, body: &str) -> (u16, Value) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/vnd.schemaregistry.v1+json")
            .body(Body::from(body.to_owned()))
            .unwrap();
        let response = sandbox.router().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    use serde_json::{Value, json};

    #[tokio::test]
    async fn registers_schemas_and_serves_them_by_id_and_subject() {
        let sandbox = Sandbox::default();
        let schema = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"string"}]}"#;
        let body = json!({ "schema": schema }).to_string();
        let (status, got) = call(
            &sandbox,
            "POST",
            "/registry/subjects/orders-value/versions",
            &body,
        )
        .await;
        assert_eq!((status, got), (200, json!({"id": 1})));
        let (_, again) = call(
            &sandbox,
            "POST",
            "/registry/subjects/other-value/versions",
            &body,
        )
        .await;
        assert_eq!(again, json!({"id": 1}), "same schema, same id");
        let (status, got) = call(&sandbox, "GET", "/registry/schemas/ids/1", "").await;
        assert_eq!((status, got["schema"].as_str()), (200, Some(schema)));
        let (_, got) = call(&sandbox, "GET", "/registry/subjects", "").await;
        assert_eq!(got, json!(["orders-value", "other-value"]));
        let (_, got) = call(
            &sandbox,
            "GET",
            "/registry/subjects/orders-value/versions",
            "",
        )
        .await;
        assert_eq!(got, json!([1]));
    }

    #[tokio::test]
    async fn unknown_ids_and_subjects_answer_the_registry_error_codes() {
        let sandbox = Sandbox::default();
        let (status, got) = call(&sandbox, "GET", "/registry/schemas/ids/7", "").await;
        assert_eq!((status, got["error_code"].as_u64()), (404, Some(40403)));
        let (status, got) = call(&sandbox, "GET", "/registry/subjects/x/versions", "").await;
        assert_eq!((status, got["error_code"].as_u64()), (404, Some(40401)));
        let bad = json!({ "schema": "{not json" }).to_string();
        let (status, got) = call(&sandbox, "POST", "/registry/subjects/x/versions", &bad).await;
        assert_eq!((status, got["error_code"].as_u64()), (422, Some(42201)));
    }
}
