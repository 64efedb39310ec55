//! The web console in a real browser (Debian's Chromium through chromedriver) against the real
//! `herald dev` binary: an operator signs in with the printed token, finds a failed delivery
//! through the filters, opens it, redrives its connection after the dry-run count and sees it
//! turn `delivered` without reloading; a read-only token sees no write buttons and its writes
//! are refused; a form post without the CSRF token is refused.
//!
//! With `HERALD_CONSOLE_SCREENSHOTS=DIR` the walk saves the screenshots of docs/console.md
//! into DIR (`docs/img` refreshes them).

#[path = "common/webdriver.rs"]
mod webdriver;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use webdriver::{Browser, Driver, PATIENCE};

const LESSON: &str = r#"{"student_id":"stu_2048","email":"nina@academyflow.io","lesson_id":"lesson_customer-research","lesson_title":"Customer Research Fundamentals","module_id":"module_growth-foundations","module_title":"Growth Foundations","course_id":"course_creator-accelerator","completion_percentage":62,"time_spent_seconds":1840,"completed_at":"2026-03-21T14:18:00Z"}"#;

/// `herald dev` and what it printed; stopped on drop.
struct Dev {
    child: Child,
    http: String,
    console: String,
    write_token: String,
    read_token: String,
    publishable_key: String,
    _work: tempfile::TempDir,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_dev() -> Dev {
    let bin = Path::new(env!("CARGO_BIN_EXE_herald"));
    let work = tempfile::tempdir().unwrap();
    let mut child = Command::new(bin)
        .args(["dev", "--http", "127.0.0.1:0"])
        .current_dir(work.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed: Vec<String> = Vec::new();
    while !printed.iter().any(|l| l.starts_with("console: ")) {
        printed.push(lines.next().expect("herald dev printed its lines").unwrap());
    }
    // The rest of the output is not read; a thread drains it so that dev never blocks on it.
    std::thread::spawn(move || lines.for_each(drop));
    let field = |prefix: &str| {
        printed
            .iter()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` line in {printed:?}"))
            .to_owned()
    };
    let dev = Dev {
        http: field("http: "),
        console: field("console: "),
        write_token: field("admin token: "),
        read_token: field("read-only admin token: "),
        publishable_key: field("publishable key (ws_academyflow): "),
        child,
        _work: work,
    };
    assert_eq!(dev.console, format!("{}/console", dev.http));
    let deadline = Instant::now() + PATIENCE;
    while !reqwest::get(format!("{}/readyz", dev.http))
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(Instant::now() < deadline, "herald dev never got ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    dev
}

impl Dev {
    async fn post_lesson(&self, event_id: &str) {
        let body = format!(
            r#"{{"event":"lesson.completed","event_id":"{event_id}","resource":"course","resource_id":"creator-accelerator","payload":{LESSON}}}"#
        );
        let answer = reqwest::Client::new()
            .post(format!("{}/v1/events", self.http))
            .bearer_auth(&self.publishable_key)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::ACCEPTED);
    }

    /// The deliveries of `event_id` once `done` holds for them, through the API.
    async fn deliveries_of(&self, event_id: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let answer = reqwest::Client::new()
                .get(format!(
                    "{}/v1/workspaces/ws_academyflow/deliveries?event_id={event_id}",
                    self.http
                ))
                .bearer_auth(&self.write_token)
                .send()
                .await
                .unwrap();
            if answer.status().is_success() {
                let list: Value = answer.json().await.unwrap();
                let deliveries = list["deliveries"].as_array().cloned().unwrap_or_default();
                if done(&deliveries) {
                    return deliveries;
                }
            }
            assert!(
                Instant::now() < deadline,
                "deliveries of {event_id} not settled"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A failed delivery of the academy's webhook: the sandbox refuses the next call with 400.
    async fn failed_webhook_delivery(&self, event_id: &str) -> String {
        let fault = reqwest::Client::new()
            .post(format!("{}/_sandbox/faults", self.http))
            .json(
                &json!({"path": "/webhook/academyflow", "count": 1, "status": 400,
                "body": "{\"error\":\"payload rejected\"}"}),
            )
            .send()
            .await
            .unwrap();
        assert!(fault.status().is_success());
        self.post_lesson(event_id).await;
        let deliveries = self
            .deliveries_of(event_id, |all| {
                all.iter()
                    .any(|d| d["rule_id"] == "halfway-to-backend" && d["status"] == "failed")
            })
            .await;
        deliveries
            .iter()
            .find(|d| d["rule_id"] == "halfway-to-backend")
            .and_then(|d| d["delivery_id"].as_str())
            .unwrap()
            .to_owned()
    }
}

/// Where screenshots go, when asked for.
fn screenshots() -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var_os("HERALD_CONSOLE_SCREENSHOTS")?);
    std::fs::create_dir_all(&dir).unwrap();
    Some(dir)
}

async fn shoot(browser: &Browser, name: &str) {
    if let Some(dir) = screenshots() {
        browser
            .screenshot(&dir.join(format!("console-{name}.png")))
            .await;
    }
}

/// Signs in on the sign-in page with `token`, by keyboard (Enter submits).
async fn sign_in(browser: &Browser, dev: &Dev, token: &str) {
    browser.goto(&dev.console).await;
    let field = browser.find("input#token").await;
    assert!(browser.current_url().await.ends_with("/console/login"));
    if token == dev.write_token {
        shoot(browser, "sign-in").await;
    }
    browser.type_into(&field, &format!("{token}\u{E007}")).await;
    browser.wait_for("h1", |t| t == "Workspaces").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_redrives_a_failed_delivery_and_sees_it_delivered() {
    let dev = start_dev().await;
    let failed = dev.failed_webhook_delivery("evt_console_failed").await;
    // More history for the pages to show: an event that was delivered everywhere.
    dev.post_lesson("evt_console_ok").await;
    dev.deliveries_of("evt_console_ok", |all| {
        all.len() == 5 && all.iter().all(|d| d["status"] == "delivered")
    })
    .await;

    let driver = Driver::start().await;
    let browser = driver.browser(1280, 1100).await;
    sign_in(&browser, &dev, &dev.write_token).await;
    // The session cookie is HttpOnly and SameSite=Strict; Secure is off on loopback only.
    let cookie = browser
        .cookie_details("herald_console")
        .await
        .expect("a session");
    assert_eq!(cookie["httpOnly"], true, "{cookie}");
    assert_eq!(cookie["sameSite"], "Strict", "{cookie}");
    assert_eq!(cookie["secure"], false, "{cookie}");
    assert!(
        !browser.source().await.contains(&dev.write_token),
        "the token is never in a page"
    );
    // The academy's row counts the failed delivery of the last 24 hours.
    // Delivered, retrying, failed, dead: the two events' ten deliveries, one failed.
    let row = browser
        .wait_for("tbody tr", |t| t.starts_with("ws_academyflow"))
        .await;
    let counts = browser.text(&row).await;
    let counts: Vec<&str> = counts.split_whitespace().collect();
    assert_eq!(
        counts[..5],
        ["ws_academyflow", "9", "0", "1", "0"],
        "{counts:?}"
    );
    shoot(&browser, "workspaces").await;

    browser.press("a", |t| t == "ws_academyflow").await;
    browser
        .wait_for("h1", |t| t == "Workspace ws_academyflow")
        .await;
    browser.find("section.rule").await;
    shoot(&browser, "workspace").await;

    // The deliveries page, filtered to failed ones through the form.
    browser.press("a", |t| t == "All deliveries").await;
    browser
        .press("fieldset.statuses label", |t| t == "failed")
        .await;
    browser.press("button", |t| t == "Filter").await;
    browser.wait_for("#rows a", |t| t == failed).await;
    assert!(browser.current_url().await.contains("status=failed"));
    let rows = browser.all("#rows tr").await;
    assert_eq!(rows.len(), 1, "only the failed delivery is listed");
    shoot(&browser, "deliveries").await;

    // The delivery, with its attempt and the sandbox's refusal.
    browser.press("#rows a", |t| t == failed).await;
    browser.wait_for("#status", |t| t == "failed").await;
    browser
        .wait_for("#live tbody", |t| {
            t.contains("permanent") && t.contains("400") && t.contains("payload rejected")
        })
        .await;

    // The request it sends, rendered again from its event, its signature redacted.
    browser
        .press("button", |t| t == "Show the request it sends")
        .await;
    let request = browser
        .wait_for("#request-result", |t| t.contains("/webhook/academyflow"))
        .await;
    let request = browser.text(&request).await;
    assert!(request.contains("POST"), "{request}");
    assert!(request.contains("nina@academyflow.io"), "{request}");
    assert!(
        request.contains("webhook-signature: [redacted]"),
        "{request}"
    );

    // Redrive the connection: first the count, then the confirmed run.
    browser
        .press("button", |t| t.starts_with("Redrive academy-backend"))
        .await;
    let count = browser.find("#redrive-count").await;
    assert_eq!(browser.text(&count).await, "1");
    assert!(browser.source().await.contains(&failed));
    browser.scroll_to("#live").await;
    shoot(&browser, "delivery").await;
    browser.press("button", |t| t == "Confirm: redrive 1").await;
    let redriven = browser.find("#redriven").await;
    assert_eq!(browser.text(&redriven).await, "1");
    let url = browser.current_url().await;

    // The status turns `delivered` on the same page: polled, not reloaded.
    browser.wait_for("#status", |t| t == "delivered").await;
    assert_eq!(browser.current_url().await, url);
    let attempts = browser.all("#live tbody tr").await;
    assert_eq!(attempts.len(), 2, "the failed attempt and the redriven one");
    browser.scroll_to("#live").await;
    shoot(&browser, "delivered").await;

    // A rule's test event: the rendered request, credentials redacted, and sent once.
    browser
        .goto(&format!(
            "{}/workspaces/ws_academyflow/test-event?rule=lesson-alert-to-slack",
            dev.console
        ))
        .await;
    let payload = browser.find("#t-payload").await;
    browser.clear(&payload).await;
    browser.type_into(&payload, LESSON).await;
    browser.press("label[for='t-send']", |_| true).await;
    browser.press("button", |t| t == "Try it").await;
    let answer = browser
        .wait_for("#answer", |t| t.contains("Sent: delivered"))
        .await;
    let answer = browser.text(&answer).await;
    assert!(answer.contains("chat.postMessage"), "{answer}");
    assert!(
        answer.contains("Customer Research Fundamentals"),
        "{answer}"
    );
    let slack_token = include_str!("../examples/sandbox.env")
        .lines()
        .find_map(|l| l.strip_prefix("HERALD_CRED_ACADEMYFLOW_SLACK_TOKEN="))
        .unwrap();
    assert!(!browser.source().await.contains(slack_token), "redacted");
    browser.scroll_to("#answer").await;
    shoot(&browser, "test-event").await;

    // Readable at a phone's width.
    browser.resize(390, 844).await;
    browser
        .goto(&format!(
            "{}/workspaces/ws_academyflow/deliveries",
            dev.console
        ))
        .await;
    browser.find("#rows").await;
    shoot(&browser, "deliveries-390").await;
    browser.quit().await;
}

/// A session cookie and the page's CSRF token, signed in over plain HTTP.
async fn plain_session(dev: &Dev, token: &str) -> (reqwest::Client, String) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let answer = client
        .post(format!("{}/login", dev.console))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    let cookie = answer
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .expect("a session cookie")
        .to_owned();
    (client, cookie)
}

/// The CSRF token in the page at `url`.
async fn csrf_of(client: &reqwest::Client, cookie: &str, url: &str) -> String {
    let page = client
        .get(url)
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    page.split(r#"name="csrf" value=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a form with a CSRF token")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_sessions_and_forged_posts_cannot_write() {
    let dev = start_dev().await;
    let failed = dev.failed_webhook_delivery("evt_console_guarded").await;
    let delivery = format!(
        "{}/workspaces/ws_academyflow/deliveries/{failed}",
        dev.console
    );

    // The webhook receiver then refuses the signature (401): the connection is marked broken.
    let fault = reqwest::Client::new()
        .post(format!("{}/_sandbox/faults", dev.http))
        .json(&json!({"path": "/webhook/academyflow", "count": 1, "status": 401}))
        .send()
        .await
        .unwrap();
    assert!(fault.status().is_success());
    dev.post_lesson("evt_console_broken").await;
    dev.deliveries_of("evt_console_broken", |all| {
        all.iter().any(|d| {
            d["rule_id"] == "halfway-to-backend"
                && d["attempts"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|a| a["outcome"] == "connection_broken"))
        })
    })
    .await;

    // A read-only token sees the pages, and no button that writes.
    let driver = Driver::start().await;
    let browser = driver.browser(1280, 1100).await;
    sign_in(&browser, &dev, &dev.read_token).await;
    let who = browser.text(&browser.find("header .who").await).await;
    assert!(who.contains("(read-only)"), "{who}");
    // The broken connection is called out on the workspaces page.
    let row = browser
        .wait_for("tr.attention", |t| t.starts_with("ws_academyflow"))
        .await;
    let row = browser.text(&row).await;
    assert!(row.contains("academy-backend: broken"), "{row}");
    browser
        .goto(&format!("{}/workspaces/ws_academyflow", dev.console))
        .await;
    browser.find("section.rule").await;
    assert!(browser.all("form[action$='/redrive']").await.is_empty());
    browser.goto(&delivery).await;
    browser.wait_for("#status", |t| t == "failed").await;
    assert!(browser.all("form[action$='/replay']").await.is_empty());
    assert!(browser.all("form[action$='/redrive']").await.is_empty());
    browser
        .goto(&format!(
            "{}/workspaces/ws_academyflow/test-event",
            dev.console
        ))
        .await;
    browser.find("#t-payload").await;
    assert!(browser.all("#t-send").await.is_empty(), "no `send` box");
    browser.quit().await;

    // The server refuses the read-only session's writes even with a valid CSRF token.
    let (client, read_cookie) = plain_session(&dev, &dev.read_token).await;
    let csrf = csrf_of(&client, &read_cookie, &delivery).await;
    let refused = client
        .post(format!("{delivery}/replay"))
        .header("cookie", &read_cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert!(
        refused.headers().contains_key("x-request-id"),
        "console answers carry a request id, as the API's do"
    );

    // A write session's post without the CSRF token, or with another session's, is refused.
    let (client, write_cookie) = plain_session(&dev, &dev.write_token).await;
    let redrive = format!("{}/workspaces/ws_academyflow/redrive", dev.console);
    for form in [
        vec![("connection", "academy-backend"), ("confirm", "yes")],
        vec![
            ("connection", "academy-backend"),
            ("confirm", "yes"),
            ("csrf", csrf.as_str()),
        ],
    ] {
        let forged = client
            .post(&redrive)
            .header("cookie", &write_cookie)
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(forged.status(), StatusCode::FORBIDDEN, "{form:?}");
    }
    // Without a session at all, a post is not accepted either.
    let anonymous = client
        .post(format!("{delivery}/replay"))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    // A page's poll without a session sends the whole page to sign-in.
    let poll = client
        .get(format!("{delivery}/live"))
        .header("hx-request", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(poll.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(poll.headers()["hx-redirect"], "/console/login");
    // None of them wrote: the delivery is still failed, with its one attempt.
    let still = dev
        .deliveries_of("evt_console_guarded", |_| true)
        .await
        .into_iter()
        .find(|d| d["delivery_id"] == failed.as_str())
        .unwrap();
    assert_eq!(still["status"], "failed");
    assert_eq!(still["attempts"].as_array().unwrap().len(), 1);

    // With its own token, the same post is accepted.
    let csrf = csrf_of(&client, &write_cookie, &delivery).await;
    let accepted = client
        .post(&redrive)
        .header("cookie", &write_cookie)
        .form(&[("connection", "academy-backend"), ("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), StatusCode::OK);
    let page = accepted.text().await.unwrap();
    assert!(page.contains(r#"<strong id="redrive-count">"#), "{page}");
    assert!(
        page.contains(&failed),
        "the failed delivery is in the dry run: {page}"
    );

    // Pages of 50, newest first: with more deliveries than that, "Older" leads to the rest.
    for i in 0..10 {
        dev.post_lesson(&format!("evt_console_page_{i}")).await;
    }
    dev.deliveries_of("evt_console_page_9", |all| all.len() == 5)
        .await;
    let list = format!("{}/workspaces/ws_academyflow/deliveries", dev.console);
    let mut seen = std::collections::BTreeSet::new();
    let mut next = Some(list.clone());
    let mut pages = 0;
    while let Some(url) = next {
        let page = client
            .get(&url)
            .header("cookie", &write_cookie)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let ids: Vec<&str> = page
            .split("/deliveries/dl_")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .collect();
        assert!(ids.len() <= 50, "{} on one page", ids.len());
        for id in ids {
            assert!(seen.insert(id.to_owned()), "dl_{id} on two pages");
        }
        pages += 1;
        next = page.split(">Older</a>").next().and_then(|before| {
            let href = before.rsplit("href=\"").next()?.split('"').next()?;
            (before.len() < page.len())
                .then(|| format!("{}{}", dev.http, href.replace("&amp;", "&")))
        });
    }
    assert!(pages >= 2, "more than one page");
    assert!(seen.len() > 50, "the second page goes on: {}", seen.len());
}
