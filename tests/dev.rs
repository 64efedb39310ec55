//! `herald dev` does what the README's tour says: it prints where everything is and a
//! ready-to-paste `herald emit` line; pasting it shows the Slack alert in the sandbox and a
//! `delivered` record in `herald history --json`; the tour's curl steps post an event, list
//! and get its deliveries and replay one; the printed test-event line shows the Slack request
//! that the sandbox then receives; its "Connect HubSpot" line connects the example HubSpot
//! connection through the sandbox; Ctrl-C stops it cleanly.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_printed_emit_line_is_delivered_and_shows_in_history() {
    let bin = Path::new(env!("CARGO_BIN_EXE_herald"));
    let work = tempfile::tempdir().unwrap();
    let mut dev = Command::new(bin)
        .args(["dev", "--http", "127.0.0.1:0"])
        .current_dir(work.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(dev.stdout.take().unwrap()).lines();
    let mut printed = Vec::new();
    let mut emit_lines = Vec::new();
    while emit_lines.len() < 2 {
        let line = lines.next().expect("herald dev printed its lines").unwrap();
        printed.push(line.clone());
        if line.starts_with("herald emit ") {
            emit_lines.push(line);
        }
    }
    let field = |prefix: &str| {
        printed
            .iter()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` line in {printed:?}"))
            .to_owned()
    };
    let brokers = field("kafka: ");
    let http = field("http: ");
    assert!(http.starts_with("http://127.0.0.1:"), "{http}");

    // Paste the line into a shell, with the binary on PATH.
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for emit_line in &emit_lines {
        let status = Command::new("sh")
            .arg("-c")
            .arg(emit_line)
            .env("PATH", &path)
            .current_dir(work.path())
            .status()
            .unwrap();
        assert!(
            status.success(),
            "the printed emit line failed: {emit_line}"
        );
    }

    let deadline = Instant::now() + Duration::from_secs(60);
    let history = loop {
        let out = Command::new(bin)
            .args([
                "history",
                "--brokers",
                &brokers,
                "--workspace",
                "ws_academyflow",
                "--json",
            ])
            .current_dir(work.path())
            .output()
            .unwrap();
        let records: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if records
            .iter()
            .filter(|r| r["status"] == "delivered")
            .count()
            == 5
        {
            break records;
        }
        assert!(Instant::now() < deadline, "not delivered: {records:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(history.iter().any(
        |r| r["rule_id"] == "lesson-alert-to-slack" && r["connection_id"] == "instructor-slack"
    ));

    let requests: Vec<serde_json::Value> =
        reqwest::get(format!("{http}/_sandbox/requests?destination=slack"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(requests.len(), 2, "one alert per workspace");
    let lesson = requests
        .iter()
        .find(|r| r["path"] == "/slack/api/chat.postMessage")
        .expect("the instructors' alert");
    let text = lesson["body"]["text"].as_str().unwrap();
    assert!(text.contains("Customer Research Fundamentals"), "{text}");

    // All five destinations (and the webhook) hold what the seeds promise.
    let deadline = Instant::now() + Duration::from_secs(60);
    let state = loop {
        let state: serde_json::Value = reqwest::get(format!("{http}/_sandbox/state"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let tagged = state["intercom"]["contacts"]
            .as_array()
            .is_some_and(|c| !c.is_empty());
        if tagged && !state["hubspot"]["contacts"]["alex@northstar.io"].is_null() {
            break state;
        }
        assert!(
            Instant::now() < deadline,
            "onboarding not delivered: {state:#}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let nina = &state["hubspot"]["contacts"]["nina@academyflow.io"]["properties"];
    assert_eq!(nina["current_module"], "Growth Foundations", "{state:#}");
    let members = state["mailchimp"]["audiences"]["academy-students"]
        .as_object()
        .expect("the audience");
    assert!(
        members
            .values()
            .any(|m| m["email_address"] == "nina@academyflow.io")
    );
    assert!(state["slack"]["channels"]["#instructors"].is_array());
    let ac_tags = state["activecampaign"]["tags"].to_string();
    assert!(
        ac_tags.contains("milestone-50-course_creator-accelerator"),
        "{ac_tags}"
    );
    assert!(ac_tags.contains("step-3-complete"), "{ac_tags}");
    assert!(
        state["intercom"]["tags"]
            .to_string()
            .contains("onboarding-step-3")
    );
    assert!(state["webhook"]["endpoints"]["/webhook/academyflow"].is_array());

    let ready = reqwest::get(format!("{http}/readyz")).await.unwrap();
    assert!(ready.status().is_success());

    // The printed curl line posts the seed event over HTTP with the example publishable key.
    let mut later: Vec<String> = Vec::new();
    while !later.iter().any(|l| l.contains("/v1/workspaces")) {
        later.push(lines.next().expect("the curl lines").unwrap());
    }
    let curl_line = later.iter().find(|l| l.contains("/v1/events")).unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(curl_line)
        .output()
        .unwrap();
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{curl_line}: {}", String::from_utf8_lossy(&out.stdout)));
    assert!(answer["event_id"].is_string(), "{answer}");
    let token = later
        .iter()
        .find_map(|l| l.strip_prefix("admin token: "))
        .expect("the admin token line");
    let workspaces: serde_json::Value = reqwest::Client::new()
        .get(format!("{http}/v1/workspaces"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(workspaces["workspaces"].as_array().unwrap().len(), 2);

    // The printed test-event line shows the Slack request and sends it once.
    while !later.iter().any(|l| l.contains("/test-event")) {
        later.push(lines.next().expect("the test-event line").unwrap());
    }
    let test_line = later.iter().find(|l| l.contains("/test-event")).unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(test_line)
        .output()
        .unwrap();
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{test_line}: {}", String::from_utf8_lossy(&out.stdout)));
    let delivery = &answer["deliveries"][0];
    assert_eq!(delivery["rule"], "lesson-alert-to-slack", "{answer}");
    assert_eq!(delivery["requests"][0]["method"], "POST", "{answer}");
    assert_eq!(
        delivery["requests"][0]["headers"]["authorization"],
        "[redacted]"
    );
    assert_eq!(delivery["result"]["outcome"], "delivered", "{answer}");
    let slack: Vec<serde_json::Value> =
        reqwest::get(format!("{http}/_sandbox/requests?destination=slack"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(
        slack.last().map(|r| &r["body"]),
        Some(&delivery["requests"][0]["body"]),
        "the sandbox received what the test event showed"
    );

    // The printed "Connect HubSpot" line runs the OAuth flow: start, the sandbox's authorize
    // page (which approves at once), the callback, which stores the tokens.
    let connect_line = loop {
        let line = lines.next().expect("the Connect HubSpot line").unwrap();
        if line.starts_with("curl ") && line.contains("/oauth/hubspot/start") {
            break line;
        }
    };
    let out = Command::new("sh")
        .arg("-c")
        .arg(&connect_line)
        .output()
        .unwrap();
    let connected: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{connect_line}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(connected["connected"], true, "{connected}");
    assert_eq!(connected["connection"], "crm", "{connected}");
    let state: serde_json::Value = reqwest::get(format!("{http}/_sandbox/state"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        state["hubspot"]["oauth"]["token_requests"]["authorization_code"], 1,
        "{state}"
    );

    // Ctrl-C.
    assert!(
        Command::new("kill")
            .args(["-INT", &dev.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = dev.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "herald dev did not stop on Ctrl-C"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "herald dev exited with {status}");
}

/// The curl blocks of the README's tour, in order, aimed at `http` instead of the tour's
/// address.
fn readme_curl_steps(http: &str) -> Vec<String> {
    let readme = include_str!("../README.md");
    let tour = readme
        .split("## A five-minute tour")
        .nth(1)
        .and_then(|t| t.split("\n## ").next())
        .expect("the README has a tour");
    let mut steps = Vec::new();
    let mut block: Option<String> = None;
    for line in tour.lines().map(str::trim) {
        match (&mut block, line) {
            (None, "```sh") => block = Some(String::new()),
            (Some(text), "```") => {
                if text.starts_with("curl ") {
                    steps.push(text.replace("http://127.0.0.1:7780", http));
                }
                block = None;
            }
            (Some(text), _) => {
                text.push_str(line);
                text.push('\n');
            }
            (None, _) => {}
        }
    }
    steps
}

/// Runs a README step in a shell; its answer, which must be JSON.
fn run_step(step: &str) -> serde_json::Value {
    let out = Command::new("sh").arg("-c").arg(step).output().unwrap();
    assert!(out.status.success(), "{step}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "{step} answered no JSON: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Runs `step` until its answer satisfies `done`.
async fn run_step_until(
    step: &str,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = run_step(step);
        if done(&answer) {
            return answer;
        }
        assert!(Instant::now() < deadline, "{what}: {step} answers {answer}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_curl_steps_post_list_get_and_replay_a_delivery() {
    let bin = Path::new(env!("CARGO_BIN_EXE_herald"));
    let work = tempfile::tempdir().unwrap();
    let mut dev = Command::new(bin)
        .args(["dev", "--http", "127.0.0.1:0"])
        .current_dir(work.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(dev.stdout.take().unwrap()).lines();
    let mut printed = Vec::new();
    while !printed
        .iter()
        .any(|l: &String| l.starts_with("admin token: "))
    {
        printed.push(lines.next().expect("herald dev printed its lines").unwrap());
    }
    let http = printed
        .iter()
        .find_map(|l| l.strip_prefix("http: "))
        .expect("the http line")
        .to_owned();
    let token = printed
        .iter()
        .find_map(|l| l.strip_prefix("admin token: "))
        .expect("the admin token line")
        .to_owned();

    let steps = readme_curl_steps(&http);
    let find = |what: &str, pick: &dyn Fn(&str) -> bool| {
        steps
            .iter()
            .find(|s| pick(s))
            .unwrap_or_else(|| panic!("no README step that {what}: {steps:#?}"))
            .clone()
    };
    let post = find("posts the event", &|s| s.contains("/v1/events"));
    let list = find("lists deliveries", &|s| s.contains("/deliveries?"));
    let replay = find("replays", &|s| s.contains("/replay"));
    let get = find("gets one delivery", &|s| {
        s.contains("/deliveries/dl_") && !s.contains("/replay")
    });
    let posted = run_step(&post);
    assert_eq!(posted["event_id"], "evt_tour_lesson", "{posted}");

    // One delivery per rule of the academy's `lesson.completed`, all delivered.
    let all_delivered = |answer: &serde_json::Value| {
        answer["deliveries"]
            .as_array()
            .is_some_and(|all| all.len() == 5 && all.iter().all(|d| d["status"] == "delivered"))
    };
    let listed = run_step_until(&list, "every delivery delivered", all_delivered).await;
    assert!(
        listed["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["event_id"] == "evt_tour_lesson"),
        "{listed}"
    );
    let one = run_step(&get);
    assert_eq!(one["rule_id"], "lesson-alert-to-slack", "{one}");
    assert_eq!(one["status"], "delivered", "{one}");
    assert_eq!(one["attempts"].as_array().map(Vec::len), Some(1), "{one}");

    let replayed = run_step(&replay);
    assert_eq!(
        replayed["enqueued"]["delivery_id"], one["delivery_id"],
        "{replayed}"
    );
    assert_eq!(replayed["enqueued"]["attempt"], 2, "{replayed}");
    let again = run_step_until(&get, "the replay's attempt recorded", |d| {
        d["status"] == "delivered" && d["attempts"].as_array().is_some_and(|a| a.len() == 2)
    })
    .await;
    assert_eq!(again["attempts"][1]["outcome"], "delivered", "{again}");
    let requests: Vec<serde_json::Value> =
        reqwest::get(format!("{http}/_sandbox/requests?destination=slack"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let alerts = requests
        .iter()
        .filter(|r| r["path"] == "/slack/api/chat.postMessage")
        .count();
    assert_eq!(alerts, 2, "the alert, and its replay");

    // Any other curl step of the tour answers without an error.
    for step in steps
        .iter()
        .filter(|s| ![&post, &list, &get, &replay].contains(s))
    {
        let answer = run_step(step);
        assert!(answer.get("error").is_none(), "{step}: {answer}");
    }

    // `herald history --url` pages through the same API.
    let out = Command::new(bin)
        .args([
            "history",
            "--url",
            &http,
            "--workspace",
            "ws_academyflow",
            "--event-id",
            "evt_tour_lesson",
            "--json",
        ])
        .env("HERALD_ADMIN_TOKEN", &token)
        .current_dir(work.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        records.len(),
        listed["deliveries"].as_array().unwrap().len()
    );
    assert!(
        records
            .iter()
            .any(|r| r["delivery_id"] == one["delivery_id"])
    );

    // Ctrl-C: it stops cleanly, its history store removed.
    let status = Command::new("kill")
        .args(["-INT", &dev.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    while dev.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "herald dev did not stop on Ctrl-C"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
