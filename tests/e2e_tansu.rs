//! End to end: the real `herald` binary against a real broker process (tansu, a
//! Kafka-compatible broker in Rust, with SQLite storage), installed and started by
//! `scripts/tansu.sh`. Nothing is simulated but the destinations (`herald sandbox`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const SECRET: &str = "whsec_aGVyYWxkLWRldi1zYW5kYm94LXNlY3JldA==";
const PATIENCE: Duration = Duration::from_secs(120);

/// The end-to-end tests run one at a time: each starts its own broker, and two at once on a
/// small machine only make both slow.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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

impl Env {
    /// `herald emit` of one event with `--resource course`-style flags.
    fn emit(&self, brokers: &str, workspace: &str, event: &str, flags: &[&str], payload: &str) {
        let mut args = vec![
            "emit",
            "--brokers",
            brokers,
            "--workspace",
            workspace,
            "--event",
            event,
        ];
        args.extend_from_slice(flags);
        args.push(payload);
        self.run(&args);
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

/// The secrets the example workspaces reference, pointing at the sandbox: the shared example
/// values, except the webhook secret of this sandbox process and a Slack incoming webhook whose
/// path the tests look for.
fn workspace_vars(sandbox_url: &str) -> Vec<(&'static str, String)> {
    let own = [
        ("HERALD_CRED_ACADEMYFLOW_WEBHOOK_SECRET", SECRET.to_owned()),
        ("HERALD_CRED_NORTHSTAR_WEBHOOK_SECRET", SECRET.to_owned()),
        (
            "HERALD_CRED_NORTHSTAR_SLACK_WEBHOOK_URL",
            format!("{sandbox_url}/slack/services/T1/B1/e2e"),
        ),
    ];
    let mut vars = herald::cli::dev::example_vars(sandbox_url);
    vars.retain(|(name, _)| !own.iter().any(|(n, _)| n == name));
    vars.extend(own);
    vars
}

/// A broker, the sandbox, Herald's topics and the environment `herald` runs with.
struct Stack {
    _tansu: Tansu,
    brokers: String,
    sandbox_url: String,
    http_port: u16,
    env: Env,
    _sandbox: Process,
}

impl Stack {
    /// Brokers, sandbox URL and Herald's HTTP port.
    fn addresses(&self) -> (String, String, u16) {
        (
            self.brokers.clone(),
            self.sandbox_url.clone(),
            self.http_port,
        )
    }

    /// Starts tansu and the sandbox and creates the topics; `group` is the processor's group,
    /// `vars` extra environment (workspace secrets).
    async fn start(
        group: &str,
        vars: impl FnOnce(&str) -> Vec<(&'static str, String)>,
    ) -> (Self, Output) {
        let tansu = Tansu::start();
        let brokers = tansu.brokers.clone();
        let sandbox_port = free_port();
        let http_port = free_port();
        let sandbox_url = format!("http://127.0.0.1:{sandbox_port}");
        let base = [
            ("HERALD__TOPICS__PARTITIONS", "3".to_owned()),
            ("HERALD__KAFKA__GROUP_ID", group.to_owned()),
            ("HERALD__KAFKA__SESSION_TIMEOUT_MS", "6000".to_owned()),
            (
                "HERALD__DESTINATIONS__ALLOW_PRIVATE_NETWORKS",
                "true".to_owned(),
            ),
            ("HERALD__HTTP__LISTEN", format!("127.0.0.1:{http_port}")),
            ("HERALD__LOG__FORMAT", "text".to_owned()),
            // The credential store's key: the e2e workspaces' literal credentials are moved
            // into the store at apply time.
            (
                "HERALD_SECRETS_KEY",
                "ZTJlLWtleS1vZi10aGlydHktdHdvLWJ5dGVzLWxvbmc=".to_owned(),
            ),
        ];
        let env = Env {
            work: tempfile::tempdir().unwrap(),
            vars: base
                .into_iter()
                .chain(vars(&sandbox_url))
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
        };
        let created = env.run(&["topics", "create", "--brokers", &brokers]);
        let sandbox = Process(
            env.herald()
                .args(["sandbox", "--listen", &format!("127.0.0.1:{sandbox_port}")])
                .args(["--webhook-secret", SECRET])
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        );
        wait_http_ok(&format!("{sandbox_url}/_sandbox/requests")).await;
        let stack = Self {
            _tansu: tansu,
            brokers,
            sandbox_url,
            http_port,
            env,
            _sandbox: sandbox,
        };
        (stack, created)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_binary_on_a_real_broker_delivers_the_seed_events() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let (stack, created) = Stack::start("herald-e2e", workspace_vars).await;
    let (brokers, sandbox_url, http_port) = stack.addresses();
    let env = &stack.env;
    let created = String::from_utf8_lossy(&created.stdout).into_owned();
    assert!(
        created.contains(
            "herald.deliveries (3 partitions, cleanup.policy=compact,delete, retention.ms=2592000000)"
        ),
        "{created}"
    );
    assert!(
        created.contains("herald.workspaces (1 partitions, cleanup.policy=compact)"),
        "{created}"
    );

    // A second course workspace with different rules for the same event: only its CRM, and
    // its milestone tag at 80%.
    let skillforge = env.work.path().join("skillforge.yaml");
    std::fs::write(&skillforge, SKILLFORGE).unwrap();
    let mut examples: Vec<PathBuf> = ["examples/academy.yaml", "examples/onboarding.yaml"]
        .iter()
        .map(|p| root().join(p))
        .collect();
    examples.push(skillforge);
    let mut apply = vec![
        "workspace",
        "apply",
        "--store-credentials",
        "--sandbox-url",
        &sandbox_url,
        "--brokers",
        &brokers,
    ];
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
    let course = [
        "--resource",
        "course",
        "--resource-id",
        "creator-accelerator",
    ];
    let with_id = |id: &'static str| [&course[..], &["--event-id", id]].concat();
    env.emit(
        &brokers,
        "ws_academyflow",
        "lesson.completed",
        &with_id("evt_e2e_lesson"),
        seed,
    );
    let page = r#"{"user_id":"usr_5012","email":"alex@northstar.io","page_id":"page_connect-crm","page_title":"Connect your CRM","sequence_step":3,"completed_at":"2026-03-21T15:06:00Z","time_on_page_seconds":522}"#;
    let payload_file = env.work.path().join("page.json");
    std::fs::write(&payload_file, page).unwrap();
    let flags = [
        "--resource",
        "onboarding_sequence",
        "--resource-id",
        "workspace-setup",
        "--event-id",
        "evt_e2e_page",
    ];
    let file = format!("@{}", payload_file.display());
    env.emit(&brokers, "ws_northstar", "page.completed", &flags, &file);

    // Below the academy's halfway threshold: no milestone tag, no backend webhook.
    let below = seed
        .replace("nina@academyflow.io", "leo@academyflow.io")
        .replace(
            "\"completion_percentage\":62",
            "\"completion_percentage\":30",
        );
    env.emit(
        &brokers,
        "ws_academyflow",
        "lesson.completed",
        &with_id("evt_e2e_below"),
        &below,
    );
    let skill = seed.replace("nina@academyflow.io", "nina@skillforge.io");
    env.emit(
        &brokers,
        "ws_skillforge",
        "lesson.completed",
        &with_id("evt_e2e_skill"),
        &skill,
    );

    let deadline = Instant::now() + PATIENCE;
    let (academy, northstar) = loop {
        let academy = history(env, &brokers, "ws_academyflow");
        let northstar = history(env, &brokers, "ws_northstar");
        let skillforge = history(env, &brokers, "ws_skillforge");
        let delivered =
            |h: &[serde_json::Value]| h.iter().filter(|d| d["status"] == "delivered").count();
        // Academy: 5 for the seed (HubSpot, Mailchimp, Slack, ActiveCampaign, webhook), 3 for
        // the student below the threshold. Onboarding: 5. Skillforge: its CRM only.
        if delivered(&academy) == 8 && delivered(&northstar) == 5 && delivered(&skillforge) == 1 {
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
    assert_eq!(
        academy
            .iter()
            .filter(|d| d["event_id"] == "evt_e2e_lesson")
            .count(),
        5
    );
    seed_scenarios_hold(&sandbox_url).await;

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

    // Targeted replay while the processor runs: everything was delivered, so nothing is sent;
    // with --force and --rule, that rule's delivery goes out again.
    let targeted = |extra: &[&str]| {
        let mut args = vec![
            "replay",
            "--brokers",
            &brokers,
            "--workspace",
            "ws_northstar",
            "--since",
            &before_emits,
        ];
        args.extend_from_slice(extra);
        String::from_utf8(env.run(&args).stdout).unwrap()
    };
    let out = targeted(&[]);
    assert!(
        out.contains("replayed 1 event(s)")
            && out.contains("0 deliveries attempted and recorded; 5 already delivered"),
        "{out}"
    );
    let out = targeted(&["--rule", "step-to-backend", "--force"]);
    assert!(
        out.contains("1 deliveries attempted and recorded; 0 already delivered"),
        "{out}"
    );
    let northstar_hooks = sandbox_requests(&sandbox_url)
        .await
        .iter()
        .filter(|r| r["path"] == "/webhook/northstar")
        .count();
    assert_eq!(northstar_hooks, 2, "--force sent the webhook again");

    // Redrive on the real broker: a connection with a bad token is marked broken and its
    // delivery parked `dead`; after the fix (the workspace applied again with a good token),
    // `herald redrive` sends it once, and a second redrive finds nothing.
    let fixme = env.work.path().join("fixme.yaml");
    let apply_fixme = |token: &str| {
        std::fs::write(&fixme, FIXME.replace("TOKEN", token)).unwrap();
        env.run(&[
            "workspace",
            "apply",
            "--store-credentials",
            "--sandbox-url",
            &sandbox_url,
            "--brokers",
            &brokers,
            fixme.to_str().unwrap(),
        ]);
    };
    apply_fixme("bad-e2e");
    let metrics_url = format!("http://127.0.0.1:{http_port}/metrics");
    let gauge = |name: &'static str| {
        let url = metrics_url.clone();
        async move {
            let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(-1.0)
        }
    };
    let broken_gauge = || gauge("herald_broken_connections");
    // The running processor has the new workspace before the event is emitted to it.
    let deadline = Instant::now() + PATIENCE;
    while gauge("herald_workspaces").await != 4.0 {
        assert!(Instant::now() < deadline, "ws_fixme was not loaded");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    env.emit(
        &brokers,
        "ws_fixme",
        "lesson.completed",
        &with_id("evt_e2e_fixme"),
        seed,
    );
    let wait_fixme = |status: &'static str| {
        let (env, brokers) = (env, brokers.clone());
        async move {
            let deadline = Instant::now() + PATIENCE;
            loop {
                let h = history(env, &brokers, "ws_fixme");
                if h.len() == 1 && h[0]["status"] == status {
                    return h;
                }
                assert!(Instant::now() < deadline, "ws_fixme never {status}: {h:#?}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    let dead = wait_fixme("dead").await;
    assert!(
        dead[0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("connection_broken"),
        "{dead:#?}"
    );
    assert_eq!(broken_gauge().await, 1.0);
    apply_fixme("e2e-fixed");
    let deadline = Instant::now() + PATIENCE;
    while broken_gauge().await != 0.0 {
        assert!(
            Instant::now() < deadline,
            "the fixed workspace was not loaded"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let redrive = || {
        let out = env.run(&["redrive", "--brokers", &brokers, "--workspace", "ws_fixme"]);
        String::from_utf8(out.stdout).unwrap()
    };
    let out = redrive();
    assert!(
        out.contains("1 deliveries redriven for workspace ws_fixme"),
        "{out}"
    );
    let delivered = wait_fixme("delivered").await;
    assert!(
        delivered[0]["attempts"].as_array().unwrap().len() >= 2,
        "{delivered:#?}"
    );
    let out = redrive();
    assert!(
        out.contains("0 deliveries redriven"),
        "a second redrive sends nothing: {out}"
    );
    let sent = sandbox_requests(&sandbox_url).await.len();

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
        plan.contains("dry run: 5 events would be read again"),
        "{plan}"
    );
    let executed = replay(true);
    assert!(
        executed.status.success(),
        "{}",
        String::from_utf8_lossy(&executed.stderr)
    );
    assert!(String::from_utf8_lossy(&executed.stdout).contains("5 events will be read again"));
    let again = String::from_utf8(replay(false).stdout).unwrap();
    assert!(
        again.contains("dry run: 0 events would be read again"),
        "offsets moved: {again}"
    );

    // A new `herald run` reads the 5 events again; dedupe (history read back from the broker)
    // stops all 15 of their deliveries: no destination gets a second call.
    let _rerun = Process(
        env.herald()
            .args(["run", "--brokers", &brokers])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let metrics_url = format!("http://127.0.0.1:{http_port}/metrics");
    let deadline = Instant::now() + PATIENCE;
    loop {
        let skipped = match reqwest::get(&metrics_url).await {
            Ok(r) => already_delivered(&r.text().await.unwrap_or_default()),
            Err(_) => 0,
        };
        if skipped >= 15 {
            assert_eq!(skipped, 15);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "re-read events not deduplicated ({skipped} of 15)"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        sandbox_requests(&sandbox_url).await.len(),
        sent,
        "a destination was called again"
    );
}

/// The sum of `herald_deliveries_total{outcome="already_delivered"}` in a scrape.
fn already_delivered(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("herald_deliveries_total{") && l.contains("outcome=\"already_delivered\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

async fn sandbox_requests(sandbox_url: &str) -> Vec<serde_json::Value> {
    reqwest::get(format!("{sandbox_url}/_sandbox/requests"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Seed 000 (academy) and seeds 001/002 (onboarding), asserted on what the simulators store.
async fn seed_scenarios_hold(sandbox_url: &str) {
    let state: serde_json::Value = reqwest::get(format!("{sandbox_url}/_sandbox/state"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let contacts = &state["hubspot"]["contacts"];
    // HubSpot: lesson and progress properties; onboarding step fields.
    let nina = &contacts["nina@academyflow.io"]["properties"];
    assert_eq!(
        nina["last_lesson_completed"], "Customer Research Fundamentals",
        "{state:#}"
    );
    assert_eq!(nina["current_module"], "Growth Foundations");
    assert_eq!(nina["course_completion_pct"], "62");
    let alex = &contacts["alex@northstar.io"]["properties"];
    assert_eq!(alex["onboarding_step"], "3", "{state:#}");
    assert_eq!(alex["last_page_completed"], "page_connect-crm");
    // The other course workspace wrote its own property, not the academy's.
    let skill = &contacts["nina@skillforge.io"]["properties"];
    assert_eq!(skill["course_progress"], "62", "{state:#}");
    assert!(skill["current_module"].is_null());

    // Mailchimp: in the configured audience, with the next-lesson tag.
    let members = state["mailchimp"]["audiences"]["academy-students"]
        .as_object()
        .expect("the academy audience");
    let member = members
        .values()
        .find(|m| m["email_address"] == "nina@academyflow.io")
        .expect("nina is a member");
    assert_eq!(member["status"], "subscribed");
    assert!(
        member["tags"]
            .to_string()
            .contains("next-lesson-after-lesson_customer-research"),
        "{member}"
    );

    // Slack: the instructors' alert names course and module; the onboarding update has the
    // step and page.
    let alerts = state["slack"]["channels"]["#instructors"].to_string();
    assert!(alerts.contains("course_creator-accelerator") && alerts.contains("Growth Foundations"));
    let update = state["slack"]["channels"]["/slack/services/T1/B1/e2e"].to_string();
    assert!(
        update.contains("*Step*") && update.contains("Connect your CRM"),
        "{update}"
    );

    // ActiveCampaign: the milestone tag for the student past 50%, not for the one at 30%, and
    // none at 62% for the workspace whose threshold is 80%; the onboarding step tag.
    let ac = &state["activecampaign"];
    let tag_id = |name: &str| {
        ac["tags"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["tag"] == name || t["name"] == name)
            .map(|t| t["id"].clone())
    };
    let contact_id = |email: &str| {
        ac["contacts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["email"] == email)
            .map(|c| c["id"].clone())
    };
    let has_tag = |email: &str, tag: &str| {
        let (Some(c), Some(t)) = (contact_id(email), tag_id(tag)) else {
            return false;
        };
        ac["contact_tags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|ct| ct["contact"] == c && ct["tag"] == t)
    };
    assert!(
        has_tag(
            "nina@academyflow.io",
            "milestone-50-course_creator-accelerator"
        ),
        "{ac:#}"
    );
    assert!(!has_tag(
        "leo@academyflow.io",
        "milestone-50-course_creator-accelerator"
    ));
    assert!(
        tag_id("milestone-80").is_none(),
        "skillforge's threshold is not reached"
    );
    assert!(has_tag("alex@northstar.io", "step-3-complete"), "{ac:#}");

    // Intercom: the user is tagged with the new onboarding state.
    let user = state["intercom"]["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["external_id"] == "usr_5012")
        .expect("the Intercom contact");
    assert!(
        user["tags"].to_string().contains("onboarding-step-3"),
        "{user}"
    );

    // The webhook receivers got signed events.
    assert!(state["webhook"]["endpoints"]["/webhook/academyflow"].is_array());
}

const FIXME: &str = r#"
workspace: ws_fixme
connections:
  - id: automation
    type: activecampaign
    base_url: "http://127.0.0.1:7780/activecampaign"
    credentials: { api_token: "TOKEN" }
rules:
  - id: tag
    event: lesson.completed
    connection: automation
    action: add_tag
    with: { email: "{{ payload.email }}", tag: "redriven" }
"#;

const SKILLFORGE: &str = r#"
workspace: ws_skillforge
connections:
  - id: crm
    type: hubspot
    base_url: "http://127.0.0.1:7780/hubspot"
    credentials: { token: "pat-e2e-skillforge" }
  - id: automation
    type: activecampaign
    base_url: "http://127.0.0.1:7780/activecampaign"
    credentials: { api_token: "e2e-skillforge" }
rules:
  - id: progress
    event: lesson.completed
    connection: crm
    action: upsert_contact
    with:
      email: "{{ payload.email }}"
      properties: { course_progress: "{{ payload.completion_percentage }}" }
  - id: milestone
    event: lesson.completed
    when: "payload.completion_percentage >= 80"
    connection: automation
    action: add_tag
    with: { email: "{{ payload.email }}", tag: "milestone-80" }
"#;

const CRASH_WORKSPACE: &str = r#"
workspace: ws_crash
connections:
  - { id: a, type: webhook, url: "http://127.0.0.1:7780/webhook/crash-a?delay_ms=20", credentials: { secret: "whsec_aGVyYWxkLWRldi1zYW5kYm94LXNlY3JldA==" } }
  - { id: b, type: webhook, url: "http://127.0.0.1:7780/webhook/crash-b?delay_ms=20", credentials: { secret: "whsec_aGVyYWxkLWRldi1zYW5kYm94LXNlY3JldA==" } }
rules:
  - { id: to-a, event: tick, connection: a, action: post }
  - { id: to-b, event: tick, connection: b, action: post }
"#;

/// Crash: `herald run` is killed with SIGKILL at random moments while it works through a stream
/// of events with fan-out, and started again. Afterwards every delivery has a final state in
/// history and reached the receiver; repeats are counted (only deliveries in flight at a kill
/// may repeat).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_no_delivery() {
    const EVENTS: usize = 400;
    const KILLS: usize = 3;
    let _turn = ONE_AT_A_TIME.lock().await;
    let (stack, _) = Stack::start("herald-crash", |_| Vec::new()).await;
    let (brokers, sandbox_url, http_port) = stack.addresses();
    let env = &stack.env;
    let file = env.work.path().join("crash.yaml");
    std::fs::write(&file, CRASH_WORKSPACE).unwrap();
    env.run(&[
        "workspace",
        "apply",
        "--store-credentials",
        "--sandbox-url",
        &sandbox_url,
        "--brokers",
        &brokers,
        file.to_str().unwrap(),
    ]);

    // The stream, produced straight to the broker; each receiver answers after 20 ms, so work
    // is in flight when the kills come.
    let mut settings = herald::settings::Settings::defaults();
    settings.kafka.brokers = brokers.clone();
    let producer: rdkafka::producer::FutureProducer =
        herald::kafka::producer_config(&settings).create().unwrap();
    for i in 0..EVENTS {
        let body = serde_json::json!({"event_id": format!("evt_{i}"), "event": "tick", "payload": {"i": i}});
        let body = body.to_string();
        let record = rdkafka::producer::FutureRecord::to("herald.events")
            .key("ws_crash")
            .payload(&body);
        producer
            .send(record, Duration::from_secs(30))
            .await
            .unwrap();
    }

    let logs = env.work.path().join("runs");
    std::fs::create_dir_all(&logs).unwrap();
    let start_run = |n: usize| {
        let log = std::fs::File::create(logs.join(format!("run-{n}.log"))).unwrap();
        Process(
            env.herald()
                .args(["run", "--brokers", &brokers])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        )
    };
    let show_logs = || {
        let mut out = String::new();
        for n in 0..=KILLS {
            let text =
                std::fs::read_to_string(logs.join(format!("run-{n}.log"))).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(25).collect();
            out.push_str(&format!("--- run {n} (last lines) ---\n"));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    };
    let received = |requests: &[serde_json::Value]| {
        requests
            .iter()
            .filter(|r| r["destination"] == "webhook" && r["status"] == 200)
            .count()
    };

    let mut kills_at = Vec::new();
    for n in 0..KILLS {
        let mut run = start_run(n);
        wait_http_ok(&format!("http://127.0.0.1:{http_port}/readyz")).await;
        // Kill once the run has made progress, after a random extra moment.
        let before = received(&sandbox_requests(&sandbox_url).await);
        let deadline = Instant::now() + PATIENCE;
        while received(&sandbox_requests(&sandbox_url).await) == before {
            assert!(
                Instant::now() < deadline,
                "run {n} made no progress\n{}",
                show_logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(fastrand::u64(300..3000))).await;
        let pid = run.0.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-KILL", &pid])
                .status()
                .unwrap()
                .success()
        );
        let _ = run.0.wait();
        kills_at.push(received(&sandbox_requests(&sandbox_url).await));
        // Restart only after the dead member's session (6 s) ran out. Kafka would also
        // rebalance when it runs out later; tansu 0.6.0 does not: a member that joined while
        // the dead one was still listed keeps 0 partitions (seen in this test's logs).
        tokio::time::sleep(Duration::from_secs(8)).await;
    }

    let _last = start_run(KILLS);
    let deadline = Instant::now() + Duration::from_secs(300);
    let history = loop {
        let history = history(env, &brokers, "ws_crash");
        let delivered = history
            .iter()
            .filter(|d| d["status"] == "delivered")
            .count();
        if delivered == 2 * EVENTS {
            break history;
        }
        assert!(
            Instant::now() < deadline,
            "{delivered} of {} deliveries delivered after the kills\n{}",
            2 * EVENTS,
            show_logs()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    assert_eq!(history.len(), 2 * EVENTS, "one history record per delivery");

    // The receivers got every delivery; repeats are counted by webhook-id.
    let requests = sandbox_requests(&sandbox_url).await;
    let mut by_id: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for r in requests
        .iter()
        .filter(|r| r["destination"] == "webhook" && r["status"] == 200)
    {
        *by_id
            .entry(r["headers"]["webhook-id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(
        by_id.len(),
        2 * EVENTS,
        "a delivery never reached its receiver"
    );
    let repeats: usize = by_id.values().map(|n| n - 1).sum();
    println!(
        "crash test: {EVENTS} events x 2 deliveries, {KILLS} SIGKILLs (after {kills_at:?} received), \
         {repeats} deliveries received twice or more"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_commands_print_one_json_document_with_output_json() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let (stack, _) = Stack::start("herald-topics-json", |_| Vec::new()).await;
    let (brokers, _, _) = stack.addresses();
    let json = |args: &[&str]| -> serde_json::Value {
        let out = stack
            .env
            .herald()
            .args(args)
            .args(["--brokers", &brokers, "--output", "json"])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "herald {args:?}: not JSON ({e}):\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    };
    // The stack created them already: each exists now, with its partitions.
    let created = json(&["topics", "create"]);
    let topics = created["topics"].as_array().unwrap();
    assert!(
        topics.iter().any(|t| t["name"] == "herald.workspaces"),
        "{created}"
    );
    assert!(topics.iter().all(|t| t["created"] == false), "{created}");
    let checked = json(&["topics", "check"]);
    assert_eq!(
        checked["topics"].as_array().unwrap().len(),
        topics.len(),
        "{checked}"
    );
}
