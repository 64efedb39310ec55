//! End to end: the real `herald` binary against a real broker process (tansu, a
//! Kafka-compatible broker in Rust, with SQLite storage), installed and started by
//! `scripts/tansu.sh`. Nothing is simulated but the destinations (`herald sandbox`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const SECRET: &str = "whsec_aGVyYWxkLWRldi1zYW5kYm94LXNlY3JldA==";
const PATIENCE: Duration = Duration::from_secs(120);

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A tansu broker started by the project's script; stopped on drop.
struct Tansu {
    dir: tempfile::TempDir,
    brokers: String,
}

impl Tansu {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("bash")
            .arg(root().join("scripts/tansu.sh"))
            .arg("start")
            .arg(dir.path())
            .stderr(Stdio::inherit())
            .output()
            .expect("scripts/tansu.sh runs");
        assert!(out.status.success(), "tansu did not start");
        let brokers = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        Self { dir, brokers }
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(root().join("scripts/tansu.sh"))
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}

/// A child process killed on drop.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Env {
    work: tempfile::TempDir,
    vars: Vec<(String, String)>,
}

impl Env {
    fn herald(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_herald"));
        c.current_dir(self.work.path())
            .envs(self.vars.iter().map(|(k, v)| (k, v)));
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = self.herald().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "herald {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

async fn wait_http_ok(url: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Ok(r) = reqwest::get(url).await
            && r.status().is_success()
        {
            return;
        }
        assert!(Instant::now() < deadline, "{url} never answered 200");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn history(env: &Env, brokers: &str, workspace: &str) -> Vec<serde_json::Value> {
    let out = env.run(&[
        "history",
        "--brokers",
        brokers,
        "--workspace",
        workspace,
        "--json",
    ]);
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_binary_on_a_real_broker_delivers_the_seed_events() {
    let tansu = Tansu::start();
    let brokers = tansu.brokers.clone();
    let sandbox_port = free_port();
    let http_port = free_port();
    let sandbox_url = format!("http://127.0.0.1:{sandbox_port}");
    let env = Env {
        work: tempfile::tempdir().unwrap(),
        vars: [
            ("HERALD__TOPICS__PARTITIONS", "3".to_owned()),
            ("HERALD__KAFKA__GROUP_ID", "herald-e2e".to_owned()),
            ("HERALD__KAFKA__SESSION_TIMEOUT_MS", "6000".to_owned()),
            (
                "HERALD__DESTINATIONS__ALLOW_PRIVATE_NETWORKS",
                "true".to_owned(),
            ),
            ("HERALD__HTTP__LISTEN", format!("127.0.0.1:{http_port}")),
            ("HERALD_SANDBOX_URL", sandbox_url.clone()),
            ("ACADEMYFLOW_SLACK_TOKEN", "xoxb-e2e".to_owned()),
            ("ACADEMYFLOW_WEBHOOK_SECRET", SECRET.to_owned()),
            (
                "NORTHSTAR_SLACK_WEBHOOK_URL",
                format!("{sandbox_url}/slack/services/T1/B1/e2e"),
            ),
            ("NORTHSTAR_WEBHOOK_SECRET", SECRET.to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect(),
    };

    let created = env.run(&["topics", "create", "--brokers", &brokers]);
    let created = String::from_utf8_lossy(&created.stdout).into_owned();
    assert!(
        created.contains("herald.deliveries (3 partitions, cleanup.policy=compact)"),
        "{created}"
    );
    assert!(
        created.contains("herald.workspaces (1 partitions, cleanup.policy=compact)"),
        "{created}"
    );

    let _sandbox = Process(
        env.herald()
            .args([
                "sandbox",
                "--listen",
                &format!("127.0.0.1:{sandbox_port}"),
                "--webhook-secret",
                SECRET,
            ])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_http_ok(&format!("{sandbox_url}/_sandbox/requests")).await;

    let examples: Vec<PathBuf> = ["examples/academy.yaml", "examples/onboarding.yaml"]
        .iter()
        .map(|p| root().join(p))
        .collect();
    let mut apply = vec!["workspace", "apply", "--brokers", &brokers];
    apply.extend(examples.iter().map(|p| p.to_str().unwrap()));
    env.run(&apply);

    let mut run = Process(
        env.herald()
            .args(["run", "--brokers", &brokers])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_http_ok(&format!("http://127.0.0.1:{http_port}/readyz")).await;

    let before_emits = (chrono::Utc::now() - chrono::Duration::seconds(2))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let seed = r#"{"student_id":"stu_2048","email":"nina@academyflow.io","lesson_id":"lesson_customer-research","lesson_title":"Customer Research Fundamentals","module_id":"module_growth-foundations","module_title":"Growth Foundations","course_id":"course_creator-accelerator","completion_percentage":62,"time_spent_seconds":1840,"completed_at":"2026-03-21T14:18:00Z"}"#;
    env.run(&[
        "emit",
        "--brokers",
        &brokers,
        "--workspace",
        "ws_academyflow",
        "--event",
        "lesson.completed",
        "--resource",
        "course",
        "--resource-id",
        "creator-accelerator",
        "--event-id",
        "evt_e2e_lesson",
        seed,
    ]);
    let page = r#"{"user_id":"usr_5012","email":"alex@northstar.io","page_id":"page_connect-crm","page_title":"Connect your CRM","sequence_step":3,"completed_at":"2026-03-21T15:06:00Z","time_on_page_seconds":522}"#;
    let payload_file = env.work.path().join("page.json");
    std::fs::write(&payload_file, page).unwrap();
    env.run(&[
        "emit",
        "--brokers",
        &brokers,
        "--workspace",
        "ws_northstar",
        "--event",
        "page.completed",
        "--resource",
        "onboarding_sequence",
        "--resource-id",
        "workspace-setup",
        "--event-id",
        "evt_e2e_page",
        &format!("@{}", payload_file.display()),
    ]);

    let deadline = Instant::now() + PATIENCE;
    let (academy, northstar) = loop {
        let academy = history(&env, &brokers, "ws_academyflow");
        let northstar = history(&env, &brokers, "ws_northstar");
        let delivered =
            |h: &[serde_json::Value]| h.iter().filter(|d| d["status"] == "delivered").count();
        if delivered(&academy) == 2 && delivered(&northstar) == 2 {
            break (academy, northstar);
        }
        assert!(
            Instant::now() < deadline,
            "not delivered in time:\n{academy:#?}\n{northstar:#?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    for d in academy.iter().chain(&northstar) {
        for field in [
            "delivery_id",
            "event_id",
            "rule_id",
            "connection_id",
            "status",
            "attempts",
        ] {
            assert!(!d[field].is_null(), "history --json lacks {field}: {d}");
        }
    }
    assert!(academy.iter().all(|d| d["event_id"] == "evt_e2e_lesson"));

    let requests: Vec<serde_json::Value> = reqwest::get(format!("{sandbox_url}/_sandbox/requests"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let slack_lesson = requests
        .iter()
        .find(|r| r["path"] == "/slack/api/chat.postMessage")
        .expect("Slack alert posted");
    assert!(
        slack_lesson["body"]["text"]
            .as_str()
            .unwrap()
            .contains("Customer Research Fundamentals")
    );
    let slack_page = requests
        .iter()
        .find(|r| r["path"] == "/slack/services/T1/B1/e2e")
        .expect("onboarding Slack update posted");
    assert_eq!(
        slack_page["body"]["text"],
        "Onboarding step 3 complete: Connect your CRM (alex@northstar.io)"
    );
    let hooks: Vec<_> = requests
        .iter()
        .filter(|r| r["destination"] == "webhook")
        .collect();
    assert_eq!(hooks.len(), 2);
    assert!(hooks.iter().all(|h| h["signature_valid"] == true));

    let replay = |execute: bool| {
        let mut c = env.herald();
        c.args([
            "replay",
            "--brokers",
            &brokers,
            "--group",
            "herald-e2e",
            "--to-datetime",
            &before_emits,
        ]);
        if execute {
            c.arg("--execute");
        }
        c.output().unwrap()
    };

    // SIGTERM: the processor drains, commits and exits 0.
    let pid = run.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = run.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "herald run did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "herald run exited with {status}");

    // With the group stopped: the plan, then the reset, through the broker's offsets-for-times
    // or the timestamp search when its answer does not check out.
    let deadline = Instant::now() + PATIENCE;
    let plan = loop {
        let out = replay(false);
        if out.status.success() {
            break String::from_utf8(out.stdout).unwrap();
        }
        // The broker may still list the member that just left.
        assert!(
            Instant::now() < deadline,
            "replay plan failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    println!("replay plan on tansu:\n{plan}");
    assert!(
        plan.contains("dry run: 2 events would be read again"),
        "{plan}"
    );
    let executed = replay(true);
    assert!(
        executed.status.success(),
        "{}",
        String::from_utf8_lossy(&executed.stderr)
    );
    assert!(String::from_utf8_lossy(&executed.stdout).contains("2 events will be read again"));
    let again = String::from_utf8(replay(false).stdout).unwrap();
    assert!(
        again.contains("dry run: 0 events would be read again"),
        "offsets moved: {again}"
    );
}
