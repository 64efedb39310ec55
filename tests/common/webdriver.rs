//! A small W3C WebDriver client over reqwest, enough to drive Chromium through chromedriver:
//! open pages, find elements by CSS selector, click, type, read text, take screenshots, read
//! cookies. WebDriver is JSON over HTTP; the few commands the console's tests use do not need
//! a client crate.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

/// The key of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long waiting for a page to show something may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(90);

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Chromium and chromedriver, installed by `scripts/browser.sh install` when missing.
pub fn ensure_browser() {
    let present = || Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists();
    if present() {
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/browser.sh");
    let status = Command::new("bash").arg(&script).arg("install").status();
    assert!(
        status.is_ok_and(|s| s.success()) && present(),
        "the console's browser tests need Debian's chromium and chromium-driver \
         ({CHROMIUM}, {CHROMEDRIVER}) and `scripts/browser.sh install` could not install them; \
         install them (apt-get install chromium chromium-driver) and run the tests again"
    );
}

/// A chromedriver process on a free loopback port, ended on drop.
pub struct Driver {
    child: Child,
    pub url: String,
}

impl Driver {
    pub async fn start() -> Self {
        ensure_browser();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + PATIENCE;
        loop {
            let ready = reqwest::get(format!("{url}/status")).await;
            if let Ok(answer) = ready
                && let Ok(status) = answer.json::<Value>().await
                && status["value"]["ready"] == true
            {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver never got ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Self { child, url }
    }

    /// A new headless browser window of `width` × `height` with a fresh profile.
    pub async fn browser(&self, width: u32, height: u32) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let args = [
            "--headless".to_owned(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--hide-scrollbars".into(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let http = reqwest::Client::new();
        let answer: Value = http
            .post(format!("{}/session", self.url))
            .json(&json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
            }}}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {answer}"))
            .to_owned();
        Browser {
            http,
            base: format!("{}/session/{id}", self.url),
            _profile: profile,
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One browser session.
pub struct Browser {
    http: reqwest::Client,
    base: String,
    _profile: tempfile::TempDir,
}

/// An element of the current page.
#[derive(Clone, Debug)]
pub struct Element(String);

impl Browser {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request.send().await.unwrap().json().await.unwrap();
        answer["value"].clone()
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let value = self.call(reqwest::Method::POST, path, Some(body)).await;
        assert!(value.get("error").is_none(), "{path}: {value}");
        value
    }

    async fn get(&self, path: &str) -> Value {
        let value = self.call(reqwest::Method::GET, path, None).await;
        assert!(value.get("error").is_none(), "{path}: {value}");
        value
    }

    pub async fn goto(&self, url: &str) {
        self.post("/url", json!({ "url": url })).await;
    }

    pub async fn current_url(&self) -> String {
        self.get("/url")
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub async fn source(&self) -> String {
        self.get("/source")
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The elements matching `css` now (none is not an error).
    pub async fn all(&self, css: &str) -> Vec<Element> {
        let found = self
            .post(
                "/elements",
                json!({ "using": "css selector", "value": css }),
            )
            .await;
        found
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e[ELEMENT].as_str().map(|id| Element(id.to_owned())))
            .collect()
    }

    /// The first element matching `css`, waiting for it to appear (pages poll and swap).
    pub async fn find(&self, css: &str) -> Element {
        self.wait_for(css, |_| true).await
    }

    /// The first element matching `css` whose text passes `accept`, waiting for one.
    pub async fn wait_for(&self, css: &str, accept: impl Fn(&str) -> bool) -> Element {
        let deadline = Instant::now() + PATIENCE;
        loop {
            for element in self.all(css).await {
                // An element swapped out between finding and reading is simply looked up again.
                let text = self
                    .call(
                        reqwest::Method::GET,
                        &format!("/element/{}/text", element.0),
                        None,
                    )
                    .await;
                if let Some(text) = text.as_str()
                    && accept(text)
                {
                    return element;
                }
            }
            assert!(
                Instant::now() < deadline,
                "nothing matching `{css}` appeared on {}:\n{}",
                self.current_url().await,
                self.source().await
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Clicks the first element matching `css` whose text passes `accept`, once one is there;
    /// an element that a poll swapped out meanwhile is looked up again.
    pub async fn press(&self, css: &str, accept: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let element = self.wait_for(css, &accept).await;
            let clicked = self
                .call(
                    reqwest::Method::POST,
                    &format!("/element/{}/click", element.0),
                    Some(json!({})),
                )
                .await;
            if clicked.get("error").is_none() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "`{css}` could not be clicked: {clicked}"
            );
        }
    }

    /// Types `text` into `element` (`\u{E007}` is Enter).
    pub async fn type_into(&self, element: &Element, text: &str) {
        self.post(
            &format!("/element/{}/value", element.0),
            json!({ "text": text }),
        )
        .await;
    }

    /// Empties an input or a text area.
    pub async fn clear(&self, element: &Element) {
        self.post(&format!("/element/{}/clear", element.0), json!({}))
            .await;
    }

    /// The text of `element` (one that no poll replaces).
    pub async fn text(&self, element: &Element) -> String {
        self.get(&format!("/element/{}/text", element.0))
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// All attributes of cookie `name`, as the browser holds them.
    pub async fn cookie_details(&self, name: &str) -> Option<Value> {
        let cookies = self.get("/cookie").await;
        cookies
            .as_array()?
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
    }

    /// Saves a PNG of the viewport to `path`.
    pub async fn screenshot(&self, path: &Path) {
        let data = self.get("/screenshot").await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap_or_default())
            .unwrap();
        std::fs::write(path, png).unwrap();
    }

    /// Scrolls the first element matching `css` into view.
    pub async fn scroll_to(&self, css: &str) {
        self.post(
            "/execute/sync",
            json!({
                "script": "document.querySelector(arguments[0]).scrollIntoView()",
                "args": [css],
            }),
        )
        .await;
    }

    /// Resizes the window (the viewport follows).
    pub async fn resize(&self, width: u32, height: u32) {
        self.post("/window/rect", json!({ "width": width, "height": height }))
            .await;
    }

    pub async fn quit(self) {
        let _ = self.http.delete(&self.base).send().await;
    }
}
