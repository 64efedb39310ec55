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
    // One member, one broker: short timeouts make the first assignment quick.
    settings.kafka.session_timeout_ms = settings.kafka.session_timeout_ms.min(6000);

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
        println!("# the lesson.completed event again, over HTTP (docs/api.md):");
        println!(
            "curl -s {http}/v1/events -H 'Authorization: Bearer {key}' \
             -H 'Content-Type: application/json' -d '{{\"event\":\"lesson.completed\",\
             \"resource\":\"course\",\"resource_id\":\"creator-accelerator\",\
             \"payload\":{SEED_LESSON}}}'"
        );
        println!("# what the workspaces hold, with the admin token:");
        println!("curl -s {http}/v1/workspaces -H 'Authorization: Bearer {DEV_ADMIN_TOKEN}'");
        println!(
            "# a rule's test event: the request it makes, sent once (drop send=true to only see it):"
        );
        println!(
            "curl -s -X POST '{http}/v1/workspaces/ws_academyflow/test-event?send=true' \
             -H 'Authorization: Bearer {DEV_ADMIN_TOKEN}' -H 'Content-Type: application/json' \
             -d '{{\"rule\":\"lesson-alert-to-slack\",\"payload\":{SEED_LESSON}}}'"
        );
        println!("herald history --brokers {brokers} --workspace ws_academyflow");
        app.run_processor(shutdown).await?;
        let _ = server.await;
        anyhow::Ok(())
    });
    let _ = stop_tx.send(());
    let _ = broker.join();
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
