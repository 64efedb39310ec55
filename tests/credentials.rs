//! The credential store on a running cluster, driven the way an operator drives it: the real
//! `herald credentials` and `herald workspace apply` commands against processors that keep
//! running. A new tenant is onboarded and one of its tokens changed without touching any
//! processor's environment; the store's key is rotated while events flow, replica by replica,
//! and no delivery fails or repeats; a workspace that reaches for the processor's own secrets
//! through the topic is refused, naming the field.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use common::{Harness, PATIENCE, Running, WEBHOOK_SECRET};
use herald::credentials::{Keyring, RecordKey, sealed, write};
use herald::model::records::DeliveryStatus;
use herald::model::{Secret, WorkspaceConfig};
use herald::settings::Settings;
use herald::workspace::table::WorkspaceEntry;
use herald_sandbox::fingerprint;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};

fn key_text(byte: u8) -> String {
    base64::engine::general_purpose::STANDARD.encode([byte; 32])
}

/// A directory of key files, as a mounted Kubernetes Secret gives it: file name = key id.
fn key_dir(keys: &[(&str, u8)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (id, byte) in keys {
        std::fs::write(dir.path().join(id), key_text(*byte)).unwrap();
    }
    dir
}

/// The harness's settings with the store's keys from `dir`, new records under `write_key`.
fn with_keys(settings: &Settings, dir: &Path, write_key: &str) -> Settings {
    let mut s = settings.clone();
    s.credentials.keys_dir = dir.display().to_string();
    s.credentials.write_key = write_key.to_owned();
    s
}

/// The `herald` binary against the harness's broker, nothing else from this environment.
fn herald(h: &Harness) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_herald"));
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HERALD__KAFKA__BROKERS", &h.settings.kafka.brokers);
    c
}

/// Runs `command` with `stdin`; fails the test unless it succeeds.
fn run_ok(mut command: Command, stdin: &str) -> String {
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
    let out: Output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{command:?}\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `herald credentials set` with the values on standard input.
fn set_credentials(h: &Harness, keys: &str, connection: &str, kind: Option<&str>, values: Value) {
    let mut c = herald(h);
    c.env("HERALD_SECRETS_KEYS", keys).args([
        "credentials",
        "set",
        "--workspace",
        "ws_acme",
        "--connection",
        connection,
    ]);
    if let Some(kind) = kind {
        c.args(["--type", kind]);
    }
    let out = run_ok(c, &values.to_string());
    assert!(out.contains("stored credentials of ws_acme/"), "{out}");
}

/// Waits until `workspace` is compiled with every one of `connections` usable.
async fn wait_until_usable(running: &Running, workspace: &str, connections: &[&str]) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let entry = running.app.health.table.get(workspace);
        if let Some(WorkspaceEntry::Ready(ws)) = &entry
            && connections.iter().all(|c| ws.broken_reason(c).is_none())
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{workspace} never became usable: {entry:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn header(request: &herald_sandbox::RecordedRequest, name: &str) -> String {
    request.headers[name]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

const ACME: &str = r##"
# No `credentials` blocks: every connection's are in the store.
workspace: ws_acme
connections:
  - { id: crm, type: hubspot, base_url: "http://127.0.0.1:7780/hubspot" }
  - { id: newsletter, type: mailchimp, audience_id: customers, base_url: "http://127.0.0.1:7780/mailchimp" }
  - { id: alerts, type: slack, channel: "#signups", base_url: "http://127.0.0.1:7780/slack/api" }
  - { id: automation, type: activecampaign, base_url: "http://127.0.0.1:7780/activecampaign" }
  - { id: support, type: intercom, base_url: "http://127.0.0.1:7780/intercom" }
rules:
  - { id: to-crm, event: signup, connection: crm, action: upsert_contact, with: { email: "{{ payload.email }}" } }
  - { id: to-newsletter, event: signup, connection: newsletter, action: add_tags, with: { email: "{{ payload.email }}", tags: [new] } }
  - { id: to-alerts, event: signup, connection: alerts, action: post_message, with: { text: "signup {{ payload.email }}" } }
  - { id: to-automation, event: signup, connection: automation, action: add_tag, with: { email: "{{ payload.email }}", tag: new } }
  - { id: to-support, event: signup, connection: support, action: tag_contact, with: { email: "{{ payload.email }}", tag: new } }
"##;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_is_onboarded_and_its_token_changed_on_a_running_cluster() {
    let h = Harness::new().await;
    let dir = key_dir(&[("a", 1)]);
    let keys = format!("a:{}", key_text(1));
    // Started before the tenant exists; its environment has nothing of the tenant's.
    let running = Running::start(with_keys(&h.settings, dir.path(), ""), h.vars());

    for (connection, kind, values) in [
        ("crm", "hubspot", json!({"token": "pat-acme-1"})),
        (
            "newsletter",
            "mailchimp",
            json!({"api_key": "acme0news-us6"}),
        ),
        ("alerts", "slack", json!({"token": "xoxb-acme"})),
        (
            "automation",
            "activecampaign",
            json!({"api_token": "acme-automation"}),
        ),
        ("support", "intercom", json!({"token": "acme-support"})),
    ] {
        set_credentials(&h, &keys, connection, Some(kind), values);
    }
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), ACME).unwrap();
    let mut apply = herald(&h);
    apply.args(["workspace", "apply", "--sandbox-url", &h.sandbox_url]);
    apply.arg(file.path());
    let out = run_ok(apply, "");
    assert!(out.contains("applied ws_acme"), "{out}");

    let connections = ["crm", "newsletter", "alerts", "automation", "support"];
    wait_until_usable(&running, "ws_acme", &connections).await;
    h.emit(
        "ws_acme",
        "signup",
        "evt_1",
        None,
        json!({"email": "ada@acme.io"}),
    )
    .await;
    let history = h
        .wait_for_history("ws_acme", "five deliveries", |r| {
            r.iter()
                .filter(|d| d.status == DeliveryStatus::Delivered)
                .count()
                == 5
        })
        .await;
    assert_eq!(history.len(), 5, "{history:#?}");

    // Each destination was called with the tenant's credential (the sandbox keeps only a
    // fingerprint of it).
    for (destination, credential) in [
        ("hubspot", "pat-acme-1"),
        ("mailchimp", "acme0news-us6"),
        ("slack", "xoxb-acme"),
        ("activecampaign", "acme-automation"),
        ("intercom", "acme-support"),
    ] {
        let requests = h.requests(destination);
        assert!(
            requests.iter().any(|r| r.status < 300),
            "no accepted {destination} call: {requests:#?}"
        );
        for r in &requests {
            assert_eq!(
                r.credential.as_deref(),
                Some(fingerprint(credential).as_str()),
                "{destination}: {r:#?}"
            );
        }
    }

    // The tenant rotates its HubSpot token: the published workspace gives the type.
    let before = running.app.health.table.generation();
    set_credentials(&h, &keys, "crm", None, json!({"token": "pat-acme-2"}));
    let deadline = Instant::now() + PATIENCE;
    while running.app.health.table.generation() == before {
        assert!(Instant::now() < deadline, "the new token never arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_until_usable(&running, "ws_acme", &connections).await;
    h.emit(
        "ws_acme",
        "signup",
        "evt_2",
        None,
        json!({"email": "bob@acme.io"}),
    )
    .await;
    h.wait_for_history("ws_acme", "ten deliveries", |r| {
        r.iter()
            .filter(|d| d.status == DeliveryStatus::Delivered)
            .count()
            == 10
    })
    .await;
    let for_bob: Vec<_> = h
        .requests("hubspot")
        .into_iter()
        .filter(|r| r.body.to_string().contains("bob@acme.io"))
        .collect();
    assert!(!for_bob.is_empty());
    for r in &for_bob {
        assert_eq!(r.credential, Some(fingerprint("pat-acme-2")), "{r:#?}");
    }
    running.stop().await;
}

const ROTATING: &str = r##"
workspace: ws_rot
connections:
  - { id: crm, type: hubspot, base_url: "http://127.0.0.1:7780/hubspot" }
  - { id: newsletter, type: mailchimp, audience_id: customers, base_url: "http://127.0.0.1:7780/mailchimp" }
  - { id: backend, type: webhook, url: "http://127.0.0.1:7780/webhook/rot" }
rules:
  - { id: to-crm, event: signup, connection: crm, action: upsert_contact, with: { email: "{{ payload.email }}" } }
  - { id: to-newsletter, event: signup, connection: newsletter, action: add_tags, with: { email: "{{ payload.email }}", tags: [new] } }
  - { id: to-backend, event: signup, connection: backend, action: post }
"##;

/// Produces one event every 200 ms until `go` is cleared; returns how many. Slow enough that
/// two replicas, each pacing HubSpot on its own, stay under the token's limit together.
fn emit_steadily(h: &Harness, go: Arc<AtomicBool>) -> tokio::task::JoinHandle<usize> {
    let producer: FutureProducer = h.producer.clone();
    let topic = h.settings.topics.events.clone();
    tokio::spawn(async move {
        let mut n = 0;
        while go.load(Ordering::Relaxed) {
            let body = json!({"event_id": format!("evt_{n}"), "event": "signup",
                              "payload": {"email": format!("user{n}@example.com")}});
            let body = body.to_string();
            producer
                .send(
                    FutureRecord::to(&topic).key("ws_rot").payload(&body),
                    Duration::from_secs(10),
                )
                .await
                .expect("produced");
            n += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        n
    })
}

/// Waits until `more` deliveries beyond `from` are in the history, so each step of the
/// rotation happens with events going through.
async fn wait_for_progress(h: &Harness, from: usize, more: usize) -> usize {
    h.wait_for_history("ws_rot", "deliveries to go on", |r| {
        r.iter()
            .filter(|d| d.status == DeliveryStatus::Delivered)
            .count()
            >= from + more
    })
    .await
    .iter()
    .filter(|d| d.status == DeliveryStatus::Delivered)
    .count()
}

/// Stops each replica and starts it again with `settings`, one at a time, as a Deployment
/// rollout does; deliveries go on between the two.
async fn roll_out(h: &Harness, replicas: Vec<Running>, settings: &Settings) -> Vec<Running> {
    let mut rolled = Vec::new();
    let mut delivered = wait_for_progress(h, 0, 0).await;
    for old in replicas {
        old.stop().await;
        rolled.push(Running::start(settings.clone(), h.vars()));
        delivered = wait_for_progress(h, delivered, 10).await;
    }
    rolled
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_key_rotates_while_events_flow_and_no_delivery_fails_or_repeats() {
    let h = Harness::new().await;
    let only_a = key_dir(&[("a", 1)]);
    let a_and_b = key_dir(&[("a", 1), ("b", 2)]);
    let only_b = key_dir(&[("b", 2)]);

    // Credentials stored under key A, read by two replicas that hold A.
    let ring_a = Keyring::from_sources(None, None, Some(only_a.path()), "").unwrap();
    let producer: FutureProducer = herald::kafka::producer_config(&h.settings)
        .create()
        .unwrap();
    for (connection, field, value) in [
        ("crm", "token", "pat-rotation"),
        ("newsletter", "api_key", "rotation0news-us6"),
        ("backend", "secret", WEBHOOK_SECRET),
    ] {
        let record = RecordKey::new("ws_rot", connection).unwrap();
        let fields = [(field.to_owned(), Secret::new(value))].into();
        write::put(&h.settings, &producer, &ring_a, &record, &fields)
            .await
            .unwrap();
    }
    h.apply(&[("rot.yaml", ROTATING)]).await;
    let with_a = with_keys(&h.settings, only_a.path(), "");
    let replicas = vec![
        Running::start(with_a.clone(), h.vars()),
        Running::start(with_a, h.vars()),
    ];
    let go = Arc::new(AtomicBool::new(true));
    let emitter = emit_steadily(&h, go.clone());
    wait_for_progress(&h, 0, 10).await;

    // 1. Roll out A+B, A still writing: every replica reads both before anything is under B.
    let replicas = roll_out(&h, replicas, &with_keys(&h.settings, a_and_b.path(), "a")).await;
    // 2. Roll out B as the write key.
    let replicas = roll_out(&h, replicas, &with_keys(&h.settings, a_and_b.path(), "b")).await;

    // 3. Re-encrypt every record under B.
    let mut rotate = herald(&h);
    rotate
        .env(
            "HERALD_SECRETS_KEYS",
            format!("b:{},a:{}", key_text(2), key_text(1)),
        )
        .args(["credentials", "rotate-key"]);
    let out = run_ok(rotate, "");
    assert!(
        out.contains("3 re-encrypted, 0 already under key b, 0 unreadable"),
        "{out}"
    );
    let settings = h.settings.clone();
    let stored = tokio::task::spawn_blocking(move || write::read_all(&settings))
        .await
        .unwrap()
        .unwrap();
    let key_ids: Vec<String> = stored
        .values()
        .map(|v| sealed::key_id(v.as_deref().unwrap()).unwrap())
        .collect();
    assert_eq!(key_ids, ["b", "b", "b"]);
    wait_for_progress(&h, wait_for_progress(&h, 0, 0).await, 10).await;

    // 4. Retire A: roll out B alone.
    let replicas = roll_out(&h, replicas, &with_keys(&h.settings, only_b.path(), "")).await;

    go.store(false, Ordering::Relaxed);
    let events = emitter.await.unwrap();
    let history = h
        .wait_for_history("ws_rot", "every event delivered", |r| {
            r.iter()
                .filter(|d| d.status == DeliveryStatus::Delivered)
                .count()
                == 3 * events
        })
        .await;
    for replica in replicas {
        replica.stop().await;
    }

    // No delivery failed at any point: one attempt each, nothing dead-lettered.
    assert_eq!(history.len(), 3 * events);
    for d in &history {
        assert_eq!(d.attempts.len(), 1, "{d:#?}");
    }
    assert!(h.dead_letters().await.is_empty());
    // Each event reached each destination once.
    let mut hooks: HashMap<String, usize> = HashMap::new();
    for r in h.requests("webhook") {
        assert_eq!(
            r.signature_valid,
            Some(true),
            "signed with the stored secret"
        );
        *hooks.entry(header(&r, "webhook-id")).or_default() += 1;
    }
    assert_eq!(hooks.len(), events);
    assert!(hooks.values().all(|&n| n == 1), "{hooks:?}");
    let mut contacts: HashMap<String, usize> = HashMap::new();
    for r in h.requests("hubspot").iter().filter(|r| r.status < 300) {
        for input in r.body["inputs"].as_array().into_iter().flatten() {
            *contacts
                .entry(input["id"].as_str().unwrap_or_default().to_owned())
                .or_default() += 1;
        }
    }
    assert_eq!(contacts.len(), events);
    assert!(contacts.values().all(|&n| n == 1), "{contacts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reference_outside_credentials_arriving_through_the_topic_is_refused_naming_the_field() {
    let h = Harness::new().await;
    // Published as it is: `herald workspace apply` would refuse it, the topic does not.
    let config = WorkspaceConfig::parse(
        r##"
workspace: ws_evil
connections:
  - id: hook
    type: webhook
    url: "http://127.0.0.1:7780/webhook/evil?k=${env:KAFKA_PASSWORD}"
    credentials: { secret: "${env:HERALD_CRED_WEBHOOK_SECRET}" }
rules:
  - { id: r, event: signup, connection: hook, action: post }
"##,
    )
    .unwrap();
    herald::cli::workspace::publish(&h.settings, &[config])
        .await
        .unwrap();
    let vars = h.vars().with("KAFKA_PASSWORD", "canary-kafka-password");
    let running = Running::start(h.settings.clone(), vars);
    let deadline = Instant::now() + PATIENCE;
    let reason = loop {
        if let Some(WorkspaceEntry::Invalid(reason)) = running.app.health.table.get("ws_evil") {
            break reason;
        }
        assert!(Instant::now() < deadline, "ws_evil was not refused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        reason.contains("connections[0].url")
            && reason.contains("`${…}` references are allowed only in `credentials`"),
        "{reason}"
    );
    assert!(!reason.contains("canary"), "{reason}");
    h.emit("ws_evil", "signup", "evt_1", None, json!({})).await;
    let history = h
        .wait_for_history("ws_evil", "the skipped event", |r| !r.is_empty())
        .await;
    assert!(
        history.iter().all(|d| d.status == DeliveryStatus::Skipped),
        "{history:#?}"
    );
    assert!(h.requests("webhook").is_empty(), "nothing was sent");
    running.stop().await;
}
