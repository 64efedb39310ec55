//! Credentials never reach `Debug` output: every destination's connection, built from
//! credentials that all carry one canary, and the compiled workspace holding them all, are
//! formatted and searched for the canary (as text, and as the bytes a decoded key prints as).

use base64::Engine;
use herald::destinations::{DestinationContext, lookup};
use herald::model::{ConnectionSpec, WorkspaceConfig};
use herald::settings::interpolate::Vars;
use herald::workspace::compile::CompiledWorkspace;
use serde_json::{Value, json};

const CANARY: &str = "canary-5e3f9";

/// A webhook signing secret whose key bytes start with the canary.
fn webhook_secret() -> String {
    let key = format!("{CANARY}-signing-key");
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    )
}

/// One connection of every destination (Slack both ways), each credential carrying the canary.
fn connections() -> Vec<Value> {
    vec![
        json!({"id": "hook", "type": "webhook", "url": "https://hooks.example.com/h",
               "credentials": {"secret": webhook_secret()}}),
        json!({"id": "slack-hook", "type": "slack",
               "credentials": {"webhook_url": format!("https://hooks.slack.com/services/T0/B0/{CANARY}")}}),
        json!({"id": "slack-bot", "type": "slack", "channel": "C1",
               "credentials": {"token": format!("xoxb-{CANARY}")}}),
        json!({"id": "hubspot", "type": "hubspot",
               "credentials": {"token": format!("pat-na1-{CANARY}")}}),
        json!({"id": "mailchimp", "type": "mailchimp", "audience_id": "aud1",
               "credentials": {"api_key": format!("{CANARY}-us6")}}),
        json!({"id": "activecampaign", "type": "activecampaign",
               "base_url": "https://acme.api-us1.com",
               "credentials": {"api_token": format!("ac-{CANARY}")}}),
        json!({"id": "intercom", "type": "intercom",
               "credentials": {"token": format!("ic-{CANARY}")}}),
    ]
}

/// The forms of the canary that would show a leak in `text`.
fn leaks(text: &str) -> Vec<String> {
    let bytes = format!("{:?}", CANARY.as_bytes());
    let forms = [
        CANARY.to_owned(),
        bytes.trim_matches(['[', ']']).to_owned(),
        webhook_secret(),
    ];
    forms.into_iter().filter(|f| text.contains(f)).collect()
}

#[test]
fn no_connection_prints_its_credentials() {
    let ctx = DestinationContext::for_tests();
    let connections = connections();
    assert_eq!(
        connections.len(),
        herald::destinations::REGISTRY.len() + 1,
        "every destination is covered"
    );
    for spec in connections {
        let spec: ConnectionSpec = serde_json::from_value(spec).expect("spec");
        let connection = lookup(&spec.kind)
            .expect("registered")
            .connect(&spec, &ctx)
            .unwrap_or_else(|e| panic!("{}: {e}", spec.id));
        let shown = format!("{connection:?} {connection:#?}");
        assert_eq!(leaks(&shown), Vec::<String>::new(), "{}: {shown}", spec.id);
    }
}

#[test]
fn a_compiled_workspace_prints_no_credentials() {
    let rules = [
        ("hook", "post", json!({})),
        ("slack-hook", "post_message", json!({"text": "hi"})),
        ("slack-bot", "post_message", json!({"text": "hi"})),
        ("hubspot", "upsert_contact", json!({"email": "a@b.io"})),
        ("mailchimp", "upsert_member", json!({"email": "a@b.io"})),
        ("activecampaign", "sync_contact", json!({"email": "a@b.io"})),
        (
            "intercom",
            "tag_contact",
            json!({"email": "a@b.io", "tag": "t"}),
        ),
    ];
    let rules: Vec<Value> = rules
        .into_iter()
        .map(|(connection, action, with)| {
            json!({"id": format!("to-{connection}"), "event": "lesson.completed",
                   "connection": connection, "action": action, "with": with})
        })
        .collect();
    let config = json!({"workspace": "ws", "connections": connections(), "rules": rules});
    let config = WorkspaceConfig::from_json(config.to_string().as_bytes()).expect("config");
    let compiled =
        CompiledWorkspace::compile(&config, &DestinationContext::for_tests(), &Vars::default())
            .expect("compiles");
    let shown = format!("{compiled:?} {compiled:#?}");
    assert_eq!(leaks(&shown), Vec::<String>::new(), "{shown}");
}

/// The same canary credentials, kept in the credential store: the records Herald writes (the
/// store's and the workspace's) hold no plaintext, the workspace compiles with them, and
/// neither the compiled workspace nor a connection whose record does not decrypt prints them.
#[test]
fn stored_credentials_are_encrypted_and_print_nowhere() {
    use herald::credentials::{CredentialTable, Keyring, RecordKey, Stored, sealed};
    use herald::model::Secret;

    let b64 = |b: u8| base64::engine::general_purpose::STANDARD.encode([b; 32]);
    let keys = Keyring::from_sources(Some(&format!("k1:{}", b64(1))), None, None, "").unwrap();
    let table = CredentialTable::new(
        Keyring::from_sources(Some(&format!("k1:{}", b64(1))), None, None, "").unwrap(),
    );
    let mut workspace_connections = Vec::new();
    for mut spec in connections() {
        let id = spec["id"].as_str().unwrap().to_owned();
        let fields = spec["credentials"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), Secret::new(v.as_str().unwrap())))
            .collect();
        let record = RecordKey::new("ws", &id).unwrap();
        let value = sealed::seal(&record, &fields, keys.write_key().unwrap());
        assert_eq!(
            leaks(&String::from_utf8_lossy(&value)),
            Vec::<String>::new(),
            "{id}"
        );
        table.apply(record.to_string().as_bytes(), Some(&value));
        spec.as_object_mut().unwrap().remove("credentials");
        workspace_connections.push(spec);
    }
    let config = json!({"workspace": "ws", "connections": workspace_connections,
        "rules": [{"id": "r", "event": "e", "connection": "hubspot", "action": "upsert_contact",
                   "with": {"email": "a@b.io"}}]});
    let published = serde_json::to_vec(&config).unwrap();
    assert_eq!(
        leaks(&String::from_utf8_lossy(&published)),
        Vec::<String>::new()
    );
    let config = WorkspaceConfig::from_json(&published).expect("config");
    let compiled = CompiledWorkspace::compile_with(
        &config,
        &DestinationContext::for_tests(),
        &Vars::default(),
        Some(&table),
    )
    .expect("compiles with the stored credentials");
    assert_eq!(compiled.broken_reason("hubspot"), None);
    let shown = format!("{compiled:?} {compiled:#?} {table:?}");
    assert_eq!(leaks(&shown), Vec::<String>::new(), "{shown}");

    // Moved to another connection, the record does not decrypt: that connection alone is
    // unusable, with a reason that names no secret.
    let hubspot = RecordKey::new("ws", "hubspot").unwrap();
    let fields = [("token".to_owned(), Secret::new(format!("pat-na1-{CANARY}")))].into();
    let value = sealed::seal(&hubspot, &fields, keys.write_key().unwrap());
    table.apply(b"ws/intercom", Some(&value));
    assert!(matches!(
        table.get("ws", "intercom"),
        Some(Stored::Unusable(_))
    ));
    let compiled = CompiledWorkspace::compile_with(
        &config,
        &DestinationContext::for_tests(),
        &Vars::default(),
        Some(&table),
    )
    .expect("one unusable connection does not fail the workspace");
    let reason = compiled
        .broken_reason("intercom")
        .expect("intercom is unusable");
    assert!(reason.contains("do not decrypt"), "{reason}");
    assert_eq!(
        leaks(&format!("{reason} {compiled:?}")),
        Vec::<String>::new()
    );
    assert_eq!(compiled.broken_reason("hubspot"), None);
}
