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

// ---------------------------------------------------------------------------------------------
// Against a broker: MockCluster with Herald's topics, reached with `--brokers`.

use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

/// A MockCluster holding Herald's topics; dropping it stops the broker.
struct Broker {
    _mock: MockCluster<'static, DefaultProducerContext>,
    brokers: String,
}

impl Broker {
    fn new() -> Self {
        let mock = MockCluster::new(1).expect("mock cluster");
        for t in herald::kafka::topic_plan(&herald::settings::Settings::defaults()) {
            mock.create_topic(&t.name, t.partitions, 1).expect("topic");
        }
        let brokers = mock.bootstrap_servers();
        Self {
            _mock: mock,
            brokers,
        }
    }

    /// `herald ARGS… --brokers THIS`, with stdin closed (not a terminal).
    fn run(&self, args: &[&str]) -> std::process::Output {
        self.run_with(args, &[])
    }

    fn run_with(&self, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
        herald()
            .args(args)
            .args(["--brokers", &self.brokers])
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    }
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\n{}", stdout(out), stderr(out)))
}

const TOKEN_VAR: &str = "HERALD_CRED_CLI_SLACK_TOKEN";
const CANARY: &str = "xoxb-canary-cli-value";
/// The credential store's key, for the commands that store credentials.
const STORE_KEY: (&str, &str) = (
    "HERALD_SECRETS_KEY",
    "ZTJlLWtleS1vZi10aGlydHktdHdvLWJ5dGVzLWxvbmc=",
);

fn slack_workspace(id: &str, channel: &str, token: &str) -> String {
    format!(
        "workspace: {id}\nconnections:\n  - id: team-slack\n    type: slack\n    channel: \
         \"{channel}\"\n    base_url: \"http://127.0.0.1:7780/slack/api\"\n    credentials:\n      \
         token: \"{token}\"\nrules:\n  - id: signup-to-slack\n    event: user.signed_up\n    \
         connection: team-slack\n    action: post_message\n    with:\n      text: \"{{{{ \
         payload.email }}}} signed up\"\n"
    )
}

const SANDBOX_URL: &str = "https://sandbox.example.com";

#[test]
fn workspace_list_get_diff_and_delete_round_trip_without_showing_credentials() {
    let broker = Broker::new();
    let dir = tempfile::tempdir().unwrap();
    let reference = format!("${{env:{TOKEN_VAR}}}");
    let file = write(
        &dir,
        "ws.yaml",
        &slack_workspace("ws_cli", "#signups", &reference),
    );
    let env = [(TOKEN_VAR, CANARY)];
    let apply = ["workspace", "apply", "--sandbox-url", SANDBOX_URL];

    let out = broker.run(&["workspace", "list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no workspace is applied"),
        "{}",
        stderr(&out)
    );

    let out = broker.run_with(&[&apply[..], &[file.as_str()]].concat(), &env);
    assert!(out.status.success(), "{}", stderr(&out));

    // Listed, valid where its variable is set and invalid, naming it, where it is not.
    let out = broker.run_with(&["workspace", "list"], &env);
    let text = stdout(&out);
    let row: Vec<&str> = text
        .lines()
        .find(|l| l.starts_with("ws_cli"))
        .unwrap_or_else(|| panic!("{text}"))
        .split_whitespace()
        .collect();
    assert_eq!(row, ["ws_cli", "valid", "1", "1"], "{text}");
    let out = broker.run(&["workspace", "list", "--output", "json"]);
    let list = json(&out);
    assert_eq!(list["workspaces"][0]["id"], "ws_cli");
    assert_eq!(list["workspaces"][0]["status"], "invalid");
    assert!(
        list["workspaces"][0]["reason"]
            .as_str()
            .unwrap()
            .contains(TOKEN_VAR),
        "{list}"
    );
    assert_eq!(list["workspaces"][0]["connections"], 1);
    assert_eq!(list["workspaces"][0]["rules"], 1);

    // `get` shows the reference, never the value; its output diffs equal to the file.
    let out = broker.run_with(&["workspace", "get", "ws_cli"], &env);
    assert!(out.status.success(), "{}", stderr(&out));
    let got = stdout(&out);
    assert!(
        got.contains(&reference) && got.contains("#signups"),
        "{got}"
    );
    assert!(!got.contains("canary"), "{got}");
    let got_file = write(&dir, "got.yaml", &got);
    let out = broker.run(&["workspace", "diff", &got_file]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(stdout(&out).is_empty(), "{}", stdout(&out));
    let out = broker.run(&["workspace", "get", "ws_cli", "--output", "json"]);
    let shown = json(&out);
    assert_eq!(shown["config"]["workspace"], "ws_cli");
    assert_eq!(
        shown["config"]["connections"][0]["credentials"]["token"],
        reference.as_str()
    );
    let out = broker.run(&["workspace", "get", "ws_nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("`ws_nope` is not applied"),
        "{}",
        stderr(&out)
    );

    // diff: 0 when equal, 1 with a unified diff when different, 2 on trouble.
    let out = broker.run(&["workspace", "diff", "--sandbox-url", SANDBOX_URL, &file]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let changed = write(
        &dir,
        "changed.yaml",
        &slack_workspace("ws_cli", "#growth", CANARY),
    );
    let out = broker.run(&["workspace", "diff", "--sandbox-url", SANDBOX_URL, &changed]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let diff = stdout(&out);
    assert!(diff.contains("--- herald.workspaces/ws_cli"), "{diff}");
    let line = |sign: char, text: &str| {
        diff.lines()
            .any(|l| l.starts_with(sign) && l.contains("channel:") && l.contains(text))
    };
    assert!(line('-', "#signups") && line('+', "#growth"), "{diff}");
    assert!(!diff.contains("canary"), "{diff}");
    let new = write(
        &dir,
        "new.yaml",
        &slack_workspace("ws_new", "#x", &reference),
    );
    let out = broker.run(&["workspace", "diff", &new, "--output", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let compared = json(&out);
    assert_eq!(compared["equal"], false);
    assert_eq!(compared["workspaces"][0]["state"], "new");
    let out = broker.run(&["workspace", "diff", "missing.yaml"]);
    assert_eq!(out.status.code(), Some(2));

    // Stored credentials: `get` says where they are, not what they are.
    let stored = write(
        &dir,
        "stored.yaml",
        &slack_workspace("ws_stored", "#s", CANARY),
    );
    let out = broker.run_with(
        &[&apply[..], &["--store-credentials", stored.as_str()]].concat(),
        &[STORE_KEY],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = broker.run(&["workspace", "get", "ws_stored"]);
    let got = stdout(&out);
    assert!(
        got.contains("# connection team-slack: credentials stored in herald.credentials"),
        "{got}"
    );
    assert!(!got.contains("canary"), "{got}");
    let out = broker.run(&["workspace", "diff", "--sandbox-url", SANDBOX_URL, &stored]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));

    // delete: refused without a terminal or --yes, nothing deleted by --dry-run, then gone.
    let out = broker.run(&["workspace", "delete", "ws_cli"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--yes") && stderr(&out).contains("nothing was changed"));
    let out = broker.run(&["workspace", "delete", "ws_cli", "--dry-run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("would delete workspace ws_cli"),
        "{}",
        stdout(&out)
    );
    let listed = |broker: &Broker| {
        let list = json(&broker.run(&["workspace", "list", "--output", "json"]));
        list["workspaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["id"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(listed(&broker), ["ws_cli", "ws_stored"]);
    let out = broker.run(&["workspace", "delete", "ws_cli", "--yes", "--output", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json(&out)["deleted"], true);
    assert_eq!(listed(&broker), ["ws_stored"]);
    let out = broker.run(&["workspace", "get", "ws_cli"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn output_json_is_one_document_for_each_command_that_prints() {
    let broker = Broker::new();
    let dir = tempfile::tempdir().unwrap();
    let reference = format!("${{env:{TOKEN_VAR}}}");
    let file = write(
        &dir,
        "ws.yaml",
        &slack_workspace("ws_json", "#j", &reference),
    );
    let env = [(TOKEN_VAR, CANARY), STORE_KEY];
    let json_of = |args: &[&str]| {
        let out = broker.run_with(&[args, &["--output", "json"]].concat(), &env);
        (json(&out), out)
    };

    // `topics create` and `topics check` need admin requests, which MockCluster does not
    // answer: tests/e2e_tansu.rs checks their JSON against a real broker.
    let (doc, _) = json_of(&[
        "workspace",
        "apply",
        "--dry-run",
        "--sandbox-url",
        SANDBOX_URL,
        &file,
    ]);
    assert_eq!(doc["dry_run"], true);
    assert_eq!(doc["workspaces"][0]["workspace"], "ws_json");
    let (doc, out) = json_of(&["workspace", "apply", "--sandbox-url", SANDBOX_URL, &file]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(doc["workspaces"][0]["state"], "applied");
    let (doc, _) = json_of(&[
        "emit",
        "--workspace",
        "ws_json",
        "--event",
        "user.signed_up",
        r#"{"email":"a@example.com"}"#,
    ]);
    assert!(
        doc["event_id"].as_str().unwrap().starts_with("evt_"),
        "{doc}"
    );
    let (doc, _) = json_of(&[
        "credentials",
        "set",
        "--workspace",
        "ws_json",
        "--connection",
        "team-slack",
        "--file",
        &write(&dir, "token.json", &format!(r#"{{"token": "{CANARY}"}}"#)),
    ]);
    assert_eq!(doc["stored"], "ws_json/team-slack");
    let (doc, out) = json_of(&["credentials", "rotate-key"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(doc["current"], 1, "{doc}");
    assert!(!stdout(&out).contains("canary"));
    let (doc, _) = json_of(&["redrive", "--workspace", "ws_json", "--dry-run"]);
    assert_eq!(
        (doc["dry_run"].clone(), doc["count"].clone()),
        (true.into(), 0.into())
    );
    let (doc, _) = json_of(&[
        "replay",
        "--group",
        "herald-cli-test",
        "--to-datetime",
        "2026-01-01T00:00:00Z",
    ]);
    assert_eq!(doc["dry_run"], true);
    assert!(doc["partitions"].is_array(), "{doc}");
    let (doc, _) = json_of(&[
        "replay",
        "--workspace",
        "ws_json",
        "--since",
        "2026-01-01T00:00:00Z",
        "--dry-run",
    ]);
    assert_eq!(doc["events"], 1, "{doc}");

    // History is a stream: one JSON object per line, as `--json` always printed.
    for flag in ["--json", "--output=json"] {
        let out = broker.run(&["history", "--workspace", "ws_json", flag]);
        assert!(out.status.success(), "{}", stderr(&out));
        for line in stdout(&out).lines() {
            serde_json::from_str::<serde_json::Value>(line).unwrap();
        }
    }
}

#[test]
fn dry_runs_change_nothing() {
    let broker = Broker::new();
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        &dir,
        "ws.yaml",
        &slack_workspace("ws_dry", "#d", &format!("${{env:{TOKEN_VAR}}}")),
    );
    let env = [(TOKEN_VAR, CANARY)];

    // apply --dry-run publishes nothing.
    let out = broker.run_with(
        &[
            "workspace",
            "apply",
            "--dry-run",
            "--sandbox-url",
            SANDBOX_URL,
            &file,
        ],
        &env,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("dry run: nothing was published"),
        "{}",
        stdout(&out)
    );
    let out = broker.run(&["workspace", "list", "--output", "json"]);
    assert_eq!(json(&out)["workspaces"], serde_json::json!([]));

    // replay --workspace --dry-run counts the window's events and delivers none.
    let out = broker.run_with(
        &["workspace", "apply", "--sandbox-url", SANDBOX_URL, &file],
        &env,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    for _ in 0..2 {
        let out = broker.run(&[
            "emit",
            "--workspace",
            "ws_dry",
            "--event",
            "user.signed_up",
            "{}",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let out = broker.run(&[
        "replay",
        "--workspace",
        "ws_dry",
        "--since",
        "2026-01-01T00:00:00Z",
        "--dry-run",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("dry run: 2 event(s) of workspace ws_dry"),
        "{}",
        stdout(&out)
    );
    let out = broker.run(&["history", "--workspace", "ws_dry", "--output", "json"]);
    assert!(
        out.status.success() && out.stdout.is_empty(),
        "{}",
        stdout(&out)
    );

    // replay --group: the plan by default and with --dry-run; only --execute moves offsets.
    let plan = |extra: &[&str]| {
        let args = [
            &[
                "replay",
                "--group",
                "herald-dry",
                "--to-datetime",
                "2026-01-01T00:00:00Z",
                "--output",
                "json",
            ][..],
            extra,
        ]
        .concat();
        let out = broker.run(&args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        let doc = json(&out);
        let committed: Vec<serde_json::Value> = doc["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["current"].clone())
            .collect();
        (doc["dry_run"].clone(), committed)
    };
    let (dry, before) = plan(&[]);
    assert_eq!(dry, true);
    assert!(before.iter().all(serde_json::Value::is_null), "{before:?}");
    let (dry, after) = plan(&["--dry-run"]);
    assert_eq!((dry, &after), (true.into(), &before));
    let (dry, _) = plan(&["--execute"]);
    assert_eq!(dry, false);
    let (_, executed) = plan(&[]);
    assert!(executed.iter().all(|c| !c.is_null()), "{executed:?}");
    let out = broker.run(&[
        "replay",
        "--group",
        "g",
        "--to-datetime",
        "2026-01-01T00:00:00Z",
        "--dry-run",
        "--execute",
    ]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn piped_output_carries_no_progress_text_and_a_terminal_sees_it() {
    let broker = Broker::new();
    for args in [
        &["history", "--workspace", "ws_quiet"][..],
        &["redrive", "--workspace", "ws_quiet", "--dry-run"][..],
    ] {
        let out = broker.run(args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        let all = format!("{}{}", stdout(&out), stderr(&out));
        for progress in ["reading herald", "finding the failed", "⠁", "\u{1b}["] {
            assert!(!all.contains(progress), "{args:?}: {all:?}");
        }
    }
    // On a terminal (`script` gives the command one), the same command shows its spinner.
    let command = format!(
        "{} history --workspace ws_quiet --brokers {}",
        env!("CARGO_BIN_EXE_herald"),
        broker.brokers
    );
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TERM", "xterm")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let all = stdout(&out);
    assert!(all.contains("reading herald.deliveries"), "{all:?}");
}

#[test]
fn completions_and_man_pages_are_generated_from_the_commands() {
    let dir = tempfile::tempdir().unwrap();
    let out = herald().args(["completions", "bash"]).output().unwrap();
    assert!(out.status.success());
    let script = write(&dir, "herald.bash", &stdout(&out));
    assert!(stdout(&out).contains("healthcheck"));
    let check = Command::new("bash").args(["-n", &script]).output().unwrap();
    assert!(check.status.success(), "{}", stderr(&check));
    for shell in ["zsh", "fish", "powershell"] {
        let out = herald().args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}");
        assert!(stdout(&out).contains("workspace"), "{shell}");
    }
    let out = herald().args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));

    let out = herald().arg("man").output().unwrap();
    assert!(out.status.success());
    let page = stdout(&out);
    assert!(
        page.starts_with(".ie") || page.starts_with(".TH"),
        "{}",
        &page[..80]
    );
    assert!(page.contains(".TH herald 1"), "{}", &page[..200]);
    let out = herald()
        .args(["man", "--out-dir"])
        .arg(dir.path().join("man"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    for page in [
        "herald.1",
        "herald-workspace-diff.1",
        "herald-healthcheck.1",
    ] {
        let text = std::fs::read_to_string(dir.path().join("man").join(page)).unwrap();
        assert!(text.contains(".TH herald"), "{page}");
    }
}

#[test]
fn healthcheck_passes_against_a_running_processor_and_fails_on_a_closed_port() {
    let broker = Broker::new();
    let free_port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let closed = free_port();
    let out = herald()
        .args([
            "healthcheck",
            "--url",
            &format!("http://127.0.0.1:{closed}"),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no answer"), "{}", stderr(&out));

    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut processor = herald()
        .args(["run", "--brokers", &broker.brokers])
        .env("HERALD__HTTP__LISTEN", &listen)
        .env("HERALD__KAFKA__GROUP_ID", "herald-cli-health")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Await readiness (the workspace table read, the consumer subscribed), polling the command.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let ready = loop {
        let out = herald()
            .args(["healthcheck", "--ready"])
            .env("HERALD__HTTP__LISTEN", &listen)
            .output()
            .unwrap();
        // Each try is a process start and a refused or answered connection: no sleep needed.
        if out.status.success() || std::time::Instant::now() > deadline {
            break out;
        }
    };
    let healthz = herald()
        .args(["healthcheck", "--url", &format!("http://{listen}")])
        .output()
        .unwrap();
    let _ = processor.kill();
    let _ = processor.wait();
    assert_eq!(ready.status.code(), Some(0), "{}", stderr(&ready));
    assert!(ready.stdout.is_empty() && ready.stderr.is_empty());
    assert_eq!(healthz.status.code(), Some(0), "{}", stderr(&healthz));
    assert!(healthz.stdout.is_empty() && healthz.stderr.is_empty());
}

#[test]
fn delete_asks_on_a_terminal_and_only_yes_deletes() {
    use std::io::Write;
    let broker = Broker::new();
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        &dir,
        "ws.yaml",
        &slack_workspace("ws_ask", "#a", &format!("${{env:{TOKEN_VAR}}}")),
    );
    let out = broker.run_with(
        &["workspace", "apply", "--sandbox-url", SANDBOX_URL, &file],
        &[(TOKEN_VAR, CANARY)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // `script` gives the command a terminal and types the answer into it.
    let on_a_terminal = |answer: &str| {
        let command = format!(
            "{} workspace delete ws_ask --brokers {}",
            env!("CARGO_BIN_EXE_herald"),
            broker.brokers
        );
        let mut child = Command::new("script")
            .args(["-qec", &command, "/dev/null"])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(answer.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        stdout(&out)
    };
    let screen = on_a_terminal("n\n");
    assert!(
        screen.contains(
            "delete workspace ws_ask (1 connections, 1 rules) from herald.workspaces? [y/N]"
        ),
        "{screen:?}"
    );
    assert!(
        screen.contains("not confirmed; nothing was changed"),
        "{screen:?}"
    );
    let out = broker.run(&["workspace", "get", "ws_ask"]);
    assert!(out.status.success(), "{}", stderr(&out));

    let screen = on_a_terminal("y\n");
    assert!(screen.contains("deleted workspace ws_ask"), "{screen:?}");
    let out = broker.run(&["workspace", "get", "ws_ask"]);
    assert_eq!(out.status.code(), Some(1));
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

#[test]
fn bench_runs_every_phase_on_an_embedded_broker_and_writes_its_result() {
    let dir = tempfile::tempdir().unwrap();
    let result = dir.path().join("bench.json");
    let out = herald()
        .args([
            "bench",
            "--embedded",
            "--events",
            "2000",
            "--workspaces",
            "10",
            "--fan-out",
            "2",
            "--seconds",
            "1",
            "--noisy",
            "200",
            "--result",
        ])
        .arg(&result)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("deliveries/s"), "{}", stdout(&out));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&result).unwrap()).unwrap();
    assert_eq!(json["load"]["events"], 2000);
    assert_eq!(json["webhook"]["deliveries"], 4000);
    assert_eq!(json["noop"]["deliveries"], 4000);
    for (phase, figure) in [
        ("raw", "consume_records_per_s"),
        ("raw", "http_requests_per_s"),
        ("webhook", "events_per_s"),
        ("webhook", "deliveries_per_s"),
        ("noop", "events_per_s"),
        ("latency", "p99_ms"),
        ("noisy", "p99_ms"),
        ("ratios", "deliveries_vs_raw_http"),
        ("ratios", "noop_events_vs_raw_consume"),
        ("ratios", "noisy_p99_vs_alone"),
    ] {
        let value = &json[phase][figure];
        assert!(
            value.as_f64().is_some_and(|v| v > 0.0),
            "{phase}.{figure}: {value}"
        );
    }
    // Every event of the well-behaved workspaces reached the receiver, hanging neighbour or not.
    for phase in ["latency", "noisy"] {
        assert_eq!(
            json[phase]["measured_deliveries"], json[phase]["expected_deliveries"],
            "{phase}"
        );
    }
}

#[test]
fn bench_requires_a_broker_and_a_workspace_cannot_name_its_noop_destination() {
    let out = herald().args(["bench", "--events", "10"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--embedded"), "{}", stderr(&out));

    let dir = tempfile::tempdir().unwrap();
    let file = write(
        &dir,
        "ws.yaml",
        "workspace: ws_noop\nconnections:\n  - { id: c, type: noop, credentials: { token: x } }\nrules:\n  - { id: r, event: e, connection: c, action: deliver }\n",
    );
    let out = herald()
        .args(["workspace", "apply", "--dry-run", &file])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(all.contains("`noop` is not a destination type"), "{all}");
}
