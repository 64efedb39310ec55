//! `herald workspace diff FILE…`: a unified diff between what `apply` would publish and what is
//! applied, with `diff`'s exit codes (0 equal, 1 different, 2 trouble). Both sides are shown
//! through [`redacted`], so no credential value reaches the terminal.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use serde::Serialize;
use similar::TextDiff;

use super::applied::{Applied, AppliedTable, redacted, to_yaml};
use crate::cli::KafkaArgs;
use crate::cli::output::Output;
use crate::model::WorkspaceConfig;
use crate::settings::Settings;

#[derive(Debug, Args)]
pub struct DiffArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Point the files' sandbox address at this URL, as `apply --sandbox-url` does.
    #[arg(long, value_name = "URL")]
    pub sandbox_url: Option<String>,
    /// Workspace files (YAML or JSON), one workspace each.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

/// One file's comparison.
#[derive(Debug, Serialize)]
struct Compared {
    workspace: String,
    file: String,
    /// `unchanged`, `changed`, or `new` (not applied yet).
    state: &'static str,
    /// The unified diff; empty when unchanged.
    diff: String,
}

/// Prints the differences; `Ok(true)` when every file equals what is applied.
pub async fn diff(settings: &Settings, args: &DiffArgs, output: Output) -> anyhow::Result<bool> {
    let mut files = Vec::new();
    for path in &args.files {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let text = match &args.sandbox_url {
            Some(url) => crate::cli::dev::at_sandbox(&text, url),
            None => text,
        };
        let config = WorkspaceConfig::parse(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        files.push((path.display().to_string(), config));
    }
    let table = AppliedTable::read(settings).await?;
    let mut compared = Vec::new();
    for (file, config) in files {
        let id = config.workspace.clone();
        let ours = to_yaml(&redacted(&as_published(config))?)?;
        let (theirs, state) = match table.workspaces.get(&id) {
            Some(Applied::Config(applied)) => (to_yaml(&redacted(applied)?)?, "changed"),
            Some(Applied::Unreadable(reason)) => (format!("# {reason}\n"), "changed"),
            None => (String::new(), "new"),
        };
        let text = TextDiff::from_lines(&theirs, &ours)
            .unified_diff()
            .context_radius(3)
            .header(&format!("{}/{id}", settings.topics.workspaces), &file)
            .to_string();
        let state = if theirs == ours { "unchanged" } else { state };
        compared.push(Compared {
            workspace: id,
            file,
            state,
            diff: if state == "unchanged" {
                String::new()
            } else {
                text
            },
        });
    }
    let equal = compared.iter().all(|c| c.state == "unchanged");
    if output.is_json() {
        Output::print_json(&serde_json::json!({ "equal": equal, "workspaces": compared }))?;
    } else {
        for c in &compared {
            print!("{}", c.diff);
        }
    }
    Ok(equal)
}

/// `config` as `apply --store-credentials` publishes it: a connection whose credentials are all
/// literal values has them moved to the store, so the published config holds none.
fn as_published(mut config: WorkspaceConfig) -> WorkspaceConfig {
    for connection in &mut config.connections {
        if connection
            .credentials
            .values()
            .all(|v| !v.expose().contains("${"))
        {
            connection.credentials.clear();
        }
    }
    config
}
