//! `herald dev`: everything on one machine with nothing but cargo. An embedded Kafka-protocol
//! broker (librdkafka's mock cluster, on its own thread because it is not `Send`), the topics,
//! the sandbox, the example workspaces pointed at it, and the processor.

use std::sync::mpsc;

use anyhow::{Context, anyhow};
use clap::Args;
use herald_sandbox::Sandbox;
use rdkafka::mocking::MockCluster;

use crate::app::App;
use crate::kafka::topic_plan;
use crate::model::Secret;
use crate::model::records::delivery_id;
use crate::settings::Settings;
use crate::settings::api::{AdminScope, AdminToken};
use crate::settings::interpolate::Vars;

/// The example workspaces, compiled in so `herald dev` runs from any directory.
pub const EXAMPLES: &[(&str, &str)] = &[
    (
        "examples/academy.yaml",
        include_str!("../../examples/academy.yaml"),
    ),
    (
        "examples/onboarding.yaml",
        include_str!("../../examples/onboarding.yaml"),
    ),
];

/// The examples' credentials in the sandbox, `NAME=value` lines shared with the tests and
/// docker-compose.yml (`env_file:`).
const SANDBOX_ENV: &str = include_str!("../../examples/sandbox.env");

/// The Slack incoming webhook of the onboarding example, on the sandbox.
const SLACK_WEBHOOK_PATH: &str = "/slack/services/T0DEV/B0DEV/sandbox";

/// The `lesson.completed` payload of the product pages' example.
const SEED_LESSON: &str = r#"{"student_id":"stu_2048","email":"nina@academyflow.io","lesson_id":"lesson_customer-research","lesson_title":"Customer Research Fundamentals","module_id":"module_growth-foundations","module_title":"Growth Foundations","course_id":"course_creator-accelerator","completion_percentage":62,"time_spent_seconds":1840,"completed_at":"2026-03-21T14:18:00Z"}"#;

/// The `page.completed` payload of seeds 001 and 002.
const SEED_PAGE: &str = r#"{"user_id":"usr_5012","email":"alex@northstar.io","page_id":"page_connect-crm","page_title":"Connect your CRM","sequence_step":3,"completed_at":"2026-03-21T15:06:00Z","time_on_page_seconds":522}"#;

/// The admin token `herald dev` accepts (write scope). Dev-only: `herald run` has no token
/// unless `api.admin_tokens` sets one.
pub const DEV_ADMIN_TOKEN: &str = "herald_dev_admin_token_not_for_production";

/// The read-only admin token `herald dev` accepts, to see the console and the API as a
/// read-scope caller does. Dev-only, like [`DEV_ADMIN_TOKEN`].
pub const DEV_READ_TOKEN: &str = "herald_dev_read_token_not_for_production";

/// The `event_id` of the seed event the tour posts over HTTP: fixed, so that its deliveries'
/// ids (derived from it) are known in advance and the README's curl lines can name one.
pub const TOUR_EVENT_ID: &str = "evt_tour_lesson";

/// The rule whose delivery of the tour's event the README gets and replays.
pub const TOUR_RULE: &str = "lesson-alert-to-slack";

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Address of the HTTP server (sandbox, health, metrics).
    #[arg(long, default_value = "127.0.0.1:7780")]
    http: String,
}

/// The `NAME=value` pairs of examples/sandbox.env.
pub fn sandbox_env() -> impl Iterator<Item = (&'static str, &'static str)> {
    SANDBOX_ENV
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.split_once('='))
}

/// Where the example workspaces expect the sandbox: `herald dev`'s default address.
pub const EXAMPLE_SANDBOX_URL: &str = "http://127.0.0.1:7780";

/// A workspace file pointed at the sandbox at `sandbox_url` instead of the examples' default
/// address: a plain rewrite of the file's text, before it is validated and published.
pub fn at_sandbox(text: &str, sandbox_url: &str) -> String {
    text.replace(EXAMPLE_SANDBOX_URL, sandbox_url.trim_end_matches('/'))
}

/// What the example workspaces' `${env:…}` references resolve to against a sandbox at
/// `sandbox_url`: the Slack incoming webhook on it, and the credentials of examples/sandbox.env.
pub fn example_vars(sandbox_url: &str) -> Vec<(&'static str, String)> {
    let per_run = [(
        "HERALD_CRED_NORTHSTAR_SLACK_WEBHOOK_URL",
        format!("{sandbox_url}{SLACK_WEBHOOK_PATH}"),
    )];
    let credentials = sandbox_env().map(|(name, value)| (name, value.to_owned()));
    per_run.into_iter().chain(credentials).collect()
}

/// The secret the examples sign webhooks with, which the sandbox of `herald dev` verifies.
fn example_webhook_secret() -> Option<&'static str> {
    sandbox_env().find_map(|(name, value)| {
        (name == "HERALD_CRED_ACADEMYFLOW_WEBHOOK_SECRET").then_some(value)
    })
}

/// The values `${env:…}` references resolve to in dev, where the examples use the sandbox.
pub fn dev_vars(sandbox_url: &str) -> Vars {
    example_vars(sandbox_url)
        .into_iter()
        .fold(Vars::from_env(), |vars, (name, value)| {
            vars.with(name, value)
        })
}

/// The dev-only HubSpot public app of the sandbox.
pub const DEV_HUBSPOT_CLIENT_ID: &str = "herald-dev-app";
const DEV_HUBSPOT_CLIENT_SECRET: &str = "herald-dev-app-secret-not-for-production";

/// Points "Connect HubSpot" at the sandbox served at `http` (unless the operator configured an
/// app), and gives the credential store a dev key when none is set, so the callback can store
/// tokens; returns the directory of that key, to remove when dev stops.
fn connect_hubspot_at_sandbox(
    settings: &mut Settings,
    http: &str,
) -> anyhow::Result<Option<std::path::PathBuf>> {
    let app = &mut settings.oauth.hubspot;
    if !app.enabled() {
        app.client_id = DEV_HUBSPOT_CLIENT_ID.into();
        app.client_secret = Secret::new(DEV_HUBSPOT_CLIENT_SECRET);
        app.authorize_url = format!("{http}/hubspot/oauth/authorize");
        app.token_url = format!("{http}/hubspot/oauth/v1/token");
        app.redirect_url = http.to_owned();
    }
    let keys = crate::credentials::Keyring::load(&settings.credentials)?;
    if keys.is_empty() {
        // The embedded broker forgets everything when dev stops, so a per-run key loses nothing.
        let dir = std::env::temp_dir().join(format!("herald-dev-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let mut key = [0u8; 32];
        aes_gcm::aead::rand_core::RngCore::fill_bytes(&mut aes_gcm::aead::OsRng, &mut key);
        use base64::Engine;
        std::fs::write(
            dir.join("dev"),
            base64::engine::general_purpose::STANDARD.encode(key),
        )
        .with_context(|| format!("cannot write a dev key to {}", dir.display()))?;
        settings.credentials.keys_dir = dir.display().to_string();
        return Ok(Some(dir));
    }
    Ok(None)
}

pub fn dev(
    mut settings: Settings,
    args: DevArgs,
    runtime: &tokio::runtime::Runtime,
) -> anyhow::Result<()> {
    let plan = topic_plan(&settings);
    let (booted_tx, booted_rx) = mpsc::channel::<Result<String, String>>();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let broker = std::thread::Builder::new()
        .name("herald-dev-broker".into())
        .spawn(move || {
            let cluster = match MockCluster::new(1) {
                Ok(c) => c,
                Err(e) => {
                    let _ = booted_tx.send(Err(e.to_string()));
                    return;
                }
            };
            for topic in &plan {
                if let Err(e) = cluster.create_topic(&topic.name, topic.partitions, 1) {
                    let _ = booted_tx.send(Err(format!("cannot create {}: {e}", topic.name)));
                    return;
                }
            }
            let _ = booted_tx.send(Ok(cluster.bootstrap_servers()));
            // The cluster lives until `herald dev` stops.
            let _ = stop_rx.recv();
        })
        .context("cannot start the embedded broker thread")?;
    let brokers = booted_rx
        .recv()
        .map_err(|_| anyhow!("the embedded broker thread ended early"))?
        .map_err(|e| anyhow!("cannot start the embedded broker: {e}"))?;

    settings.kafka.brokers = brokers.clone();
    settings.destinations.allow_private_networks = true;
    settings.api.admin_tokens.push(AdminToken {
        name: "dev".into(),
        token: Secret::new(DEV_ADMIN_TOKEN),
        scope: AdminScope::Write,
    });
    settings.api.admin_tokens.push(AdminToken {
        name: "dev-read".into(),
        token: Secret::new(DEV_READ_TOKEN),
        scope: AdminScope::Read,
    });
    // One member, one broker: short timeouts make the first assignment quick.
    settings.kafka.session_timeout_ms = settings.kafka.session_timeout_ms.min(6000);
    // A history query store of this run's own, so the API lists deliveries; the broker is new
    // each run, so a store left by an earlier run would describe topics that are gone.
    let store_dir =
        std::env::temp_dir().join(format!("herald-dev-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&store_dir)
        .with_context(|| format!("cannot create {}", store_dir.display()))?;
    settings.history.store_path = store_dir.join("history.db").display().to_string();

    let result = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&args.http)
            .await
            .with_context(|| {
                format!(
                    "cannot listen on {} (choose another with --http)",
                    args.http
                )
            })?;
        let http = format!("http://{}", listener.local_addr()?);
        let vars = dev_vars(&http);
        let files: Vec<(String, String)> = EXAMPLES
            .iter()
            .map(|(n, t)| (n.to_string(), at_sandbox(t, &http)))
            .collect();
        let configs = super::workspace::validate_files(&settings, &files, &vars)?;
        super::workspace::publish(&settings, &configs).await?;

        let mut settings = settings;
        // The console leaves `Secure` off its cookie only on a loopback listener.
        settings.http.listen = listener.local_addr()?.to_string();
        let dev_keys = connect_hubspot_at_sandbox(&mut settings, &http)?;
        let app = App::start(settings, vars)?;
        let sandbox = Sandbox::new(example_webhook_secret())
            .context("the webhook secret of examples/sandbox.env")?;
        let routes = app.http_routes().merge(sandbox.router());
        let shutdown = super::shutdown_signal();
        let mut http_stop = shutdown.clone();
        let server = tokio::spawn(
            axum::serve(listener, routes)
                .with_graceful_shutdown(async move {
                    let _ = http_stop.wait_for(|s| *s).await;
                })
                .into_future(),
        );
        println!("kafka: {brokers}");
        println!("http: {http}");
        println!(
            "workspaces: {}",
            configs
                .iter()
                .map(|c| c.workspace.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!("# emit the lesson.completed event of the course scenario:");
        println!(
            "herald emit --brokers {brokers} --workspace ws_academyflow --event lesson.completed \
             --resource course --resource-id creator-accelerator '{SEED_LESSON}'"
        );
        println!("# and the page.completed event of the onboarding scenario:");
        println!(
            "herald emit --brokers {brokers} --workspace ws_northstar --event page.completed \
             --resource onboarding_sequence --resource-id workspace-setup '{SEED_PAGE}'"
        );
        println!(
            "# then see what HubSpot, Mailchimp, Slack, ActiveCampaign, Intercom and the webhook \
             hold, and the history:"
        );
        println!("curl -s {http}/_sandbox/state");
        let key = configs
            .iter()
            .find(|c| c.workspace == "ws_academyflow")
            .and_then(|c| c.publishable_keys.first())
            .context("examples/academy.yaml lists a publishable key")?;
        println!("publishable key (ws_academyflow): {key}");
        println!("admin token: {DEV_ADMIN_TOKEN}");
        println!("read-only admin token: {DEV_READ_TOKEN}");
        println!("# the web console; sign in with either admin token (docs/console.md):");
        println!("console: {http}/console");
        println!("# the lesson.completed event again, over HTTP (docs/api.md):");
        println!(
            "curl -s {http}/v1/events -H 'Authorization: Bearer {key}' \
             -H 'Content-Type: application/json' -d '{{\"event\":\"lesson.completed\",\
             \"event_id\":\"{TOUR_EVENT_ID}\",\"resource\":\"course\",\
             \"resource_id\":\"creator-accelerator\",\"payload\":{SEED_LESSON}}}'"
        );
        println!("# what the workspaces hold, with the admin token:");
        println!("curl -s {http}/v1/workspaces -H 'Authorization: Bearer {DEV_ADMIN_TOKEN}'");
        let delivery = delivery_id("ws_academyflow", TOUR_EVENT_ID, TOUR_RULE);
        let deliveries = format!("{http}/v1/workspaces/ws_academyflow/deliveries");
        println!(
            "# that event's deliveries, one of them with its attempts, and a new attempt now:"
        );
        println!(
            "curl -s '{deliveries}?event_id={TOUR_EVENT_ID}' \
             -H 'Authorization: Bearer {DEV_ADMIN_TOKEN}'"
        );
        println!("curl -s {deliveries}/{delivery} -H 'Authorization: Bearer {DEV_ADMIN_TOKEN}'");
        println!(
            "curl -s -X POST {deliveries}/{delivery}/replay \
             -H 'Authorization: Bearer {DEV_ADMIN_TOKEN}'"
        );
        println!(
            "# a rule's test event: the request it makes, sent once (drop send=true to only see it):"
        );
        println!(
            "curl -s -X POST '{http}/v1/workspaces/ws_academyflow/test-event?send=true' \
             -H 'Authorization: Bearer {DEV_ADMIN_TOKEN}' -H 'Content-Type: application/json' \
             -d '{{\"rule\":\"lesson-alert-to-slack\",\"payload\":{SEED_LESSON}}}'"
        );
        println!("herald history --brokers {brokers} --workspace ws_academyflow");
        println!(
            "# \"Connect HubSpot\" for ws_academyflow's connection crm, through the sandbox's \
             authorize page (it approves at once) to the callback, which stores the tokens \
             (a connection uses them once its file has no credentials block; docs/credentials.md):"
        );
        println!(
            "curl -sL '{http}/oauth/hubspot/start?workspace=ws_academyflow&connection=crm' \
             -H 'Authorization: Bearer {DEV_ADMIN_TOKEN}'"
        );
        let ran = app.run_processor(shutdown).await;
        let _ = server.await;
        if let Some(dir) = dev_keys {
            let _ = std::fs::remove_dir_all(dir);
        }
        ran?;
        anyhow::Ok(())
    });
    let _ = stop_tx.send(());
    let _ = broker.join();
    if let Err(e) = std::fs::remove_dir_all(&store_dir) {
        tracing::warn!(dir = %store_dir.display(), error = %e, "history store not removed");
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_examples_reference_exactly_what_dev_sets() {
        let referenced: std::collections::BTreeSet<&str> = EXAMPLES
            .iter()
            .flat_map(|(_, text)| text.lines())
            .filter(|line| !line.trim_start().starts_with('#'))
            .flat_map(|line| line.split("${env:").skip(1))
            .filter_map(|reference| reference.split('}').next())
            .collect();
        let set: std::collections::BTreeSet<&str> = example_vars("http://127.0.0.1:7780")
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        assert_eq!(referenced, set);
    }

    #[test]
    fn both_examples_sign_with_the_secret_the_sandbox_verifies() {
        let secret = example_webhook_secret().expect("a webhook secret");
        assert!(
            Sandbox::new(Some(secret)).is_ok(),
            "{secret} is a whsec_ secret"
        );
        for name in [
            "HERALD_CRED_ACADEMYFLOW_WEBHOOK_SECRET",
            "HERALD_CRED_NORTHSTAR_WEBHOOK_SECRET",
        ] {
            assert!(
                sandbox_env().any(|(n, v)| n == name && v == secret),
                "{name}"
            );
        }
    }
}
